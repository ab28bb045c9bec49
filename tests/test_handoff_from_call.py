"""A background call that returns an `Agent` hands the session to it when its result is
delivered, through the gate (real text-mode sessions, virtual time)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from livekit.agents import Agent, AgentTask, llm

from livekit_async_tools import AsyncRunContext, function_tool
from livekit_async_tools.testing import ScriptedLLM, ToolCall

from .conftest import keyword_brain, spoken, start
from .test_handoff import CollectEmail

pytestmark = pytest.mark.looptime


class Booking(Agent):
    def __init__(self, chat_ctx: llm.ChatContext | None = None) -> None:
        super().__init__(instructions="You are the booking desk.", chat_ctx=chat_ctx)

    async def on_enter(self) -> None:
        self.session.generate_reply(instructions="GREET_BOOKING")


class Nested(AgentTask[str]):
    def __init__(self) -> None:
        super().__init__(instructions="nested")


class Travel(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are a travel agent.")
        self.searches = 0

    @function_tool
    async def search_and_book(self, ctx: AsyncRunContext, city: str) -> object:
        """Search flights, then hand the caller to the booking desk."""
        await ctx.update("searching")
        await asyncio.sleep(5)
        return Booking(chat_ctx=self.chat_ctx), f"3 flights to {city}"

    @function_tool
    async def transfer_later(self, ctx: AsyncRunContext) -> object:
        """Prepare the booking desk, then hand over."""
        await ctx.update("preparing")
        await asyncio.sleep(5)
        return Booking()

    @function_tool
    async def bad_return(self, ctx: AsyncRunContext, kind: str) -> object:
        """Return something that cannot be handed off to."""
        await ctx.update("working")
        await asyncio.sleep(1)
        if kind == "task":
            return Nested()
        return [Booking(), Booking(), "two desks"]

    @function_tool(result_delivery="silent")
    async def quiet_transfer(self, ctx: AsyncRunContext) -> object:
        """Prepare the booking desk quietly, then hand over."""
        await ctx.update("preparing quietly")
        await asyncio.sleep(5)
        return Booking()

    @function_tool(on_handoff="cancel")
    async def side_search(self, ctx: AsyncRunContext) -> str:
        """A search that stops when this agent hands off."""
        ctx.on_cancel(lambda: None)
        await ctx.update("side search")
        await asyncio.sleep(60)
        return "side result"

    @function_tool
    async def to_hotel(self) -> Agent:
        """Transfer to the hotel desk now."""
        return Hotel()


class Hotel(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are the hotel desk.")


RULES: dict[str, Any] = {
    "book": ToolCall("search_and_book", {"city": "Rome"}),
    "desk": ToolCall("transfer_later"),
    "quietly": ToolCall("quiet_transfer"),
    "task": ToolCall("bad_return", {"kind": "task"}),
    "two": ToolCall("bad_return", {"kind": "two"}),
    "side": ToolCall("side_search"),
    "hotel": ToolCall("to_hotel"),
}


def brain() -> ScriptedLLM:
    return ScriptedLLM(
        keyword_brain(RULES, on_instructions={"GREET_BOOKING": "Booking desk, how can I help?"})
    )


def result_outputs(agent: Agent) -> list[str]:
    return [
        it.output
        for it in agent.chat_ctx.items
        if it.type == "function_call_output" and it.call_id.endswith("_result")
    ]


async def test_the_origin_speaks_the_result_then_hands_off() -> None:
    session, runtime, rec = await start(Travel(), brain())
    async with session:
        await session.run(user_input="book me a flight to Rome")
        assert isinstance(session.current_agent, Travel)  # nothing happens before the result
        await asyncio.sleep(6)
        await runtime.settle(timeout=10)
        await asyncio.sleep(1)
        assert isinstance(session.current_agent, Booking)
        said = spoken(session)
        assert said[-2:] == ["Result: 3 flights to Rome", "Booking desk, how can I help?"]
        # the new agent has the result in its context
        assert result_outputs(session.current_agent) == ["3 flights to Rome"]
    delivered = [e for e in rec.of("reply_updated") if e.status == "delivered"]
    assert [e.call_ids for e in delivered] == [("call_1",)]


async def test_a_bare_agent_hands_off_without_a_reply_of_its_own() -> None:
    session, runtime, rec = await start(Travel(), brain())
    async with session:
        await session.run(user_input="put me through to the desk when ready")
        await asyncio.sleep(6)
        await runtime.settle(timeout=10)
        await asyncio.sleep(1)
        assert isinstance(session.current_agent, Booking)
        assert spoken(session)[-1] == "Booking desk, how can I help?"
        assert not [s for s in spoken(session) if s.startswith("Result:")]
        assert result_outputs(session.current_agent) == [""]
    assert [(e.status, e.speech_id) for e in rec.of("reply_updated")] == [("delivered", None)]


class TravelWithTask(Travel):
    @function_tool
    async def collect_email(self) -> str:
        """Collect the caller's email."""
        return f"email {await CollectEmail()}"


