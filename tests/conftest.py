from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from livekit.agents import Agent, AgentSession

from livekit_async_tools import AsyncToolOptions, AsyncToolRuntime, attach
from livekit_async_tools.testing import ScriptedLLM

FAST = AsyncToolOptions(settle_delay=0.05)


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves one of the package's tasks running."""
    yield
    await asyncio.sleep(0)
    leaked = [
        t
        for t in asyncio.all_tasks()
        if t is not asyncio.current_task() and t.get_name().startswith("async-tool")
    ]
    assert not leaked, f"leaked tasks: {[t.get_name() for t in leaked]}"


class Recorder:
    """Collects runtime events as (event name, payload)."""

    def __init__(self, runtime: AsyncToolRuntime) -> None:
        self.events: list[tuple[str, Any]] = []
        for name in ("task_started", "task_updated", "task_ended", "reply_updated"):
            runtime.on(name, self._make(name))  # type: ignore[call-overload]

    def _make(self, name: str) -> Callable[[Any], None]:
        return lambda ev: self.events.append((name, ev))

    def names(self, call_id: str | None = None) -> list[str]:
        out = []
        for name, ev in self.events:
            ids = getattr(ev, "call_ids", None) or (getattr(ev, "call_id", None),)
            if call_id is None or call_id in ids:
                out.append(name if name != "reply_updated" else f"reply_{ev.status}")
        return out

    def of(self, name: str) -> list[Any]:
        return [ev for n, ev in self.events if n == name]


async def start(
    agent: Agent, llm: ScriptedLLM, options: AsyncToolOptions = FAST
) -> tuple[AgentSession, AsyncToolRuntime, Recorder]:
    session: AgentSession = AgentSession(llm=llm)
    runtime = attach(session, options)
    rec = Recorder(runtime)
    await session.start(agent)
    return session, runtime, rec


def spoken(session: AgentSession) -> list[str]:
    """Assistant messages in the session history, in order."""
    return [
        item.text_content or ""
        for item in session.history.items
        if item.type == "message" and item.role == "assistant"
    ]
