"""``hold_after``: a caller waiting in silence for a pending result is kept company by
one short holding line at a time (real text-mode sessions, virtual time)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from livekit.agents import Agent

from livekit_async_tools import AsyncRunContext, AsyncToolOptions, function_tool
from livekit_async_tools.testing import LLMRequest, ScriptedLLM, ToolCall

from .conftest import Recorder, named_outputs, spoken, start, until
from .test_handoff import CollectEmail

pytestmark = pytest.mark.looptime

HOLD = AsyncToolOptions(settle_delay=0.05, hold_after=10)
LINE = "Still checking the airlines, thanks for waiting."


class Desk(Agent):
    def __init__(self, work: float = 35.0) -> None:
        super().__init__(instructions="desk")
        self.work = work

    @function_tool
    async def search(self, ctx: AsyncRunContext) -> str:
        """Search every airline."""
        await ctx.update("asking the airlines")
        await asyncio.sleep(self.work / 2)
        await ctx.update("half of them answered", delivery="silent")
        await asyncio.sleep(self.work / 2)
        return "3 flights"

    @function_tool
    async def find_hotel(self, ctx: AsyncRunContext) -> str:
        """Find a hotel room."""
        await ctx.update("calling the hotels")
        await asyncio.sleep(self.work)
        return "2 rooms"

    @function_tool
    async def book(self, ctx: AsyncRunContext) -> str:
        """Book a seat: asks the caller, then takes a while."""
        answer = await ctx.ask("Would the 8:15 do?")
        await ctx.update(f"booking ({answer})", delivery="silent")
        await asyncio.sleep(self.work)
        return "booked"

    @function_tool(timeout=12, on_timeout="ask")
    async def slow_search(self, ctx: AsyncRunContext) -> str:
        """Search every airline, asking the caller at 12 s whether to keep waiting."""
        await ctx.update("asking the airlines", delivery="silent")
        await asyncio.sleep(self.work)
        return "3 flights"

    @function_tool
    async def collect_email(self) -> str:
        """Collect the caller's email."""
        return f"email {await CollectEmail()}"


def brain(req: LLMRequest) -> Any:
    if "keep them company" in req.instructions:
        return LINE
    if "ASK_EMAIL" in req.instructions:
        return "What is your email?"
    named = named_outputs(req)
    if named is not None:
        if any("taking longer than expected" in it.output for it in named):
            return "It is taking longer. Keep waiting?"
        return "Result: " + "; ".join(it.output for it in named) if named else ""
    last = req.chat_ctx.items[-1]
    if last.type == "function_call_output":
        return "One moment." if "background" in last.output else f"Done: {last.output}"
    user = req.last_user_text.lower()
    question = [
        it.call_id
        for it in req.chat_ctx.items
        if it.type == "function_call_output" and "_question_" in it.call_id
    ]
    if question and "8:15 is fine" in user:
        return ToolCall("answer_question", {"question_id": question[-1], "answer": user})
    if "keep waiting" in user:
        return ToolCall("extend_task", {"call_id": "call_1", "seconds": 100})
    if "book" in user:
        return ToolCall("book")
    if "slow" in user:
        return ToolCall("slow_search")
    if "flights and a hotel" in user:
        return [ToolCall("search"), ToolCall("find_hotel")]
    if "@" in user:
        return ToolCall("record_email", {"email": "ann@example.com"})
    if "email" in user:
        return ToolCall("collect_email")
    if "search" in user:
        return ToolCall("search")
    return "Sure."


def holding_requests(llm_: ScriptedLLM) -> list[LLMRequest]:
    return [r for r in llm_.requests if "keep them company" in r.instructions]


def line_times(rec: Recorder) -> list[float]:
    """When each holding line (a follow-up) was scheduled, from the recorded events."""
    return [
        e.scheduled_at
        for e in rec.of("reply_updated")
        if e.status == "scheduled" and e.call_ids[0].startswith("follow_up_")
    ]


