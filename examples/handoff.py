"""Handoff: a background search survives a handoff and is spoken by the new agent.

The travel agent starts a slow search and hands the caller to the hotel agent;
the handoff does not wait. With ``on_handoff="forward"`` (the default) the hotel
agent speaks the result, with the result in its own context. Offline; run:
``python examples/handoff.py``.
"""

from __future__ import annotations

import asyncio

from livekit.agents import Agent, AgentSession, llm

from livekit_async_tools import AsyncRunContext, AsyncToolOptions, attach, function_tool
from livekit_async_tools.testing import LLMRequest, Reply, ScriptedLLM, ToolCall


class HotelAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are the hotel agent.")


class TravelAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are the travel agent.")

    @function_tool
    async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
        """Search flights to a city (slow)."""
        await ctx.update(f"searching flights to {city}")
        await asyncio.sleep(1.0)
        return f"3 flights to {city}"

    @function_tool
    async def transfer_to_hotels(self) -> tuple[Agent, str]:
        """Hand the caller over to the hotel agent."""
        return HotelAgent(), "Transferring you to our hotel desk."


def decide(req: LLMRequest) -> Reply:
    last = req.chat_ctx.items[-1]
    if "Background results" in req.instructions:
        outputs = [i for i in req.chat_ctx.items if isinstance(i, llm.FunctionCallOutput)]
        return f"Hotel desk here. Your flight search is done: {outputs[-1].output}."
    if isinstance(last, llm.FunctionCallOutput):
        return "Searching now." if "background" in last.output else ""
    user = req.last_user_text
    if "flight" in user:
        return ToolCall("search_flights", {"city": "Rome"})
    if "hotel" in user:
        return ToolCall("transfer_to_hotels")
    return "Okay."


async def main() -> HotelAgent:
    session: AgentSession = AgentSession(llm=ScriptedLLM(decide))
    runtime = attach(session, AsyncToolOptions(settle_delay=0.2))
    async with session:
        await session.start(TravelAgent())
        await session.run(user_input="Find me a flight to Rome.")
        await session.run(user_input="And I need a hotel.")
        await runtime.settle(timeout=10)
        hotel = session.current_agent
        assert isinstance(hotel, HotelAgent)
        for item in session.history.items:
            if item.type == "message" and item.role == "assistant":
                print("agent:", item.text_content)
    return hotel


if __name__ == "__main__":
    asyncio.run(main())
