"""Conversation etiquette in real offline audio calls: barge-ins, re-delivery, drops,
and the "interrupt" delivery mode. Assertions come from the recorded timeline."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("piper", reason="needs the audio extra")
pytest.importorskip("pocketsphinx", reason="needs the audio extra")
pytest.importorskip("livekit.plugins.silero", reason="needs the audio extra")

from livekit.agents import Agent, AgentSession, llm

from livekit_async_tools import (
    AsyncRunContext,
    AsyncToolOptions,
    AsyncToolRuntime,
    attach,
    function_tool,
)
from livekit_async_tools.testing import LLMRequest, Reply, ScriptedLLM, ToolCall
from livekit_async_tools.testing.audio import (
    CallClock,
    CallRecorder,
    RecordingSpeaker,
    ScriptedCaller,
    Segment,
    voice_session_kwargs,
)

SPEED = 2.0
REPORT = (
    "The sales report is ready: revenue grew twelve percent this quarter, "
    "the northern region did best, and costs stayed flat."
)
STORY = (
    "Once upon a time there was a little airport by the sea, where every morning "
    "the first plane left at dawn and the pilots waved to the fishermen below."
)


QUESTION = "The seven forty flight is sold out. Would the eight fifteen flight work for you?"
OVERDUE = "This is taking longer than expected. Should I keep checking?"
HOLD_LINE = "I am still working on it, thank you for waiting."


class Desk(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are the travel desk.")
        self.report_ready = asyncio.Event()
        self.gate_changes: asyncio.Queue[str] = asyncio.Queue()
        self.answers: list[str] = []
        self.hotel_ready = asyncio.Event()

    @function_tool(timeout=4, on_timeout="ask")
    async def find_hotel(self, ctx: AsyncRunContext) -> str:
        """Find a hotel room."""
        await ctx.update("looking for a hotel room")
        await self.hotel_ready.wait()
        return "The River Inn has a room for you."

    @function_tool
    async def book_flight(self, ctx: AsyncRunContext) -> str:
        """Book the morning flight."""
        await ctx.update("checking the seats")
        await asyncio.sleep(1.0)
        self.answers.append(await ctx.ask(QUESTION))
        return "You are booked on the eight fifteen flight."

    @function_tool
    async def build_report(self, ctx: AsyncRunContext) -> str:
        """Build the sales report."""
        await ctx.update("building the report")
        await self.report_ready.wait()
        return REPORT

    @function_tool
    async def watch_gate(self, ctx: AsyncRunContext) -> str:
        """Watch the departure gate for changes."""
        await ctx.update("watching the gate")
        while (gate := await self.gate_changes.get()) != "done":
            await ctx.update(f"gate change: now boarding at gate {gate}", delivery="interrupt")
        return "boarding has finished"


def decide(req: LLMRequest) -> Reply:
    items = list(req.chat_ctx.items)
    text = req.instructions
    if "keep them company" in text:
        return HOLD_LINE
    if "Background results" in text or "cut off while telling" in text:
        wanted = set(re.findall(r"[\w-]+_(?:result|progress_\d+|question_\d+|overdue_\d+)", text))
        outputs = [it for it in items if isinstance(it, llm.FunctionCallOutput)]
        said = [it.output for it in outputs if it.call_id in wanted]
        if any("taking longer than expected" in o for o in said):
            return OVERDUE
        return " ".join(QUESTION if "needs the caller's answer" in o else o for o in said)
    last = items[-1] if items else None
    if isinstance(last, llm.FunctionCallOutput):
        if last.name == "answer_question":
            return "Great."
        return "I'm on it." if "background" in last.output else ""
    heard = req.last_user_text.lower()
    question = re.findall(
        r"question id ([\w-]+)\)",
        " ".join(it.output for it in items if isinstance(it, llm.FunctionCallOutput)),
    )
    answered = any(
        isinstance(it, llm.FunctionCall) and it.name == "answer_question" for it in items
    )
    if question and not answered and any(w in heard for w in ("yes", "fine", "later", "works")):
        return ToolCall("answer_question", {"question_id": question[-1], "answer": heard})
    overdue = re.findall(
        r"\(call id ([\w-]+)\) is taking longer",
        " ".join(it.output for it in items if isinstance(it, llm.FunctionCallOutput)),
    )
    extended = any(isinstance(it, llm.FunctionCall) and it.name == "extend_task" for it in items)
    if overdue and not extended and any(w in heard for w in ("yes", "keep", "please")):
        return ToolCall("extend_task", {"call_id": overdue[-1], "seconds": 60})
    if "hotel" in heard:
        return ToolCall("find_hotel")
    if "book" in heard or "flight" in heard:
        return ToolCall("book_flight")
    if "report" in heard:
        return ToolCall("build_report")
    if "gate" in heard:
        return ToolCall("watch_gate")
    if "story" in heard or "tell me" in heard:  # tolerant of STT mis-hearing
        return STORY
    return "Sure, take your time."


@dataclass
class Call:
    session: AgentSession[Any]
    runtime: AsyncToolRuntime
    caller: ScriptedCaller
    speaker: RecordingSpeaker
    recorder: CallRecorder
    llm: ScriptedLLM
    desk: Desk


@asynccontextmanager
async def audio_call(options: AsyncToolOptions) -> AsyncIterator[Call]:
    clock = CallClock(speed=SPEED)
    caller = ScriptedCaller(clock)
    llm_ = ScriptedLLM(decide)
    session: AgentSession[Any] = AgentSession(llm=llm_, **voice_session_kwargs())
    speaker = RecordingSpeaker(clock, who=lambda: type(session.current_agent).__name__)
    session.input.audio = caller
    session.output.audio = speaker
    runtime = attach(session, options)
    recorder = CallRecorder(session, runtime, caller, speaker)
    desk = Desk()
    async with session:
        await session.start(desk)
        clock.start()
        await clock.sleep(0.5)
        yield Call(session, runtime, caller, speaker, recorder, llm_, desk)
        await runtime.settle(timeout=60)
    await speaker.aclose()


BARGE_IN = "Wait, hold on a second, somebody is at the door, give me a moment please."


def barge_in_on_replies(call: Call, times: int) -> None:
    """Make the caller talk over the next ``times`` deferred replies, 1 s into each."""
    armed: list[object] = []

    def on_reply(ev: Any) -> None:
        if ev.status == "scheduled" and len(armed) < times:
            armed.append(call.caller.barge_in(call.speaker, BARGE_IN, after=1.0))

    call.runtime.on("reply_updated", on_reply)


def reply_segments(call: Call, call_id: str) -> list[Segment]:
    """The agent segments of each scheduled deferred reply for ``call_id``."""
    return [
        call.recorder.speech_after(e.time)
        for e in call.recorder.events
        if e.kind == "reply_updated"
        and call_id in e.call_ids
        and getattr(e.payload, "status", "") == "scheduled"
    ]


@pytest.mark.parametrize(("barge_ins", "expect_delivered"), [(1, True), (3, False)])
async def test_barge_in_redelivers_then_drops(barge_ins: int, expect_delivered: bool) -> None:
    async with audio_call(AsyncToolOptions(settle_delay=0.3, max_redeliveries=2)) as call:
        await call.recorder.ask(
            ["Can you build my sales report?", "Please build the sales report."],
            lambda: any(e.kind == "task_started" for e in call.recorder.events),
        )
        report = next(e.call_ids[0] for e in call.recorder.events if e.kind == "task_started")
        barge_in_on_replies(call, barge_ins)
        call.desk.report_ready.set()
        await call.recorder.wait_until(
            lambda: any(s in call.recorder.replies(report) for s in ("delivered", "dropped"))
        )
        await call.recorder.settled()

    statuses = call.recorder.replies(report)
    cut = reply_segments(call, report)
    if expect_delivered:
        assert statuses == ["scheduled", "interrupted", "scheduled", "delivered"]
        first, last = cut[0], call.speaker.segments[-1]
        assert first.interrupted and not last.interrupted
        assert last.text == REPORT  # completed in full on the second attempt
        barge = call.caller.segments[-1]
        assert last.start >= (barge.end or 0)  # after the caller's own turn ...
        answer = next(s for s in call.speaker.segments if s.text == "Sure, take your time.")
        assert answer.start < last.start  # ... and after it was answered
        retry = [r for r in call.llm.requests if "cut off while telling" in r.instructions]
        assert len(retry) == 1
    else:
        assert statuses == ["scheduled", "interrupted"] * 3 + ["dropped"]
        dropped = [
            e.payload
            for e in call.recorder.events
            if e.kind == "reply_updated" and getattr(e.payload, "status", "") == "dropped"
        ]
        assert [d.reason for d in dropped] == ["max_redeliveries"]
        assert all(s.interrupted for s in cut)


async def test_interrupt_update_cuts_the_agent_but_waits_for_the_caller() -> None:
    async with audio_call(AsyncToolOptions(settle_delay=0.3)) as call:
        await call.recorder.ask(
            ["Please watch my gate.", "Can you watch the gate for me?"],
            lambda: any(e.kind == "task_started" for e in call.recorder.events),
        )
        watch = next(e.call_ids[0] for e in call.recorder.events if e.kind == "task_started")

        # 1) the agent is telling a long story: an "interrupt" update cuts it
        story_started = asyncio.Event()
        call.speaker.on_speech_start.append(lambda _seg: story_started.set())
        await call.caller.say("Tell me a story while I wait.")
        await call.recorder.wait_until(story_started.is_set)
        call.speaker.on_speech_start.clear()
        await call.caller.clock.sleep(2.0)
        t_change = call.caller.clock.now()
        call.desk.gate_changes.put_nowait("B 12")
        await call.recorder.wait_until(lambda: "delivered" in call.recorder.replies(watch))
        story = next(s for s in call.speaker.segments if s.text.startswith("Once upon"))
        first = call.recorder.speech_after(t_change)
        assert story.interrupted, "the interrupt update must cut the agent's own speech"
        assert "gate B 12" in first.text
        assert first.start - (story.end or 0) < 3.0
        await call.recorder.settled()

        # 2) the caller is speaking: the next "interrupt" update waits for them
        n_delivered = call.recorder.replies(watch).count("delivered")

        def change_mid_sentence(_seg: Segment) -> None:
            async def later() -> None:
                await call.caller.clock.sleep(1.0)
                call.desk.gate_changes.put_nowait("C 3")

            pending.append(asyncio.ensure_future(later()))

        pending: list[asyncio.Future[None]] = []

        call.caller.on_speech_start.append(change_mid_sentence)
        await call.caller.say("I am walking to the gate now, and I will be there in five minutes.")
        call.caller.on_speech_start.clear()
        await call.recorder.wait_until(
            lambda: call.recorder.replies(watch).count("delivered") > n_delivered
        )
        talk = call.caller.segments[-1]
        second = next(s for s in call.speaker.segments if "gate C 3" in s.text)
        assert second.start >= (talk.end or 0), "an interrupt update never talks over the caller"
        assert not second.interrupted
        call.desk.gate_changes.put_nowait("done")
        await call.recorder.settled()


async def test_a_question_waits_for_the_caller_is_re_asked_after_a_barge_in_and_answered() -> None:
    async with audio_call(AsyncToolOptions(settle_delay=0.3)) as call:
        await call.recorder.ask(
            ["Please book me the morning flight.", "Can you book the flight?"],
            lambda: any(e.kind == "task_started" for e in call.recorder.events),
        )
        book = next(e.call_ids[0] for e in call.recorder.events if e.kind == "task_started")
        barge_in_on_replies(call, 1)  # the caller talks over the question once
        await call.recorder.wait_until(
            lambda: call.recorder.replies(book).count("delivered") >= 1, timeout=90
        )
        await call.recorder.ask(
            ["Yes, the later one is fine.", "Yes, that works."],
            lambda: bool(call.desk.answers),
        )
        await call.recorder.wait_until(
            lambda: call.recorder.replies(book).count("delivered") >= 2, timeout=90
        )
        await call.recorder.settled()

    asked = [s for s in call.speaker.segments if s.text == QUESTION]
    assert len(asked) == 2 and asked[0].interrupted and not asked[1].interrupted
    talking = [(c.start, c.end or c.start) for c in call.caller.segments]
    for seg in asked:
        assert not [t for t in talking if t[0] <= seg.start < t[1]], "asked over the caller"
    assert call.desk.answers and any(w in call.desk.answers[0] for w in ("yes", "fine", "works"))
    assert call.speaker.segments[-1].text == "You are booked on the eight fifteen flight."


async def test_at_the_deadline_the_caller_is_asked_by_voice_and_keeps_waiting() -> None:
    async with audio_call(AsyncToolOptions(settle_delay=0.3)) as call:
        await call.recorder.ask(
            ["Can you find me a hotel room?", "Please find a hotel for me."],
            lambda: any(e.kind == "task_started" for e in call.recorder.events),
        )
        hotel = next(e.call_ids[0] for e in call.recorder.events if e.kind == "task_started")
        await call.recorder.wait_until(
            lambda: any(s.text == OVERDUE for s in call.speaker.segments), timeout=60
        )
        await call.recorder.ask(
            ["Yes, please keep checking.", "Yes, keep going."],
            lambda: any(
                isinstance(it, llm.FunctionCall) and it.name == "extend_task"
                for it in call.session.history.items
            ),
        )
        call.desk.hotel_ready.set()
        await call.recorder.wait_until(lambda: "delivered" in call.recorder.replies(hotel)[2:])
        await call.recorder.settled()

    ended = [e for e in call.recorder.events if e.kind == "task_ended"]
    assert [getattr(e.payload, "status", "") for e in ended] == ["succeeded"]
    asked = next(s for s in call.speaker.segments if s.text == OVERDUE)
    talking = [(c.start, c.end or c.start) for c in call.caller.segments]
    assert not [t for t in talking if t[0] <= asked.start < t[1]], "asked over the caller"
    assert call.speaker.segments[-1].text == "The River Inn has a room for you."


async def test_a_holding_line_keeps_a_silent_caller_company_and_never_talks_over_them() -> None:
    async with audio_call(AsyncToolOptions(settle_delay=0.3, hold_after=6)) as call:
        await call.recorder.ask(
            ["Can you build my sales report?", "Please build the sales report."],
            lambda: any(e.kind == "task_started" for e in call.recorder.events),
        )
        report = next(e.call_ids[0] for e in call.recorder.events if e.kind == "task_started")
        await call.recorder.wait_until(
            lambda: any(s.text == HOLD_LINE for s in call.speaker.segments), timeout=60
        )
        await call.caller.say("Okay, I am still here, take your time with it please.")
        await call.recorder.wait_until(
            lambda: sum(s.text == HOLD_LINE for s in call.speaker.segments) >= 2, timeout=60
        )
        call.desk.report_ready.set()
        await call.recorder.wait_until(lambda: "delivered" in call.recorder.replies(report))
        await call.recorder.settled()

    lines = [s for s in call.speaker.segments if s.text == HOLD_LINE]
    talking = [(c.start, c.end or c.start) for c in call.caller.segments]
    for line in lines:
        assert not [t for t in talking if t[0] <= line.start < t[1]], "a line over the caller"
    said_last = max(c.end or c.start for c in call.caller.segments)
    assert lines[1].start >= said_last + 6 * 0.9  # a full silent interval after the caller
    assert call.speaker.segments[-1].text == REPORT