async def test_a_holding_line_after_each_silent_interval_and_none_after_the_result() -> None:
    llm_ = ScriptedLLM(brain)
    session, runtime, rec = await start(Desk(work=35), llm_, HOLD)
    async with session:
        await session.run(user_input="search flights")
        await asyncio.sleep(10.5)
        assert spoken(session)[-1] == LINE
        first = holding_requests(llm_)[0].instructions
        assert "waiting in silence for 10 seconds for search" in first
        assert "(last progress: asking the airlines)" in first
        await asyncio.sleep(30)
        await runtime.settle(timeout=30)
        await asyncio.sleep(20)  # nothing is pending any more: no more lines
    said = spoken(session)
    assert said.count(LINE) == 3  # at about 10, 20 and 30 s; the result came at 35 s
    assert said[-1] == "Result: 3 flights"
    times = line_times(rec)
    assert len(times) == 3
    # once per interval: each line needs a new full interval of silence after the last
    assert all(b - a >= 10 for a, b in itertools.pairwise(times))
    assert "(last progress: half of them answered)" in holding_requests(llm_)[-1].instructions


async def test_off_by_default() -> None:
    llm_ = ScriptedLLM(brain)
    session, runtime, _rec = await start(Desk(work=35), llm_)
    async with session:
        await session.run(user_input="search flights")
        await runtime.settle(timeout=60)
    assert not holding_requests(llm_)
    assert AsyncToolOptions().hold_after is None


async def test_talking_starts_the_silence_over() -> None:
    llm_ = ScriptedLLM(brain)
    session, runtime, _rec = await start(Desk(work=60), llm_, HOLD)
    async with session:
        await session.run(user_input="search flights")
        for _ in range(3):
            await asyncio.sleep(8)
            await session.run(user_input="how is the weather?")
        assert not holding_requests(llm_)  # never 10 s of silence so far
        await asyncio.sleep(10.5)
        assert len(holding_requests(llm_)) == 1
        await runtime.settle(timeout=30)


async def test_a_result_before_the_interval_ends_means_no_line() -> None:
    llm_ = ScriptedLLM(brain)
    session, runtime, _rec = await start(Desk(work=9), llm_, HOLD)
    async with session:
        await session.run(user_input="search flights")
        await runtime.settle(timeout=30)
        await asyncio.sleep(15)
    assert not holding_requests(llm_)


async def test_a_line_not_spoken_yet_is_withdrawn_when_the_result_is_ready() -> None:
    # a long settle delay: the line is queued at 9.5 s, the result is ready at 11 s,
    # before the line's turn (11.5 s)
    options = AsyncToolOptions(settle_delay=2.0, hold_after=9.5)
    llm_ = ScriptedLLM(brain)
    session, runtime, rec = await start(Desk(work=11), llm_, options)
    async with session:
        await session.run(user_input="search flights")
        await runtime.settle(timeout=30)
    assert not holding_requests(llm_)
    skipped = [e for e in rec.of("reply_updated") if e.status == "skipped"]
    assert [(e.call_ids, e.reason) for e in skipped] == [(("follow_up_1",), "superseded")]
    assert spoken(session)[-1] == "Result: 3 flights"


async def test_no_line_for_an_origin_paused_under_an_agent_task() -> None:
    llm_ = ScriptedLLM(brain)
    session, runtime, _rec = await start(Desk(work=40), llm_, HOLD)
    async with session:
        await session.run(user_input="search flights")
        collecting = session.generate_reply(user_input="take my email")
        await until(session, lambda: isinstance(session.current_agent, CollectEmail))
        await asyncio.sleep(15)  # silence, but the task has the floor
        assert not holding_requests(llm_)
        await session.run(user_input="it is ann@example.com")
        await collecting
        await runtime.settle(timeout=60)


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), "10", True])
def test_bad_hold_after_values_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="hold_after must be a number of seconds > 0"):
        AsyncToolOptions(hold_after=bad)


