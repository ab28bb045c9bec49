"""Duplicates, the LLM-facing control tools and log redaction, in a real session."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from livekit.agents import Agent
from livekit.agents import function_tool as lk_function_tool

from livekit_async_tools import AsyncRunContext, AsyncToolOptions, function_tool
from livekit_async_tools._compat import HANDOFF_ITEMS
from livekit_async_tools.testing import ScriptedLLM, ToolCall

from .conftest import keyword_brain, start


class Desk(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="desk")
        self.release = asyncio.Event()
        self.hooks: list[str] = []

    async def _work(self, ctx: AsyncRunContext, what: str) -> str:
        ctx.on_cancel(lambda: self.hooks.append(ctx.call_id))
        await ctx.update(f"working on {what}")
        await self.release.wait()
        return f"{what} done"

    @function_tool
    async def reject_tool(self, ctx: AsyncRunContext, city: str, days: int = 2) -> str:
        """Default duplicate handling (reject, name and args)."""
        return await self._work(ctx, city)

    @function_tool(on_duplicate="allow")
    async def allow_tool(self, ctx: AsyncRunContext, city: str) -> str:
        """Duplicates allowed."""
        return await self._work(ctx, city)

    @function_tool(on_duplicate="replace", cancellable=True, duplicate_scope="name")
    async def replace_tool(self, ctx: AsyncRunContext, city: str) -> str:
        """A newer call replaces the running one."""
        return await self._work(ctx, city)

    @function_tool(on_duplicate="confirm")
    async def confirm_tool(self, ctx: AsyncRunContext, city: str) -> str:
        """Duplicates need the caller's confirmation."""
        return await self._work(ctx, city)

    @function_tool(cancellable=True)
    async def cancellable_tool(self, ctx: AsyncRunContext, password: str, city: str) -> str:
        """Cancellable work."""
        return await self._work(ctx, city)


def outputs(result: Any) -> list[str]:
    return [e.item.output for e in result.events if e.type == "function_call_output"]


async def test_reject_compares_validated_arguments_as_canonical_json() -> None:
    desk = Desk()
    llm_ = ScriptedLLM(
        [
            ToolCall("reject_tool", {"city": "Rome"}),
            "ok",
            ToolCall("reject_tool", {"days": 2, "city": "Rome"}),  # same call, other order
            "ok",
            ToolCall("reject_tool", {"city": "Oslo"}),
            "ok",
        ]
    )
    session, runtime, rec = await start(desk, llm_)
    async with session:
        await session.run(user_input="a")
        second = await session.run(user_input="b")
        assert "already running (call id call_1)" in outputs(second)[0]
        await session.run(user_input="c")
        assert [t.arguments["city"] for t in runtime.tasks] == ["Rome", "Oslo"]
        assert len(rec.of("task_started")) == 2
        desk.release.set()
        await runtime.settle(timeout=5)


async def test_allow_replace_and_confirm() -> None:
    desk = Desk()
    llm_ = ScriptedLLM(
        [
            [ToolCall("allow_tool", {"city": "A"}), ToolCall("allow_tool", {"city": "A"})],
            "ok",
            ToolCall("replace_tool", {"city": "Old"}),
            "ok",
            ToolCall("replace_tool", {"city": "New"}),
            "ok",
            ToolCall("confirm_tool", {"city": "C"}),
            "ok",
            ToolCall("confirm_tool", {"city": "C"}),
            "Shall I run it again?",
            ToolCall("confirm_tool", {"city": "C", "confirm_duplicate": True}),
            "ok",
        ]
    )
    session, runtime, rec = await start(desk, llm_)
    async with session:
        await session.run(user_input="allow")
        assert [t.tool_name for t in runtime.tasks] == ["allow_tool", "allow_tool"]
        await session.run(user_input="old")
        await session.run(user_input="new")
        replaced = [e for e in rec.of("task_ended") if e.status == "cancelled"]
        assert len(replaced) == 1
        assert [t.arguments for t in runtime.tasks if t.tool_name == "replace_tool"] == [
            {"city": "New"}
        ]
        await session.run(user_input="confirm 1")
        asked = await session.run(user_input="confirm 2")
        assert "Ask the caller whether they want to run it a second time" in outputs(asked)[0]
        await session.run(user_input="yes")
        assert len([t for t in runtime.tasks if t.tool_name == "confirm_tool"]) == 2
        assert all("confirm_duplicate" not in t.arguments for t in runtime.tasks)
        desk.release.set()
        await runtime.settle(timeout=5)


