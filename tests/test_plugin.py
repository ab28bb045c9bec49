"""The pytest plugin's fixtures, as a user of the package would use them."""

from __future__ import annotations

import asyncio

from livekit.agents import Agent

from livekit_async_tools import AsyncRunContext, AsyncToolOptions, attach, function_tool
from livekit_async_tools.testing import ScriptedLLM, ToolCall, settle
from livekit_async_tools.testing.pytest_plugin import SessionFactory


class Weather(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="weather")

    @function_tool
    async def forecast(self, ctx: AsyncRunContext, city: str) -> str:
        """Forecast for a city."""
        await ctx.update("fetching")
        await asyncio.sleep(0.01)
        return f"sun in {city}"


async def test_fixtures_start_a_session_with_the_runtime(
    scripted_llm: ScriptedLLM, async_tools_session: SessionFactory
) -> None:
    scripted_llm.extend([ToolCall("forecast", {"city": "Nice"}), "One moment.", "Sun in Nice."])
    session = await async_tools_session(Weather(), options=AsyncToolOptions(settle_delay=0.01))
    await session.run(user_input="weather in Nice?")
    await settle(session, timeout=5)
    assert attach(session).tasks == ()
    assert scripted_llm.remaining == 0


async def test_settle_timeout_names_what_is_still_running(
    async_tools_session: SessionFactory,
) -> None:
    class Stuck(Agent):
        def __init__(self) -> None:
            super().__init__(instructions="stuck")

        @function_tool
        async def stuck(self, ctx: AsyncRunContext) -> str:
            """Never ends while the test waits."""
            await ctx.update("started")
            await asyncio.Event().wait()
            return ""

    session = await async_tools_session(Stuck(), llm=ScriptedLLM([ToolCall("stuck"), "ok"]))
    await session.run(user_input="go")
    try:
        await settle(session, timeout=0.1)
    except TimeoutError as e:
        assert "stuck (call_1) running" in str(e)
    else:
        raise AssertionError("settle() should have timed out")
