"""docs/testing.md's recipes and the pytest plugin, run by pytest in fresh projects.

Each project is a new directory holding only what a user would write: the docs'
recommended configuration (or none at all), the recipes copied from the docs, and a
few tests of the plugin's checks. It is run with ``python -m pytest`` in a
subprocess (the same interpreter, where the package and its plugin are installed),
so this repository's own pytest configuration plays no part.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs" / "testing.md"
TEXT = DOCS.read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", TEXT, flags=re.S)


RECIPES = "\n\n".join(blocks("python"))
RECIPE_TESTS = re.findall(r"^async def (test_\w+)", RECIPES, flags=re.M)

PLUGIN_CHECKS = textwrap.dedent(
    '''
    from livekit.agents import Agent
    from livekit.agents import mock_tools as lk_mock_tools

    from livekit_async_tools import AsyncRunContext, function_tool
    from livekit_async_tools.testing import LivekitMockError, ScriptedLLM, ToolCall


    class Echo(Agent):
        def __init__(self) -> None:
            super().__init__(instructions="You echo.")

        @function_tool
        async def lookup(self, ctx: AsyncRunContext, word: str) -> str:
            """Look a word up."""
            return word


    async def test_unused_script_fails(scripted_llm, async_tools_session):
        scripted_llm.extend(["Hello.", "Never requested."])
        session = await async_tools_session(Echo())
        await session.run(user_input="hi")


    async def test_request_beyond_the_script_fails(scripted_llm, async_tools_session):
        scripted_llm.extend(["Hello."])
        session = await async_tools_session(Echo())
        await session.run(user_input="hi")
        await session.run(user_input="once more")


    async def test_strict_opt_out_in_a_test(scripted_llm, async_tools_session):
        scripted_llm.strict = False
        scripted_llm.extend(["Hello.", "Never requested."])
        session = await async_tools_session(Echo())
        await session.run(user_input="hi")


    async def test_a_strict_llm_given_to_the_factory_is_checked(async_tools_session):
        session = await async_tools_session(
            Echo(), llm=ScriptedLLM(["Hello.", "Never requested."], strict=True)
        )
        await session.run(user_input="hi")


    async def test_a_plain_llm_given_to_the_factory_is_not(async_tools_session):
        session = await async_tools_session(Echo(), llm=ScriptedLLM(["Hello.", "Unused."]))
        await session.run(user_input="hi")


    def test_livekit_mock_tools_refuses_an_async_tool():
        try:
            lk_mock_tools(Echo, {"lookup": lambda word: word})
        except LivekitMockError as e:
            assert "livekit_async_tools.testing.mock_tools" in str(e)
        else:
            raise AssertionError("livekit's mock_tools accepted an async tool")
    '''
)

EXPECTED_CHECKS = {
    "test_unused_script_fails": ("failed", "1 scripted reply(ies) never requested"),
    "test_request_beyond_the_script_fails": ("failed", "came after the script was used up"),
    "test_strict_opt_out_in_a_test": ("passed", ""),
    "test_a_strict_llm_given_to_the_factory_is_checked": ("failed", "never requested"),
    "test_a_plain_llm_given_to_the_factory_is_not": ("passed", ""),
    "test_livekit_mock_tools_refuses_an_async_tool": ("passed", ""),
}


@dataclass(frozen=True)
class Outcome:
    status: str  # passed | failed | error | skipped
    message: str


def run_pytest(project: Path, *args: str) -> dict[str, Outcome]:
    """Run pytest in ``project``; outcomes by test name (from its JUnit XML)."""
    report = project / "report.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={report}", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.exists(), proc.stdout + proc.stderr
    outcomes: dict[str, Outcome] = {}
    for case in ET.parse(report).iter("testcase"):
        status, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                status = {"failure": "failed"}.get(child.tag, child.tag)
                message = (child.get("message") or "") + "\n" + (child.text or "")
        outcomes[case.get("name", "")] = Outcome(status, message)
    assert outcomes, proc.stdout + proc.stderr
    return outcomes


def make_project(root: Path, config: dict[str, str]) -> Path:
    (root / "tests").mkdir(parents=True)
    for name, text in config.items():
        (root / name).write_text(text)
    (root / "tests" / "test_recipes.py").write_text(RECIPES)
    (root / "tests" / "test_plugin_checks.py").write_text(PLUGIN_CHECKS)
    return root


@pytest.fixture(scope="module")
def recommended(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """A project with exactly the configuration the docs recommend; warnings are errors."""
    (toml,) = blocks("toml")
    project = make_project(tmp_path_factory.mktemp("recommended"), {"pyproject.toml": toml})
    return run_pytest(project, "-W", "error")


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """A project with no configuration at all (pytest-asyncio in its strict mode)."""
    return run_pytest(make_project(tmp_path_factory.mktemp("bare"), {}))


def test_the_docs_have_the_recipes() -> None:
    assert "test_a_result_waits_for_an_agent_task" in RECIPE_TESTS
    assert len(RECIPE_TESTS) >= 4
    assert len(blocks("toml")) == 1


@pytest.mark.parametrize("name", RECIPE_TESTS)
def test_recipe_passes_with_the_recommended_configuration(
    recommended: dict[str, Outcome], name: str
) -> None:
    outcome = recommended[name]
    assert outcome.status == "passed", outcome.message


@pytest.mark.parametrize("name", RECIPE_TESTS)
def test_recipe_passes_with_no_configuration(bare: dict[str, Outcome], name: str) -> None:
    outcome = bare[name]
    assert outcome.status == "passed", outcome.message


@pytest.mark.parametrize("name", sorted(EXPECTED_CHECKS))
@pytest.mark.parametrize("project", ["recommended", "bare"])
def test_plugin_checks_in_a_fresh_project(
    request: pytest.FixtureRequest, project: str, name: str
) -> None:
    outcome: Outcome = request.getfixturevalue(project)[name]
    status, text = EXPECTED_CHECKS[name]
    # a strict failure is the test's own failure (its call phase), not a teardown error
    assert outcome.status == status, outcome.message
    assert text in outcome.message
    if status == "failed":
        assert "Requests (" in outcome.message
        assert "user: 'hi'" in outcome.message


def test_strict_mode_can_be_turned_off_for_a_project(tmp_path: Path) -> None:
    project = make_project(
        tmp_path, {"pytest.ini": "[pytest]\nasyncio_mode = auto\nscripted_llm_strict = false\n"}
    )
    outcomes = run_pytest(project, "-k", "unused_script or beyond_the_script")
    assert {name: o.status for name, o in outcomes.items()} == {
        "test_unused_script_fails": "passed",
        "test_request_beyond_the_script_fails": "passed",
    }
