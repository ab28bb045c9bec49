"""The package's core scenarios on a realtime (speech-to-speech) model: a real AgentSession
on the strict fake realtime model (tests/support/fake_realtime.py), OpenAI-like and
Gemini-like presets. A deferred result must be spoken exactly once, only through the gate:
never while the caller speaks, never while an AgentTask has the floor, and never by the
server answering the result item by itself (a Gemini-like auto reply)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from livekit.agents import (
    NOT_GIVEN,
    Agent,
    AgentSession,
    AgentTask,
    RunResult,
    __version__,
    llm,
)

from livekit_async_tools import AsyncRunContext, AsyncToolOptions, attach, function_tool
from livekit_async_tools.testing import Reply, ToolCall

from .conftest import Recorder, spoken, until
from .support.fake_realtime import (
    GEMINI_LIKE,
    OPENAI_LIKE,
    FakeRealtimeModel,
    RealtimeProfile,
    RealtimeRequest,
    ReplyRecord,
)

pytestmark = pytest.mark.skipif(
    tuple(int(p) for p in __version__.split(".")[:2]) < (1, 8),
    reason="the fake realtime model implements livekit-agents 1.8's RealtimeSession interface",
)

FAST = AsyncToolOptions(settle_delay=0.05)
GATE_WORDS = ("Background results", "cut off while telling")
RESULT = "3 flights to Paris"
HOLDING_LINE = "Still checking the airlines, thanks for waiting."
DERIVED = re.compile(r"call_\d+_\w+")  # an item the package derived from call_<n>


def openai(reason: str | None = None) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(OPENAI_LIKE, id="openai", marks=marks)


def gemini(reason: str | None = None) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(GEMINI_LIKE, id="gemini", marks=marks)


BOTH = [openai(), gemini()]


# -- the model's brain --------------------------------------------------------------------


def brain(req: RealtimeRequest) -> Reply:
    """A compliant model: announces exactly the deferred outputs the instructions name,
    acknowledges background calls, and answers the caller by keyword."""
    items = list(req.chat_ctx.items)
    outputs = [it for it in items if isinstance(it, llm.FunctionCallOutput)]
    if any(w in req.instructions for w in GATE_WORDS) or "arrived earlier" in req.instructions:
        named = [
            o.output
            for o in outputs
            if DERIVED.fullmatch(o.call_id) and o.call_id in req.instructions
        ]
        return "Result: " + "; ".join(named) if named else ""
    if req.instructions == "ASK_EMAIL":
        return "What is your email?"
    if "keep them company" in req.instructions:  # hold_after's holding line
        return HOLDING_LINE
    if req.instructions:
        return ""
    last = items[-1] if items else None
    if isinstance(last, llm.FunctionCallOutput):
        if DERIVED.fullmatch(last.call_id):  # the server answering a deferred item itself
            return "Result: " + last.output
        if last.output.startswith("["):  # get_running_tasks
            rows = json.loads(last.output)
            return ToolCall("cancel_task", {"call_id": rows[0]["call_id"]}) if rows else "None."
        if "in the background" in last.output:
            return "One moment."
        return f"Done: {last.output}"
    # a steering note, whatever role carried it to the server
    notes = [m.text_content or "" for m in items if isinstance(m, llm.ChatMessage)]
    if any("VIP" in n for n in notes) or "VIP" in req.session_instructions:
        return "Welcome back, valued guest."
    user = req.last_user_text.lower()
    questions = [o.call_id for o in outputs if "_question_" in o.call_id]
    if questions and "8:15 is fine" in user:
        return ToolCall("answer_question", {"question_id": questions[-1], "answer": user})
    overdue = [o.call_id for o in outputs if "_overdue_" in o.call_id]
    if overdue and "keep waiting" in user:
        call_id = overdue[-1].split("_overdue_")[0]
        return ToolCall("extend_task", {"call_id": call_id, "seconds": 5})
    for key, reply in RULES.items():
        if key in user:
            return reply
    return "Sure."


RULES: dict[str, Reply] = {
    "stop": ToolCall("get_running_tasks"),
    "flight": ToolCall("search_flights", {"city": "Paris"}),
    "book": ToolCall("collect_email"),
    "@": ToolCall("record_email", {"email": "ann@example.com"}),
    "hotel desk": ToolCall("transfer_to_hotel_desk"),
    "seat": ToolCall("book_seat"),
    "report": ToolCall("slow_report"),
}


# -- agents -------------------------------------------------------------------------------


class CollectEmail(AgentTask[str]):
    def __init__(self, model: FakeRealtimeModel | None = None) -> None:
        super().__init__(
            instructions="You collect the caller's email address.",
            llm=model if model is not None else NOT_GIVEN,
        )

    async def on_enter(self) -> None:
        self.session.generate_reply(instructions="ASK_EMAIL")

    @function_tool
    async def record_email(self, email: str) -> None:
        """Record the caller's email address."""
        self.complete(email)


