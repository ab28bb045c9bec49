"""The pytest plugin's fixtures, as a user of the package would use them."""

from __future__ import annotations

import asyncio

from livekit.agents import Agent

from livekit_async_tools import AsyncRunContext, AsyncToolOptions, attach, function_tool
from livekit_async_tools.testing import ScriptedLLM, ToolCall, pytest_plugin, settle, settle_run
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


def test_the_scripted_llm_fixture_is_strict(scripted_llm: ScriptedLLM) -> None:
    assert scripted_llm.strict is True
    scripted_llm.check()  # an empty script with no request is used exactly


async def test_fixtures_and_settle_run_assert_the_deferred_reply(
    scripted_llm: ScriptedLLM, async_tools_session: SessionFactory
) -> None:
    scripted_llm.extend([ToolCall("forecast", {"city": "Nice"}), "One moment.", "Sun in Nice."])
    session = await async_tools_session(Weather(), options=AsyncToolOptions(settle_delay=0.01))
    await session.run(user_input="weather in Nice?")
    result = await settle_run(session, timeout=5)
    result.expect.next_event().is_function_call(name="forecast", arguments={"city": "Nice"})
    result.expect.next_event().is_function_call_output(output="sun in Nice")
    said = result.expect.next_event().is_message(role="assistant").event().item
    assert said.text_content == "Sun in Nice."
    result.expect.no_more_events()
    # the plugin checks at the end of the test that the strict script was used exactly


def test_async_tests_using_the_fixtures_are_marked_for_pytest_asyncio() -> None:
    async def test_uses(async_tools_session: SessionFactory) -> None: ...

    async def test_other() -> None: ...

    class Collector:
        @staticmethod
        def funcnamefilter(name: str) -> bool:
            return name.startswith("test")

    for func in (test_uses, test_other):
        hook = pytest_plugin.pytest_pycollect_makeitem(Collector(), func.__name__, func)  # type: ignore[arg-type]
        next(hook)
    marks = {
        f.__name__: [m.name for m in getattr(f, "pytestmark", [])] for f in (test_uses, test_other)
    }
    assert marks == {"test_uses": ["asyncio"], "test_other": []}