async def test_dynamic_control_tools_offered_only_while_tasks_live_and_used_by_llm() -> None:
    desk = Desk()
    listed: list[str] = []

    def decide(req: Any) -> Any:
        items = list(req.chat_ctx.items)
        last = items[-1]
        if last.type == "function_call_output" and last.name == "get_running_tasks":
            listed.append(last.output)
            (task,) = json.loads(last.output)
            return ToolCall("cancel_task", {"call_id": task["call_id"]})
        if last.type == "function_call_output":
            return "ok"
        return keyword_brain(
            {
                "search": ToolCall("cancellable_tool", {"password": "hunter2", "city": "Rome"}),
                "stop": ToolCall("get_running_tasks"),
            }
        )(req)

    llm_ = ScriptedLLM(decide)
    session, runtime, rec = await start(
        desk, llm_, AsyncToolOptions(settle_delay=0.05, control_tools="dynamic")
    )
    async with session:
        await session.run(user_input="hello")
        assert "get_running_tasks" not in llm_.requests[-1].tool_names
        await session.run(user_input="search")
        await session.run(user_input="stop that")
        assert any("get_running_tasks" in r.tool_names for r in llm_.requests)
        assert json.loads(listed[0])[0]["tool"] == "cancellable_tool"
        assert json.loads(listed[0])[0]["cancellable"] is True
        await runtime.settle(timeout=5)
        assert [e.status for e in rec.of("task_ended")] == ["cancelled"]
        assert desk.hooks == ["call_1"]
        await session.run(user_input="hello again")
        assert "get_running_tasks" not in llm_.requests[-1].tool_names
        assert "cancel_task" not in [t.id for t in desk.tools]


class Plain(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="plain")

    @lk_function_tool
    async def lookup(self) -> str:
        """An ordinary tool."""
        return "looked up"


async def test_auto_control_tools_keep_the_tool_list_stable_across_calls() -> None:
    """The default: an agent with a background tool offers the control tools from its
    first request on and its tool list never changes per call; an agent without one
    never sees them."""
    desk = Desk()
    llm_ = ScriptedLLM(
        keyword_brain(
            {
                "search": ToolCall("cancellable_tool", {"password": "x", "city": "Rome"}),
            }
        )
    )
    session, runtime, _ = await start(desk, llm_)
    async with session:
        await session.run(user_input="hello")
        for _ in range(3):
            await session.run(user_input="search")
            desk.release.set()
            await runtime.settle(timeout=5)
            desk.release.clear()
            await session.run(user_input="hello")
        # before livekit-agents 1.5 no event precedes the first request: the control
        # tools join from the second request on, and never change after that
        requests = llm_.requests if HANDOFF_ITEMS else llm_.requests[1:]
        lists = {r.tool_names for r in requests}
        assert len(lists) == 1, lists
        assert {"get_running_tasks", "cancel_task"} <= set(next(iter(lists)))
    assert AsyncToolOptions().control_tools == "auto"

    plain_llm = ScriptedLLM(["hi", "hi"])
    session, runtime, _ = await start(Plain(), plain_llm)
    async with session:
        await session.run(user_input="hello")
        await session.run(user_input="hello")
        assert all("get_running_tasks" not in r.tool_names for r in plain_llm.requests)


async def test_control_tools_never_and_always() -> None:
    for mode, expect in (("never", False), ("always", True)):
        llm_ = ScriptedLLM(["hi"])
        session, runtime, _ = await start(
            Desk(),
            llm_,
            AsyncToolOptions(settle_delay=0.05, control_tools=mode),  # type: ignore[arg-type]
        )
        async with session:
            await session.run(user_input="hello")
            await runtime.settle(timeout=5)
            await session.run(user_input="hello")
            assert ("get_running_tasks" in llm_.requests[-1].tool_names) is expect


async def test_logs_carry_arguments_only_redacted_in_extra(
    caplog: pytest.LogCaptureFixture,
) -> None:
    desk = Desk()
    llm_ = ScriptedLLM(
        [ToolCall("cancellable_tool", {"password": "hunter2", "city": "Rome"}), "ok"]
    )
    session, runtime, _ = await start(desk, llm_)
    with caplog.at_level(logging.DEBUG, logger="livekit_async_tools"):
        async with session:
            await session.run(user_input="go")
            desk.release.set()
            await runtime.settle(timeout=5)
    ours = [r for r in caplog.records if r.name == "livekit_async_tools"]
    assert ours
    for r in ours:
        assert "hunter2" not in r.getMessage()
    started = [r for r in ours if r.getMessage() == "async tool started"]
    assert getattr(started[0], "lk.pii.arguments") == {"password": "<redacted>", "city": "Rome"}


def test_redaction_is_case_insensitive_and_nested() -> None:
    from livekit_async_tools._log import redact

    assert redact({"Token": "t", "user": {"CVV": 1, "cards": [{"card": "4111", "x": 1}]}}) == {
        "Token": "<redacted>",
        "user": {"CVV": "<redacted>", "cards": [{"card": "<redacted>", "x": 1}]},
    }