class Travel(Agent):
    def __init__(self, task_model: FakeRealtimeModel | None = None) -> None:
        super().__init__(instructions="You are a travel agent.")
        self.progress = asyncio.Event()
        self.release = asyncio.Event()
        self.task_model = task_model

    @function_tool(cancellable=True)
    async def search_flights(self, ctx: AsyncRunContext[Any], city: str) -> str:
        """Search flights to a city."""
        await ctx.update(f"searching flights to {city}")
        await self.progress.wait()
        await ctx.update("half of the airlines checked")
        await self.release.wait()
        return f"3 flights to {city}, the cheapest is 189 dollars with a long story to tell"

    @function_tool
    async def collect_email(self) -> str:
        """Collect the caller's email address."""
        email = await CollectEmail(self.task_model)
        return f"email {email}"

    @function_tool
    async def transfer_to_hotel_desk(self) -> Agent:
        """Hand the caller to the hotel desk."""
        return Hotel(chat_ctx=self.chat_ctx)


class AskingTravel(Travel):
    @function_tool
    async def book_seat(self, ctx: AsyncRunContext[Any]) -> str:
        """Book a seat on the flight the caller picked."""
        answer = await ctx.ask("The 7:40 is sold out. Would the 8:15 do?")
        await self.release.wait()
        return f"booked ({answer})"


class ReportingTravel(Travel):
    @function_tool(timeout=0.3, on_timeout="ask")
    async def slow_report(self, ctx: AsyncRunContext[Any]) -> str:
        """Build the slow report."""
        await self.release.wait()
        return "the report is ready"


class Hotel(Agent):
    def __init__(self, chat_ctx: llm.ChatContext | None = None) -> None:
        super().__init__(instructions="You are the hotel agent.", chat_ctx=chat_ctx)


# -- harness ------------------------------------------------------------------------------


@dataclass
class Call:
    session: AgentSession[Any]
    runtime: Any
    rec: Recorder
    model: FakeRealtimeModel
    agent: Travel

    def result_replies(self) -> list[ReplyRecord]:
        return [r for r in self.model.replies if RESULT in r.text]

    def through_the_gate(self, reply: ReplyRecord) -> bool:
        """The package asked for this reply (its instructions), or adopted the server's
        own reply as a delivery (a ``scheduled`` event naming its speech handle)."""
        if reply.user_initiated:
            return any(w in reply.instructions for w in GATE_WORDS)
        return reply.speech_id is not None and reply.speech_id in {
            ev.speech_id for ev in self.rec.of("reply_updated") if ev.status == "scheduled"
        }

    def assert_result_spoken_once_through_the_gate(self) -> None:
        """Every reply telling the result went through the gate, none started while the
        caller spoke, and the caller heard it in full exactly once."""
        replies = self.result_replies()
        outside = [r for r in replies if not self.through_the_gate(r)]
        assert outside == [], f"told outside the gate: {outside}"
        assert [r for r in replies if r.caller_speaking] == []
        said = [s for s in said_in_full(self.session) if RESULT in s]
        assert len(said) == 1, f"heard in full {len(said)} times: {said}"
        assert len([r for r in replies if r.outcome == "done"]) == 1

    async def idle(self, timeout: float = 10.0) -> None:
        wait = getattr(self.runtime, "wait_for_idle", None) or self.runtime.settle
        await wait(timeout=timeout)
        for sess in self.model.sessions:
            await sess.replies_done()


def said_in_full(session: AgentSession[Any]) -> list[str]:
    """Assistant messages the caller heard to the end (not cut off)."""
    return [
        m.text_content or ""
        for m in session.history.messages()
        if m.role == "assistant" and not m.interrupted
    ]


