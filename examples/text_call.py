"""A simulated phone call, offline: a slow flight search runs while an AgentTask
collects the caller's email, and its result is spoken by the travel agent only
after the task returns and the line is quiet.

Run it with ``python examples/text_call.py``. No API keys, no
network: the LLM is a `ScriptedLLM` that decides from what the caller said, the
session is a real `livekit.agents.AgentSession` in text mode.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from typing import Any

from livekit.agents import Agent, AgentSession, AgentTask, llm

from livekit_async_tools import AsyncRunContext, AsyncToolOptions, attach, function_tool
from livekit_async_tools.testing import LLMRequest, Reply, ScriptedLLM, ToolCall

SEARCH_SECONDS = 4.0
COLOR = sys.stdout.isatty()


class Clock:
    def __init__(self) -> None:
        self.t0 = asyncio.get_running_loop().time()

    def now(self) -> float:
        return asyncio.get_running_loop().time() - self.t0


def show(clock: Clock, who: str, text: str, color: str = "") -> None:
    line = f"{clock.now():6.2f}s  {who:<14} {text}"
    if COLOR and color:
        line = f"\033[{color}m{line}\033[0m"
    print(line, flush=True)


class CollectEmail(AgentTask[str]):
    """Collects the caller's email by voice: it has the floor while it runs."""

    def __init__(self) -> None:
        super().__init__(instructions="You are the email collector. Ask for the email address.")

    async def on_enter(self) -> None:
        self.session.generate_reply(instructions="ASK_EMAIL")

    @function_tool
    async def record_email(self, email: str) -> None:
        """Record the caller's email address.

        Args:
            email: The address, as the caller spelled it.
        """
        self.complete(email)


class TravelAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are Tess, a friendly travel agent.")

    @function_tool(timeout=60)
    async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
        """Search flights to a city (slow: several airlines are asked).

        Args:
            city: Destination city.
        """
        await ctx.update(f"searching flights to {city}")
        await asyncio.sleep(SEARCH_SECONDS)
        return f"3 flights to {city} on Friday; the cheapest is 89 euros at 7:40"

    @function_tool
    async def collect_email(self) -> str:
        """Collect the caller's email address for the booking."""
        email = await CollectEmail()
        return f"email recorded: {email}"


def decide(req: LLMRequest) -> Reply:
    """What a compliant LLM would answer, decided from the request like a model would."""
    items = list(req.chat_ctx.items)
    text = req.instructions
    if "ASK_EMAIL" in text:
        return "Sure. What email address should I send the booking to?"
    if "Background results" in text or "cut off while telling" in text:
        wanted = set(re.findall(r"[\w-]+_(?:final|update_\d+)", text))
        named = [
            it.output
            for it in items
            if isinstance(it, llm.FunctionCallOutput) and it.call_id in wanted
        ]
        return f"Good news: I found {'; '.join(named)}." if named else ""
    last = items[-1] if items else None
    if isinstance(last, llm.FunctionCallOutput):
        if "in the background" in last.output:
            return "I'm searching flights for you now. This takes a moment."
        if last.output.startswith("email recorded"):
            return "Thanks, I've got your email."
        return ""
    user = req.last_user_text.lower()
    if "email collector" in text and "@" in user.replace(" at ", "@"):
        email = re.sub(r"\s+at\s+", "@", user).replace(" dot ", ".").split()[-1].strip(".")
        return ToolCall("record_email", {"email": email})
    if "flight" in user:
        city = "Lisbon" if "lisbon" in user else "Paris"
        return ToolCall("search_flights", {"city": city})
    if "book" in user:
        return ToolCall("collect_email")
    if "bag" in user:
        return "Yes, one cabin bag is included on most fares."
    return "Okay."


async def wait_listening(session: AgentSession[Any]) -> None:
    """Wait until the agent has finished answering and listens again."""
    changed = asyncio.Event()

    def on_state(_ev: object) -> None:
        changed.set()

    session.on("agent_state_changed", on_state)
    try:
        await asyncio.sleep(0.05)
        while session.agent_state != "listening":
            changed.clear()
            await changed.wait()
    finally:
        session.off("agent_state_changed", on_state)


async def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    clock = Clock()
    session: AgentSession[Any] = AgentSession(llm=ScriptedLLM(decide, delay=0.3))
    runtime = attach(session, AsyncToolOptions(settle_delay=0.3))
    names = {"TravelAgent": "agent (Tess)", "CollectEmail": "agent (email)"}

    def on_item(ev: Any) -> None:
        item = ev.item
        if isinstance(item, llm.ChatMessage) and item.role == "assistant" and item.text_content:
            who = names.get(type(session.current_agent).__name__, "agent")
            show(clock, who, item.text_content, "1;36")

    session.on("conversation_item_added", on_item)
    runtime.on(
        "task_started",
        lambda ev: show(clock, "  [tool]", f"{ev.tool_name}({ev.arguments}) started", "2"),
    )
    runtime.on(
        "task_updated",
        lambda ev: show(clock, "  [tool]", f"acknowledged: {ev.message!r}", "2"),
    )

    def on_ended(ev: Any) -> None:
        holder = type(session.current_agent).__name__
        note = "" if holder == "TravelAgent" else f" -> result waits: {holder} has the floor"
        show(clock, "  [tool]", f"{ev.call_id} {ev.status}{note}", "33")

    runtime.on("task_ended", on_ended)
    runtime.on(
        "reply_updated",
        lambda ev: show(clock, "  [delivery]", f"reply {ev.status} for {list(ev.call_ids)}", "33"),
    )

    async def caller(text: str) -> None:
        show(clock, "caller", text, "1;32")
        session.generate_reply(user_input=text)
        await wait_listening(session)

    print("A simulated call (text mode, scripted LLM, no network). Times are seconds.\n")
    async with session:
        await session.start(TravelAgent())
        await caller("Hi, can you find me flights to Lisbon on Friday?")
        await asyncio.sleep(0.8)
        await caller("Is a cabin bag included?")
        await asyncio.sleep(0.5)
        await caller("Great, I'd like to book it.")
        await asyncio.sleep(SEARCH_SECONDS)  # the caller looks up their address...
        await caller("It's ann at example dot com.")
        await runtime.settle(timeout=30)
    print(
        "\nThe search ran in the background: the agent acknowledged at once, kept talking, "
        "let the email task finish,\nand only then, with the line quiet, spoke the result "
        "as Tess."
    )


if __name__ == "__main__":
    asyncio.run(main())
