from __future__ import annotations

import asyncio

from livekit.agents import Agent

from livekit_async_tools import AsyncRunContext, function_tool
from livekit_async_tools.testing import ScriptedLLM, ToolCall

from .conftest import spoken, start


class Travel(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are a travel agent.")
        self.release = asyncio.Event()

    @function_tool
    async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
        """Search flights to a city.

        Args:
            city: Destination city.
        """
        await ctx.update(f"searching flights to {city}")
        await self.release.wait()
        return f"3 flights to {city}"


async def test_smoke() -> None:
    llm = ScriptedLLM(
        [
            ToolCall("search_flights", {"city": "Paris"}),
            "Searching now.",
            "I found 3 flights to Paris.",
        ]
    )
    agent = Travel()
    session, runtime, rec = await start(agent, llm)
    async with session:
        await session.run(user_input="flights to Paris")
        assert [t.tool_name for t in runtime.tasks] == ["search_flights"]
        agent.release.set()
        await runtime.settle(timeout=5)
        print(rec.events)
        print(spoken(session))
        for it in agent.chat_ctx.items:
            print(it)
        assert spoken(session) == ["Searching now.", "I found 3 flights to Paris."]
