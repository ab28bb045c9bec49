"""The core's imports only go downward (``TYPE_CHECKING`` and local imports included),
and `AsyncToolRuntime` exposes exactly the documented names."""

from __future__ import annotations

import ast
from pathlib import Path

from livekit_async_tools import AsyncToolRuntime

PACKAGE = Path(__file__).resolve().parent.parent / "livekit_async_tools"

LAYERS: list[set[str]] = [
    {"options", "_log", "_compat", "_model"},  # settings, logging, livekit versions, models
    {"events", "_spec", "_policy"},  # payloads, tool options, pure decisions
    {"_texts", "_ports"},  # every LLM-facing text; the narrow interfaces
    # the run context; context writes; the floor; cancel hooks; a call's deadline; spans
    {"context", "_chat_store", "gate", "_hooks", "_deadline", "tracing"},
    {"task", "_pending", "_mock_registry", "_reply"},  # a call; what waits; what replies say
    # speaking; notes; control tools; away; questions
    {"delivery", "steering", "control", "_away", "_questions", "_holding"},
    {"_calls"},  # the registry of live calls, dispatch
    {"_core"},  # the composition root: wires the parts, fans session events out
    {"runtime"},  # the documented API
    {"_plain"},  # timeouts for ordinary tools
    {"tool"},  # function_tool
    {"__init__"},
]
"""Each core module may import only modules of strictly lower layers. The `testing`
package sits above all of them; no core module imports it."""

RANK = {name: n for n, layer in enumerate(LAYERS) for name in layer}


def _imports(path: Path) -> set[str]:
    """Core modules ``path`` imports, wherever the import statement is."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("livekit_async_tools"):
                parts = node.module.split(".")
                found.add(parts[1] if len(parts) > 1 else "__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "livekit_async_tools" and len(parts) > 1:
                    found.add(parts[1])
    return found


def test_every_core_module_has_a_layer() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules == set(RANK), (modules - set(RANK), set(RANK) - modules)


def test_imports_only_go_downward() -> None:
    upward: list[str] = []
    for path in PACKAGE.glob("*.py"):
        for target in _imports(path):
            if target == "testing" or RANK[target] >= RANK[path.stem]:
                upward.append(f"{path.stem} (layer {RANK[path.stem]}) imports {target}")
    assert upward == []


def test_runtime_public_names_are_the_documented_ones() -> None:
    public = sorted(n for n in dir(AsyncToolRuntime) if not n.startswith("_"))
    assert public == [
        "aclose",
        "cancel",
        "closed",
        "describe",
        "follow_up",
        "off",
        "on",
        "options",
        "session",
        "settle",
        "steer",
        "tasks",
    ]


def test_modules_stay_small() -> None:
    sizes = {p.stem: len(p.read_text().splitlines()) for p in PACKAGE.glob("*.py")}
    big = {name: n for name, n in sizes.items() if n > 400}
    assert big == {}
