"""The package uses only public livekit APIs: no livekit name starting with "_"."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "livekit_async_tools"

# livekit's documented extension points for LLM plugins (every provider plugin
# overrides `_run` and sends chunks into `_event_ch`); used by ScriptedLLM only.
PLUGIN_PROTOCOL = {"_run", "_event_ch"}


def _trees() -> dict[Path, ast.Module]:
    return {p: ast.parse(p.read_text(), str(p)) for p in PACKAGE.rglob("*.py")}


def _own_private_names(trees: dict[Path, ast.Module]) -> set[str]:
    names: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return {n for n in names if n.startswith("_")}


def test_no_private_livekit_imports_or_attributes() -> None:
    trees = _trees()
    own = _own_private_names(trees)
    problems: list[str] = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("livekit"):
                if any(part.startswith("_") for part in (node.module or "").split(".")):
                    problems.append(f"{path.name}:{node.lineno} imports {node.module}")
                problems += [
                    f"{path.name}:{node.lineno} imports {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
            elif isinstance(node, ast.Import):
                problems += [
                    f"{path.name}:{node.lineno} imports {a.name}"
                    for a in node.names
                    if a.name.startswith("livekit") and "._" in a.name
                ]
            elif isinstance(node, ast.Attribute):
                attr = node.attr
                if (
                    attr.startswith("_")
                    and not attr.startswith("__")
                    and attr not in own
                    and attr not in PLUGIN_PROTOCOL
                ):
                    problems.append(f"{path.name}:{node.lineno} uses .{attr}")
    assert problems == []


def test_the_scan_catches_a_private_access() -> None:
    tree = ast.parse("session._activity.foo\nfrom livekit.agents.voice import _x\n")
    attrs = [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)]
    assert "_activity" in attrs
    assert "_activity" not in _own_private_names(_trees())
