"""pytest fixtures for agents with async tools (registered via the ``pytest11`` entry point).

Fixtures:
    scripted_llm: an empty, strict `ScriptedLLM`; add replies with
        ``scripted_llm.extend([...])``. When the test ends, every reply must have
        been requested and no request may have come after the script was used up
        (`ScriptedLLM.check`); set ``scripted_llm.strict = False`` in a test, or
        ``scripted_llm_strict = false`` in the pytest configuration, to opt out.
    async_tools_session: a factory ``await async_tools_session(agent, llm=..., options=...)``
        returning a started text-mode `AgentSession` with the runtime attached. At
        teardown every session is closed, its runtime settled, and the test fails if
        any of the package's tasks is still running. A strict `ScriptedLLM` passed
        as ``llm=`` is checked when the test ends, like the fixture's.

The plugin also:
    - runs ``async def`` tests that request these fixtures with pytest-asyncio even
      when the project sets no ``asyncio_mode`` (other async tests still need
      ``asyncio_mode = "auto"`` or ``@pytest.mark.asyncio``);
    - makes livekit's own ``mock_tools`` raise `LivekitMockError` for async tools
      (it would silently turn them into blocking tools); use this package's
      `mock_tools`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any

import pytest
from livekit.agents import Agent, AgentSession

from ..options import AsyncToolOptions
from ..runtime import AsyncToolRuntime, attach
from ._llm import ScriptedLLM
from ._mocks import guard_livekit_mock_tools, unguard_livekit_mock_tools

__all__ = ["SessionFactory", "async_tools_session", "scripted_llm"]

SessionFactory = Callable[..., Awaitable[AgentSession[Any]]]

_FIXTURES = frozenset({"scripted_llm", "async_tools_session"})
_STRICT_INI = "scripted_llm_strict"
_checked_llms = pytest.StashKey[list[ScriptedLLM]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ``scripted_llm_strict`` configuration option."""
    parser.addini(
        _STRICT_INI,
        "Whether the scripted_llm fixture starts in strict mode (default: true).",
        type="bool",
        default=True,
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests() -> None:
    """Guard livekit's ``mock_tools`` before conftest files and test modules import it."""
    guard_livekit_mock_tools()


def pytest_configure() -> None:
    """Guard livekit's ``mock_tools`` (again, if the plugin was loaded late)."""
    guard_livekit_mock_tools()


def pytest_unconfigure() -> None:
    """Give livekit its own ``mock_tools`` back."""
    unguard_livekit_mock_tools()


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(
    collector: pytest.Module | pytest.Class, name: str, obj: object
) -> Generator[None, object, object]:
    """Mark ``async def`` tests that request this plugin's fixtures for pytest-asyncio.

    In pytest-asyncio's default strict mode an unmarked ``async def`` test is not
    run ("async def functions are not natively supported"). A test that requests
    ``scripted_llm`` or ``async_tools_session`` is an asyncio test, so it gets the
    ``asyncio`` mark unless it already has a mark of an async framework.
    """
    if (
        inspect.iscoroutinefunction(obj)
        and collector.funcnamefilter(name)
        and _FIXTURES & set(inspect.signature(obj).parameters)
        and not any(
            getattr(mark, "name", None) in ("asyncio", "anyio", "trio")
            for mark in getattr(obj, "pytestmark", [])
        )
    ):
        pytest.mark.asyncio(obj)
    return (yield)


def _check_later(request: pytest.FixtureRequest, scripted: ScriptedLLM) -> None:
    llms = request.node.stash.setdefault(_checked_llms, [])
    if all(known is not scripted for known in llms):
        llms.append(scripted)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Fail a passing test whose strict `ScriptedLLM` was not used exactly."""
    yield
    __tracebackhide__ = True
    for scripted in item.stash.get(_checked_llms, []):
        if scripted.strict:
            scripted.check()


@pytest.fixture
def scripted_llm(request: pytest.FixtureRequest) -> ScriptedLLM:
    """An empty scripted LLM, strict unless configured otherwise; extend its script in
    the test."""
    scripted = ScriptedLLM([], strict=bool(request.config.getini(_STRICT_INI)))
    _check_later(request, scripted)
    return scripted


try:  # the `test` extra brings pytest-asyncio; without it, rely on the user's async plugin
    from pytest_asyncio import fixture as _async_fixture
except ImportError:  # pragma: no cover
    _async_fixture = pytest.fixture  # type: ignore[assignment]


@_async_fixture
async def async_tools_session(
    request: pytest.FixtureRequest, scripted_llm: ScriptedLLM
) -> AsyncIterator[SessionFactory]:
    """Start text-mode sessions with the async tool runtime attached; check at teardown."""
    sessions: list[tuple[AgentSession[Any], AsyncToolRuntime]] = []

    async def start(
        agent: Agent,
        *,
        llm: ScriptedLLM | None = None,
        options: AsyncToolOptions | None = None,
    ) -> AgentSession[Any]:
        if llm is not None:
            _check_later(request, llm)
        session: AgentSession[Any] = AgentSession(llm=llm or scripted_llm)
        runtime = attach(session, options)
        await session.start(agent)
        sessions.append((session, runtime))
        return session

    yield start
    for session, runtime in sessions:
        await session.aclose()
        await runtime.aclose()
    await asyncio.sleep(0)
    leaked = [
        t.get_name()
        for t in asyncio.all_tasks()
        if t is not asyncio.current_task() and t.get_name().startswith("async-tool")
    ]
    if leaked:
        pytest.fail(f"async tool tasks still running after the session closed: {leaked}")
