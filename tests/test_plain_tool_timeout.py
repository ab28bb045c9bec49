"""``timeout`` on an ordinary tool (no `AsyncRunContext`): cancelled at the deadline,
the LLM gets the timed-out text inline; on a fast-forwarding clock."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import pytest
from livekit.agents import Agent, AgentSession, RunContext, llm
from livekit.agents import function_tool as lk_function_tool
from livekit.agents.llm.utils import function_arguments_to_pydantic_model

from livekit_async_tools import AsyncToolOptions, ToolDefinitionError, function_tool
from livekit_async_tools.runtime import runtime_of
from livekit_async_tools.testing import ScriptedLLM, ToolCall

from .conftest import keyword_brain, spoken, start

STOPPED = "check_stock was stopped after 30 seconds without a result."


class Desk(Agent):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(instructions="desk", **kwargs)
        self.seen: list[str] = []

    @function_tool(timeout=30)
    async def check_stock(self, item: str) -> str:
        """Check the warehouse stock of an item.

        Args:
            item: The item to look up.
        """
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.seen.append("cancelled")
            raise
        return "never"

    @function_tool(timeout=30)
    async def quick_stock(self, item: str) -> str:
        """Check the shop stock of an item."""
        await asyncio.sleep(5)
        return f"{item}: 3 in stock"

    @function_tool(timeout=30)
    async def closed_stock(self, item: str) -> str:
        """Check the stock of a closed shop."""
        await asyncio.sleep(1)
        raise llm.ToolError("the shop's system is offline today")

    @function_tool(timeout=30)
    async def crashing_stock(self, item: str) -> str:
        """Check the stock in a broken system."""
        raise RuntimeError("database password rejected")

    @function_tool(timeout=12.5)
    async def noted_stock(self, ctx: RunContext, item: str) -> str:
        """Check stock, with livekit's context."""
        self.seen.append(ctx.function_call.call_id)
        await asyncio.Event().wait()
        return "never"


RULES = {
    "tents": ToolCall("check_stock", {"item": "tents"}),
    "quick": ToolCall("quick_stock", {"item": "stoves"}),
    "closed": ToolCall("closed_stock", {"item": "maps"}),
    "crash": ToolCall("crashing_stock", {"item": "maps"}),
    "noted": ToolCall("noted_stock", {"item": "ropes"}),
    "raw": ToolCall("raw_stock", {"item": "boots"}),
    "free": ToolCall("free_stock", {"item": "boots"}),
    "hello": "Hello again.",
}


def _outputs(req_items: list[Any]) -> dict[str, tuple[str, bool]]:
    return {
        it.call_id: (it.output, it.is_error)
        for it in req_items
        if it.type == "function_call_output"
    }


@pytest.mark.looptime
async def test_slow_tool_is_cancelled_at_the_deadline_and_the_llm_hears_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    agent = Desk()
    scripted = ScriptedLLM(keyword_brain(RULES))
    session, _, rec = await start(agent, scripted)
    loop = asyncio.get_running_loop()
    caplog.set_level(logging.WARNING, logger="livekit_async_tools")
    async with session:
        t0 = loop.time()
        result = await session.run(user_input="do you have tents?")
        assert 30 <= loop.time() - t0 < 31
        call = result.expect.next_event().is_function_call(name="check_stock").event().item
        out = result.expect.next_event().is_function_call_output().event().item
        assert (out.call_id, out.output, out.is_error) == (call.call_id, STOPPED, True)
        assert agent.seen == ["cancelled"]  # the coroutine saw CancelledError
        # the LLM's next request carries the timed-out text as that call's output
        assert _outputs(list(scripted.requests[-1].chat_ctx.items)) == {
            call.call_id: (STOPPED, True)
        }
        assert spoken(session)[-1] == f"Done: {STOPPED}"
        (record,) = [r for r in caplog.records if r.getMessage() == "tool timed out"]
        assert record.levelno == logging.WARNING
        assert (record.call_id, record.function, record.timeout) == (  # type: ignore[attr-defined]
            call.call_id,
            "check_stock",
            30.0,
        )
        # the session carries on
        await session.run(user_input="hello")
        assert spoken(session)[-1] == "Hello again."
    assert rec.events == []  # an ordinary tool is no background call


