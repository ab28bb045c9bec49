"""The testing helpers: settle_run (deferred replies as a RunResult), ScriptedLLM strict
mode, and livekit's mock_tools refusing async tools."""

from __future__ import annotations

import asyncio

import livekit.agents
import livekit.agents.voice.run_result
import pytest
from livekit.agents import Agent, AgentSession, RunResult
from livekit.agents import function_tool as lk_function_tool

from livekit_async_tools import AsyncRunContext, function_tool
from livekit_async_tools.testing import (
    LivekitMockError,
    ScriptedLLM,
    ToolCall,
    mock_tools,
    settle_run,
)

from .conftest import start

LIVEKIT_1_4 = livekit.agents.__version__.startswith("1.4.")


class Travel(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are a travel agent.")

    @function_tool
    async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
        """Search flights to a city."""
        await ctx.update(f"searching flights to {city}")
        await asyncio.sleep(0.05)
        return f"3 flights to {city}"

    @lk_function_tool
    async def note(self, text: str) -> str:
        """Take a note."""
        return f"noted {text}"


class Hotel(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You book hotels.")


def outputs(result: RunResult[None]) -> list[tuple[str, str]]:
    return [
        (event.item.call_id, event.item.output)
        for event in result.events
        if event.type == "function_call_output"
    ]


# -- settle_run ----------------------------------------------------------------------


@pytest.mark.looptime
async def test_progress_and_result_replies_in_order() -> None:
    async def search(ctx: AsyncRunContext, city: str) -> str:
        await ctx.update("asking the airlines")  # the acknowledgement
        await asyncio.sleep(1)
        await ctx.update("half of them answered")
        await asyncio.sleep(10)
        return f"3 flights to {city}"

    llm = ScriptedLLM(
        [
            ToolCall("search_flights", {"city": "Rome"}),
            "I'm on it.",
            "Half of the airlines answered.",
            "I found 3 flights to Rome.",
        ],
        strict=True,
    )
    session, _runtime, _rec = await start(Travel(), llm)
    async with session:
        with mock_tools(Travel, {"search_flights": search}):
            first = await session.run(user_input="Flights to Rome?")
        first.expect.next_event().is_function_call(name="search_flights")
        first.expect.next_event().is_function_call_output()
        first.expect.next_event().is_message(role="assistant")
        first.expect.no_more_events()

        result = await settle_run(session, timeout=60)
        result.expect.next_event().is_function_call(
            name="search_flights", arguments={"city": "Rome"}
        )
        progress = result.expect.next_event().is_function_call_output().event().item
        assert progress.call_id == "call_1_progress_2"
        assert "half of them answered" in progress.output
        said = result.expect.next_event().is_message(role="assistant").event().item
        assert said.text_content == "Half of the airlines answered."
        result.expect.next_event().is_function_call(name="search_flights")
        result.expect.next_event().is_function_call_output(output="3 flights to Rome")
        said = result.expect.next_event().is_message(role="assistant").event().item
        assert said.text_content == "I found 3 flights to Rome."
        result.expect.no_more_events()
    llm.check()


async def test_a_settled_session_gives_an_empty_done_run_result() -> None:
    session, _runtime, _rec = await start(Travel(), ScriptedLLM([]))
    async with session:
        result = await settle_run(session, timeout=1)
        assert isinstance(result, RunResult)
        assert result.done()
        assert await result is result
        result.expect.no_more_events()
        with pytest.raises(RuntimeError, match="no final output"):
            _ = result.final_output


async def test_a_session_without_runtime_has_nothing_to_wait_for() -> None:
    session: AgentSession = AgentSession(llm=ScriptedLLM([]))
    await session.start(Agent(instructions="plain"))
    async with session:
        result = await settle_run(session, timeout=1)
        result.expect.no_more_events()


async def test_results_of_two_calls_in_one_reply_show_both_pairs() -> None:
    release = asyncio.Event()

    async def search(ctx: AsyncRunContext, city: str) -> str:
        await ctx.update("searching")
        await release.wait()
        return f"3 flights to {city}"

    llm = ScriptedLLM(
        [
            [
                ToolCall("search_flights", {"city": "Rome"}),
                ToolCall("search_flights", {"city": "Oslo"}),
            ],
            "Searching both.",
            "Rome and Oslo both have 3 flights.",
        ],
        strict=True,
    )
    session, _runtime, _rec = await start(Travel(), llm)
    async with session:
        with mock_tools(Travel, {"search_flights": search}):
            await session.run(user_input="Rome or Oslo?")
        release.set()
        result = await settle_run(session, timeout=5)
        result.expect.next_event().is_function_call(arguments={"city": "Rome"})
        result.expect.next_event().is_function_call_output(output="3 flights to Rome")
        result.expect.next_event().is_function_call(arguments={"city": "Oslo"})
        result.expect.next_event().is_function_call_output(output="3 flights to Oslo")
        result.expect.next_event().is_message(role="assistant")
        result.expect.no_more_events()
    llm.check()


async def test_a_reply_that_calls_a_tool_shows_the_tool_turn_too() -> None:
    llm = ScriptedLLM(
        [
            ToolCall("search_flights", {"city": "Rome"}),
            "On it.",
            ["Found them.", ToolCall("note", {"text": "Rome"})],
            "Noted as well.",
        ],
        strict=True,
    )
    session, _runtime, _rec = await start(Travel(), llm)
    async with session:
        await session.run(user_input="Flights to Rome?")
        result = await settle_run(session, timeout=5)
        result.expect.next_event().is_function_call(name="search_flights")
        result.expect.next_event().is_function_call_output(output="3 flights to Rome")
        result.expect.next_event().is_message(role="assistant")
        result.expect.next_event().is_function_call(name="note")
        result.expect.next_event().is_function_call_output(output="noted Rome")
        said = result.expect.next_event().is_message(role="assistant").event().item
        assert said.text_content == "Noted as well."
        result.expect.no_more_events()
    llm.check()


async def test_a_reply_spoken_again_shows_its_pair_once() -> None:
    llm = ScriptedLLM(
        [
            ToolCall("search_flights", {"city": "Rome"}),
            "On it.",
            "Found th",  # cut off
            "I found 3 flights to Rome.",
        ],
        delay=0.05,
        strict=True,
    )
    session, runtime, rec = await start(Travel(), llm)
    async with session:
        await session.run(user_input="Flights to Rome?")

        def cut_first(ev: object) -> None:
            if [e.status for e in rec.of("reply_updated")] == ["scheduled"]:
                asyncio.get_running_loop().call_later(0.01, session.interrupt)

        runtime.on("reply_updated", cut_first)
        result = await settle_run(session, timeout=5)
        assert [e.status for e in rec.of("reply_updated")] == [
            "scheduled",
            "interrupted",
            "scheduled",
            "delivered",
        ]
        assert outputs(result) == [("call_1_result", "3 flights to Rome")]
        said = result.events[-1].item
        assert said.type == "message"
        assert said.text_content == "I found 3 flights to Rome."
    llm.check()


@pytest.mark.skipif(LIVEKIT_1_4, reason="livekit-agents 1.4 emits no event for a handoff")
async def test_a_handoff_while_waiting_is_an_agent_handoff_event() -> None:
    release = asyncio.Event()

    async def search(ctx: AsyncRunContext, city: str) -> str:
        await ctx.update("searching")
        await release.wait()
        return f"3 flights to {city}"

    llm = ScriptedLLM(
        [ToolCall("search_flights", {"city": "Rome"}), "On it.", "Flights: 3 to Rome."],
        strict=True,
    )
    travel = Travel()
    session, _runtime, _rec = await start(travel, llm)
    async with session:
        with mock_tools(Travel, {"search_flights": search}):
            await session.run(user_input="Flights to Rome?")
        result_task = asyncio.ensure_future(settle_run(session, timeout=5))
        await asyncio.sleep(0)  # settle_run is listening
        hotel = Hotel()
        session.update_agent(hotel)
        release.set()
        result = await result_task
        handoff = result.expect.next_event().is_agent_handoff(new_agent_type=Hotel).event()
        assert handoff.old_agent is travel
        assert handoff.new_agent is hotel
        result.expect.next_event().is_function_call(name="search_flights")
        result.expect.next_event().is_function_call_output(output="3 flights to Rome")
        result.expect.next_event().is_message(role="assistant")
        result.expect.no_more_events()
    llm.check()


async def test_settle_run_timeout_says_what_is_still_running() -> None:
    async def stuck(ctx: AsyncRunContext) -> str:
        await ctx.update("started")
        await asyncio.Event().wait()
        return ""

    session, _runtime, _rec = await start(
        Travel(), ScriptedLLM([ToolCall("search_flights", {"city": "Rome"}), "ok"])
    )
    async with session:
        with mock_tools(Travel, {"search_flights": stuck}):
            await session.run(user_input="go")
        with pytest.raises(TimeoutError, match=r"settle_run\(\) timed out.*search_flights"):
            await settle_run(session, timeout=0.1)


# -- ScriptedLLM strict mode -------------------------------------------------------


async def test_strict_check_passes_when_the_script_is_used_exactly() -> None:
    llm = ScriptedLLM(["Hello.", "Bye."], strict=True)
    session, _runtime, _rec = await start(Travel(), llm)
    async with session:
        await session.run(user_input="hi")
        await session.run(user_input="bye")
    llm.check()


async def test_strict_check_lists_the_requests_beyond_the_script() -> None:
    llm = ScriptedLLM([ToolCall("search_flights", {"city": "Rome"}), "On it."], strict=True)
    session, _runtime, _rec = await start(Travel(), llm)
    async with session:
        await session.run(user_input="Flights to Rome?")
        await settle_run(session, timeout=5)  # the result's reply finds the script used up
    assert llm.unanswered == 1
    with pytest.raises(AssertionError) as info:
        llm.check()
    message = str(info.value)
    assert "1 request(s) came after the script was used up" in message
    assert "answered ToolCall('search_flights', {'city': 'Rome'})" in message
    assert "user: 'Flights to Rome?'" in message
    assert "#3 (tools: " in message
    assert "answered with nothing: the script was used up" in message
    assert "function_call_output [call_1_result] output: '3 flights to Rome'" in message


async def test_strict_check_lists_replies_never_requested() -> None:
    llm = ScriptedLLM(["Hello.", "I found 3 flights to Rome.", None], strict=True)
    session, _runtime, _rec = await start(Travel(), llm)
    async with session:
        await session.run(user_input="hi")
    with pytest.raises(AssertionError) as info:
        llm.check()
    message = str(info.value)
    assert "2 scripted reply(ies) never requested: 'I found 3 flights to Rome.', (empty reply)" in (
        message
    )
    assert "answered 'Hello.'" in message


def test_strict_is_opt_in_for_direct_use() -> None:
    assert ScriptedLLM([]).strict is False
    assert ScriptedLLM([], strict=True).strict is True
    assert ScriptedLLM([]).describe_requests() == "No request was made."


# -- livekit's own mock_tools ------------------------------------------------------


def test_livekit_mock_tools_refuses_an_async_tool() -> None:
    for lk_mock_tools in (livekit.agents.mock_tools, livekit.agents.voice.run_result.mock_tools):
        with pytest.raises(LivekitMockError) as info:
            lk_mock_tools(Travel, {"search_flights": lambda city: "mocked"})
        message = str(info.value)
        assert "'search_flights' of Travel" in message
        assert "ordinary blocking tool" in message
        assert "livekit_async_tools.testing.mock_tools" in message
        assert isinstance(info.value, TypeError)


async def test_livekit_mock_tools_still_mocks_ordinary_tools() -> None:
    llm = ScriptedLLM([ToolCall("note", {"text": "x"}), "Done."], strict=True)
    session, _runtime, _rec = await start(Travel(), llm)
    async with session:
        with livekit.agents.mock_tools(Travel, {"note": lambda text: f"mocked {text}"}):
            result = await session.run(user_input="note it")
        result.expect.next_event().is_function_call(name="note")
        result.expect.next_event().is_function_call_output(output="mocked x")
    llm.check()


@pytest.mark.skipif(LIVEKIT_1_4, reason="session-scoped mocks came after livekit-agents 1.4")
async def test_livekit_session_scoped_mocks_refuse_an_async_tool_too() -> None:
    session, _runtime, _rec = await start(Travel(), ScriptedLLM([]))
    async with session:
        with pytest.raises(LivekitMockError):
            livekit.agents.mock_tools(
                Travel, {"search_flights": lambda city: "mocked"}, session=session
            )
