"""`AsyncRunContext.ask`: a background call asks the caller through the gate and goes on
with the answer the LLM passes back (`answer_question`). Real text-mode sessions."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from livekit.agents import Agent, llm

from livekit_async_tools import (
    AskTimeout,
    AsyncRunContext,
    AsyncToolOptions,
    QuestionNotAsked,
    function_tool,
)
from livekit_async_tools.testing import LLMRequest, ScriptedLLM, ToolCall

from .conftest import FAST, named_outputs, spoken, start, until
from .test_handoff import CollectEmail

QUESTION_ID = re.compile(r"question id (\S+?)\)")

pytestmark = pytest.mark.looptime


def open_question(items: list[Any]) -> str | None:
    """The id of the last question the LLM saw and has not answered yet."""
    answered = {
        it.arguments for it in items if it.type == "function_call" and it.name == "answer_question"
    }
    for it in reversed(items):
        if it.type == "function_call_output" and "needs the caller's answer" in it.output:
            match = QUESTION_ID.search(it.output)
            assert match, it.output
            qid = match.group(1)
            return None if any(qid in a for a in answered) else qid
    return None


def question_of(output: str) -> str:
    return output.split("): ", 1)[1].split(" Ask the caller", 1)[0]


def brain(req: LLMRequest) -> Any:
    """A compliant model: asks questions the instructions name, passes answers on."""
    items = list(req.chat_ctx.items)
    last = items[-1]
    named = named_outputs(req)
    if named is not None:
        questions = [question_of(it.output) for it in named if "needs the caller" in it.output]
        if questions:
            return " ".join(questions)
        return "Result: " + "; ".join(it.output for it in named) if named else ""
    if last.type == "function_call_output":
        if last.name == "answer_question":
            return "Thanks, noted."
        return "One moment." if "background" in last.output else f"Done: {last.output}"
    user = req.last_user_text.lower()
    if "book" in user:
        return ToolCall("book", {"city": "Rome"})
    if "hotel" in user:
        return ToolCall("hotel", {})
    if "weather" in user:
        return "It is sunny."
    if "yes" in user or "no" in user:
        qid = open_question(items)
        if qid is not None:
            return ToolCall("answer_question", {"question_id": qid, "answer": req.last_user_text})
    return "Okay."


class Desk(Agent):
    def __init__(self, *, timeout: float | None = None) -> None:
        super().__init__(instructions="desk")
        self.answers: list[str] = []
        self.errors: list[BaseException] = []
        self.timeout = timeout

    @function_tool(cancellable=True)
    async def book(self, ctx: AsyncRunContext, city: str) -> str:
        """Book a flight."""
        await ctx.update("checking seats")
        await asyncio.sleep(2)
        try:
            answer = await ctx.ask("The 7:40 is sold out. Would the 8:15 do?", timeout=self.timeout)
        except AskTimeout as e:
            self.errors.append(e)
            return "no answer: nothing was booked"
        self.answers.append(answer)
        await asyncio.sleep(1)
        return "booked the 8:15" if "yes" in answer.lower() else "nothing was booked"

    @function_tool
    async def hotel(self, ctx: AsyncRunContext) -> str:
        """Book a hotel."""
        await ctx.update("looking")
        answer = await ctx.ask("Do you want breakfast included?")
        self.answers.append(answer)
        return "hotel booked"


async def test_a_call_asks_the_caller_and_goes_on_with_the_answer() -> None:
    desk = Desk()
    llm_ = ScriptedLLM(brain)
    session, runtime, rec = await start(desk, llm_)
    async with session:
        await session.run(user_input="book me a flight to Rome")
        await asyncio.sleep(2.5)  # the question is asked at the next quiet moment
        assert spoken(session)[-1] == "The 7:40 is sold out. Would the 8:15 do?"
        assert [t.state for t in runtime.tasks] == ["running"]
        answered = await session.run(user_input="yes, the later one is fine")
        outs = [e.item.output for e in answered.events if e.type == "function_call_output"]
        assert outs == [
            "The answer was passed to book (call id call_1); it goes on in the background. "
            "Tell the caller briefly."
        ]
        await runtime.settle(timeout=10)
    assert desk.answers == ["yes, the later one is fine"]
    assert spoken(session)[-1] == "Result: booked the 8:15"
    statuses = [(e.call_ids, e.status) for e in rec.of("reply_updated")]
    assert statuses.count((("call_1",), "delivered")) == 2  # the question, then the result


async def test_the_question_stays_open_when_the_caller_changes_the_subject() -> None:
    desk = Desk()
    session, runtime, _rec = await start(desk, ScriptedLLM(brain))
    async with session:
        await session.run(user_input="book me a flight to Rome")
        await asyncio.sleep(2.5)
        await session.run(user_input="what is the weather like?")
        assert spoken(session)[-1] == "It is sunny."
        assert [t.state for t in runtime.tasks] == ["running"]  # still waiting
        await session.run(user_input="oh and yes, the 8:15 is fine")
        await runtime.settle(timeout=10)
    assert desk.answers == ["oh and yes, the 8:15 is fine"]
    assert spoken(session)[-1] == "Result: booked the 8:15"


async def test_ask_timeout_raises_and_a_late_answer_is_refused() -> None:
    desk = Desk(timeout=30)
    session, runtime, _rec = await start(desk, ScriptedLLM(brain))
    async with session:
        await session.run(user_input="book me a flight to Rome")
        await asyncio.sleep(40)
        assert [type(e) for e in desk.errors] == [AskTimeout]
        assert desk.errors[0].question_id == "call_1_question_1"  # type: ignore[attr-defined]
        await runtime.settle(timeout=10)
        late = await session.run(user_input="yes please")
        outs = [e.item for e in late.events if e.type == "function_call_output"]
        assert outs[0].is_error
        assert "no open question with id call_1_question_1" in outs[0].output
    assert spoken(session)[-2] == "Result: no answer: nothing was booked"


async def test_two_calls_asking_at_once_are_asked_one_after_the_other() -> None:
    desk = Desk()
    llm_ = ScriptedLLM(brain)
    session, runtime, _rec = await start(desk, llm_)
    async with session:
        await session.run(user_input="book me a flight to Rome")
        await session.run(user_input="and a hotel")
        await asyncio.sleep(2.5)
        asked = [s for s in spoken(session) if s.endswith("?")]
        assert asked == ["Do you want breakfast included?"]  # the hotel asked first
        await session.run(user_input="yes, breakfast please")
        await asyncio.sleep(0.5)
        asked = [s for s in spoken(session) if s.endswith("?")]
        assert asked[-1] == "The 7:40 is sold out. Would the 8:15 do?"
        await session.run(user_input="no thanks")
        await runtime.settle(timeout=10)
    assert desk.answers == ["yes, breakfast please", "no thanks"]
    assert "Result: nothing was booked" in spoken(session)


async def test_cancelling_a_call_that_waits_for_an_answer_ends_its_question() -> None:
    desk = Desk()
    session, runtime, rec = await start(desk, ScriptedLLM(brain))
    async with session:
        await session.run(user_input="book me a flight to Rome")
        await asyncio.sleep(2.5)
        assert await runtime.cancel("call_1")
        late = await session.run(user_input="yes")
        outs = [e.item for e in late.events if e.type == "function_call_output"]
        assert outs and outs[0].is_error  # the question is gone with its call
        await runtime.settle(timeout=10)
    assert desk.answers == []
    assert [e.status for e in rec.of("task_ended")] == ["cancelled"]


async def test_a_question_queued_behind_another_is_withdrawn_when_its_call_stops() -> None:
    desk = Desk()
    session, runtime, _rec = await start(desk, ScriptedLLM(brain))
    async with session:
        await session.run(user_input="book me a flight to Rome")
        await session.run(user_input="and a hotel")
        await asyncio.sleep(2.5)  # the hotel's question is asked; the flight's waits
        assert await runtime.cancel("call_1")
        await session.run(user_input="yes, breakfast please")
        await runtime.settle(timeout=10)
    assert desk.answers == ["yes, breakfast please"]
    assert not [s for s in spoken(session) if "7:40" in s]


class DeskWithTask(Desk):
    @function_tool
    async def collect_email(self) -> str:
        """Collect the caller's email."""
        return f"email is {await CollectEmail()}"


