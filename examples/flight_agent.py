"""A real voice agent with slow tools: OpenAI (LLM, STT, TTS) and silero VAD.

Shows a slow flight search in the background, an `AgentTask` that collects the
caller's email while the search runs, a cancellable booking-status watch and a
timeout. Run it the livekit way:

    OPENAI_API_KEY=... python examples/flight_agent.py console
    python examples/flight_agent.py dev      # with LIVEKIT_URL / _API_KEY / _API_SECRET

Needs the ``examples`` extra (livekit-plugins-openai, livekit-plugins-silero). The
flight API here is simulated; the tests exercise these tools offline with the
scripted LLM and `mock_tools` (tests/test_examples.py).
"""

from __future__ import annotations

import asyncio
import random

from livekit.agents import Agent, AgentSession, AgentTask, JobContext, WorkerOptions, cli

from livekit_async_tools import AsyncRunContext, AsyncToolOptions, attach, function_tool


class CollectEmail(AgentTask[str]):
    """Asks for the caller's email; the flight search keeps running meanwhile."""

    def __init__(self) -> None:
        super().__init__(
            instructions="Ask the caller for their email address and spell it back to confirm."
        )

    async def on_enter(self) -> None:
        self.session.generate_reply(instructions="Ask for the caller's email address.")

    @function_tool
    async def record_email(self, email: str) -> None:
        """Record the caller's confirmed email address.

        Args:
            email: The email address.
        """
        self.complete(email)


class TravelAgent(Agent):
    def __init__(self) -> None:
        super().__init__(
            instructions=(
                "You are Tess, a friendly travel agent on the phone. Keep answers short. "
                "Flight searches run in the background: tell the caller you are on it and "
                "keep talking; announce results when they arrive."
            )
        )

    @function_tool(timeout=90)
    async def search_flights(self, ctx: AsyncRunContext, origin: str, destination: str) -> str:
        """Search flights between two cities (takes up to a minute).

        Args:
            origin: Departure city.
            destination: Arrival city.
        """
        await ctx.update(f"searching flights from {origin} to {destination}")
        await asyncio.sleep(random.uniform(5, 15))  # the airline APIs
        await ctx.update("checked the first airlines")
        await asyncio.sleep(random.uniform(5, 15))
        return f"3 flights from {origin} to {destination}; the cheapest is 189 dollars"

    @function_tool(cancellable=True, timeout=600, on_handoff="cancel")
    async def watch_booking(self, ctx: AsyncRunContext, booking_ref: str) -> str:
        """Watch a booking and report when it is confirmed (the caller may cancel this).

        Args:
            booking_ref: The booking reference.
        """
        stop = asyncio.Event()
        ctx.on_cancel(stop.set)  # e.g. unsubscribe from the airline's webhook
        await ctx.update(f"watching booking {booking_ref}")
        await asyncio.sleep(30)
        return f"booking {booking_ref} is confirmed"

    @function_tool
    async def collect_email(self) -> str:
        """Collect the caller's email address for the booking."""
        email = await CollectEmail()
        return f"email recorded: {email}"


async def entrypoint(ctx: JobContext) -> None:
    from livekit.plugins import openai, silero

    session: AgentSession = AgentSession(
        llm=openai.LLM(model="gpt-4.1-mini"),
        stt=openai.STT(),
        tts=openai.TTS(),
        vad=silero.VAD.load(),
    )
    runtime = attach(session, AsyncToolOptions(settle_delay=0.4))
    runtime.on("task_ended", lambda ev: print(f"[{ev.call_id}] {ev.status}"))
    await session.start(agent=TravelAgent(), room=ctx.room)


if __name__ == "__main__":
    cli.run_app(WorkerOptions(entrypoint_fnc=entrypoint))