@contextlib.asynccontextmanager
async def call(
    profile: RealtimeProfile,
    *,
    word_delay: float = 0.0,
    options: AsyncToolOptions = FAST,
    agent_cls: type[Travel] = Travel,
    **agent_kw: Any,
) -> AsyncIterator[Call]:
    model = FakeRealtimeModel(brain, profile=profile, word_delay=word_delay)
    agent = agent_cls(**agent_kw)
    session: AgentSession[Any] = AgentSession(llm=model)
    runtime = attach(session, options)
    rec = Recorder(runtime)
    model.track_speech(session)
    async with session:
        await session.start(agent)
        yield Call(session, runtime, rec, model, agent)
    for sess in model.sessions:
        assert sess.rejected_items == [], sess.rejected_items


async def start_search(c: Call) -> None:
    await c.session.run(user_input="Find me a flight to Paris")
    assert spoken(c.session) == ["One moment."]


# -- scenarios ----------------------------------------------------------------------------


@pytest.mark.parametrize("profile", BOTH)
async def test_ack(profile: RealtimeProfile) -> None:
    async with call(profile) as c:
        result: RunResult[Any] = await c.session.run(user_input="Find me a flight to Paris")
        result.expect.next_event().is_function_call(name="search_flights")
        ack = result.expect.next_event().is_function_call_output().event().item
        assert "searching flights to Paris" in ack.output and "background" in ack.output
        result.expect.next_event().is_message(role="assistant")
        assert spoken(c.session) == ["One moment."]
        assert [t.state for t in c.runtime.tasks] == ["running"]
        c.agent.progress.set()
        c.agent.release.set()
        await c.idle()


@pytest.mark.parametrize("profile", BOTH)
async def test_progress_update_is_spoken_through_the_gate(profile: RealtimeProfile) -> None:
    async with call(profile) as c:
        await start_search(c)
        c.agent.progress.set()
        await until(c.session, lambda: any("half of the airlines" in s for s in spoken(c.session)))
        progress = [r for r in c.model.replies if "half of the airlines" in r.text]
        assert len(progress) == 1 and c.through_the_gate(progress[0]), progress
        c.agent.release.set()
        await c.idle()


@pytest.mark.parametrize("profile", BOTH)
async def test_deferred_result_spoken_once_through_the_gate(profile: RealtimeProfile) -> None:
    async with call(profile) as c:
        await start_search(c)
        c.agent.progress.set()
        c.agent.release.set()
        await c.idle()
        c.assert_result_spoken_once_through_the_gate()
        statuses = [e.status for e in c.rec.of("reply_updated")]
        assert "delivered" in statuses


@pytest.mark.parametrize("profile", BOTH)
async def test_barge_in_redelivers_the_result(profile: RealtimeProfile) -> None:
    async with call(profile, word_delay=0.03) as c:
        await start_search(c)
        c.agent.progress.set()
        c.agent.release.set()
        await until(c.session, lambda: any(r.outcome == "active" for r in c.result_replies()))
        await asyncio.sleep(0.06)  # a few words in
        sess = c.model.live_session
        sess.caller_starts_speaking()
        await until(c.session, lambda: c.session.user_state == "speaking")
        await asyncio.sleep(0.2)
        sess.caller_stops_speaking("Sorry, go on")
        await c.idle()
        replies = c.result_replies()
        assert [r.outcome for r in replies] == ["cancelled", "done"]
        assert "cut off while telling" in replies[-1].instructions
        assert [e.status for e in c.rec.of("reply_updated")].count("interrupted") == 1
        c.assert_result_spoken_once_through_the_gate()


@pytest.mark.parametrize("profile", BOTH)
async def test_result_waits_for_the_caller_to_finish(profile: RealtimeProfile) -> None:
    async with call(profile) as c:
        await start_search(c)
        sess = c.model.live_session
        sess.caller_starts_speaking()
        await until(c.session, lambda: c.session.user_state == "speaking")
        c.agent.progress.set()
        c.agent.release.set()
        await until(c.session, lambda: bool(c.rec.of("task_ended")))
        await asyncio.sleep(0.3)  # many settle delays
        assert c.result_replies() == []
        sess.caller_stops_speaking("I would like a window seat")
        await c.idle()
        answered = [r for r in c.model.replies if r.trigger == "caller_turn"]
        assert len(answered) == 1
        assert c.result_replies()[0].started_at >= answered[0].started_at
        c.assert_result_spoken_once_through_the_gate()


