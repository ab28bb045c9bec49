"""Every offline example runs; the real-provider examples' agents run offline."""

from __future__ import annotations

import asyncio
import inspect
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import basic
import cancellation
import handoff
from livekit.agents import AgentServer, AgentSession, JobContext

from livekit_async_tools import AsyncToolOptions, attach
from livekit_async_tools.testing import ScriptedLLM, ToolCall, mock_tools

from .conftest import Recorder, keyword_brain, spoken


async def test_basic_example() -> None:
    said = await basic.main()
    assert said[-1] == "The forecast is in: sunny all week in Nice."


async def test_handoff_example() -> None:
    hotel = await handoff.main()
    assert any(
        getattr(i, "role", None) == "assistant" and "3 flights to Rome" in (i.text_content or "")
        for i in hotel.chat_ctx.items
    )


async def test_cancellation_example() -> None:
    assert await cancellation.main() == ["cancelled", "timed_out"]


async def test_flight_agent_tools_offline() -> None:
    pytest.importorskip("livekit.plugins.openai", reason="needs the examples extra")
    import flight_agent

    assert callable(flight_agent.entrypoint)
    released = asyncio.Event()

    async def fake_search(ctx: Any, origin: str, destination: str) -> str:
        await ctx.update(f"searching {origin}-{destination}")
        await released.wait()
        return f"2 flights {origin}-{destination}"

    llm = ScriptedLLM(
        [
            ToolCall("search_flights", {"origin": "Oslo", "destination": "Rome"}),
            "Searching.",
            ToolCall("watch_booking", {"booking_ref": "AB12"}),
            "Watching.",
            "Found 2 flights.",
        ]
    )
    session: AgentSession[Any] = AgentSession(llm=llm)
    runtime = attach(session, AsyncToolOptions(settle_delay=0.05))
    async with session:
        await session.start(flight_agent.TravelAgent())
        with mock_tools(flight_agent.TravelAgent, {"search_flights": fake_search}):
            await session.run(user_input="Flights from Oslo to Rome?")
        await session.run(user_input="And watch booking AB12.")
        watch = next(t for t in runtime.tasks if t.tool_name == "watch_booking")
        assert watch.cancellable
        assert await runtime.cancel(watch.call_id)
        released.set()
        await runtime.settle(timeout=10)
    assert llm.remaining == 0


@pytest.mark.looptime
async def test_quickstart_agent_runs_a_background_call() -> None:
    """examples/quickstart.py (the README's and the docs' quickstart) imports in livekit's
    server shape, and its agent runs a background call through a real AgentSession:
    acknowledged at once, the result spoken after the slow call returns."""
    pytest.importorskip("livekit.plugins.openai", reason="needs the examples extra")
    pytest.importorskip("livekit.plugins.silero", reason="needs the examples extra")
    import quickstart

    assert isinstance(quickstart.server, AgentServer)
    (param,) = inspect.signature(quickstart.entrypoint).parameters.values()
    assert param.annotation in (JobContext, "JobContext")

    llm = ScriptedLLM(keyword_brain({"flight": ToolCall("search_flights", {"city": "Boston"})}))
    session: AgentSession[Any] = AgentSession(llm=llm)
    runtime = attach(session)  # as the quickstart's entrypoint does, with the default options
    rec = Recorder(runtime)
    async with session:
        await session.start(quickstart.TravelAgent())
        result = await session.run(user_input="Any flights to Boston?")
        result.expect.next_event().is_function_call(name="search_flights")
        assert spoken(session) == ["One moment."]  # acknowledged while the search runs
        await runtime.settle(timeout=60)  # the tool's 10 s, in virtual time
    assert [e.status for e in rec.of("task_ended")] == ["succeeded"]
    assert spoken(session)[-1] == "Result: 3 flights to Boston, the cheapest 189 dollars"


async def test_voice_call_prints_both_sides_as_they_happen() -> None:
    """`make demo`'s live transcript: the caller's and the agent's lines, the background
    call and its delivery, in order (a text-mode session with the demo's own agent and
    scripted LLM; tests/test_audio_call.py runs the real audio call)."""
    pytest.importorskip("numpy", reason="needs the audio extra")
    import voice_call

    from livekit_async_tools.testing.audio import (
        CallClock,
        RecordingSpeaker,
        ScriptedCaller,
        Segment,
    )

    lines: list[str] = []
    clock = CallClock()
    caller = ScriptedCaller(clock)
    session: AgentSession[Any] = AgentSession(llm=ScriptedLLM(voice_call.decide))
    runtime = attach(session, AsyncToolOptions(settle_delay=0.05))
    voice_call.LiveTranscript(session, runtime, caller, RecordingSpeaker(clock), lines.append)
    agent = voice_call.TravelAgent(clock)
    async with session:
        await session.start(agent)
        clock.start()
        for started in caller.on_speech_start:  # as the caller's microphone does
            started(Segment(start=0.5, text="A flight to Boston on Friday?", who="caller"))
        await session.run(user_input="a flight to boston on friday")
        agent.flights_ready.set()
        await runtime.settle(timeout=10)
    said = [line.split("s  ", 1)[1].split() for line in lines]
    assert [(words[0], words[1]) for words in said] == [
        ("caller", "A"),
        ("[tool]", "call_1"),
        ("agent", "I'm"),
        ("[tool]", "call_1"),
        ("[delivery]", "call_1"),
        ("agent", "Good"),
    ], lines
    assert "search_flights(city='Boston') started" in lines[1]
    assert lines[3].endswith("call_1 ended: succeeded")
    assert "Good news: I found 3 flights to Boston" in lines[5]
