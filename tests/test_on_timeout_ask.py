"""``on_timeout="ask"``: at the deadline the origin asks the caller whether to keep
waiting; the LLM extends (``extend_task``) or cancels; no decision stops the call.
Real text-mode sessions in virtual time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from livekit.agents import Agent

from livekit_async_tools import AsyncRunContext, AsyncToolOptions, function_tool
from livekit_async_tools.testing import LLMRequest, ScriptedLLM, ToolCall

from .conftest import named_outputs, spoken, start

pytestmark = pytest.mark.looptime

OPTIONS = AsyncToolOptions(settle_delay=0.05, timeout_decision_window=30)


class Desk(Agent):
    def __init__(self, work: float = 100.0) -> None:
        super().__init__(instructions="desk")
        self.work = work
        self.hooks: list[str] = []

    @function_tool(timeout=20, on_timeout="ask")
    async def search(self, ctx: AsyncRunContext) -> str:
        """Search every airline."""
        ctx.on_cancel(lambda: self.hooks.append("cancelled"))
        await ctx.update("searching")
        await asyncio.sleep(self.work)
        return "3 flights"


def brain(req: LLMRequest) -> Any:
    last = req.chat_ctx.items[-1]
    named = named_outputs(req)
    if named is not None:
        if any("taking longer than expected" in it.output for it in named):
            return "This is taking longer than expected. Do you want to keep waiting?"
        return "Result: " + "; ".join(it.output for it in named) if named else ""
    if last.type == "function_call_output":
        return "One moment." if "background" in last.output else f"Done: {last.output}"
    user = req.last_user_text.lower()
    if "search" in user:
        return ToolCall("search")
    if "keep waiting" in user:
        return ToolCall("extend_task", {"call_id": "call_1", "seconds": 200})
    if "forget it" in user:
        return ToolCall("cancel_task", {"call_id": "call_1"})
    if "extend" in user:
        return ToolCall("extend_task", {"call_id": "call_1", "seconds": 10})
    return "Okay."


async def test_at_the_deadline_the_caller_is_asked_and_an_extension_lets_it_finish() -> None:
    desk = Desk(work=100)
    session, runtime, rec = await start(desk, ScriptedLLM(brain), OPTIONS)
    async with session:
        await session.run(user_input="search flights")
        await asyncio.sleep(21)
        assert spoken(session)[-1].endswith("Do you want to keep waiting?")
        assert [t.cancellable for t in runtime.tasks] == [True]  # the caller may say no
        extended = await session.run(user_input="yes, keep waiting")
        outs = [e.item.output for e in extended.events if e.type == "function_call_output"]
        assert outs == [
            "search (call id call_1) may now run 200 more seconds; its result will come to you."
        ]
        await asyncio.sleep(90)
        await runtime.settle(timeout=10)
    assert [e.status for e in rec.of("task_ended")] == ["succeeded"]
    assert spoken(session)[-1] == "Result: 3 flights"


async def test_the_caller_declines_and_the_call_is_cancelled() -> None:
    desk = Desk(work=100)
    session, runtime, rec = await start(desk, ScriptedLLM(brain), OPTIONS)
    async with session:
        await session.run(user_input="search flights")
        await asyncio.sleep(21)
        await session.run(user_input="no, forget it")
        await runtime.settle(timeout=10)
    assert [e.status for e in rec.of("task_ended")] == ["cancelled"]
    assert desk.hooks == ["cancelled"]


async def test_no_decision_within_the_window_stops_the_call_as_timed_out() -> None:
    desk = Desk(work=500)
    session, runtime, rec = await start(desk, ScriptedLLM(brain), OPTIONS)
    async with session:
        await session.run(user_input="search flights")
        await asyncio.sleep(21)
        assert runtime.tasks  # asked, still running
        await asyncio.sleep(31)
        await runtime.settle(timeout=10)
    ended = rec.of("task_ended")
    assert [e.status for e in ended] == ["timed_out"]
    assert "stopped after 20 seconds" in (ended[0].error or "")


async def test_the_call_finishing_while_the_caller_is_asked_delivers_its_result() -> None:
    desk = Desk(work=25)
    session, runtime, rec = await start(desk, ScriptedLLM(brain), OPTIONS)
    async with session:
        await session.run(user_input="search flights")
        await asyncio.sleep(21)
        await runtime.settle(timeout=30)
    assert [e.status for e in rec.of("task_ended")] == ["succeeded"]
    assert spoken(session)[-1] == "Result: 3 flights"


async def test_an_extension_is_refused_while_no_decision_is_open() -> None:
    desk = Desk(work=5)
    session, runtime, _rec = await start(desk, ScriptedLLM(brain), OPTIONS)
    async with session:
        await session.run(user_input="search flights")
        refused = await session.run(user_input="extend it")
        out = next(e.item for e in refused.events if e.type == "function_call_output")
        assert out.is_error
        assert "is not waiting for a decision about its deadline" in out.output
        await runtime.settle(timeout=30)


async def test_a_second_deadline_after_an_extension_asks_again() -> None:
    desk = Desk(work=100)
    session, runtime, rec = await start(desk, ScriptedLLM(brain), OPTIONS)
    async with session:
        await session.run(user_input="search flights")
        await asyncio.sleep(21)
        await session.run(user_input="extend please")  # 10 more seconds
        await asyncio.sleep(11)
        asked = [s for s in spoken(session) if s.endswith("keep waiting?")]
        assert len(asked) == 2
        await asyncio.sleep(31)
        await runtime.settle(timeout=10)
    ended = rec.of("task_ended")
    assert [e.status for e in ended] == ["timed_out"]
    assert "stopped after 31 seconds" in (ended[0].error or "")


def test_on_timeout_ask_needs_a_timeout_and_a_known_value() -> None:
    async def search(ctx: AsyncRunContext) -> str:
        return "x"

    with pytest.raises(ValueError, match='on_timeout="ask" needs a timeout'):
        function_tool(on_timeout="ask")(search)
    with pytest.raises(ValueError, match="on_timeout must be one of"):
        function_tool(timeout=5, on_timeout="wait")(search)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout_decision_window"):
        AsyncToolOptions(timeout_decision_window=0)