def task_brain(req: LLMRequest) -> Any:
    user = req.last_user_text.lower()
    fresh = req.chat_ctx.items[-1].type == "message"  # not right after a tool output
    if "ASK_EMAIL" in req.instructions:
        return "What is your email?"
    if fresh and "@" in user:
        return ToolCall("record_email", {"email": user})
    if fresh and "email" in user and "book" not in user:
        return ToolCall("collect_email", {})
    return brain(req)


async def test_the_question_waits_while_an_agent_task_has_the_floor() -> None:
    desk = DeskWithTask()
    session, runtime, _rec = await start(desk, ScriptedLLM(task_brain))
    async with session:
        await session.run(user_input="book me a flight to Rome")
        collecting = session.generate_reply(user_input="take my email")
        await until(
            session,
            lambda: (
                isinstance(session.current_agent, CollectEmail)
                and "What is your email?" in spoken(session)
            ),
        )
        await asyncio.sleep(3)  # the question is ready; the task has the floor
        assert not [s for s in spoken(session) if "7:40" in s]
        await session.run(user_input="it is ann@example.com")
        await collecting
        await asyncio.sleep(1)
        assert spoken(session)[-1] == "The 7:40 is sold out. Would the 8:15 do?"
        await session.run(user_input="yes")
        await runtime.settle(timeout=10)
    assert desk.answers == ["yes"]


