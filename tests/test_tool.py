"""function_tool: detection, pass-through, schema and definition errors."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
from livekit.agents import Agent, RunContext, llm
from livekit.agents import function_tool as lk_function_tool
from livekit.agents.llm.tool_context import ToolFlag
from livekit.agents.llm.utils import function_arguments_to_pydantic_model

import livekit_async_tools
from livekit_async_tools import AsyncRunContext, ToolDefinitionError, function_tool
from livekit_async_tools.testing import ScriptedLLM, ToolCall

from .conftest import keyword_brain, spoken, start


def test_public_names_snapshot() -> None:
    assert livekit_async_tools.__all__ == [
        "AskTimeout",
        "AsyncRunContext",
        "AsyncToolOptions",
        "AsyncToolRuntime",
        "AttachError",
        "QuestionNotAsked",
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
    with pytest.raises(ToolDefinitionError, match="ack_after only apply to async tools"):
        function_tool(ack_after=3)(plain)

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


# -- drop-in: livekit's own arguments ----------------------------------------------------

LIVEKIT_HAS_DUPLICATES = "on_duplicate" in inspect.signature(lk_function_tool).parameters
"""livekit-agents >= 1.6 has its own on_duplicate / duplicate_scope for ordinary tools."""

RAW_SCHEMA: dict[str, Any] = {
    "name": "lookup",
    "description": "Look something up.",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
}


async def raw_lookup(raw_arguments: dict[str, object], ctx: RunContext) -> str:
    return str(raw_arguments)


def test_plain_tool_takes_livekits_raw_schema() -> None:
    tool = function_tool(raw_schema=RAW_SCHEMA)(raw_lookup)
    ref = lk_function_tool(raw_lookup, raw_schema=RAW_SCHEMA)
    assert isinstance(tool, llm.RawFunctionTool)
    assert tool.info == ref.info
    bare = function_tool(raw_lookup, raw_schema=RAW_SCHEMA, flags=ToolFlag.IGNORE_ON_ENTER)
    assert bare.info.flags == ToolFlag.IGNORE_ON_ENTER


def test_plain_tool_passes_name_description_and_flags_through() -> None:
    tool = function_tool(name="city", description="Echo.", flags=ToolFlag.IGNORE_ON_ENTER)(plain)
    ref = lk_function_tool(plain, name="city", description="Echo.", flags=ToolFlag.IGNORE_ON_ENTER)
    assert tool.info == ref.info
    assert function_tool(plain).info == lk_function_tool(plain).info


@pytest.mark.parametrize(
    "option",
    [
        {"cancellable": False},
        {"cancellable": True},
        {"on_timeout": "cancel"},
        {"on_timeout": "ask"},
        {"ack_after": 1.0},
        {"ack_after": None},
        {"on_handoff": None},
        {"on_handoff": "hold"},
        {"result_delivery": "when_idle"},
        {"result_delivery": "silent"},
    ],
)
def test_async_only_option_on_a_plain_tool_is_refused_whatever_its_value(
    option: dict[str, Any],
) -> None:
    (key,) = option
    with pytest.raises(ToolDefinitionError, match=f"plain: {key} only apply to async tools"):
        function_tool(**option)(plain)
    with pytest.raises(ToolDefinitionError, match="add a parameter typed AsyncRunContext"):
        function_tool(plain, **option)


def test_every_refused_option_is_named() -> None:
    with pytest.raises(ToolDefinitionError, match="plain: cancellable, ack_after only apply"):
        function_tool(cancellable=False, ack_after=None, name="x")(plain)


@pytest.mark.parametrize(
    "option",
    [
        {"on_duplicate": "reject"},
        {"on_duplicate": "allow"},
        {"duplicate_scope": "name_and_args"},
        {"on_duplicate": "confirm", "duplicate_scope": "name"},
    ],
)
def test_livekits_duplicate_options_on_a_plain_tool(option: dict[str, Any]) -> None:
    """Passed to livekit where it has them (1.6+), refused where it has not (1.4)."""
    if LIVEKIT_HAS_DUPLICATES:
        tool = function_tool(**option)(plain)
        assert tool.info == lk_function_tool(plain, **option).info
        raw = function_tool(raw_schema=RAW_SCHEMA, **option)(raw_lookup)
        assert raw.info == lk_function_tool(raw_lookup, raw_schema=RAW_SCHEMA, **option).info
    else:
        with pytest.raises(ToolDefinitionError, match=r"has them from 1\.6"):
            function_tool(**option)(plain)


def test_async_tool_refuses_raw_schema_and_says_why() -> None:
    with pytest.raises(ToolDefinitionError) as info:
        function_tool(raw_schema=RAW_SCHEMA)(background)  # type: ignore[call-overload]
    message = str(info.value)
    assert message.startswith("background: raw_schema= cannot be used on a tool that takes")
    assert "typed signature" in message
    assert "drop the AsyncRunContext parameter" in message


def test_async_tool_takes_ignore_on_enter() -> None:
    tool = function_tool(flags=ToolFlag.IGNORE_ON_ENTER)(background)
    assert tool.info.flags == ToolFlag.IGNORE_ON_ENTER
    assert hasattr(tool, "__livekit_async_spec__")
    assert function_tool(background, flags=ToolFlag.NONE).info.flags == ToolFlag.NONE


@pytest.mark.skipif(not hasattr(ToolFlag, "CANCELLABLE"), reason="livekit-agents < 1.6")
def test_async_tool_refuses_livekits_cancellable_flag() -> None:
    flag = ToolFlag.CANCELLABLE | ToolFlag.IGNORE_ON_ENTER
    with pytest.raises(ToolDefinitionError, match="Use cancellable=True instead"):
        function_tool(flags=flag)(background)


def test_async_tool_flags_must_be_tool_flags() -> None:
    with pytest.raises(TypeError, match="flags must be a livekit ToolFlag"):
        function_tool(flags=1)(background)  # type: ignore[call-overload]


def test_async_tool_with_every_default_spelled_out_is_the_default_tool() -> None:
    explicit = function_tool(
        cancellable=False,
        on_duplicate="reject",
        duplicate_scope="name_and_args",
        timeout=None,
        ack_after=1.0,
        on_handoff=None,
        result_delivery="when_idle",
    )(background)
    bare = function_tool(background)
    assert explicit.__livekit_async_spec__ == bare.__livekit_async_spec__  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("option", "error", "message"),
    [
        ({"timeout": 0}, ValueError, "timeout must be a number of seconds > 0"),
        ({"timeout": float("nan")}, ValueError, "timeout must be"),
        ({"timeout": float("inf")}, ValueError, "timeout must be"),
        ({"timeout": "10"}, ValueError, "timeout must be"),
        ({"ack_after": float("inf")}, ValueError, "or None to wait for the first update"),
        ({"ack_after": True}, ValueError, "ack_after must be"),
        ({"cancellable": "yes"}, TypeError, "cancellable must be True or False"),
        ({"result_delivery": "loud"}, ValueError, "result_delivery must be one of"),
        ({"duplicate_scope": "args"}, ValueError, "duplicate_scope must be one of"),
    ],
)
def test_async_option_values_are_checked(
    option: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        function_tool(**option)(background)


async def test_async_tool_with_ignore_on_enter_runs_in_a_session() -> None:
    release = asyncio.Event()

    class Weather(Agent):
        def __init__(self) -> None:
            super().__init__(instructions="weather bot")

        @function_tool(flags=ToolFlag.IGNORE_ON_ENTER, ack_after=None)
        async def forecast(self, ctx: AsyncRunContext, city: str) -> str:
            """Forecast for a city."""
            await ctx.update("fetching")
            await release.wait()
            return f"sun in {city}"

        @function_tool(raw_schema=RAW_SCHEMA)
        async def lookup(self, raw_arguments: dict[str, object], ctx: RunContext) -> str:
            return f"looked up {raw_arguments['q']}"

    brain = keyword_brain(
        {
            "sun": ToolCall("forecast", {"city": "Nice"}),
            "look": ToolCall("lookup", {"q": "tides"}),
        }
    )
    session, runtime, _rec = await start(Weather(), ScriptedLLM(brain))
    async with session:
        await session.run(user_input="sun tomorrow?")
        assert [t.tool_name for t in runtime.tasks] == ["forecast"]
        result = await session.run(user_input="look up the tides")
        result.expect.contains_function_call_output(output="looked up tides")
        release.set()
        await runtime.settle(timeout=5)
        assert spoken(session)[-1] == "Result: sun in Nice"
