"""The fake realtime model is only worth what it rejects: these tests pin its rules
(tests/support/fake_realtime.py) on its own and through a real AgentSession."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from livekit.agents import Agent, AgentSession, RunResult, __version__, function_tool, llm

from livekit_async_tools.testing import ToolCall

from .conftest import spoken, until
from .support.fake_realtime import (
    GEMINI_LIKE,
    OPENAI_LIKE,
    FakeRealtimeModel,
    FakeRealtimeSession,
    RealtimeProfile,
    RealtimeRequest,
)

pytestmark = pytest.mark.skipif(
    tuple(int(p) for p in __version__.split(".")[:2]) < (1, 8),
    reason="the fake realtime model implements livekit-agents 1.8's RealtimeSession interface",
)

PROFILES = [pytest.param(OPENAI_LIKE, id="openai"), pytest.param(GEMINI_LIKE, id="gemini")]


def brain(req: RealtimeRequest) -> str | ToolCall:
    last = req.chat_ctx.items[-1] if req.chat_ctx.items else None
    if isinstance(last, llm.FunctionCallOutput):
        return f"Done: {last.output}"
    if req.instructions:
        return f"As instructed: {req.instructions}"
    if "weather" in req.last_user_text:
        return ToolCall("get_weather", {"city": "Paris"})
    return "A long answer that takes a while to say out loud."


@function_tool
async def get_weather(city: str) -> str:
    """Today's weather in a city."""
    return f"sunny in {city}"


@function_tool
async def get_time(city: str) -> str:
    """The time in a city."""
    return "noon"


