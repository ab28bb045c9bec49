"""Steer, follow-up and delivery modes in a real text-mode session."""

from __future__ import annotations

import asyncio
from typing import Any

from livekit.agents import Agent, llm

from livekit_async_tools import AsyncRunContext, AsyncToolOptions, function_tool
from livekit_async_tools.testing import LLMRequest, ScriptedLLM, ToolCall

from .conftest import keyword_brain, spoken, start, until


class Desk(Agent):
    def __init__(self, instructions: str = "You are the front desk.") -> None:
        super().__init__(instructions=instructions)
        self.release = asyncio.Event()

    @function_tool
    async def lookup(self, ctx: AsyncRunContext, what: str) -> str:
        """Look something up."""
        await ctx.update("looking", delivery="silent")
        await ctx.update(f"urgent news about {what}", delivery="interrupt")
        ctx.follow_up(f"ASK_MORE about {what}")
        await self.release.wait()
        return f"{what} found"


def brain(seen: list[LLMRequest]) -> Any:
    base = keyword_brain({"look": ToolCall("lookup", {"what": "keys"})})

    def decide(req: LLMRequest) -> Any:
        seen.append(req)
        if "ASK_MORE" in req.instructions or "FOLLOW" in req.instructions:
            lines = [ln for ln in req.instructions.splitlines() if "ASK" in ln or "FOLLOW" in ln]
            prefix = base(req) if "Background results" in req.instructions else ""
            return " | ".join([*([prefix] if prefix else []), *lines])
        return base(req)

    return decide


async def test_steer_is_seen_before_the_next_request_and_never_spoken() -> None:
    seen: list[LLMRequest] = []
    session, runtime, _ = await start(Desk(), ScriptedLLM(brain(seen)))
    async with session:
        runtime.steer("The caller is a gold member.")
        await runtime.settle(timeout=5)
        await session.run(user_input="hello")
        notes = [
            it
            for it in seen[-1].chat_ctx.items
            if isinstance(it, llm.ChatMessage)
            and it.role == "system"
            and "gold member" in (it.text_content or "")
        ]
        assert len(notes) == 1
        assert "the caller did not say this" in (notes[0].text_content or "")
        assert all("gold member" not in s for s in spoken(session))


async def test_steer_follows_a_handoff_before_the_llm_saw_it() -> None:
    seen: list[LLMRequest] = []
    session, runtime, _ = await start(Desk(), ScriptedLLM(brain(seen)))
    async with session:
        runtime.steer("The caller is in a hurry.")
        other = Desk(instructions="You are the concierge.")
        session.update_agent(other)
        await until(session, lambda: session.current_agent is other)
        await session.run(user_input="hello")
        await runtime.settle(timeout=5)
        assert any(
            "in a hurry" in (it.text_content or "")
            for it in other.chat_ctx.items
            if isinstance(it, llm.ChatMessage)
        )


async def test_follow_ups_one_at_a_time_and_all() -> None:
    seen: list[LLMRequest] = []
    session, runtime, rec = await start(Desk(), ScriptedLLM(brain(seen)))
    async with session:
        a = runtime.follow_up("FOLLOW one")
        b = runtime.follow_up("FOLLOW two")
        await runtime.settle(timeout=5)
        assert spoken(session) == ["FOLLOW one", "FOLLOW two"]
        c = runtime.follow_up("FOLLOW three", mode="all")
        d = runtime.follow_up("FOLLOW four", mode="all")
        await runtime.settle(timeout=5)
        assert spoken(session)[-1] == "FOLLOW three | FOLLOW four"
        delivered = [e.call_ids for e in rec.of("reply_updated") if e.status == "delivered"]
        assert delivered == [(a,), (b,), (c, d)]


async def test_interrupt_update_skips_the_settle_window_silent_never_speaks() -> None:
    seen: list[LLMRequest] = []
    desk = Desk()
    session, runtime, rec = await start(
        desk, ScriptedLLM(brain(seen)), AsyncToolOptions(settle_delay=30.0)
    )
    async with session:
        result = await session.run(user_input="look for my keys")
        ack = next(e.item for e in result.events if e.type == "function_call_output")
        assert "looking" in ack.output  # the silent first update still acknowledges
        # the interrupt update is spoken at once although settle_delay is 30 s
        await until(session, lambda: any(e.status == "delivered" for e in rec.of("reply_updated")))
        said = spoken(session)[-1]
        assert "urgent news about keys" in said
        assert "ASK_MORE about keys" in said  # what was pending for the agent rode along
        assert [t.state for t in runtime.tasks] == ["running"]
        assert runtime.tasks and runtime.tasks[0].last_message == "urgent news about keys"
        desk.release.set()
        await until(session, lambda: not runtime.tasks)
        assert not any("looking" in s for s in spoken(session))


async def test_follow_up_from_a_tool_is_spoken_by_its_origin() -> None:
    seen: list[LLMRequest] = []
    desk = Desk()
    session, runtime, _ = await start(desk, ScriptedLLM(brain(seen)))
    async with session:
        await session.run(user_input="look for my keys")
        desk.release.set()
        await runtime.settle(timeout=5)
        said = " ".join(spoken(session))
        assert "ASK_MORE about keys" in said
        assert "keys found" in said


async def test_follow_up_survives_a_handoff_by_the_handoff_policy() -> None:
    seen: list[LLMRequest] = []
    session, runtime, rec = await start(Desk(), ScriptedLLM(brain(seen)))
    async with session:
        # queued for the front desk while the agent is busy answering, then handed off
        handle = session.generate_reply(user_input="hello")
        follow = runtime.follow_up("FOLLOW remind them about breakfast")
        other = Desk(instructions="You are the concierge.")
        session.update_agent(other)
        await handle
        await runtime.settle(timeout=5)
        delivered = [e for e in rec.of("reply_updated") if e.status == "delivered"]
        assert [e.call_ids for e in delivered] == [(follow,)]
        assert any(
            isinstance(it, llm.ChatMessage)
            and it.role == "assistant"
            and "remind them about breakfast" in (it.text_content or "")
            for it in other.chat_ctx.items
        )
