"""function_tool: detection, pass-through, schema and definition errors."""

from __future__ import annotations

import asyncio

import pytest
from livekit.agents import Agent, RunContext, llm
from livekit.agents import function_tool as lk_function_tool
from livekit.agents.llm.utils import function_arguments_to_pydantic_model

import livekit_async_tools
from livekit_async_tools import AsyncRunContext, ToolDefinitionError, function_tool
from livekit_async_tools.testing import ScriptedLLM, ToolCall

from .conftest import keyword_brain, spoken, start


def test_public_names_snapshot() -> None:
    assert livekit_async_tools.__all__ == [
        "AsyncRunContext",
        "AsyncToolOptions",
        "AsyncToolRuntime",
        "AttachError",
        "ReplyUpdated",
        "TaskEnded",
        "TaskInfo",
        "TaskStarted",
        "TaskUpdated",
        "ToolDefinitionError",
        "attach",
        "configure_redaction",
        "function_tool",
    ]
    for name in livekit_async_tools.__all__:
        assert getattr(livekit_async_tools, name).__doc__, name


async def plain(city: str, ctx: RunContext) -> str:
    """Plain tool.

    Args:
        city: The city.
    """
    return city


async def background(ctx: AsyncRunContext, city: str, days: int = 3) -> str:
    """Forecast for a city.

    Args:
        city: The city.
        days: How many days.
    """
    return city


async def reference(city: str, days: int = 3) -> str:
    """Forecast for a city.

    Args:
        city: The city.
        days: How many days.
    """
    return city


def test_tool_without_async_context_is_livekits_own() -> None:
    tool = function_tool(plain)
    assert isinstance(tool, llm.FunctionTool)
    assert not hasattr(tool, "__livekit_async_spec__")
    assert tool.info.name == "plain"


def test_async_tool_keeps_name_description_and_schema() -> None:
    tool = function_tool(background)
    ref = lk_function_tool(reference, name="background")
    assert tool.info.name == "background"
    assert tool.info.description == ref.info.description
    ours = function_arguments_to_pydantic_model(tool).model_json_schema()
    theirs = function_arguments_to_pydantic_model(ref).model_json_schema()
    ours.pop("title")
    theirs.pop("title")
    assert ours == theirs
    renamed = function_tool(name="forecast", description="Weather.")(background)
    assert (renamed.info.name, renamed.info.description) == ("forecast", "Weather.")


def test_definition_errors() -> None:
    with pytest.raises(ToolDefinitionError, match="timeout only apply to async tools"):
        function_tool(timeout=3)(plain)

    def sync_tool(ctx: AsyncRunContext) -> str:
        return ""

    with pytest.raises(ToolDefinitionError, match="must be an `async def`"):
        function_tool(sync_tool)

    async def star(ctx: AsyncRunContext, *names: str) -> str:
        return ""

    with pytest.raises(ToolDefinitionError, match="ordinary named parameters"):
        function_tool(star)
    with pytest.raises(ValueError, match="ack_after"):
        function_tool(ack_after=-1)(background)
    with pytest.raises(ValueError, match="cancellable=True"):
        function_tool(on_duplicate="replace")(background)
    with pytest.raises(ValueError, match="on_handoff"):
        function_tool(on_handoff="later")(background)  # type: ignore[arg-type]


async def test_plain_function_tool_passed_to_agent() -> None:
    release = asyncio.Event()

    @function_tool
    async def forecast(ctx: AsyncRunContext, city: str) -> str:
        """Forecast for a city."""
        assert ctx.origin is agent
        await ctx.update("fetching")
        await release.wait()
        return f"rain in {city}"

    agent = Agent(instructions="weather bot", tools=[forecast])
    session, runtime, _rec = await start(
        agent, ScriptedLLM(keyword_brain({"rain": ToolCall("forecast", {"city": "Bergen"})}))
    )
    async with session:
        await session.run(user_input="will it rain?")
        assert [t.tool_name for t in runtime.tasks] == ["forecast"]
        release.set()
        await runtime.settle(timeout=5)
        assert spoken(session)[-1] == "Result: rain in Bergen"
