"""The Python examples in docs/*.md run as tests, so the docs cannot rot; the
quickstart is examples/quickstart.py; the site's layout fits its code at 1280 px."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
from livekit.agents import Agent, llm

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

DOCS_CODE_COLUMNS = 110
"""The longest code line the site shows uncut at 1280 px wide (docs/stylesheets/extra.css:
a 983 px content column, measured in headless Chromium, holds about 115)."""


def missing_plugins(code: str) -> list[str]:
    """The ``livekit.plugins`` modules ``code`` imports that are not installed."""
    names = re.findall(r"^from livekit\.plugins import (.+)$", code, flags=re.M)
    modules = [
        f"livekit.plugins.{n.strip()}" for line in names for n in line.split("#")[0].split(",")
    ]
    return [m for m in modules if not installed(m)]


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def load_python_blocks(name: str) -> ModuleType:
    """Run the page's Python blocks together, leaving out those that import a livekit
    plugin that is not installed (the quickstart, on an environment without the
    ``examples`` extra; test_examples runs it where the plugins are)."""
    text = (DOCS / name).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    code = "\n\n".join(b for b in blocks if not missing_plugins(b))
    module = ModuleType(f"docs_{name.replace('.', '_').replace('-', '_')}")
    exec(compile(code, str(DOCS / name), "exec"), module.__dict__)
    return module


_testing = load_python_blocks("testing.md")
test_doc_result_is_spoken_after_the_ack = _testing.test_result_is_spoken_after_the_ack
test_doc_a_ten_minute_timeout_in_virtual_time = _testing.test_a_ten_minute_timeout_in_virtual_time
test_doc_handoff_forwards_the_result = _testing.test_handoff_forwards_the_result


def test_cancellation_doc_example_defines_a_valid_tool() -> None:
    module = load_python_blocks("cancellation-and-timeouts.md")
    tool = module.Reports.build_report
    assert tool.info.name == "build_report"


@pytest.mark.parametrize("name", [*sorted(p.name for p in DOCS.glob("*.md")), "../README.md"])
def test_every_python_block_in_the_docs_runs(name: str) -> None:
    """Each page's Python blocks, run together, define what they show without error."""
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / name).read_text(), flags=re.S)
    if blocks and all(missing_plugins(b) for b in blocks):
        pytest.skip(f"its Python needs {missing_plugins(blocks[0])} (the examples extra)")
    module = load_python_blocks(name)
    if blocks:
        defined = [v for k, v in vars(module).items() if not k.startswith("__")]
        assert any(
            isinstance(v, llm.FunctionTool)
            or (isinstance(v, type) and issubclass(v, Agent))
            or callable(v)
            for v in defined
        )


def quickstart_block(page: Path) -> str:
    """The Python block under the page's "## Quickstart" heading."""
    section = page.read_text().split("\n## Quickstart\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match, f"{page.name}: no Python block under ## Quickstart"
    return match.group(1)


@pytest.mark.parametrize("page", ["README.md", "docs/index.md"])
def test_quickstart_is_examples_quickstart(page: str) -> None:
    """README and docs show exactly examples/quickstart.py (without its module docstring),
    which test_examples runs."""
    source = (ROOT / "examples" / "quickstart.py").read_text()
    code = source.split('"""\n\n', 1)[1]
    assert quickstart_block(ROOT / page) == code


def test_site_layout_is_wired() -> None:
    """mkdocs.yml loads the stylesheet and puts the table of contents in the navigation
    (what makes room for DOCS_CODE_COLUMNS at 1280 px)."""
    config = (ROOT / "mkdocs.yml").read_text()
    assert re.search(r"^extra_css:\n  - stylesheets/extra\.css$", config, flags=re.M)
    assert re.search(r"^    - toc\.integrate$", config, flags=re.M)
    css = (DOCS / "stylesheets" / "extra.css").read_text()
    assert ".md-grid" in css and "DOCS_CODE_COLUMNS" in css


@pytest.mark.parametrize("name", [*sorted(p.name for p in DOCS.glob("*.md")), "../README.md"])
def test_code_lines_fit_the_page(name: str) -> None:
    """No line of a code block is wider than the site shows uncut at 1280 px."""
    text = (DOCS / name).read_text()
    too_wide = [
        line
        for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
        for line in block.splitlines()
        if len(line) > DOCS_CODE_COLUMNS
    ]
    assert not too_wide, f"{name}: code lines over {DOCS_CODE_COLUMNS} characters: {too_wide}"
