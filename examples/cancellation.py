"""Cancellation and timeouts, offline: the LLM lists and cancels a running task, and
a hung tool times out with a result the LLM can tell the caller.

Run: ``python examples/cancellation.py``.
"""

from __future__ import annotations

import asyncio
import json

from livekit.agents import Agent, AgentSession, llm

from livekit_async_tools import AsyncRunContext, AsyncToolOptions, attach, function_tool
from livekit_async_tools.testing import LLMRequest, Reply, ScriptedLLM, ToolCall


class Desk(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are the booking desk.")
        self.cleanups: list[str] = []

    @function_tool(cancellable=True)
    async def watch_prices(self, ctx: AsyncRunContext, route: str) -> str:
        """Watch ticket prices on a route until they drop."""
        ctx.on_cancel(lambda: self.cleanups.append(route))
        await ctx.update(f"watching prices for {route}")
        await asyncio.Event().wait()  # until cancelled
        return ""

    @function_tool(timeout=0.5)
    async def call_airline(self, ctx: AsyncRunContext) -> str:
        """Call the airline's slow API."""
        await ctx.update("calling the airline")
        await asyncio.Event().wait()  # hangs
        return ""


def decide(req: LLMRequest) -> Reply:
    last = req.chat_ctx.items[-1]
    if "Background results" in req.instructions:
        return "Sorry, the airline did not answer in time."
    if isinstance(last, llm.FunctionCallOutput):
        if last.name == "get_running_tasks":
            task = json.loads(last.output)[0]
            return ToolCall("cancel_task", {"call_id": task["call_id"]})
        return "Done." if last.name == "cancel_task" else "On it."
    user = req.last_user_text
    if "stop" in user:
        return ToolCall("get_running_tasks")
    if "watch" in user:
        return ToolCall("watch_prices", {"route": "OSL-ROM"})
    if "airline" in user:
        return ToolCall("call_airline")
    return "Okay."


async def main() -> list[str]:
    session: AgentSession = AgentSession(llm=ScriptedLLM(decide))
    runtime = attach(session, AsyncToolOptions(settle_delay=0.2))
    ended: list[str] = []
    runtime.on("task_ended", lambda ev: ended.append(ev.status))
    desk = Desk()
    async with session:
        await session.start(desk)
        await session.run(user_input="Please watch prices to Rome.")
        await session.run(user_input="Actually, stop watching.")
        await session.run(user_input="Can you call the airline?")
        await runtime.settle(timeout=10)
    print("ended:", ended, "cleaned up:", desk.cleanups)
    return ended


if __name__ == "__main__":
    asyncio.run(main())