@pytest.mark.looptime
async def test_fast_tool_is_untouched(caplog: pytest.LogCaptureFixture) -> None:
    session, _, _ = await start(Desk(), ScriptedLLM(keyword_brain(RULES)))
    async with session:
        result = await session.run(user_input="quick")
        result.expect.next_event().is_function_call(name="quick_stock")
        out = result.expect.next_event().is_function_call_output().event().item
        assert (out.output, out.is_error) == ("stoves: 3 in stock", False)
        await asyncio.sleep(60)  # past where the deadline was: nothing fires
        await session.run(user_input="hello")
        assert spoken(session)[-2:] == ["Done: stoves: 3 in stock", "Hello again."]
    assert not [r for r in caplog.records if r.getMessage() == "tool timed out"]


@pytest.mark.looptime
async def test_raising_tool_keeps_livekits_error_handling() -> None:
    session, _, _ = await start(Desk(), ScriptedLLM(keyword_brain(RULES)))
    async with session:
        result = await session.run(user_input="closed")
        result.expect.next_event().is_function_call(name="closed_stock")
        out = result.expect.next_event().is_function_call_output().event().item
        assert (out.output, out.is_error) == ("the shop's system is offline today", True)
        result = await session.run(user_input="crash")
        result.expect.next_event().is_function_call(name="crashing_stock")
        out = result.expect.next_event().is_function_call_output().event().item
        assert out.is_error
        assert "password" not in out.output  # livekit's generic text, as without timeout
        assert "stopped after" not in out.output


@pytest.mark.looptime
async def test_template_comes_from_the_attached_runtime() -> None:
    options = AsyncToolOptions(
        settle_delay=0.05,
        timed_out_template="{tool_name} gave up after {seconds:g} s (call {call_id}).",
    )
    agent = Desk()
    session, _, _ = await start(agent, ScriptedLLM(keyword_brain(RULES)), options)
    async with session:
        result = await session.run(user_input="noted")
        call = result.expect.next_event().is_function_call(name="noted_stock").event().item
        out = result.expect.next_event().is_function_call_output().event().item
        assert out.output == f"noted_stock gave up after 12.5 s (call {call.call_id})."
        assert agent.seen == [call.call_id]  # the tool's own RunContext is still passed


@pytest.mark.looptime
async def test_without_a_runtime_the_default_template_is_used() -> None:
    @function_tool(timeout=20, name="free_stock")
    async def lookup(item: str) -> str:
        """Check the stock of an item (a tool outside any agent class)."""
        await asyncio.Event().wait()
        return "never"

    session: AgentSession = AgentSession(llm=ScriptedLLM(keyword_brain(RULES)))
    async with session:
        await session.start(Agent(instructions="desk", tools=[lookup]))
        result = await session.run(user_input="free")
        result.expect.next_event().is_function_call(name="free_stock")
        out = result.expect.next_event().is_function_call_output().event().item
        assert out.output == "free_stock was stopped after 20 seconds without a result."
        assert runtime_of(session) is None  # nothing was attached


RAW_SCHEMA = {
    "name": "raw_stock",
    "description": "Check the stock of an item.",
    "parameters": {
        "type": "object",
        "properties": {"item": {"type": "string"}},
        "required": ["item"],
    },
}


