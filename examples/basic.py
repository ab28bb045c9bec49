"""Basic: one slow tool in the background, offline (scripted LLM, text mode).

The search is acknowledged at once, the caller keeps chatting, and the result is
spoken when the conversation is quiet. Run: ``python examples/basic.py``.
"""

from __future__ import annotations

import asyncio

from livekit.agents import Agent, AgentSession

from livekit_async_tools import AsyncRunContext, AsyncToolOptions, attach, function_tool
from livekit_async_tools.testing import ScriptedLLM, ToolCall


class Weather(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are a weather assistant.")

    @function_tool
    async def forecast(self, ctx: AsyncRunContext, city: str) -> str:
        """Ten-day forecast for a city (slow)."""
        await ctx.update(f"fetching the forecast for {city}")
        await asyncio.sleep(1.0)
        return f"sunny all week in {city}"


async def main() -> list[str]:
    llm = ScriptedLLM(
        [
            ToolCall("forecast", {"city": "Nice"}),
            "I'm fetching the forecast for Nice.",  # answers the acknowledgement
            "Yes, a jacket is a good idea in the evening.",  # the caller keeps chatting
            "The forecast is in: sunny all week in Nice.",  # the deferred reply
        ]
    )
    said: list[str] = []
    session: AgentSession = AgentSession(llm=llm)
    session.on(
        "conversation_item_added",
        lambda ev: (
            said.append(ev.item.text_content)
            if getattr(ev.item, "role", None) == "assistant"
            else None
        ),
    )
    runtime = attach(session, AsyncToolOptions(settle_delay=0.2))
    async with session:
        await session.start(Weather())
        await session.run(user_input="What's the weather in Nice next week?")
        await session.run(user_input="Should I bring a jacket?")
        await runtime.settle(timeout=10)
    for line in said:
        print("agent:", line)
    return said


if __name__ == "__main__":
    asyncio.run(main())