@pytest.mark.parametrize("profile", BOTH)
async def test_control_tools_cancel_a_task_for_the_model(profile: RealtimeProfile) -> None:
    async with call(profile) as c:
        await start_search(c)
        await c.session.run(user_input="Please stop the search")
        await c.idle()
        assert [e.status for e in c.rec.of("task_ended")] == ["cancelled"]
        assert any("was cancelled" in s for s in spoken(c.session))
        assert c.result_replies() == []


async def _pause_scenario(c: Call) -> None:
    await start_search(c)
    booking = c.session.generate_reply(user_input="Please book it")
    await until(
        c.session,
        lambda: (
            isinstance(c.session.current_agent, CollectEmail)
            and "What is your email?" in spoken(c.session)
            and c.session.agent_state == "listening"
        ),
    )
    task_started = asyncio.get_running_loop().time()
    c.agent.progress.set()
    c.agent.release.set()
    await until(c.session, lambda: bool(c.rec.of("task_ended")))
    await asyncio.sleep(0.3)
    during = [r for r in c.model.replies if r.started_at >= task_started]
    assert [r for r in during if "half of the airlines" in r.text or RESULT in r.text] == []
    await c.session.run(user_input="It is ann@example.com")
    await booking
    task_ended = asyncio.get_running_loop().time()
    await c.idle()
    assert all(r.started_at >= task_ended for r in c.result_replies())
    c.assert_result_spoken_once_through_the_gate()
    assert any(
        isinstance(it, llm.ChatMessage) and RESULT in (it.text_content or "")
        for it in c.agent.chat_ctx.items
    )


@pytest.mark.parametrize("profile", BOTH)
async def test_agent_task_pause_same_model(profile: RealtimeProfile) -> None:
    async with call(profile) as c:
        await _pause_scenario(c)


@pytest.mark.parametrize("profile", BOTH)
async def test_agent_task_pause_another_model(profile: RealtimeProfile) -> None:
    task_model = FakeRealtimeModel(brain, profile=profile)
    async with call(profile, task_model=task_model) as c:
        await _pause_scenario(c)


@pytest.mark.parametrize("profile", BOTH)
async def test_handoff_forwards_the_result(profile: RealtimeProfile) -> None:
    async with call(profile) as c:
        await start_search(c)
        await c.session.run(user_input="Put me through to the hotel desk")
        assert isinstance(c.session.current_agent, Hotel)
        hotel = c.session.current_agent
        c.agent.progress.set()
        c.agent.release.set()
        await c.idle()
        c.assert_result_spoken_once_through_the_gate()
        assert any(
            isinstance(it, llm.ChatMessage) and RESULT in (it.text_content or "")
            for it in hotel.chat_ctx.items
        )


@pytest.mark.parametrize("profile", BOTH)
async def test_steer_note_reaches_the_model(profile: RealtimeProfile) -> None:
    async with call(profile) as c:
        c.runtime.steer("The caller is a VIP customer.")
        await asyncio.sleep(0.05)
        await c.session.run(user_input="Hello again")
        assert spoken(c.session) == ["Welcome back, valued guest."]


@pytest.mark.parametrize("profile", BOTH)
async def test_holding_line_keeps_a_silent_caller_company_then_the_result(
    profile: RealtimeProfile,
) -> None:
    """``hold_after``: the line is a reply the package asks for (never the server's own),
    never over the caller, and none comes after the result."""
    options = AsyncToolOptions(settle_delay=0.05, hold_after=0.3)
    async with call(profile, options=options) as c:
        await start_search(c)
        sess = c.model.live_session
        sess.caller_starts_speaking()  # the caller talks for longer than hold_after
        await until(c.session, lambda: c.session.user_state == "speaking")
        await asyncio.sleep(0.7)
        assert HOLDING_LINE not in spoken(c.session)
        sess.caller_stops_speaking("Hmm, let me think")
        await until(c.session, lambda: HOLDING_LINE in spoken(c.session))
        lines = [r for r in c.model.replies if r.text == HOLDING_LINE]
        assert all(r.user_initiated and "keep them company" in r.instructions for r in lines)
        c.agent.progress.set()
        c.agent.release.set()
        await c.idle()
        c.assert_result_spoken_once_through_the_gate()
        await asyncio.sleep(0.6)  # two more intervals: nothing is pending any more
        said = spoken(c.session)
        (told,) = [i for i, s in enumerate(said) if RESULT in s]
        assert HOLDING_LINE not in said[told:]
        lines = [r for r in c.model.replies if r.text == HOLDING_LINE]
        assert lines and not any(r.caller_speaking for r in lines)