async def test_ask_misuse_gets_clear_errors() -> None:
    kept: list[AsyncRunContext] = []
    problems: list[BaseException] = []

    class Misuse(Agent):
        def __init__(self) -> None:
            super().__init__(instructions="misuse")

        @function_tool
        async def book(self, ctx: AsyncRunContext, city: str) -> str:
            """Book."""
            kept.append(ctx)
            for bad in ("", "   "):
                try:
                    await ctx.ask(bad)
                except ValueError as e:
                    problems.append(e)
            for timeout in (0, -1, float("nan")):
                try:
                    await ctx.ask("ok?", timeout=timeout)
                except ValueError as e:
                    problems.append(e)
            return "done"

    session, runtime, _ = await start(Misuse(), ScriptedLLM(brain))
    async with session:
        await session.run(user_input="book me a flight")
        await runtime.settle(timeout=5)
        assert len(problems) == 5
        assert "ask() needs a question" in str(problems[0])
        assert "positive number of seconds" in str(problems[2])
        with pytest.raises(RuntimeError, match=r"ask\(\) called after book .* ended"):
            await kept[0].ask("still there?")

    never = AsyncToolOptions(settle_delay=0.05, control_tools="never")
    desk = Desk()
    failures: list[str] = []
    session, runtime, rec = await start(desk, ScriptedLLM(brain), never)
    async with session:
        await session.run(user_input="book me a flight to Rome")
        await runtime.settle(timeout=10)
        failures = [e.error or "" for e in rec.of("task_ended")]
    assert failures == ["RuntimeError"]  # raised at the call site, logged with its text


async def test_answer_question_for_an_unknown_id_is_a_tool_error() -> None:
    def unknown(req: LLMRequest) -> Any:
        last = req.chat_ctx.items[-1]
        if last.type == "function_call_output" or "hello" in req.last_user_text:
            return "ok"
        return ToolCall("answer_question", {"question_id": "q_nope", "answer": "yes"})

    session, _runtime, _ = await start(Desk(), ScriptedLLM(unknown), FAST)
    async with session:
        await session.run(user_input="hello")  # livekit < 1.5 offers them from the 2nd turn
        result = await session.run(user_input="yes")
        out = next(e.item for e in result.events if e.type == "function_call_output")
        assert isinstance(out, llm.FunctionCallOutput) and out.is_error
        assert "no open question with id q_nope" in out.output


class FrontDesk(Agent):
    """Its booking follows the caller when they are handed to an agent that has no
    background tool of its own."""

    def __init__(self, delay: float = 2.0) -> None:
        super().__init__(instructions="front desk")
        self.answers: list[str] = []
        self.delay = delay

    @function_tool(on_handoff="forward")
    async def book(self, ctx: AsyncRunContext, city: str) -> str:
        """Book a flight."""
        await asyncio.sleep(self.delay)
        self.answers.append(await ctx.ask("The 7:40 is sold out. Would the 8:15 do?"))
        return "booked the 8:15"

    @function_tool
    async def to_payments(self) -> Agent:
        """Hand the caller to payments."""
        return Payments()