async def test_in_a_voice_call_the_line_never_starts_while_the_caller_speaks() -> None:
    from livekit_async_tools.testing._fake_voice import FAKE_VOICE_SUPPORTED

    if not FAKE_VOICE_SUPPORTED:
        pytest.skip("FakeVoice needs livekit-agents' turn_handling options")
    from .test_regressions_voice import Voice

    call = Voice(Desk(work=60), brain, HOLD)
    async with call:
        await call.voice.caller_says("search flights please", duration=1.0)
        await asyncio.sleep(6)
        call.voice.caller_starts()  # a long story, right through the interval
        await asyncio.sleep(12)
        call.voice.caller_stops("and that is why I love Boston")
        stopped = asyncio.get_running_loop().time()
        await asyncio.sleep(25)
        lines = [s for s in call.voice.agent_segments if s.text == LINE]
        assert lines, [s.text for s in call.voice.agent_segments]
        assert lines[0].start >= stopped + 10  # a full silent interval after the caller
        assert [s["user_state"] for s in call.scheduled] == ["listening"] * len(call.scheduled)
        assert not [o for o in call.voice.overlaps() if o.agent_started_it]
        await call.runtime.settle(timeout=60)


async def test_several_calls_share_one_line_that_names_them_all() -> None:
    llm_ = ScriptedLLM(brain)
    session, runtime, rec = await start(Desk(work=25), llm_, HOLD)
    async with session:
        await session.run(user_input="find me flights and a hotel")
        assert len(runtime.tasks) == 2
        await asyncio.sleep(10.5)
        (line,) = holding_requests(llm_)
        assert "for search, find_hotel" in line.instructions
        assert (
            "(last progress: search: asking the airlines; find_hotel: calling the hotels)"
            in line.instructions
        )
        assert len(line_times(rec)) == 1  # one line for the session, not one per call
        await runtime.settle(timeout=60)


async def test_a_reply_before_the_line_starts_withdraws_it() -> None:
    # the line is queued at 10 s and waits out a 2 s settle delay; the caller types at
    # 10.5 s: the line is withdrawn, and the next one needs a new silent interval
    options = AsyncToolOptions(settle_delay=2.0, hold_after=10)
    llm_ = ScriptedLLM(brain)
    session, runtime, rec = await start(Desk(work=60), llm_, options)
    async with session:
        await session.run(user_input="search flights")
        await asyncio.sleep(10.5)
        answered = asyncio.get_running_loop().time()
        await session.run(user_input="how is the weather?")
        await asyncio.sleep(5)
        assert not holding_requests(llm_)
        skipped = [e for e in rec.of("reply_updated") if e.status == "skipped"]
        assert [(e.call_ids, e.reason) for e in skipped] == [(("follow_up_1",), "superseded")]
        await asyncio.sleep(10)
        assert len(holding_requests(llm_)) == 1
        assert line_times(rec)[0] >= answered + 10
        await runtime.settle(timeout=60)


async def test_no_line_while_a_question_to_the_caller_is_open() -> None:
    llm_ = ScriptedLLM(brain)
    session, runtime, _rec = await start(Desk(work=30), llm_, HOLD)
    async with session:
        await session.run(user_input="book me a seat")
        await asyncio.sleep(25)  # the question was asked; the caller thinks in silence
        assert not holding_requests(llm_)
        await session.run(user_input="yes, the 8:15 is fine")
        await asyncio.sleep(10.5)  # now the caller waits for the booking
        (line,) = holding_requests(llm_)
        assert "(last progress: booking (yes, the 8:15 is fine))" in line.instructions
        await runtime.settle(timeout=60)


