"""Delivery: refused replies are retried, interrupted replies re-delivered or dropped."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from livekit.agents import Agent

from livekit_async_tools import AsyncRunContext, AsyncToolOptions, function_tool
from livekit_async_tools.testing import ScriptedLLM, ToolCall

from .conftest import keyword_brain, spoken, start


class Travel(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are a travel agent.")
        self.release = asyncio.Event()

    @function_tool
    async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
        """Search flights to a city."""
        await ctx.update("searching")
        await self.release.wait()
        return f"3 flights to {city}"


RULES = {"flight": ToolCall("search_flights", {"city": "Paris"})}


async def test_refused_generate_reply_is_retried_not_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agent = Travel()
    session, runtime, rec = await start(agent, ScriptedLLM(keyword_brain(RULES)))
    async with session:
        await session.run(user_input="flight")
        original = session.generate_reply
        refusals = []

        def refusing(**kwargs: Any) -> Any:
            if not refusals:
                refusals.append(kwargs)
                raise RuntimeError("cannot schedule new speech, the speech scheduling is draining")
            return original(**kwargs)

        monkeypatch.setattr(session, "generate_reply", refusing)
        agent.release.set()
        await runtime.settle(timeout=5)
        assert len(refusals) == 1
        assert [e.status for e in rec.of("reply_updated")] == ["scheduled", "delivered"]
        assert spoken(session)[-1] == "Result: 3 flights to Paris"


@pytest.mark.parametrize(("cuts", "max_redeliveries"), [(1, 2), (3, 2)])
async def test_interrupted_reply_is_redelivered_then_dropped(
    cuts: int, max_redeliveries: int
) -> None:
    agent = Travel()
    llm_ = ScriptedLLM(keyword_brain(RULES), delay=0.05)
    session, runtime, rec = await start(
        agent, llm_, AsyncToolOptions(settle_delay=0.05, max_redeliveries=max_redeliveries)
    )
    done_cuts = []

    def cut(ev: Any) -> None:
        if ev.status == "scheduled" and len(done_cuts) < cuts:
            done_cuts.append(ev.speech_id)
            session.interrupt()

    async with session:
        await session.run(user_input="flight")
        runtime.on("reply_updated", cut)
        agent.release.set()
        await runtime.settle(timeout=5)
        statuses = [(e.status, e.reason) for e in rec.of("reply_updated")]
        if cuts <= max_redeliveries:
            assert statuses == [("scheduled", None), ("interrupted", None)] * cuts + [
                ("scheduled", None),
                ("delivered", None),
            ]
            redelivery = llm_.requests[-1].instructions
            assert "cut off while telling the caller" in redelivery
            assert spoken(session)[-1] == "Result: 3 flights to Paris"
        else:
            assert (
                statuses
                == [("scheduled", None), ("interrupted", None)] * cuts
                + [("dropped", "max_redeliveries")][:1]
            )
            assert "Result: 3 flights to Paris" not in spoken(session)
