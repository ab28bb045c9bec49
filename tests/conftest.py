from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from livekit.agents import Agent, AgentSession

from livekit_async_tools import AsyncToolOptions, AsyncToolRuntime, attach
from livekit_async_tools.testing import LLMRequest, ScriptedLLM

FAST = AsyncToolOptions(settle_delay=0.05)

pytest_plugins = ["tests.slow_progress"]  # a progress line for each test slower than 5 s


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


async def until(session: AgentSession, cond: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``cond()`` holds, re-checking on every session event."""
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    names = (
        "agent_state_changed",
        "user_state_changed",
        "conversation_item_added",
        "speech_created",
        "function_tools_executed",
    )
    handler = lambda _ev: wake.set()  # noqa: E731
    for n in names:
        session.on(n, handler)
    deadline = loop.time() + timeout
    try:
        while not cond():
            wake.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError("condition not reached in time")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), min(remaining, 0.05))
    finally:
        for n in names:
            session.off(n, handler)


DERIVED = re.compile(r"_(result|progress_\d+|question_\d+|overdue_\d+)$")
"""The call id of an item the package derived from a call."""


def named_outputs(req: LLMRequest) -> list[Any] | None:
    """For a deferred reply's request: the derived tool outputs its instructions name
    (what a compliant model talks about); ``None`` for any other request."""
    text = req.instructions
    if "Background results" not in text and "cut off while telling" not in text:
        return None
    return [
        it
        for it in req.chat_ctx.items
        if it.type == "function_call_output" and it.call_id in text and DERIVED.search(it.call_id)
    ]


def last_output(request_ctx_items: list[Any], suffixes: tuple[str, ...]) -> list[str]:
    """Outputs of deferred items (call ids ending in one of ``suffixes``)."""
    return [
        it.output
        for it in request_ctx_items
        if it.type == "function_call_output" and it.call_id.endswith(suffixes)
    ]


def keyword_brain(
    rules: dict[str, Any], *, on_instructions: dict[str, Any] | None = None
) -> Callable[[LLMRequest], Any]:
    """A scripted LLM decision function that behaves like a compliant model.

    - asked to deliver background results: speaks "Result: <outputs>" for the
      deferred items the instructions name by call id;
    - right after a tool output: "One moment." for an acknowledgement, else
      "Done: <output>";
    - otherwise: the first rule whose keyword is in the last user text (for a
      generate_reply with instructions, in the instructions), or nothing.
    """

    def decide(req: LLMRequest) -> Any:
        items = list(req.chat_ctx.items)
        text = req.instructions
        if "Background results" in text or "cut off while telling" in text:
            named = [
                it.output
                for it in items
                if it.type == "function_call_output"
                and ("_result" in it.call_id or "_progress_" in it.call_id)
                and it.call_id in text
            ]
            return "Result: " + "; ".join(named) if named else ""
        last = items[-1] if items else None
        if last is not None and last.type == "function_call_output":
            if "in the background" in last.output:
                return "One moment."
            return f"Done: {last.output}"
        for key, reply in (on_instructions or {}).items():
            if key in text:
                return reply
        user = req.last_user_text.lower()
        for key, reply in rules.items():
            if key in user:
                return reply
        return ""

    return decide