async def test_no_line_while_the_caller_is_asked_whether_to_keep_waiting() -> None:
    """An overdue call (``on_timeout="ask"``) asked the caller a question too: the
    caller is the one expected to speak, until the LLM extends the call."""
    options = AsyncToolOptions(settle_delay=0.05, hold_after=10, timeout_decision_window=30)
    llm_ = ScriptedLLM(brain)
    session, runtime, rec = await start(Desk(work=60), llm_, options)
    async with session:
        await session.run(user_input="slow search please")
        await asyncio.sleep(11)
        assert spoken(session)[-1] == LINE  # at 10 s, before the deadline
        await asyncio.sleep(15)  # asked at 12 s; the caller thinks in silence until 26 s
        assert spoken(session)[-1] == "It is taking longer. Keep waiting?"
        assert len(holding_requests(llm_)) == 1
        extended = await session.run(user_input="yes, keep waiting")
        outs = [e.item.output for e in extended.events if e.type == "function_call_output"]
        assert "may now run 100 more seconds" in outs[0]
        decided = asyncio.get_running_loop().time()
        await asyncio.sleep(10.5)  # the caller waits for the result again: company again
        assert len(holding_requests(llm_)) == 2
        assert line_times(rec)[1] >= decided + 10
        await runtime.settle(timeout=60)
    assert [e.status for e in rec.of("task_ended")] == ["succeeded"]
    assert spoken(session)[-1] == "Result: 3 flights"


async def test_in_a_voice_call_a_line_cut_off_by_the_caller_is_not_said_again() -> None:
    from livekit_async_tools.testing._fake_voice import FAKE_VOICE_SUPPORTED

    if not FAKE_VOICE_SUPPORTED:
        pytest.skip("FakeVoice needs livekit-agents' turn_handling options")
    from .test_regressions_voice import Voice

    call = Voice(Desk(work=60), brain, HOLD)
    async with call:
        await call.voice.caller_says("search flights please", duration=1.0)
        await until(call.session, lambda: bool(call.scheduled), timeout=20)  # the line
        await until(call.session, lambda: call.voice.agent_playing, timeout=5)
        await asyncio.sleep(0.5)
        call.voice.caller_starts()  # a barge-in, half a second into the line
        await asyncio.sleep(1.5)
        call.voice.caller_stops("sorry, go on")
        stopped = asyncio.get_running_loop().time()
        await asyncio.sleep(8)
        line = [e for e in call.rec.of("reply_updated") if e.call_ids == ("follow_up_1",)]
        assert [(e.status, e.reason) for e in line] == [
            ("scheduled", None),
            ("interrupted", None),
            ("skipped", "superseded"),
        ]
        assert [s.interrupted for s in call.voice.agent_segments if s.text == LINE] == [True]
        await asyncio.sleep(15)  # a new line, after a full silent interval
        later = [s for s in call.voice.agent_segments if s.text == LINE][1:]
        assert later and later[0].start >= stopped + 10
        assert not [o for o in call.voice.overlaps() if o.agent_started_it]
        await call.runtime.settle(timeout=60)


class Lobby(Agent):
    """Has no background tool: a call forwarded to it is still one the caller waits on."""

    def __init__(self) -> None:
        super().__init__(instructions="lobby")


class ForwardingDesk(Desk):
    @function_tool
    async def to_lobby(self) -> Agent:
        """Hand the caller to the lobby."""
        return Lobby()


def lobby_brain(req: LLMRequest) -> Any:
    last = req.chat_ctx.items[-1]
    if "lobby" in req.last_user_text and last.type == "message" and last.role == "user":
        return ToolCall("to_lobby")
    return brain(req)


async def test_the_agent_a_call_is_forwarded_to_keeps_the_caller_company() -> None:
    """The origin handed the caller off for good (``on_handoff="forward"``): the new
    agent will speak the result, so it says the holding line too."""
    llm_ = ScriptedLLM(lobby_brain)
    session, runtime, rec = await start(ForwardingDesk(work=35), llm_, HOLD)
    async with session:
        await session.run(user_input="search flights")
        await session.run(user_input="take me to the lobby")
        assert isinstance(session.current_agent, Lobby)
        await asyncio.sleep(10.5)
        assert spoken(session)[-1] == LINE
        (line,) = holding_requests(llm_)
        assert line.instructions.startswith("lobby")
        assert "waiting in silence for 10 seconds for search" in line.instructions
        await runtime.settle(timeout=60)
    assert spoken(session)[-1] == "Result: 3 flights"
    assert [e.status for e in rec.of("task_ended")] == ["succeeded"]
