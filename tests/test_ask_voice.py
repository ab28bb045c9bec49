"""`ctx.ask` in a voice call (`FakeVoice` on a real `AgentSession`, virtual time): the
question never starts while the caller speaks, a barge-in re-asks it, and the answer
reaches the tool."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from livekit.agents import Agent

from livekit_async_tools import AsyncRunContext, AsyncToolOptions, function_tool
from livekit_async_tools.testing import ToolCall
from livekit_async_tools.testing._fake_voice import FAKE_VOICE_SUPPORTED

from .test_ask import brain as ask_brain
from .test_regressions_voice import Voice

pytestmark = [
    pytest.mark.skipif(
        not FAKE_VOICE_SUPPORTED, reason="FakeVoice needs livekit-agents' turn_handling options"
    ),
    pytest.mark.looptime,
]

QUESTION = "The 7:40 is sold out, so would the later flight at 8:15 work for you instead?"


class Booker(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="booker")
        self.answers: list[str] = []

    @function_tool
    async def book(self, ctx: AsyncRunContext, city: str) -> str:
        """Book a flight."""
        await ctx.update("checking seats")
        await asyncio.sleep(3)
        answer = await ctx.ask(QUESTION)
        self.answers.append(answer)
        return "booked the 8:15"


def brain(req: Any) -> Any:
    if "book" in req.last_user_text.lower() and req.chat_ctx.items[-1].type == "message":
        return ToolCall("book", {"city": "Rome"})
    return ask_brain(req)


async def test_a_barge_in_during_the_question_re_asks_it_and_the_answer_reaches_the_tool() -> None:
    agent = Booker()
    call = Voice(agent, brain, AsyncToolOptions(settle_delay=0.3))
    async with call:
        await call.voice.caller_says("book me a flight to Rome please", duration=1.5)
        # the caller talks right when the question would be due: it waits for them
        await asyncio.sleep(2.5)
        await call.voice.caller_says("and make it a window seat if you can", duration=2.0)
        await until_question(call)
        await asyncio.sleep(1.0)
        call.voice.caller_starts()  # barge in during the question
        await asyncio.sleep(1.0)
        call.voice.caller_stops("sorry, go on")
        await until_question(call, times=2)
        await asyncio.sleep(6)
        await call.voice.caller_says("yes the 8:15 is fine", duration=1.5)
        await call.runtime.settle(timeout=60)

    asked = [s for s in call.voice.agent_segments if s.text == QUESTION]
    assert len(asked) >= 2, [s.text for s in call.voice.agent_segments]
    assert asked[0].interrupted and not asked[-1].interrupted
    assert [s["user_state"] for s in call.scheduled] == ["listening"] * len(call.scheduled)
    assert not [o for o in call.voice.overlaps() if o.agent_started_it]
    assert agent.answers == ["yes the 8:15 is fine"]
    statuses = [e.status for e in call.rec.of("reply_updated")]
    assert "interrupted" in statuses and statuses[-1] == "delivered"


async def until_question(call: Voice, times: int = 1, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len([s for s in call.voice.agent_segments if s.text == QUESTION]) < times:
        assert loop.time() < deadline, "the question was not asked"
        await asyncio.sleep(0.1)
