"""Background calls that talk to the caller (ask, extend, hand off), on the real
`livekit.plugins.openai.LLM` against the strict OpenAI-compatible test server: every
request these features produce is one OpenAI accepts."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from livekit.agents import Agent, llm

from livekit_async_tools import AsyncRunContext, AsyncToolOptions, function_tool

from .conftest import spoken
from .support.openai_server import (
    ChatRequest,
    OpenAIServer,
    Reply,
    ToolCall,
    keyword_brain,
    openai_server_fixture,  # noqa: F401  (the `openai_server` fixture)
)
from .test_ask import FrontDesk, Payments
from .test_openai_wire import wire

pytest.importorskip("livekit.plugins.openai", reason="needs livekit-plugins-openai")

QUESTION_ID = re.compile(r"question id ([\w-]+)\)")


class Checkout(Agent):
    def __init__(self, chat_ctx: llm.ChatContext | None = None) -> None:
        super().__init__(instructions="You take the payment.", chat_ctx=chat_ctx)


class Desk(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are the travel desk.")
        self.answers: list[str] = []

    @function_tool
    async def book_flight(self, ctx: AsyncRunContext, city: str) -> object:
        """Book the morning flight to a city, then pass the caller to checkout."""
        await ctx.update(f"checking seats to {city}")
        self.answers.append(await ctx.ask("The 7:40 is sold out. Would the 8:15 do?"))
        return Checkout(chat_ctx=self.chat_ctx), f"booked the 8:15 to {city}"

    @function_tool(timeout=0.5, on_timeout="ask")
    async def slow_report(self, ctx: AsyncRunContext) -> str:
        """Build the slow report."""
        await ctx.update("building")
        await asyncio.sleep(1.5)
        return "the report is ready"


def brain() -> Any:
    base = keyword_brain(
        {
            "a flight to Rome": ToolCall("book", {"city": "Rome"}),  # FrontDesk
            "book": ToolCall("book_flight", {"city": "Rome"}),
            "report": ToolCall("slow_report"),
            "payments": ToolCall("to_payments"),
        }
    )

    def decide(req: ChatRequest) -> Reply:
        text = req.instructions
        if "Background results" in text or "cut off while telling" in text:
            outs = dict(req.outputs())
            for cid, out in outs.items():
                if cid in text and "needs the caller's answer" in out:
                    return "The 7:40 is sold out. Would the 8:15 do?"
                if cid in text and "taking longer than expected" in out:
                    return "This takes longer. Do you want to keep waiting?"
        user = req.last_user_text.lower()
        if req.last.get("role") == "user":
            asked = QUESTION_ID.findall(" ".join(o for _c, o in req.outputs()))
            if asked and "yes" in user and "answer_question" in req.tool_names:
                return ToolCall("answer_question", {"question_id": asked[-1], "answer": user})
            if "keep waiting" in user:
                (report,) = [c for c, o in req.outputs() if "reported: building" in o]
                return ToolCall("extend_task", {"call_id": report, "seconds": 5})
        return base(req)

    return decide


async def test_ask_answer_and_hand_off_are_accepted_on_the_wire(
    openai_server: OpenAIServer,
) -> None:
    openai_server.brain = brain()
    desk = Desk()
    async with wire(openai_server, desk, AsyncToolOptions(settle_delay=0.05)) as (
        session,
        runtime,
        _rec,
    ):
        await session.run(user_input="book me a flight to Rome")
        await asyncio.sleep(0.5)  # the question is asked at the next quiet moment
        assert spoken(session)[-1] == "The 7:40 is sold out. Would the 8:15 do?"
        await session.run(user_input="yes, the 8:15 is fine")
        await runtime.settle(timeout=10)
        await asyncio.sleep(0.3)
        assert desk.answers == ["yes, the 8:15 is fine"]
        assert isinstance(session.current_agent, Checkout)
        assert spoken(session)[-1].startswith("Result: booked the 8:15 to Rome")
        await session.run(user_input="thanks")  # the new agent's request is valid too
    assert not openai_server.rejections


async def test_an_overdue_call_extended_by_the_llm_is_accepted_on_the_wire(
    openai_server: OpenAIServer,
) -> None:
    openai_server.brain = brain()
    async with wire(openai_server, Desk(), AsyncToolOptions(settle_delay=0.05)) as (
        session,
        runtime,
        rec,
    ):
        await session.run(user_input="hello")
        await session.run(user_input="the report please")
        await asyncio.sleep(0.8)
        assert spoken(session)[-1] == "This takes longer. Do you want to keep waiting?"
        extended = await session.run(user_input="yes, keep waiting")
        (out,) = [e.item for e in extended.events if e.type == "function_call_output"]
        assert not out.is_error and "may now run 5 more seconds" in out.output
        await runtime.settle(timeout=10)
        assert [e.status for e in rec.of("task_ended")] == ["succeeded"]
        assert spoken(session)[-1] == "Result: the report is ready"
    assert not openai_server.rejections


async def test_a_forwarded_question_is_answered_by_the_next_agent_on_the_wire(
    openai_server: OpenAIServer,
) -> None:
    """The agent a call is forwarded to offers ``answer_question`` (the server's model
    calls only tools it was offered) and every request is one OpenAI accepts."""
    openai_server.brain = brain()
    desk = FrontDesk(delay=0.3)
    async with wire(openai_server, desk, AsyncToolOptions(settle_delay=0.05)) as (
        session,
        runtime,
        rec,
    ):
        await session.run(user_input="book me a flight to Rome")
        await session.run(user_input="put me through to payments")
        assert isinstance(session.current_agent, Payments)
        await asyncio.sleep(0.8)
        assert spoken(session)[-1] == "The 7:40 is sold out. Would the 8:15 do?"
        await session.run(user_input="yes, the 8:15 is fine")
        await runtime.settle(timeout=10)
        assert desk.answers == ["yes, the 8:15 is fine"]
        assert spoken(session)[-1].startswith("Result: booked the 8:15")
        assert [e.status for e in rec.of("task_ended")] == ["succeeded"]
    assert not openai_server.rejections
