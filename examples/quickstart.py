"""Quickstart: a livekit voice agent whose flight search runs in the background.

The same code is in README.md and docs/index.md. Needs the ``examples`` extra
(livekit-plugins-openai, livekit-plugins-silero) and an OpenAI key:

    OPENAI_API_KEY=... python examples/quickstart.py console   # talk to it in the terminal
    python examples/quickstart.py dev   # with LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET

livekit-agents 1.8 marks ``cli.run_app`` deprecated (it still runs) in favour of
launchers that find the module-level ``server`` themselves: the LiveKit CLI's
``lk agent ...`` or ``python -m livekit.agents start examples/quickstart.py``.
tests/test_examples.py runs this agent offline with a scripted LLM.
"""

import asyncio

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, cli
from livekit.plugins import openai, silero  # plugins are imported at module level

from livekit_async_tools import AsyncRunContext, attach, function_tool


class TravelAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are a friendly travel agent. Keep answers short.")

    @function_tool(timeout=120)
    async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
        """Search flights to a city.

        Args:
            city: Destination city.
        """
        await ctx.update(f"searching flights to {city}")  # the LLM hears this at once
        await asyncio.sleep(10)  # your slow API call
        return f"3 flights to {city}, the cheapest 189 dollars"  # spoken when quiet


server = AgentServer()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    session = AgentSession(
        vad=silero.VAD.load(),
        stt=openai.STT(),
        llm=openai.LLM(model="gpt-4o-mini"),
        tts=openai.TTS(),
    )
    attach(session)  # before session.start
    await session.start(agent=TravelAgent(), room=ctx.room)


if __name__ == "__main__":
    cli.run_app(server)
