"""Timeouts, cancellation and the per-session cap, on a fast-forwarding clock."""

from __future__ import annotations

import asyncio
import time

import pytest
from livekit.agents import Agent, llm

from livekit_async_tools import AsyncRunContext, AsyncToolOptions, function_tool
from livekit_async_tools.testing import ScriptedLLM, ToolCall

from .conftest import keyword_brain, spoken, start


class Slow(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="slow")
        self.hooks: list[str] = []
        self.release = asyncio.Event()

    @function_tool(timeout=600)
    async def long_report(self, ctx: AsyncRunContext) -> str:
        """Build a long report."""

        async def cleanup() -> None:
            self.hooks.append("cleanup")

        ctx.on_cancel(cleanup)
        await ctx.update("started")
        for n in range(100):
            await asyncio.sleep(30)
            await ctx.update({"minutes": n})  # updates never disarm the deadline
        return "never"

    @function_tool(timeout=5, ack_after=None)
    async def hung(self, ctx: AsyncRunContext) -> str:
        """A tool that hangs before its first update."""
        await asyncio.Event().wait()
        return "never"

    @function_tool(cancellable=True)
    async def cancellable_search(self, ctx: AsyncRunContext, city: str) -> str:
        """A search the caller may cancel."""
        ctx.on_cancel(lambda: self.hooks.append("cancelled"))
        await ctx.update("searching")
        await self.release.wait()
        return f"found {city}"

    @function_tool
    async def firm_search(self, ctx: AsyncRunContext, city: str) -> str:
        """A search that cannot be cancelled."""
        await ctx.update("searching")
        await self.release.wait()
        return f"found {city}"


RULES = {
    "report": ToolCall("long_report"),
    "hang": ToolCall("hung"),
    "search": ToolCall("cancellable_search", {"city": "Oslo"}),
    "firm": ToolCall("firm_search", {"city": "Oslo"}),
}


@pytest.mark.looptime
async def test_ten_minute_timeout_in_virtual_time() -> None:
    agent = Slow()
    session, runtime, rec = await start(agent, ScriptedLLM(keyword_brain(RULES)))
    wall = time.monotonic()
    async with session:
        await session.run(user_input="report")
        await runtime.settle(timeout=3600)
        ended = rec.of("task_ended")
        assert [e.status for e in ended] == ["timed_out"]
        assert "stopped after 600 seconds" in (ended[0].error or "")
        assert agent.hooks == ["cleanup"]
        assert len(rec.of("task_updated")) == 1 + 19  # ack + one per 30 s until 600 s
        assert "stopped after 600 seconds" in spoken(session)[-1]
    assert time.monotonic() - wall < 5


@pytest.mark.looptime
async def test_timeout_before_ack_is_an_inline_result() -> None:
    session, runtime, rec = await start(Slow(), ScriptedLLM(keyword_brain(RULES)))
    async with session:
        result = await session.run(user_input="hang")
        result.expect.next_event().is_function_call(name="hung")
        out = result.expect.next_event().is_function_call_output().event().item
        assert out.is_error
        assert "hung was stopped after 5 seconds" in out.output
        await runtime.settle(timeout=60)
        assert [e.status for e in rec.of("task_ended")] == ["timed_out"]
        assert rec.of("reply_updated") == []


async def test_cancel_a_running_call() -> None:
    agent = Slow()
    session, runtime, rec = await start(agent, ScriptedLLM(keyword_brain(RULES)))
    async with session:
        await session.run(user_input="search")
        (info,) = runtime.tasks
        assert info.cancellable
        assert await runtime.cancel(info.call_id) is True
        assert agent.hooks == ["cancelled"]
        await runtime.settle(timeout=5)
        assert [e.status for e in rec.of("task_ended")] == ["cancelled"]
        assert rec.of("reply_updated") == []  # recorded, never spoken
        out = {
            it.call_id: it.output
            for it in agent.chat_ctx.items
            if isinstance(it, llm.FunctionCallOutput)
        }
        assert out[f"{info.call_id}_result"] == (
            "cancellable_search was cancelled before it returned a result."
        )


async def test_cancel_refusals_name_the_call() -> None:
    agent = Slow()
    session, runtime, _ = await start(agent, ScriptedLLM(keyword_brain(RULES)))
    async with session:
        with pytest.raises(llm.ToolError, match="no running background task with call id nope"):
            await runtime.cancel("nope")
        await session.run(user_input="firm")
        (info,) = runtime.tasks
        with pytest.raises(llm.ToolError, match="cannot be cancelled"):
            await runtime.cancel(info.call_id)
        agent.release.set()
        await runtime.settle(timeout=5)
        with pytest.raises(llm.ToolError, match=info.call_id):
            await runtime.cancel(info.call_id)


async def test_cap_refuses_new_calls_until_one_ends() -> None:
    agent = Slow()
    calls = [ToolCall("firm_search", {"city": c}) for c in ("A", "B", "C")]
    llm_ = ScriptedLLM(
        keyword_brain({"three": calls, "again": ToolCall("firm_search", {"city": "D"})})
    )
    session, runtime, _ = await start(
        agent, llm_, AsyncToolOptions(settle_delay=0.05, max_tasks_per_session=2)
    )
    async with session:
        result = await session.run(user_input="three searches")
        outs = [e.item for e in result.events if e.type == "function_call_output"]
        refused = [o for o in outs if o.is_error]
        assert len(refused) == 1
        assert "Too many background tasks are running" in refused[0].output
        assert len(runtime.tasks) == 2
        agent.release.set()
        await runtime.settle(timeout=5)
        agent.release.clear()
        result = await session.run(user_input="again")
        assert len(runtime.tasks) == 1
        agent.release.set()
        await runtime.settle(timeout=5)
