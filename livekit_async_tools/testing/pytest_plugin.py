"""pytest fixtures for agents with async tools (registered via the ``pytest11`` entry point).

Fixtures:
    scripted_llm: an empty `ScriptedLLM`; add replies with ``scripted_llm.extend([...])``.
    async_tools_session: a factory ``await async_tools_session(agent, llm=..., options=...)``
        returning a started text-mode `AgentSession` with the runtime attached. At
        teardown every session is closed, its runtime settled, and the test fails if
        any of the package's tasks is still running.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from livekit.agents import Agent, AgentSession

from ..options import AsyncToolOptions
from ..runtime import AsyncToolRuntime, attach
from ._llm import ScriptedLLM

__all__ = ["SessionFactory", "async_tools_session", "scripted_llm"]

SessionFactory = Callable[..., Awaitable[AgentSession[Any]]]


@pytest.fixture
def scripted_llm() -> ScriptedLLM:
    """An empty scripted LLM; extend its script in the test."""
    return ScriptedLLM([])


try:  # the `test` extra brings pytest-asyncio; without it, rely on the user's async plugin
    from pytest_asyncio import fixture as _async_fixture
except ImportError:  # pragma: no cover
    _async_fixture = pytest.fixture  # type: ignore[assignment]


@_async_fixture
async def async_tools_session(scripted_llm: ScriptedLLM) -> AsyncIterator[SessionFactory]:
    """Start text-mode sessions with the async tool runtime attached; check at teardown."""
    sessions: list[tuple[AgentSession[Any], AsyncToolRuntime]] = []

    async def start(
        agent: Agent,
        *,
        llm: ScriptedLLM | None = None,
        options: AsyncToolOptions | None = None,
    ) -> AgentSession[Any]:
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
