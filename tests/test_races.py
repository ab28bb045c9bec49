"""Task-control races: cancel during the ack, cancel during delivery, timeout and
duplicates while the origin is paused under an AgentTask."""

from __future__ import annotations

import asyncio
from typing import Any

from livekit.agents import Agent, llm

from livekit_async_tools import AsyncRunContext, function_tool
from livekit_async_tools.testing import ScriptedLLM, ToolCall

from .conftest import keyword_brain, spoken, start, until
from .test_handoff import ON_INSTRUCTIONS, RULES, CollectEmail, Gate, Travel


class Slowpoke(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="slow")
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    @function_tool(cancellable=True, ack_after=None)
    async def lookup(self, ctx: AsyncRunContext) -> str:
        """Waits before its first update."""
        self.started.set()
        await self.release.wait()
        await ctx.update("found it")
        return "done"


async def test_cancel_while_the_call_is_being_acknowledged() -> None:
    agent = Slowpoke()
    session, runtime, rec = await start(
        agent, ScriptedLLM(keyword_brain({"look": ToolCall("lookup")}))
    )
    async with session:
        handle = session.generate_reply(user_input="look it up")
        await agent.started.wait()
        (info,) = runtime.tasks
        assert info.state == "starting"
        assert await runtime.cancel(info.call_id) is True
        await handle
        await runtime.settle(timeout=5)
        outs = [i for i in session.history.items if i.type == "function_call_output"]
        assert outs[0].is_error and "cancelled before it returned" in outs[0].output
        assert [e.status for e in rec.of("task_ended")] == ["cancelled"]
        assert rec.of("reply_updated") == []


async def test_cancel_while_the_result_reply_is_being_delivered() -> None:
    class Quick(Agent):
        def __init__(self) -> None:
            super().__init__(instructions="quick")
            self.release = asyncio.Event()

        @function_tool(cancellable=True)
        async def fetch(self, ctx: AsyncRunContext) -> str:
            """Fetch."""
            await ctx.update("fetching")
            await self.release.wait()
            return "fetched"

    agent = Quick()
    session, runtime, rec = await start(
        agent, ScriptedLLM(keyword_brain({"fetch": ToolCall("fetch")}), delay=0.02)
    )
    errors: list[BaseException] = []

    async def cancel_now(call_id: str) -> None:
        try:
            await runtime.cancel(call_id)
        except llm.ToolError as e:
            errors.append(e)

    tasks: list[asyncio.Task[Any]] = []
    async with session:
        await session.run(user_input="fetch")
        runtime.on(
            "reply_updated",
            lambda ev: (
                tasks.append(asyncio.ensure_future(cancel_now(ev.call_ids[0])))
                if ev.status == "scheduled"
                else None
            ),
        )
        agent.release.set()
        await runtime.settle(timeout=5)
        await asyncio.gather(*tasks)
        assert [e.status for e in rec.of("task_ended")] == ["succeeded"]
        assert [e.status for e in rec.of("reply_updated")] == ["scheduled", "delivered"]
        assert "call_1" in str(errors[0])
        assert spoken(session)[-1] == "Result: fetched"


class TimedTravel(Travel):
    @function_tool(timeout=0.3)
    async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
        """Search flights to a city."""
        await ctx.update(f"searching flights to {city}")
        await asyncio.Event().wait()
        return ""


class TaskWithSameTool(CollectEmail):
    @function_tool
    async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
        """Search flights to a city."""
        return "should not run"


async def _into_task(session: Any, travel: Travel, task_cls: type = CollectEmail) -> Any:
    booking = session.generate_reply(user_input="book it")
    await until(
        session,
        lambda: isinstance(session.current_agent, task_cls) and session.agent_state == "listening",
    )
    return booking


async def test_timeout_while_paused_is_spoken_by_the_origin_after_the_task() -> None:
    travel = TimedTravel(Gate())
    session, runtime, rec = await start(
        travel, ScriptedLLM(keyword_brain(RULES, on_instructions=ON_INSTRUCTIONS))
    )
    async with session:
        await session.run(user_input="flight")
        booking = await _into_task(session, travel)
        await until(session, lambda: bool(rec.of("task_ended")))
        assert rec.of("task_ended")[0].status == "timed_out"
        await asyncio.sleep(0.3)
        assert rec.of("reply_updated") == []
        await session.run(user_input="ann@example.com")
        await booking
        await runtime.settle(timeout=5)
        assert "search_flights was stopped after 0.3 seconds" in spoken(session)[-1]


async def test_duplicate_of_a_call_whose_origin_is_paused() -> None:
    class Parent(Travel):
        @function_tool
        async def collect_email(self) -> str:
            """Collect the caller's email address."""
            email = await TaskWithSameTool()
            return f"email {email}"

    gate = Gate()
    travel = Parent(gate)
    rules = {**RULES, "again": ToolCall("search_flights", {"city": "Paris"})}
    session, runtime, rec = await start(
        travel, ScriptedLLM(keyword_brain(rules, on_instructions=ON_INSTRUCTIONS))
    )
    async with session:
        await session.run(user_input="flight")
        booking = await _into_task(session, travel, TaskWithSameTool)
        result = await session.run(user_input="search again")
        outs = [e.item.output for e in result.events if e.type == "function_call_output"]
        assert "already running (call id call_1)" in outs[0]
        assert len(rec.of("task_started")) == 1
        await session.run(user_input="ann@example.com")
        gate.release.set()
        await booking
        await runtime.settle(timeout=5)
