"""Pause under an AgentTask and permanent handoffs, in a real text-mode session."""

from __future__ import annotations

import asyncio
from typing import Any

from livekit.agents import Agent, AgentTask, llm

from livekit_async_tools import AsyncRunContext, function_tool
from livekit_async_tools._compat import agent_is_closed
from livekit_async_tools.testing import ScriptedLLM, ToolCall

from .conftest import keyword_brain, spoken, start, until


class Gate:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.hooks = 0


async def _search(gate: Gate, ctx: AsyncRunContext, city: str) -> str:
    ctx.on_cancel(lambda: setattr(gate, "hooks", gate.hooks + 1))
    await ctx.update(f"searching flights to {city}")
    await gate.release.wait()
    return f"3 flights to {city}"


class CollectEmail(AgentTask[str]):
    def __init__(self, verify_gate: Gate | None = None) -> None:
        super().__init__(instructions="You collect the caller's email address.")
        self.verify_gate = verify_gate

    async def on_enter(self) -> None:
        self.session.generate_reply(instructions="ASK_EMAIL")

    @function_tool
    async def record_email(self, email: str) -> None:
        """Record the caller's email address."""
        self.complete(email)

    @function_tool
    async def verify_email(self, ctx: AsyncRunContext, email: str) -> str:
        """Check that an email address exists."""
        await ctx.update("checking the address")
        assert self.verify_gate is not None
        await self.verify_gate.release.wait()
        return f"{email} exists"


class Travel(Agent):
    def __init__(self, gate: Gate) -> None:
        super().__init__(instructions="You are a travel agent.")
        self.gate = gate
        self.verify_gate: Gate | None = None

    @function_tool
    async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
        """Search flights to a city."""
        return await _search(self.gate, ctx, city)

    @function_tool
    async def collect_email(self) -> str:
        """Collect the caller's email address."""
        email = await CollectEmail(self.verify_gate)
        return f"email {email}"


class HoldTravel(Travel):
    @function_tool(on_handoff="hold")
    async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
        """Search flights to a city."""
        return await _search(self.gate, ctx, city)


class CancelTravel(Travel):
    @function_tool(on_handoff="cancel")
    async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
        """Search flights to a city."""
        return await _search(self.gate, ctx, city)


