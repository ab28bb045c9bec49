"""Testing: how to test an agent with async tools, offline, with this package's
pytest fixtures (the ``test`` extra: ``pip install '.[test]'`` from a clone).

Run: ``pytest examples/test_travel_agent.py``.
"""

from __future__ import annotations

import asyncio

import pytest
from livekit.agents import Agent

from livekit_async_tools import AsyncRunContext, AsyncToolOptions, attach, function_tool
from livekit_async_tools.testing import ScriptedLLM, ToolCall, mock_tools, settle
from livekit_async_tools.testing.pytest_plugin import SessionFactory


class TravelAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are a travel agent.")

    @function_tool(timeout=300)
    async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
        """Search flights to a city."""
        raise NotImplementedError("the real airline API; mocked in tests")


async def test_result_is_spoken_after_the_acknowledgement(
    scripted_llm: ScriptedLLM, async_tools_session: SessionFactory
) -> None:
    async def fake_search(ctx: AsyncRunContext, city: str) -> str:
        await ctx.update("asking the airlines")
        await asyncio.sleep(0.05)
        return f"3 flights to {city}"

    scripted_llm.extend(
        [ToolCall("search_flights", {"city": "Oslo"}), "One moment.", "3 flights to Oslo."]
    )
    session = await async_tools_session(TravelAgent(), options=AsyncToolOptions(settle_delay=0.05))
    with mock_tools(TravelAgent, {"search_flights": fake_search}):
        result = await session.run(user_input="Flights to Oslo?")
    result.expect.next_event().is_function_call(name="search_flights")
    ack = result.expect.next_event().is_function_call_output().event().item.output
    assert "asking the airlines" in ack
    await settle(session, timeout=5)
    assert scripted_llm.remaining == 0  # the deferred reply was generated


@pytest.mark.looptime
async def test_a_five_minute_timeout_runs_in_virtual_time(
    scripted_llm: ScriptedLLM, async_tools_session: SessionFactory
) -> None:
    async def hangs(ctx: AsyncRunContext) -> str:
        await ctx.update("asking the airlines")
        await asyncio.Event().wait()
        return ""

    scripted_llm.extend([ToolCall("search_flights", {"city": "Oslo"}), "One moment.", "Sorry."])
    session = await async_tools_session(TravelAgent())
    ended = []
    attach(session).on("task_ended", ended.append)
    with mock_tools(TravelAgent, {"search_flights": hangs}):
        await session.run(user_input="Flights to Oslo?")
    await settle(session, timeout=600)
    assert [e.status for e in ended] == ["timed_out"]
