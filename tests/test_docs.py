"""The Python examples in docs/*.md run as tests, so the docs cannot rot."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import pytest
from livekit.agents import Agent, llm

DOCS = Path(__file__).resolve().parent.parent / "docs"


def load_python_blocks(name: str) -> ModuleType:
    text = (DOCS / name).read_text()
    code = "\n\n".join(re.findall(r"```python\n(.*?)```", text, flags=re.S))
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
    module = load_python_blocks(name)
    if "```python" in (DOCS / name).read_text():
        defined = [v for k, v in vars(module).items() if not k.startswith("__")]
        assert any(
            isinstance(v, llm.FunctionTool)
            or (isinstance(v, type) and issubclass(v, Agent))
            or callable(v)
            for v in defined
        )