async def test_the_handoff_waits_while_an_agent_task_has_the_floor() -> None:
    rules = {
        **RULES,
        "email": ToolCall("collect_email"),
        "@": ToolCall("record_email", {"email": "a@b.c"}),
    }
    llm_ = ScriptedLLM(
        keyword_brain(
            rules,
            on_instructions={
                "GREET_BOOKING": "Booking desk, how can I help?",
                "ASK_EMAIL": "What is your email?",
            },
        )
    )
    session, runtime, _rec = await start(TravelWithTask(), llm_)
    async with session:
        await session.run(user_input="put me through to the desk when ready")
        collecting = session.generate_reply(user_input="take my email")
        await asyncio.sleep(8)  # the result is ready; the task has the floor
        assert isinstance(session.current_agent, CollectEmail)
        await session.run(user_input="it is a@b.c")
        await collecting
        await runtime.settle(timeout=10)
        await asyncio.sleep(1)
        assert isinstance(session.current_agent, Booking)
        assert spoken(session)[-1] == "Booking desk, how can I help?"


async def test_other_calls_follow_their_on_handoff_policy() -> None:
    session, runtime, rec = await start(Travel(), brain())
    async with session:
        await session.run(user_input="side search please")
        await session.run(user_input="put me through to the desk when ready")
        await asyncio.sleep(6)
        await runtime.settle(timeout=10)
        assert isinstance(session.current_agent, Booking)
    ended = {e.call_id: e.status for e in rec.of("task_ended")}
    assert ended == {"call_1": "cancelled", "call_2": "succeeded"}


async def test_no_handoff_once_the_origin_was_handed_off_for_good(
    caplog: pytest.LogCaptureFixture,
) -> None:
    session, runtime, _rec = await start(Travel(), brain())
    with caplog.at_level(logging.WARNING, logger="livekit_async_tools"):
        async with session:
            await session.run(user_input="book me a flight to Rome")
            await session.run(user_input="hotel please")
            assert isinstance(session.current_agent, Hotel)
            await asyncio.sleep(6)
            await runtime.settle(timeout=10)
            assert isinstance(session.current_agent, Hotel)  # the result is only spoken
            assert spoken(session)[-1] == "Result: 3 flights to Rome"
    assert any("handoff was not made" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("ask", "problem"),
    [
        ("a task please", "returned an AgentTask; await it inside the tool"),
        ("two of them please", "returned more than one agent"),
    ],
)
async def test_results_that_cannot_hand_off_are_reported_to_the_llm(
    ask: str, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    session, runtime, _rec = await start(Travel(), brain())
    with caplog.at_level(logging.ERROR, logger="livekit_async_tools"):
        async with session:
            await session.run(user_input=ask)
            await asyncio.sleep(2)
            await runtime.settle(timeout=10)
            assert isinstance(session.current_agent, Travel)
            (out,) = [
                it
                for it in session.current_agent.chat_ctx.items
                if it.type == "function_call_output" and it.call_id.endswith("_result")
            ]
            assert out.is_error and problem in out.output
    assert any(problem in r.getMessage() for r in caplog.records)


async def test_a_silent_tool_that_returns_an_agent_still_hands_off() -> None:
    session, runtime, _rec = await start(Travel(), brain())
    async with session:
        await session.run(user_input="transfer me quietly")
        await asyncio.sleep(6)
        await runtime.settle(timeout=10)
        await asyncio.sleep(1)
        assert isinstance(session.current_agent, Booking)
        assert not [s for s in spoken(session) if s.startswith("Result:")]