class Weather(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You tell the weather.", tools=[get_weather])


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[FakeRealtimeSession]:
    """A connected fake session on its own (no AgentSession)."""
    profile: RealtimeProfile = getattr(request, "param", OPENAI_LIKE)
    model = FakeRealtimeModel(brain, profile=profile, word_delay=0.05)
    sess = model.session()
    await sess.update_tools([get_weather])
    await asyncio.sleep(0)  # connected
    assert sess.connected
    yield sess
    await model.aclose()


def ctx_with(base: llm.ChatContext, *items: llm.ChatItem) -> llm.ChatContext:
    ctx = base.copy()
    ctx.items.extend(items)
    return ctx


async def settled() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


# -- through a real AgentSession, with a plain livekit tool -------------------------------


@pytest.mark.parametrize("profile", PROFILES)
async def test_plain_livekit_tool_through_a_real_session(profile: RealtimeProfile) -> None:
    model = FakeRealtimeModel(brain, profile=profile)
    session: AgentSession[None]
    async with AgentSession(llm=model) as session:
        await session.start(Weather())
        result: RunResult[None] = await session.run(user_input="What's the weather?")
        result.expect.next_event().is_function_call(name="get_weather")
        result.expect.next_event().is_function_call_output()
        result.expect.next_event().is_message(role="assistant")
        assert spoken(session) == ["Done: sunny in Paris"]
        sess = model.live_session
        triggers = [(r.trigger, r.user_initiated) for r in sess.replies]
        if profile.auto_tool_reply_generation:  # the server answered the output by itself
            assert triggers == [("generate_reply", True), ("tool_output", False)]
        else:  # livekit asked for the reply
            assert triggers == [("generate_reply", True), ("generate_reply", True)]
        assert sess.rejected_items == [] and sess.unknown_call_outputs == []
        assert sess.reconnects == 0
        assert [it.type for it in sess.conversation.items] == [
            "message",
            "function_call",
            "function_call_output",
            "message",
        ]


@pytest.mark.parametrize("profile", PROFILES)
async def test_generate_reply_instructions_reach_the_brain(profile: RealtimeProfile) -> None:
    model = FakeRealtimeModel(brain, profile=profile)
    session: AgentSession[None]
    async with AgentSession(llm=model) as session:
        await session.start(Weather())
        await session.generate_reply(instructions="GREET")
        assert spoken(session) == ["As instructed: GREET"]
        assert model.live_session.generate_reply_calls[-1].endswith("GREET")


@pytest.mark.parametrize("profile", PROFILES)
async def test_caller_speech_cuts_the_reply_and_is_answered(profile: RealtimeProfile) -> None:
    model = FakeRealtimeModel(brain, profile=profile, word_delay=0.05)
    session: AgentSession[None]
    async with AgentSession(llm=model) as session:
        await session.start(Weather())
        handle = session.generate_reply(user_input="Tell me a story")
        await until(session, lambda: session.agent_state == "speaking")
        sess = model.live_session
        sess.caller_starts_speaking()
        await until(session, lambda: session.user_state == "speaking")
        await handle
        assert handle.interrupted
        assert sess.replies[0].outcome == "cancelled"
        sess.caller_stops_speaking("What's the weather?")
        await until(session, lambda: "Done: sunny in Paris" in spoken(session))
        users = [m.text_content for m in session.history.messages() if m.role == "user"]
        assert users == ["Tell me a story", "What's the weather?"]
        assert sess.replies[1].trigger == "caller_turn" and not sess.replies[1].user_initiated


# -- OpenAI-like ----------------------------------------------------------------------------


async def test_openai_like_refuses_a_reply_while_one_is_active(
    server: FakeRealtimeSession,
) -> None:
    first = await server.generate_reply()
    second = server.generate_reply(instructions="again")
    with pytest.raises(llm.RealtimeError) as err:
        await second
    assert err.value.code == "conversation_already_has_active_response"
    assert server.refusals == ["again"]
    async for msg in first.message_stream:
        assert "".join([t async for t in msg.text_stream]).startswith("A long answer")
    await server.replies_done()
    assert [r.outcome for r in server.replies] == ["done"]


async def test_openai_like_refusal_ends_the_speech_handle_with_the_error() -> None:
    model = FakeRealtimeModel(brain, profile=OPENAI_LIKE, response_tail=1.0)
    session: AgentSession[None]
    async with AgentSession(llm=model) as session:
        await session.start(Weather())
        await session.generate_reply(instructions="FIRST")  # said; still active server-side
        handle = session.generate_reply(instructions="SECOND")
        await handle
        error = handle.exception()
        assert isinstance(error, llm.RealtimeError)
        assert error.code == "conversation_already_has_active_response"
        assert [r.split("\n")[-1] for r in model.live_session.refusals] == ["SECOND"]
        assert spoken(session) == ["As instructed: FIRST"]


async def test_openai_like_raises_on_update_after_close(server: FakeRealtimeSession) -> None:
    await server.aclose()
    with pytest.raises(llm.RealtimeError):
        await server.update_chat_ctx(llm.ChatContext.empty())
    assert server.closed_updates == 1
    with pytest.raises(llm.RealtimeError):
        await server.generate_reply()


async def test_openai_like_rejects_outputs_without_their_call(
    server: FakeRealtimeSession,
) -> None:
    orphan = llm.FunctionCallOutput(call_id="nope", output="x", is_error=False)
    await server.update_chat_ctx(ctx_with(server.chat_ctx, orphan))
    assert [reason for _, reason in server.rejected_items] == ["no function_call with this call_id"]
    assert server.conversation.items == []
    call = llm.FunctionCall(call_id="c1", name="get_weather", arguments="{}")
    out = llm.FunctionCallOutput(call_id="c1", output="sunny", is_error=False)
    again = llm.FunctionCallOutput(call_id="c1", output="rainy", is_error=False)
    await server.update_chat_ctx(ctx_with(server.chat_ctx, call, out, again))
    assert [it.id for it in server.conversation.items] == [call.id, out.id]
    assert server.rejected_items[-1][1] == "duplicate output for this call_id"


async def test_openai_like_keeps_system_messages_and_applies_removals(
    server: FakeRealtimeSession,
) -> None:
    note = llm.ChatMessage(role="system", content=["a note"])
    user = llm.ChatMessage(role="user", content=["hi"])
    await server.update_chat_ctx(ctx_with(server.chat_ctx, user, note))
    assert [it.id for it in server.conversation.items] == [user.id, note.id]
    await server.update_chat_ctx(llm.ChatContext([note]))
    assert [it.id for it in server.conversation.items] == [note.id]
    assert server.dropped_system_messages == [] and server.ignored_removals == []


async def test_openai_like_tool_updates_never_reconnect(server: FakeRealtimeSession) -> None:
    await server.update_tools([get_weather, get_time])
    await server.update_tools([get_weather])
    assert server.reconnects == 0
    assert server.tool_updates == [["get_weather"], ["get_time", "get_weather"], ["get_weather"]]


# -- Gemini-like ----------------------------------------------------------------------------


@pytest.mark.parametrize("server", [GEMINI_LIKE], indirect=True)
async def test_gemini_like_answers_every_new_tool_output_by_itself(
    server: FakeRealtimeSession,
) -> None:
    events: list[llm.GenerationCreatedEvent] = []
    server.on("generation_created", events.append)
    call = llm.FunctionCall(call_id="c1", name="get_weather", arguments="{}")
    out = llm.FunctionCallOutput(call_id="c1", output="sunny", is_error=False)
    await server.update_chat_ctx(ctx_with(server.chat_ctx, call, out))
    await settled()
    assert [(r.trigger, r.trigger_call_ids) for r in server.replies] == [("tool_output", ("c1",))]
    assert [e.user_initiated for e in events] == [False]
    assert server.unknown_call_outputs == ["c1"]  # the server never issued c1
    assert server.generate_reply_calls == []
    # the same output again (e.g. a context rewrite) starts nothing
    await server.replies_done()
    await server.update_chat_ctx(llm.ChatContext([call]))
    await server.update_chat_ctx(llm.ChatContext([call, out]))
    await settled()
    assert len(server.replies) == 1


@pytest.mark.parametrize("server", [GEMINI_LIKE], indirect=True)
async def test_gemini_like_drops_system_messages_with_a_warning(
    server: FakeRealtimeSession, caplog: pytest.LogCaptureFixture
) -> None:
    note = llm.ChatMessage(role="system", content=["a note"])
    user = llm.ChatMessage(role="user", content=["hi"])
    with caplog.at_level(logging.WARNING):
        await server.update_chat_ctx(ctx_with(server.chat_ctx, user, note))
        await settled()
    assert "system message" in caplog.text
    assert [m.id for m in server.dropped_system_messages] == [note.id]
    assert [it.id for it in server.conversation.items] == [user.id]
    assert note.id not in {it.id for it in server.chat_ctx.items}


@pytest.mark.parametrize("server", [GEMINI_LIKE], indirect=True)
async def test_gemini_like_is_append_only(
    server: FakeRealtimeSession, caplog: pytest.LogCaptureFixture
) -> None:
    a = llm.ChatMessage(role="user", content=["a"])
    b = llm.ChatMessage(role="user", content=["b"])
    await server.update_chat_ctx(llm.ChatContext([a, b]))
    await settled()
    with caplog.at_level(logging.WARNING):
        await server.update_chat_ctx(llm.ChatContext([b]))
        await settled()
    assert server.ignored_removals == [a.id]
    assert [it.id for it in server.conversation.items] == [a.id, b.id]  # still there
    assert [it.id for it in server.chat_ctx.items] == [b.id]  # what the client believes
    assert "not supported" in caplog.text


@pytest.mark.parametrize("server", [GEMINI_LIKE], indirect=True)
async def test_gemini_like_tool_change_reconnects_and_drops_queued_messages(
    server: FakeRealtimeSession,
) -> None:
    user = llm.ChatMessage(role="user", content=["hi"])
    call = llm.FunctionCall(call_id="c1", name="get_weather", arguments="{}")
    out = llm.FunctionCallOutput(call_id="c1", output="sunny", is_error=False)
    await server.update_chat_ctx(llm.ChatContext([user]))
    await settled()
    await server.update_chat_ctx(llm.ChatContext([user, call, out]))  # queued, not yet sent
    await server.update_tools([get_weather])  # the same tools: nothing happens
    assert server.reconnects == 0
    await server.update_tools([get_weather, get_time])
    assert server.reconnects == 1
    assert server.dropped_client_messages == [[out]]
    await settled()
    # the new connection starts from the client's view without tool calls and outputs
    assert [it.id for it in server.conversation.items] == [user.id]
    assert server.replies == []  # the output never arrived: nothing answered it


@pytest.mark.parametrize("server", [GEMINI_LIKE], indirect=True)
async def test_gemini_like_new_turn_supersedes_the_active_reply(
    server: FakeRealtimeSession,
) -> None:
    await server.generate_reply()
    second = await server.generate_reply(instructions="NOW")
    assert second.user_initiated
    await server.replies_done()
    assert [r.outcome for r in server.replies] == ["superseded", "done"]
    await server.aclose()
    await server.update_chat_ctx(llm.ChatContext.empty())  # no error: nothing is sent
    assert server.closed_updates == 1
