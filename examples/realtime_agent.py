"""A voice agent on OpenAI's Realtime API (speech to speech) with a slow background tool.

The flight search runs in the background: the model tells the caller it is on it and
keeps talking; the result is spoken later, once the caller is quiet. A realtime model
hears and speaks by itself, so the session needs no STT, TTS or VAD. Run it the livekit
way:

    OPENAI_API_KEY=... python examples/realtime_agent.py console
    python examples/realtime_agent.py dev      # with LIVEKIT_URL / _API_KEY / _API_SECRET

``REALTIME_AGENT_TIME_SCALE=0.1`` makes the simulated airline ten times faster. Needs the
``examples`` extra (livekit-plugins-openai). CI runs this agent against a scripted fake
realtime model (tests/test_realtime_example.py).
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, cli

# Plugins register themselves when imported, and livekit requires that on the main
# thread: import them here, at module level, never inside the entrypoint.
from livekit.plugins import openai

from livekit_async_tools import (
    AsyncRunContext,
    AsyncToolOptions,
    AsyncToolRuntime,
    attach,
    function_tool,
)

TIME_SCALE = float(os.environ.get("REALTIME_AGENT_TIME_SCALE", "1"))
"""Multiplies every simulated delay and the tool's timeout (1 = real time)."""


class Airline:
    """The simulated airline API: each search stage takes this long, in seconds."""

    search_stage: tuple[float, float] = (5.0, 15.0)

    async def wait(self, span: tuple[float, float]) -> None:
        await asyncio.sleep(random.uniform(*span) * TIME_SCALE)


AIRLINE = Airline()


class TravelAgent(Agent):
    def __init__(self) -> None:
        super().__init__(
            instructions=(
                "You are Tess, a friendly travel agent on the phone. Keep answers short. "
                "Flight searches run in the background: tell the caller you are on it and "
                "keep talking; announce results when they arrive."
            )
        )

    @function_tool(timeout=90 * TIME_SCALE)
    async def search_flights(self, ctx: AsyncRunContext[Any], origin: str, destination: str) -> str:
        """Search flights between two cities (takes up to half a minute).

        Args:
            origin: Departure city.
            destination: Arrival city.
        """
        await ctx.update(f"searching flights from {origin} to {destination}")
        await AIRLINE.wait(AIRLINE.search_stage)
        await ctx.update("checked the first airlines")
        await AIRLINE.wait(AIRLINE.search_stage)
        return f"3 flights from {origin} to {destination}; the cheapest is 189 dollars"


def build_model() -> openai.realtime.RealtimeModel:
    """OpenAI's Realtime API (reads ``OPENAI_API_KEY``)."""
    return openai.realtime.RealtimeModel()


def attach_runtime(session: AgentSession[Any]) -> AsyncToolRuntime:
    """The async-tool runtime of the session, logging how each background call ended."""
    runtime = attach(session, AsyncToolOptions(settle_delay=0.4))
    runtime.on("task_ended", lambda ev: print(f"[{ev.call_id}] {ev.status}"))
    return runtime


server = AgentServer()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    session: AgentSession[Any] = AgentSession(llm=build_model())
    attach_runtime(session)
    await session.start(agent=TravelAgent(), room=ctx.room)


if __name__ == "__main__":
    cli.run_app(server)
