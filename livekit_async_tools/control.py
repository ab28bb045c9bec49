"""The LLM-facing control tools (`get_running_tasks`, `cancel_task`, `answer_question`,
`extend_task`) and when to offer them."""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Callable
from typing import Any

from livekit.agents import Agent, AgentSession, RunContext, llm
from livekit.agents import function_tool as lk_function_tool

from . import _compat
from ._chat_store import ChatStore
from ._ports import CONTROLS, Services, SessionControl
from ._spec import spec_of
from .options import AsyncToolOptions

__all__ = [
    "CONTROL_TOOL_NAMES",
    "ControlTools",
    "answer_question",
    "cancel_task",
    "extend_task",
    "get_running_tasks",
]


def _runtime(ctx: RunContext[Any]) -> SessionControl | None:
    return CONTROLS.get(ctx.session)


@lk_function_tool
async def get_running_tasks(ctx: RunContext[Any]) -> str:
    """List the background tasks that are still running: call id, tool, arguments,
    seconds running, last progress message and whether it can be cancelled."""
    runtime = _runtime(ctx)
    if runtime is None or not runtime.tasks:
        opts = runtime.options if runtime is not None else AsyncToolOptions()
        return opts.no_running_tasks_template.format()
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
    info = next((t for t in runtime.tasks if t.call_id == call_id), None)
    status = await runtime.cancel(call_id)  # raises ToolError for unknown / refused
    assert info is not None
    fmt = {"tool_name": info.tool_name, "call_id": call_id}
    if status == "cancelled":
        return runtime.options.cancel_done_template.format(**fmt)
    return runtime.options.cancel_too_late_template.format(**fmt, status=status)


@lk_function_tool
async def answer_question(question_id: str, answer: str, ctx: RunContext[Any]) -> str:
    """Give a background task the caller's answer to a question it asked. Its output
    named the question id; call this as soon as the caller answers, even later on.

    Args:
        question_id: The question id from the task's output.
        answer: The caller's answer, in their words or summarised faithfully.
    """
    runtime = _runtime(ctx)
    if runtime is None:
        raise llm.ToolError(
            AsyncToolOptions().answer_unknown_template.format(question_id=question_id)
        )
    return runtime.answer(question_id, answer)


@lk_function_tool
async def extend_task(call_id: str, seconds: float, ctx: RunContext[Any]) -> str:
    """Give a background task that reached its time limit more time, after the caller
    agreed to keep waiting (its output asked you to).

    Args:
        call_id: The task's call id.
        seconds: How many more seconds to allow.
    """
    runtime = _runtime(ctx)
    if runtime is None:
        raise llm.ToolError(AsyncToolOptions().cancel_unknown_template.format(call_id=call_id))
    return runtime.extend(call_id, seconds)


CONTROL_TOOL_NAMES = ("get_running_tasks", "cancel_task", "answer_question", "extend_task")
_CONTROL_TOOLS: list[llm.Tool | llm.Toolset] = [
    get_running_tasks,
    cancel_task,
    answer_question,
    extend_task,
]


class ControlTools:
    """Adds the control tools to each agent, for the rest of its life, when it is
    current and has a background tool or receives a live call's items (a call
    forwarded from a closed origin) (``auto``); to every agent (``always``); to the
    current agent while tasks are live, removing them after the last task
    (``dynamic``); or never (``never``)."""

    def __init__(
        self,
        services: Services,
        session: AgentSession[Any],
        store: ChatStore,
        live: Callable[[], bool],
        reaches: Callable[[Agent], bool],
    ) -> None:
        self._services = services
        self._session = session
        self._store = store
        self._live = live
        self._reaches = reaches
        self._closed = False
        self._agents: weakref.WeakSet[Agent] = weakref.WeakSet()
        self._lock = asyncio.Lock()
        self._scheduled = False

    def _wanted(self, agent: Agent | None) -> bool:
        """Whether ``agent`` (the current one) should offer the control tools now."""
        mode = self._services.options.control_tools
        if mode == "auto":
            return agent is not None and (_has_background_tool(agent) or self._reaches(agent))
        return mode == "always" or (mode == "dynamic" and self._live())

    def _current(self) -> Agent | None:
        try:
            return self._session.current_agent
        except RuntimeError:
            return None

    def close(self) -> None:
        """Stop syncing (the session closed)."""
        self._closed = True

    def _needs_sync(self) -> bool:
        if self._services.options.control_tools == "never" or self._closed:
            return False
        current = self._current()
        if self._wanted(current):
            return current is not None and current not in self._agents
        return self._services.options.control_tools == "dynamic" and len(self._agents) > 0

    def schedule(self) -> None:
        """Bring the offered tools in line with the live tasks (cheap if nothing changes)."""
        if self._scheduled or not self._needs_sync():
            return
        self._scheduled = True
        self._services.spawn(self._sync(), name="async-tool:control-tools")

    async def _sync(self) -> None:
        async with self._lock:
            self._scheduled = False
            if self._closed:
                return
            current = self._current()
            if self._wanted(current):
                if current is not None and current not in self._agents:
                    await self._add(current)
            elif self._services.options.control_tools == "dynamic":
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
        await self._store.restore(agent)


def _tool_id(tool: llm.Tool | llm.Toolset) -> str:
    return tool.id


def _has_background_tool(agent: Agent) -> bool:
    return any(spec_of(t) is not None for t in agent.tools)