class Payments(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="payments")


def payments_brain(req: LLMRequest) -> Any:
    """Like `brain`, but answers only with a tool it was offered (as a real LLM)."""
    last = req.chat_ctx.items[-1]
    if "payments" in req.last_user_text and last.type == "message" and last.role == "user":
        return ToolCall("to_payments")
    reply = brain(req)
    if isinstance(reply, ToolCall) and reply.name not in req.tool_names:
        return "I cannot do that."
    return reply


async def test_a_question_forwarded_to_the_next_agent_can_be_answered_there() -> None:
    """A call forwarded (``on_handoff="forward"``) to an agent with no background tool
    asks its question through that agent, which then offers ``answer_question``."""
    desk = FrontDesk()
    session, runtime, rec = await start(desk, ScriptedLLM(payments_brain), FAST)
    async with session:
        await session.run(user_input="book me a flight to Rome")
        await session.run(user_input="put me through to payments")
        assert isinstance(session.current_agent, Payments)
        await asyncio.sleep(3)
        assert spoken(session)[-1] == "The 7:40 is sold out. Would the 8:15 do?"
        assert "answer_question" in [getattr(t, "id", "") for t in session.current_agent.tools]
        await session.run(user_input="yes, that works")
        await runtime.settle(timeout=10)
        assert spoken(session)[-1] == "Result: booked the 8:15"
    assert desk.answers == ["yes, that works"]
    assert [e.status for e in rec.of("task_ended")] == ["succeeded"]


def silent_on_questions(times: int) -> Any:
    """`brain`, except that the first ``times`` replies meant to ask a question say
    nothing (as an LLM that only calls a tool, or decides not to speak)."""
    skipped = 0

    def decide(req: LLMRequest) -> Any:
        nonlocal skipped
        named = named_outputs(req)
        if named and any("needs the caller" in it.output for it in named) and skipped < times:
            skipped += 1
            return ""
        return brain(req)

    return decide


async def test_a_question_the_llm_did_not_put_to_the_caller_is_asked_again() -> None:
    desk = Desk()
    session, runtime, rec = await start(desk, ScriptedLLM(silent_on_questions(1)), FAST)
    async with session:
        await session.run(user_input="book me a flight to Rome")
        await asyncio.sleep(3)
        assert spoken(session).count("The 7:40 is sold out. Would the 8:15 do?") == 1
        await session.run(user_input="yes")
        await runtime.settle(timeout=10)
    assert desk.answers == ["yes"]
    statuses = [(e.status, e.reason) for e in rec.of("reply_updated")]
    assert statuses[:3] == [("scheduled", None), ("interrupted", "empty"), ("scheduled", None)]
    assert spoken(session)[-1] == "Result: booked the 8:15"


async def test_a_question_never_put_to_the_caller_ends_the_ask_with_question_not_asked() -> None:
    """Every reply meant to ask says nothing: after ``max_redeliveries`` re-asks the
    ask raises `QuestionNotAsked` instead of waiting for an answer that cannot come."""
    problems: list[BaseException] = []

    class Booking(Desk):
        @function_tool
        async def book(self, ctx: AsyncRunContext, city: str) -> str:
            """Book a flight."""
            try:
                await ctx.ask("The 7:40 is sold out. Would the 8:15 do?")
            except QuestionNotAsked as e:
                problems.append(e)
                return "could not confirm the 8:15: nothing was booked"
            return "booked"

    session, runtime, rec = await start(Booking(), ScriptedLLM(silent_on_questions(99)), FAST)
    async with session:
        await session.run(user_input="book me a flight to Rome")
        await runtime.settle(timeout=10)
    (problem,) = problems
    assert problem.question_id == "call_1_question_1"
    assert problem.reason == "max_redeliveries"
    assert "could not be put to the caller" in str(problem)
    assert [(e.status, e.reason) for e in rec.of("reply_updated") if e.status != "scheduled"][
        :3
    ] == [("interrupted", "empty"), ("interrupted", "empty"), ("interrupted", "empty")]
    assert [e.status for e in rec.of("task_ended")] == ["succeeded"]
    assert spoken(session)[-1] == "Result: could not confirm the 8:15: nothing was booked"