@pytest.mark.looptime
async def test_raw_schema_tool_with_timeout() -> None:
    seen: list[object] = []

    @function_tool(raw_schema=RAW_SCHEMA, timeout=10)
    async def raw(raw_arguments: dict[str, object]) -> str:
        seen.append(raw_arguments)
        await asyncio.Event().wait()
        return "never"

    assert isinstance(raw, llm.RawFunctionTool)
    session, _, _ = await start(
        Agent(instructions="desk", tools=[raw]), ScriptedLLM(keyword_brain(RULES))
    )
    async with session:
        result = await session.run(user_input="raw")
        result.expect.next_event().is_function_call(name="raw_stock")
        out = result.expect.next_event().is_function_call_output().event().item
        assert out.output == "raw_stock was stopped after 10 seconds without a result."
        assert seen == [{"item": "boots"}]


@pytest.mark.looptime
async def test_a_cancel_from_elsewhere_propagates_even_at_the_deadline() -> None:
    @function_tool(timeout=5)
    async def lookup(item: str) -> str:
        """Look up an item."""
        await asyncio.Event().wait()
        return "never"

    loop = asyncio.get_running_loop()
    early = asyncio.create_task(lookup(item="x"))
    loop.call_later(1, early.cancel)
    with pytest.raises(asyncio.CancelledError):
        await early
    same_time = asyncio.create_task(lookup(item="x"))
    await asyncio.sleep(0)  # the deadline's timer is armed first
    loop.call_later(5, same_time.cancel)
    with pytest.raises(asyncio.CancelledError):
        await same_time
    # called directly (no RunContext): the declared name and the default template
    with pytest.raises(llm.ToolError, match=r"^lookup was stopped after 5 seconds"):
        await lookup(item="x")


def test_schema_signature_and_metadata_are_livekits() -> None:
    async def stock(item: str, count: int = 1) -> str:
        """Check stock.

        Args:
            item: The item.
            count: How many.
        """
        return item

    ours = function_tool(timeout=3)(stock)
    ref = lk_function_tool(stock)
    assert ours.info == ref.info
    ours_schema = function_arguments_to_pydantic_model(ours).model_json_schema()
    assert ours_schema == function_arguments_to_pydantic_model(ref).model_json_schema()
    assert (ours.__name__, ours.__doc__, ours.__wrapped__.__wrapped__) == (  # type: ignore[attr-defined]
        "stock",
        stock.__doc__,
        stock,
    )
    # livekit's RunContext is injected into an extra keyword-only parameter, left out
    # of the schema; every other parameter is the tool's own
    params = inspect.signature(ours).parameters
    assert list(params)[:2] == ["item", "count"]
    assert [(p.name, p.annotation, p.kind) for p in list(params.values())[2:]] == [
        ("lk_async_run_ctx", RunContext, inspect.Parameter.KEYWORD_ONLY)
    ]

    async def with_ctx(ctx: RunContext, item: str) -> str:
        """Check stock."""
        return item

    # a tool that takes livekit's RunContext itself keeps its exact signature
    assert inspect.signature(function_tool(timeout=3)(with_ctx)) == inspect.signature(with_ctx)
    assert function_tool(timeout=None)(stock).info == ref.info


def _plain(item: str) -> str:
    return item


async def _slow(item: str) -> str:
    return item


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "10", True])
def test_bad_timeouts_fail_at_decoration(bad: object) -> None:
    with pytest.raises(ValueError, match="timeout must be a number of seconds > 0"):
        function_tool(timeout=bad)(_slow)  # type: ignore[arg-type]


def test_definition_errors() -> None:
    with pytest.raises(ToolDefinitionError, match="_plain: timeout= needs an `async def` tool"):
        function_tool(timeout=3)(_plain)

    async def reserved(item: str, lk_async_run_ctx: int = 0) -> str:
        return item

    with pytest.raises(ToolDefinitionError, match="'lk_async_run_ctx' is reserved"):
        function_tool(timeout=3)(reserved)
    with pytest.raises(ToolDefinitionError, match="_slow: on_timeout only apply to async tools"):
        function_tool(timeout=3, on_timeout="cancel")(_slow)
