"""mock_tools: mocks bind by name and run through the background lifecycle."""

from __future__ import annotations

import asyncio

import pytest
from livekit.agents import Agent, RunContext
from livekit.agents import function_tool as lk_function_tool

from livekit_async_tools import AsyncRunContext, function_tool
from livekit_async_tools.testing import ScriptedLLM, ToolCall, mock_tools, settle

from .conftest import keyword_brain, spoken, start


class Travel(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are a travel agent.")

    @function_tool
    async def search_flights(self, ctx: AsyncRunContext, city: str, passengers: int = 1) -> str:
        """Search flights to a city."""
        raise AssertionError("the real body must not run under a mock")

    @lk_function_tool
    async def weather(self, city: str) -> str:
        """Weather in a city."""
        raise AssertionError("the real body must not run under a mock")


RULES = {
    "flight": ToolCall("search_flights", {"city": "Paris", "passengers": 2}),
    "weather": ToolCall("weather", {"city": "Oslo"}),
}


async def test_mock_binds_by_name_and_runs_in_background() -> None:
    release = asyncio.Event()

    async def fake(passengers: int, ctx: AsyncRunContext, city: str) -> str:
        await ctx.update(f"looking for {passengers} seats")
        await release.wait()
        return f"mocked {city} x{passengers}"

    session, _runtime, _rec = await start(Travel(), ScriptedLLM(keyword_brain(RULES)))
    async with session:
        with mock_tools(Travel, {"search_flights": fake}):
            result = await session.run(user_input="flight")
        result.expect.next_event().is_function_call(name="search_flights")
        out = result.expect.next_event().is_function_call_output().event().item.output
        assert "looking for 2 seats" in out
        release.set()
        await settle(session, timeout=5)
        assert spoken(session)[-1] == "Result: mocked Paris x2"


async def test_sync_mock_with_a_subset_of_parameters_and_plain_tool_mock() -> None:
    session, _runtime, rec = await start(Travel(), ScriptedLLM(keyword_brain(RULES)))
    async with session:
        with mock_tools(
            Travel, {"search_flights": lambda city: f"sync {city}", "weather": lambda city: "cold"}
        ):
            r1 = await session.run(user_input="flight")
            r2 = await session.run(user_input="weather")
        r1.expect.next_event()
        r1.expect.next_event().is_function_call_output(output="sync Paris")
        r2.expect.next_event()
        r2.expect.next_event().is_function_call_output(output="cold")
        assert [e.status for e in rec.of("task_ended")] == ["succeeded"]


async def test_mock_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="has no tool named 'nope'"):
        mock_tools(Travel, {"nope": lambda: None}).__enter__()
    with pytest.raises(TypeError, match="takes 'country', which is not a parameter"):
        mock_tools(Travel, {"search_flights": lambda country: None}).__enter__()


async def test_nested_mocks_restore_previous() -> None:
    session, _runtime, _rec = await start(Travel(), ScriptedLLM(keyword_brain(RULES)))
    async with session:
        with mock_tools(Travel, {"search_flights": lambda: "outer"}):
            with (
                pytest.raises(RuntimeError),
                mock_tools(Travel, {"search_flights": lambda ctx: "inner"}),
            ):
                r = await session.run(user_input="flight")
                r.expect.next_event()
                r.expect.next_event().is_function_call_output(output="inner")
                raise RuntimeError("leave the block")
            r = await session.run(user_input="flight")
            r.expect.next_event()
            r.expect.next_event().is_function_call_output(output="outer")


async def test_mock_raising_and_runcontext_param() -> None:
    seen: list[object] = []

    def boom(ctx: RunContext) -> str:
        seen.append(ctx)
        raise ValueError("mock failure")

    session, _runtime, rec = await start(Travel(), ScriptedLLM(keyword_brain(RULES)))
    async with session:
        with mock_tools(Travel, {"search_flights": boom}):
            r = await session.run(user_input="flight")
        r.expect.next_event()
        out = r.expect.next_event().is_function_call_output().event().item
        assert out.is_error
        assert isinstance(seen[0], AsyncRunContext)
        assert [e.status for e in rec.of("task_ended")] == ["failed"]


async def test_mock_of_a_cancellable_tool_is_cancelled_like_the_real_one() -> None:
    class Booking(Agent):
        def __init__(self) -> None:
            super().__init__(instructions="booking")

        @function_tool(cancellable=True)
        async def book(self, ctx: AsyncRunContext, seat: str) -> str:
            """Book a seat."""
            raise AssertionError("the real body must not run under a mock")

    cancelled: list[str] = []

    async def hangs(seat: str, ctx: AsyncRunContext) -> str:
        ctx.on_cancel(lambda: cancelled.append(seat))
        await ctx.update("holding the seat")
        await asyncio.Event().wait()
        return ""

    llm_ = ScriptedLLM(keyword_brain({"book": ToolCall("book", {"seat": "2C"})}))
    session, runtime, rec = await start(Booking(), llm_)
    async with session:
        with mock_tools(Booking, {"book": hangs}):
            await session.run(user_input="book 2C")
        (info,) = runtime.tasks
        assert await runtime.cancel(info.call_id) is True
        await runtime.settle(timeout=5)
        assert cancelled == ["2C"]
        assert [e.status for e in rec.of("task_ended")] == ["cancelled"]
