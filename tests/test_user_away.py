"""The caller is not marked ``away`` while a background call of theirs runs or its reply
is pending; once it has landed (or ended silently) the full window starts again.

Ports of livekit-agents' own ``test_async_tool_defers_user_away_until_its_reply_lands``
and ``test_async_tool_without_a_reply_still_restarts_the_away_window`` to this
package's tools, on a real voice session (`FakeVoice`) in virtual time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from livekit.agents import Agent, AgentSession

from livekit_async_tools import AsyncRunContext, AsyncToolOptions, attach, function_tool
from livekit_async_tools._compat import user_away_timeout
from livekit_async_tools.testing import FakeVoice, ScriptedLLM, ToolCall
from livekit_async_tools.testing._fake_voice import FAKE_VOICE_SUPPORTED

from .conftest import keyword_brain

pytestmark = pytest.mark.skipif(
    not FAKE_VOICE_SUPPORTED, reason="FakeVoice needs livekit-agents' turn_handling options"
)

AWAY = 3.0


class Lookup(Agent):
    def __init__(self, result: str | None) -> None:
        super().__init__(instructions="You are a helpful assistant.")
        self.result = result
        self.returned_at = 0.0

    @function_tool
    async def async_lookup(self, ctx: AsyncRunContext) -> str | None:
        """Look an order up in the background."""
        await ctx.update("looking it up")
        await asyncio.sleep(20.0)
        self.returned_at = asyncio.get_running_loop().time()
        return self.result


async def run_call(agent: Lookup) -> tuple[list[float], list[Any]]:
    voice = FakeVoice(chars_per_second=20.0)
    session: AgentSession[Any] = AgentSession(
        llm=ScriptedLLM(keyword_brain({"order": ["Let me check.", ToolCall("async_lookup")]})),
        **{**voice.session_kwargs(), "user_away_timeout": AWAY},
    )
    voice.attach(session)
    runtime = attach(session, AsyncToolOptions(settle_delay=0.2))
    if user_away_timeout(session) is None:
        pytest.skip("this livekit-agents has no AgentSession.reset_away_timer")
    loop = asyncio.get_running_loop()
    away: list[float] = []
    session.on(
        "user_state_changed",
        lambda ev: away.append(loop.time()) if ev.new_state == "away" else None,
    )
    async with session:
        await session.start(agent)
        await asyncio.sleep(0.5)
        await voice.caller_says("look up my order", duration=2.0)
        await asyncio.sleep(40)
        await runtime.settle(timeout=10)
    await runtime.aclose()
    return away, voice.agent_segments


@pytest.mark.looptime
async def test_async_tool_defers_user_away_until_its_reply_lands() -> None:
    agent = Lookup("order 42 shipped")
    away, segments = await run_call(agent)
    reply_end = max(s.end for s in segments if s.end is not None and "order 42" in s.text)
    # the caller sat silent for ~20 s while the search ran: not away until the reply
    # landed and a full window passed after it
    assert len(away) == 1, away
    assert away[0] >= agent.returned_at + AWAY
    assert away[0] >= reply_end + AWAY - 0.05


@pytest.mark.looptime
async def test_async_tool_without_a_reply_still_restarts_the_away_window() -> None:
    agent = Lookup(None)  # recorded, not spoken: nothing else restarts the window
    away, _ = await run_call(agent)
    assert len(away) == 1, away
    assert away[0] >= agent.returned_at + AWAY
