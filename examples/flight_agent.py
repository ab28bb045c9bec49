"""A real voice agent with slow tools: OpenAI (LLM, STT, TTS) and silero VAD.

Shows a slow flight search in the background, an `AgentTask` that collects the
caller's email while the search runs, a booking watch the caller can cancel (the LLM
uses the `get_running_tasks` / `cancel_task` control tools) and a fare-rules lookup
that gives up after a timeout. Run it the livekit way:

    OPENAI_API_KEY=... python examples/flight_agent.py console
    OPENAI_API_KEY=... python examples/flight_agent.py console --text   # type, no audio
    python examples/flight_agent.py dev      # with LIVEKIT_URL / _API_KEY / _API_SECRET

Any OpenAI-compatible server works for the LLM: set ``OPENAI_BASE_URL`` (and
``OPENAI_MODEL``). Offline, in text mode, against the project's strict test server
with the scripted caller's brain from the CI test:

    python -m tests.support.openai_server --port 8089 \\
        --brain tests.test_flight_agent_example:flight_brain
    OPENAI_BASE_URL=http://127.0.0.1:8089/v1 OPENAI_API_KEY=test \\
        python examples/flight_agent.py console --text

The airline is simulated (`Airline`); ``FLIGHT_AGENT_TIME_SCALE=0.1`` makes it, and
the tools' timeouts, ten times faster. Needs the ``examples`` extra
(livekit-plugins-openai, livekit-plugins-silero). CI runs this agent end to end
against the strict test server (tests/test_flight_agent_example.py).
"""

from __future__ import annotations

import asyncio
import os
import random

from livekit.agents import Agent, AgentServer, AgentSession, AgentTask, JobContext, cli

# Plugins register themselves when imported, and livekit requires that on the main
# thread: import them here, at module level, never inside the entrypoint (which runs
# in a job thread or process).
from livekit.plugins import openai, silero

from livekit_async_tools import (
    AsyncRunContext,
    AsyncToolOptions,
    AsyncToolRuntime,
    attach,
    function_tool,
)

TIME_SCALE = float(os.environ.get("FLIGHT_AGENT_TIME_SCALE", "1"))
"""Multiplies every simulated delay and every tool timeout (1 = real time)."""


def seconds(value: float) -> float:
    """``value`` seconds of demo time, in real seconds."""
    return value * TIME_SCALE


class Airline:
    """The simulated airline APIs: how long each call takes, in demo seconds."""

    search_stage: tuple[float, float] = (5.0, 15.0)
    """Each of the two search stages takes a random time in this range."""
    confirmation: float = 30.0
    """A watched booking is confirmed after this long."""
    fare_rules: tuple[float, float] = (10.0, 40.0)
    """The fare-rules service is slow; beyond 20 s the tool gives up."""

    async def wait(self, span: float | tuple[float, float]) -> None:
        low, high = span if isinstance(span, tuple) else (span, span)
        await asyncio.sleep(seconds(random.uniform(low, high)))


AIRLINE = Airline()


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

    @function_tool(timeout=seconds(90))
    async def search_flights(self, ctx: AsyncRunContext, origin: str, destination: str) -> str:
        """Search flights between two cities (takes up to a minute).

        Args:
            origin: Departure city.
            destination: Arrival city.
        """
        await ctx.update(f"searching flights from {origin} to {destination}")
        await AIRLINE.wait(AIRLINE.search_stage)
        await ctx.update("checked the first airlines")
        await AIRLINE.wait(AIRLINE.search_stage)
        return f"3 flights from {origin} to {destination}; the cheapest is 189 dollars"

    @function_tool(cancellable=True, timeout=seconds(600), on_handoff="cancel")
    async def watch_booking(self, ctx: AsyncRunContext, booking_ref: str) -> str:
        """Watch a booking and report when it is confirmed (the caller may cancel this).

        Args:
            booking_ref: The booking reference.
        """
        stop = asyncio.Event()
        ctx.on_cancel(stop.set)  # e.g. unsubscribe from the airline's webhook
        await ctx.update(f"watching booking {booking_ref}")
        await AIRLINE.wait(AIRLINE.confirmation)
        return f"booking {booking_ref} is confirmed"

    @function_tool(timeout=seconds(20))
    async def get_fare_rules(self, ctx: AsyncRunContext, flight_number: str) -> str:
        """Look up the fare rules of a flight: baggage, changes, refunds (the airline's
        rules service is slow; this gives up after 20 seconds).

        Args:
            flight_number: The flight number, e.g. TS123.
        """
        await ctx.update(f"asking the airline for the fare rules of {flight_number}")
        await AIRLINE.wait(AIRLINE.fare_rules)
        return f"{flight_number}: one checked bag, changes 50 dollars, no refunds"

    @function_tool
    async def collect_email(self) -> str:
        """Collect the caller's email address for the booking."""
        email = await CollectEmail()
        return f"email recorded: {email}"


def build_llm() -> openai.LLM:
    """OpenAI's Chat Completions, or the OpenAI-compatible server at ``OPENAI_BASE_URL``."""
    base_url = os.environ.get("OPENAI_BASE_URL")
    model = os.environ.get("OPENAI_MODEL", "gpt-4.1-mini")
    return openai.LLM(model=model, base_url=base_url) if base_url else openai.LLM(model=model)


def attach_runtime(session: AgentSession) -> AsyncToolRuntime:
    """The async-tool runtime of the session, logging how each background call ended."""
    runtime = attach(session, AsyncToolOptions(settle_delay=0.4))
    runtime.on("task_ended", lambda ev: print(f"[{ev.call_id}] {ev.status}"))
    return runtime


server = AgentServer()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    session: AgentSession = AgentSession(
        llm=build_llm(),
        stt=openai.STT(),
        tts=openai.TTS(),
        vad=silero.VAD.load(),
    )
    attach_runtime(session)
    await session.start(agent=TravelAgent(), room=ctx.room)


if __name__ == "__main__":
    cli.run_app(server)