class Hotel(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are the hotel agent.")


RULES: dict[str, Any] = {
    "flight": ToolCall("search_flights", {"city": "Paris"}),
    "book": ToolCall("collect_email"),
    "verify": ToolCall("verify_email", {"email": "ann@example.com"}),
    "@": ToolCall("record_email", {"email": "ann@example.com"}),
}
ON_INSTRUCTIONS = {"ASK_EMAIL": "What is your email?"}


def brain() -> ScriptedLLM:
    return ScriptedLLM(keyword_brain(RULES, on_instructions=ON_INSTRUCTIONS))


def speaker_of(text: str, *agents: Agent) -> list[Agent]:
    return [
        a
        for a in agents
        if any(
            isinstance(it, llm.ChatMessage) and it.role == "assistant" and it.text_content == text
            for it in a.chat_ctx.items
        )
    ]


async def test_result_waits_for_agent_task_and_is_spoken_by_the_origin() -> None:
    gate = Gate()
    travel = Travel(gate)
    llm_ = brain()
    session, runtime, rec = await start(travel, llm_)
    scheduled_by: list[Agent] = []
    runtime.on(
        "reply_updated",
        lambda ev: scheduled_by.append(session.current_agent) if ev.status == "scheduled" else None,
    )
    async with session:
        await session.run(user_input="find a flight")
        booking = session.generate_reply(user_input="book it")
        await until(
            session,
            lambda: (
                isinstance(session.current_agent, CollectEmail)
                and "What is your email?" in spoken(session)
                and session.agent_state == "listening"
            ),
        )
        task = session.current_agent
        gate.release.set()
        await until(session, lambda: bool(rec.of("task_ended")))
        await asyncio.sleep(0.3)  # several settle windows while the task has the floor
        assert [e.status for e in rec.of("reply_updated")] == []
        final_ids = [
            it.call_id for it in travel.chat_ctx.items if isinstance(it, llm.FunctionCallOutput)
        ]
        assert "call_1_result" in final_ids  # recorded in the paused origin at once

        await session.run(user_input="it is ann@example.com")
        await booking
        await runtime.settle(timeout=5)
        said = spoken(session)
        assert said[-2:] == ["Done: email ann@example.com", "Result: 3 flights to Paris"]
        assert scheduled_by == [travel]
        assert speaker_of("Result: 3 flights to Paris", travel, task) == [travel]
        # the conversation went on after the result was recorded: the LLM is told it
        # may have covered it already
        delivery = [r for r in llm_.requests if "Background results" in r.instructions]
        assert "arrived earlier in the conversation" in delivery[-1].instructions


async def test_result_pending_under_a_task_is_dropped_when_the_session_closes() -> None:
    gate = Gate()
    travel = Travel(gate)
    session, runtime, rec = await start(travel, brain())
    async with session:
        await session.run(user_input="find a flight")
        session.generate_reply(user_input="book it")
        await until(session, lambda: isinstance(session.current_agent, CollectEmail))
        gate.release.set()
        await until(session, lambda: bool(rec.of("task_ended")))
    await runtime.settle(timeout=5)
    assert [(e.status, e.reason) for e in rec.of("reply_updated")] == [
        ("dropped", "session_closed")
    ]
    assert runtime.tasks == ()


async def test_agent_tasks_own_async_tool_is_delivered_to_the_task() -> None:
    gate = Gate()
    travel = Travel(gate)
    travel.verify_gate = Gate()
    session, runtime, rec = await start(travel, brain())
    async with session:
        booking = session.generate_reply(user_input="book it")
        await until(
            session,
            lambda: (
                isinstance(session.current_agent, CollectEmail)
                and session.agent_state == "listening"
            ),
        )
        task = session.current_agent
        await session.run(user_input="please verify it")
        travel.verify_gate.release.set()
        await until(session, lambda: any(e.status == "delivered" for e in rec.of("reply_updated")))
        assert session.current_agent is task
        assert speaker_of("Result: ann@example.com exists", travel, task) == [task]
        await session.run(user_input="ann@example.com")
        await booking
        await runtime.settle(timeout=5)


async def test_handoff_forward_speaks_through_the_new_agent() -> None:
    gate = Gate()
    travel = Travel(gate)
    session, runtime, _rec = await start(travel, brain())
    async with session:
        await session.run(user_input="flight")
        hotel = Hotel()
        session.update_agent(hotel)
        await until(session, lambda: agent_is_closed(travel))
        assert len(runtime.tasks) == 1  # the handoff did not wait for the task
        gate.release.set()
        await runtime.settle(timeout=5)
        assert speaker_of("Result: 3 flights to Paris", travel, hotel) == [hotel]
        ids = [it.call_id for it in hotel.chat_ctx.items if isinstance(it, llm.FunctionCallOutput)]
        assert "call_1_result" in ids


async def test_handoff_hold_delivers_when_the_origin_is_back() -> None:
    gate = Gate()
    travel = HoldTravel(gate)
    session, runtime, rec = await start(travel, brain())
    async with session:
        await session.run(user_input="flight")
        hotel = Hotel()
        session.update_agent(hotel)
        await until(session, lambda: agent_is_closed(travel))
        gate.release.set()
        await until(session, lambda: bool(rec.of("task_ended")))
        await asyncio.sleep(0.3)
        assert [e.status for e in rec.of("reply_updated")] == []
        session.update_agent(travel)
        await runtime.settle(timeout=5)
        assert speaker_of("Result: 3 flights to Paris", travel, hotel) == [travel]


async def test_handoff_hold_is_dropped_at_close_if_the_origin_never_returns() -> None:
    gate = Gate()
    travel = HoldTravel(gate)
    session, runtime, rec = await start(travel, brain())
    async with session:
        await session.run(user_input="flight")
        session.update_agent(Hotel())
        await until(session, lambda: agent_is_closed(travel))
        gate.release.set()
        await until(session, lambda: bool(rec.of("task_ended")))
    await runtime.settle(timeout=5)
    dropped = [e for e in rec.of("reply_updated") if e.status == "dropped"]
    assert [(e.call_ids, e.reason) for e in dropped] == [(("call_1",), "origin_closed")]


async def test_handoff_cancel_cancels_the_task() -> None:
    gate = Gate()
    travel = CancelTravel(gate)
    session, runtime, rec = await start(travel, brain())
    async with session:
        await session.run(user_input="flight")
        session.update_agent(Hotel())
        await until(session, lambda: bool(rec.of("task_ended")))
        await runtime.settle(timeout=5)
        assert rec.of("task_ended")[0].status == "cancelled"
        assert gate.hooks == 1
        assert runtime.tasks == ()
        assert [e.status for e in rec.of("reply_updated")] == []
