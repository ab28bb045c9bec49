"""Deferred items are in `session.history` too: once each, in their place."""

from __future__ import annotations

import asyncio
from typing import Any

from livekit.agents import Agent, AgentSession

from livekit_async_tools import AsyncToolRuntime, ReplyUpdated
from livekit_async_tools.testing import ScriptedLLM

from .conftest import keyword_brain, start, until
from .test_handoff import ON_INSTRUCTIONS, RULES, Gate, Travel


def transcript(items: list[object]) -> list[str]:
    lines = []
    for it in items:
        kind = getattr(it, "type", "")
        if kind == "message":
            lines.append(f"{it.role}: {it.text_content}")  # type: ignore[attr-defined]
        elif kind == "function_call_output":
            lines.append(f"output {it.call_id}")  # type: ignore[attr-defined]
        elif kind == "function_call":
            lines.append(f"call {it.call_id}")  # type: ignore[attr-defined]
    return lines


async def test_a_result_reads_as_a_transcript_in_session_history() -> None:
    gate = Gate()
    session, runtime, _ = await start(Travel(gate), ScriptedLLM(keyword_brain(RULES)))
    async with session:
        await session.run(user_input="find flights to Rome")
        gate.release.set()
        await runtime.settle(timeout=10)
        lines = transcript(list(session.history.items))
        assert lines == [
            "user: find flights to Rome",
            "call call_1",
            "output call_1",
            "assistant: One moment.",
            "call call_1_result",
            "output call_1_result",
            "assistant: Result: 3 flights to Paris",
        ]


def cut_the_first_reply(session: AgentSession[Any], runtime: AsyncToolRuntime) -> None:
    """Interrupt the first deferred reply the moment it is scheduled."""
    cut = asyncio.Event()

    def on_reply(ev: ReplyUpdated) -> None:
        if ev.status == "scheduled" and not cut.is_set():
            cut.set()
            session.interrupt()

    runtime.on("reply_updated", on_reply)


class Hotel(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="hotel")


async def test_handed_off_and_cut_replies_put_each_pair_in_history_once() -> None:
    gate = Gate()
    session, runtime, rec = await start(Travel(gate), ScriptedLLM(keyword_brain(RULES), delay=0.05))
    async with session:
        await session.run(user_input="find flights to Rome")
        session.update_agent(Hotel())
        gate.release.set()
        cut_the_first_reply(session, runtime)
        await runtime.settle(timeout=10)
        statuses = [e.status for e in rec.of("reply_updated")]
        assert statuses[:2] == ["scheduled", "interrupted"]
        assert statuses[-1] == "delivered"
        items = list(session.history.items)
        ids = [it.id for it in items]
        assert len(ids) == len(set(ids))
        lines = transcript(items)
        assert lines.count("call call_1_result") == 1
        assert lines.count("output call_1_result") == 1
        final_at = lines.index("output call_1_result")
        assert lines[-1].startswith("assistant: Result")
        assert final_at < len(lines) - 1


async def test_a_call_paused_under_a_task_and_re_delivered_reads_coherently() -> None:
    """Paused under an `AgentTask`, spoken by its origin after the task, cut once and
    re-delivered: the history reads in order, each pair once, before what says it."""
    gate = Gate()
    llm_ = ScriptedLLM(keyword_brain(RULES, on_instructions=ON_INSTRUCTIONS), delay=0.05)
    session, runtime, rec = await start(Travel(gate), llm_)
    async with session:
        await session.run(user_input="find flights to Rome")
        booking = session.generate_reply(user_input="book it")
        await until(
            session,
            lambda: "assistant: What is your email?" in transcript(list(session.history.items)),
        )
        gate.release.set()  # the result is ready while the task has the floor
        await asyncio.sleep(0.3)
        cut_the_first_reply(session, runtime)
        await session.run(user_input="it is ann@example.com")
        await booking
        await runtime.settle(timeout=10)
    statuses = [e.status for e in rec.of("reply_updated")]
    assert statuses == ["scheduled", "interrupted", "scheduled", "delivered"]
    items = list(session.history.items)
    assert len({it.id for it in items}) == len(items)
    lines = transcript(items)
    assert lines.count("call call_1_result") == lines.count("output call_1_result") == 1
    email_at = lines.index("user: it is ann@example.com")
    result_at = lines.index("output call_1_result")
    said_at = max(i for i, line in enumerate(lines) if line.startswith("assistant: Result"))
    assert lines.index("assistant: What is your email?") < email_at
    assert result_at < said_at  # the pair comes before the reply that tells it
    assert lines[0] == "user: find flights to Rome"