@pytest.mark.parametrize("profile", BOTH)
async def test_a_call_asks_the_caller_and_goes_on_with_the_answer(
    profile: RealtimeProfile,
) -> None:
    """``ctx.ask`` on a realtime model: the question is told once, through the gate; the
    caller's answer reaches the tool through ``answer_question``; the result follows."""
    async with call(profile, agent_cls=AskingTravel) as c:
        await c.session.run(user_input="Get me a seat please")
        await until(c.session, lambda: any("8:15" in s for s in spoken(c.session)))
        asked = [r for r in c.model.replies if "Would the 8:15 do?" in r.text]
        assert len(asked) == 1 and c.through_the_gate(asked[0]), asked
        assert not asked[0].caller_speaking
        await c.model.live_session.replies_done()
        await c.model.live_session.caller_says("Yes, the 8:15 is fine")
        c.agent.release.set()
        await c.idle()
        await until(
            c.session, lambda: any("booked (yes, the 8:15 is fine)" in s for s in spoken(c.session))
        )
        told = [r for r in c.model.replies if "booked (" in r.text]
        assert len(told) == 1 and c.through_the_gate(told[0]), told
        assert [e.status for e in c.rec.of("task_ended")] == ["succeeded"]


@pytest.mark.parametrize("profile", BOTH)
async def test_an_overdue_call_asks_and_the_model_extends_it(profile: RealtimeProfile) -> None:
    """``on_timeout="ask"`` on a realtime model: at the deadline the caller is asked once,
    through the gate; the model extends the call (``extend_task``) and its result
    follows."""
    async with call(profile, agent_cls=ReportingTravel) as c:
        await c.session.run(user_input="The report please")
        await until(c.session, lambda: any("taking longer" in s for s in spoken(c.session)))
        asked = [r for r in c.model.replies if "taking longer" in r.text]
        assert len(asked) == 1 and c.through_the_gate(asked[0]), asked
        await c.model.live_session.replies_done()
        await c.model.live_session.caller_says("Yes, keep waiting")
        await until(c.session, lambda: any("5 more seconds" in s for s in spoken(c.session)))
        await asyncio.sleep(0.5)  # past the first deadline and the decision window start
        c.agent.release.set()
        await c.idle()
        told = [r for r in c.model.replies if "the report is ready" in r.text]
        assert len(told) == 1 and c.through_the_gate(told[0]), told
        assert [e.status for e in c.rec.of("task_ended")] == ["succeeded"]


@pytest.mark.parametrize("profile", [gemini()])
async def test_no_reconnect_per_background_call(profile: RealtimeProfile) -> None:
    async with call(profile) as c:
        await asyncio.sleep(0.05)
        before = c.model.reconnects
        await start_search(c)
        c.agent.progress.set()
        c.agent.release.set()
        await c.idle()
        assert c.model.reconnects == before, [s.tool_updates for s in c.model.sessions]


async def test_the_gate_check_catches_a_server_reply_outside_the_gate() -> None:
    """A result item written while the gate is shut makes a Gemini-like server tell it at
    once: `through_the_gate` must call that a violation."""
    async with call(GEMINI_LIKE) as c:
        await start_search(c)
        ctx = c.agent.chat_ctx.copy()
        ctx.items.append(
            llm.FunctionCall(call_id="call_1_x", name="search_flights", arguments="{}")
        )
        ctx.items.append(llm.FunctionCallOutput(call_id="call_1_x", output=RESULT, is_error=False))
        await c.agent.update_chat_ctx(ctx)
        await until(c.session, lambda: bool(c.result_replies()))
        await c.model.live_session.replies_done()
        assert [c.through_the_gate(r) for r in c.result_replies()] == [False]
        c.agent.progress.set()
        c.agent.release.set()
        await c.idle()
