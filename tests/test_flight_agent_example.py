"""examples/flight_agent.py end to end: its real agent, the real openai.LLM (through the
example's own `build_llm`, pointed at the strict test server by ``OPENAI_BASE_URL``), a
text-mode session and a scripted caller. Covers the slow search, the `AgentTask`, a
cancel by the LLM (control tools) and a timeout; every request must pass the server.

``flight_brain`` also drives ``python examples/flight_agent.py console --text`` offline
(see the example's docstring).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from livekit.agents import AgentSession, llm

from .conftest import Recorder, spoken, until
from .support import examples
from .support.openai_server import (
    ChatRequest,
    OpenAIServer,
    Reply,
    ToolCall,
    keyword_brain,
    openai_server_fixture,  # noqa: F401  (the `openai_server` fixture)
)

pytest.importorskip("livekit.plugins.openai", reason="needs the examples extra")
pytest.importorskip("livekit.plugins.silero", reason="needs the examples extra")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flight_agent.py"

_RULES: dict[str, Reply] = {
    "fare rules": ToolCall("get_fare_rules", {"flight_number": "TS123"}),
    "stop watching": ToolCall("get_running_tasks"),
    "watch": ToolCall("watch_booking", {"booking_ref": "AB12"}),
    "book": ToolCall("collect_email"),
    "example.com": ToolCall("record_email", {"email": "ann@example.com"}),
    "flight": ToolCall("search_flights", {"origin": "Oslo", "destination": "Rome"}),
}
_ON_INSTRUCTIONS: dict[str, Reply] = {
    "Ask for the caller's email address": "What is your email address?",
}
_base = keyword_brain(_RULES, on_instructions=_ON_INSTRUCTIONS)


def flight_brain(req: ChatRequest) -> Reply:
    """The scripted model for the flight agent (keyword rules; cancels what the caller
    asks to stop, by listing the running tasks first)."""
    last = req.last
    if last.get("role") == "tool":
        name = req.tool_call_names().get(str(last.get("tool_call_id")))
        if name == "get_running_tasks":
            rows = json.loads(str(last.get("content")))
            watch = [r for r in rows if r["tool"] == "watch_booking"]
            if watch:
                return ToolCall("cancel_task", {"call_id": watch[0]["call_id"]})
    return _base(req)


def load_example(monkeypatch: pytest.MonkeyPatch, time_scale: float) -> ModuleType:
    """A fresh copy of the example, built with ``FLIGHT_AGENT_TIME_SCALE``."""
    return examples.load_example(monkeypatch, EXAMPLE, "FLIGHT_AGENT_TIME_SCALE", time_scale)


def test_the_example_starts_its_cli() -> None:
    """The plugins register at import, on the main thread: the CLI starts."""
    examples.assert_cli_starts(EXAMPLE)


async def test_flight_agent_end_to_end(
    openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fa = load_example(monkeypatch, time_scale=0.02)

    class Airline(fa.Airline):  # type: ignore[misc]
        """The search answers when the test says so; the booking is never confirmed
        during the call; the fare-rules service is slower than the tool's 20 s timeout
        (demo seconds: 0.4 s real)."""

        confirmation = 10_000.0
        fare_rules = (60.0, 60.0)

        def __init__(self) -> None:
            self.searching = asyncio.Event()

        async def wait(self, span: float | tuple[float, float]) -> None:
            if span is self.search_stage:
                await self.searching.wait()
            else:
                await super().wait(span)

    airline = fa.AIRLINE = Airline()
    openai_server.brain = flight_brain
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    monkeypatch.setenv("OPENAI_MODEL", "gpt-4o-mini")

    model = fa.build_llm()
    session: AgentSession[Any] = AgentSession(llm=model)
    runtime = fa.attach_runtime(session)
    rec = Recorder(runtime)
    travel = fa.TravelAgent()

    def ended(tool: str) -> list[str]:
        names = {e.call_id: e.tool_name for e in rec.of("task_started")}
        return [e.status for e in rec.of("task_ended") if names.get(e.call_id) == tool]

    try:
        async with session:
            await session.start(travel)
            await session.run(user_input="I need a flight from Oslo to Rome")
            assert spoken(session) == ["One moment."]

            # the AgentTask takes the floor while the search runs on
            booking = session.generate_reply(user_input="Please book it")
            await until(
                session,
                lambda: (
                    isinstance(session.current_agent, fa.CollectEmail)
                    and "What is your email address?" in spoken(session)
                    and session.agent_state == "listening"
                ),
                timeout=10,
            )
            task = session.current_agent
            airline.searching.set()
            await until(session, lambda: ended("search_flights") == ["succeeded"], timeout=10)
            assert not any("189 dollars" in s for s in spoken(session))  # waits for the origin
            await session.run(user_input="It is ann@example.com")
            await booking
            await until(session, lambda: any("189 dollars" in s for s in spoken(session)))
            assert _says(travel, "189 dollars")
            assert not _says(task, "189 dollars")

            # a watch the caller cancels; the LLM finds it with the control tools
            await session.run(user_input="Watch booking AB12 for me")
            await session.run(user_input="Actually, stop watching the booking")
            assert ended("watch_booking") == ["cancelled"]
            assert "was cancelled" in spoken(session)[-1]

            # a lookup that times out, and the caller hears so
            await session.run(user_input="What are the fare rules for flight TS123?")
            await runtime.settle(timeout=10)
            assert ended("get_fare_rules") == ["timed_out"]
            assert "get_fare_rules was stopped after 0.4 seconds" in spoken(session)[-1]
            await session.run(user_input="Thanks, bye")
    finally:
        await model.aclose()
    openai_server.assert_clean()
    assert runtime.tasks == ()


def _says(agent: Any, text: str) -> bool:
    return any(
        isinstance(it, llm.ChatMessage)
        and it.role == "assistant"
        and text in (it.text_content or "")
        for it in agent.chat_ctx.items
    )
