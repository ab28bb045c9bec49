"""The LLM-facing control tools `get_running_tasks` / `cancel_task`, and when to offer them."""

from __future__ import annotations

import asyncio
import json
import weakref
from typing import TYPE_CHECKING, Any

from livekit.agents import Agent, RunContext, llm
from livekit.agents import function_tool as lk_function_tool

from . import _compat
from .options import AsyncToolOptions

if TYPE_CHECKING:
    from .runtime import AsyncToolRuntime

__all__ = ["CONTROL_TOOL_NAMES", "ControlTools", "cancel_task", "get_running_tasks"]


def _runtime(ctx: RunContext[Any]) -> AsyncToolRuntime | None:
    from .runtime import runtime_of

    return runtime_of(ctx.session)


@lk_function_tool
async def get_running_tasks(ctx: RunContext[Any]) -> str:
    """List the background tasks that are still running: call id, tool, arguments,
    seconds running, last progress message and whether it can be cancelled."""
    runtime = _runtime(ctx)
    if runtime is None or not runtime.tasks:
        opts = runtime.options if runtime is not None else AsyncToolOptions()
        return opts.no_running_tasks_template
    loop = asyncio.get_running_loop()
    rows = [
        {
            "call_id": t.call_id,
            "tool": t.tool_name,
            "arguments": t.arguments,
            "seconds_running": round(loop.time() - t.started_at, 1),
            "last_update": t.last_message,
            "cancellable": t.cancellable,
        }
        for t in runtime.tasks
    ]
    return json.dumps(rows, default=str, ensure_ascii=False)


@lk_function_tool
async def cancel_task(call_id: str, ctx: RunContext[Any]) -> str:
    """Cancel a running background task. Only tasks listed as cancellable can be cancelled.

    Args:
        call_id: The task's call id, as get_running_tasks lists it.
    """
    runtime = _runtime(ctx)
    if runtime is None:
        raise llm.ToolError(AsyncToolOptions().cancel_unknown_template.format(call_id=call_id))
    call = runtime.find_call(call_id)
    cancelled = await runtime.cancel(call_id)  # raises ToolError for unknown / refused
    assert call is not None
    fmt = {"tool_name": call.tool_name, "call_id": call_id}
    if cancelled:
        return runtime.options.cancel_done_template.format(**fmt)
    return runtime.options.cancel_too_late_template.format(**fmt, status=call.status)


CONTROL_TOOL_NAMES = ("get_running_tasks", "cancel_task")
_CONTROL_TOOLS: list[llm.Tool | llm.Toolset] = [get_running_tasks, cancel_task]


class ControlTools:
    """Adds the control tools to the current agent while tasks are live (``dynamic``),
    always (``always``) or never (``never``), and removes them after the last task."""

    def __init__(self, runtime: AsyncToolRuntime) -> None:
        self._runtime = runtime
        self._agents: weakref.WeakSet[Agent] = weakref.WeakSet()
        self._lock = asyncio.Lock()
        self._scheduled = False

    def _wanted(self) -> bool:
        mode = self._runtime.options.control_tools
        return mode == "always" or (mode == "dynamic" and self._runtime.has_live_calls)

    def _current(self) -> Agent | None:
        try:
            return self._runtime.session.current_agent
        except RuntimeError:
            return None

    def _needs_sync(self) -> bool:
        if self._runtime.options.control_tools == "never" or self._runtime.closed:
            return False
        if self._wanted():
            current = self._current()
            return current is not None and current not in self._agents
        return len(self._agents) > 0

    def schedule(self) -> None:
        """Bring the offered tools in line with the live tasks (cheap if nothing changes)."""
        if self._scheduled or not self._needs_sync():
            return
        self._scheduled = True
        self._runtime.spawn(self._sync(), name="async-tool:control-tools")

    async def _sync(self) -> None:
        async with self._lock:
            self._scheduled = False
            if self._runtime.closed:
                return
            if self._wanted():
                current = self._current()
                if current is not None and current not in self._agents:
                    await self._add(current)
            else:
                for agent in list(self._agents):
                    self._agents.discard(agent)
                    if not _compat.agent_is_closed(agent):
                        await self._set_tools(
                            agent, [t for t in agent.tools if _tool_id(t) not in CONTROL_TOOL_NAMES]
                        )

    async def _add(self, agent: Agent) -> None:
        if _compat.agent_is_closed(agent):
            return
        self._agents.add(agent)
        have = {_tool_id(t) for t in agent.tools}
        new = [t for t in _CONTROL_TOOLS if _tool_id(t) not in have]
        if new:
            await self._set_tools(agent, [*agent.tools, *new])

    async def _set_tools(self, agent: Agent, tools: list[llm.Tool | llm.Toolset]) -> None:
        # update_tools rewrites the context and drops calls to tools not in the list,
        # including the items this package inserted: put them back
        await agent.update_tools(tools)
        await self._runtime.delivery.restore(agent)


def _tool_id(tool: llm.Tool | llm.Toolset) -> str:
    return tool.id
