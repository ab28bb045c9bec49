"""The package's scenarios on the wire: real sessions, the real `livekit.plugins.openai.LLM`,
and a strict OpenAI-compatible server that refuses what OpenAI refuses (HTTP 400).

Every test fails on a refused request and names the offending messages
(`tests/support/openai_server.py` lists the rules).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from livekit.agents import Agent, AgentSession, AgentTask, ToolError, llm

from livekit_async_tools import AsyncRunContext, AsyncToolOptions, attach, function_tool

from .conftest import Recorder, spoken, until
from .support.openai_server import (
    ChatRequest,
    OpenAIServer,
    Reply,
    ToolCall,
    keyword_brain,
    openai_server_fixture,  # noqa: F401  (the `openai_server` fixture)
    validate,
)

pytest.importorskip("livekit.plugins.openai", reason="needs livekit-plugins-openai")

FAST = AsyncToolOptions(settle_delay=0.05)


# -- agents -----------------------------------------------------------------------------


class CollectEmail(AgentTask[str]):
    def __init__(self) -> None:
        super().__init__(instructions="You collect the caller's email address.")

    async def on_enter(self) -> None:
        self.session.generate_reply(instructions="ASK_EMAIL")

    @function_tool
    async def record_email(self, email: str) -> None:
        """Record the caller's email address."""
        self.complete(email)


class Travel(Agent):
    """A travel agent whose slow tools wait for the test to release them."""

    def __init__(self, chat_ctx: llm.ChatContext | None = None) -> None:
        super().__init__(instructions="You are a travel agent.", chat_ctx=chat_ctx)
        self.flights = asyncio.Event()
        self.hotels = asyncio.Event()
        self.hotel_agent: type[Agent] | None = None
        self.cancel_hooks = 0

    async def _search(self, ctx: AsyncRunContext, what: str, gate: asyncio.Event) -> str:
        ctx.on_cancel(lambda: setattr(self, "cancel_hooks", self.cancel_hooks + 1))
        await ctx.update(f"searching {what}")
        await gate.wait()
        return f"3 {what}"

    @function_tool(cancellable=True)
    async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
        """Search flights to a city."""
        return await self._search(ctx, f"flights to {city}", self.flights)

    @function_tool
    async def search_hotels(self, ctx: AsyncRunContext, city: str) -> str:
        """Search hotels in a city."""
        return await self._search(ctx, f"hotels in {city}", self.hotels)

    @function_tool
    async def get_weather(self, city: str) -> str:
        """Today's weather in a city."""
        return f"sunny in {city}"

    @function_tool
    async def collect_email(self) -> str:
        """Collect the caller's email address."""
        email = await CollectEmail()
        return f"email {email}"

    @function_tool
    async def transfer_to_hotel_desk(self) -> Agent:
        """Hand the caller to the hotel desk (the flight result arrives just before)."""
        self.flights.set()
        await poll(lambda: has_final(self))
        assert self.hotel_agent is not None
        return self.hotel_agent(chat_ctx=self.chat_ctx)


class HoldTravel(Travel):
    @function_tool(on_handoff="hold")
    async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
        """Search flights to a city."""
        return await self._search(ctx, f"flights to {city}", self.flights)


class CancelTravel(Travel):
    @function_tool(on_handoff="cancel")
    async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
        """Search flights to a city."""
        return await self._search(ctx, f"flights to {city}", self.flights)


class Hotel(Agent):
    """A next agent without the origin's tools."""

    def __init__(self, chat_ctx: llm.ChatContext | None = None) -> None:
        super().__init__(instructions="You are the hotel agent.", chat_ctx=chat_ctx)


class HotelWithFlights(Hotel):
    """A next agent that also has a ``search_flights`` tool (same name as the origin's)."""

    @function_tool
    async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
        """Search flights to a city."""
        await ctx.update("searching")
        return f"2 flights to {city}"


RULES: dict[str, Reply] = {
    "flight and weather": [
        ToolCall("search_flights", {"city": "Paris"}),
        ToolCall("get_weather", {"city": "Paris"}),
    ],
    "flight and hotel": [
        ToolCall("search_flights", {"city": "Paris"}),
        ToolCall("search_hotels", {"city": "Paris"}),
    ],
    "flight": ToolCall("search_flights", {"city": "Paris"}),
    "hotel desk": ToolCall("transfer_to_hotel_desk"),
    "hotel": ToolCall("search_hotels", {"city": "Paris"}),
    "book": ToolCall("collect_email"),
    "@": ToolCall("record_email", {"email": "ann@example.com"}),
    "story": "Once upon a time there was a very long flight with many stops on the way.",
}
ON_INSTRUCTIONS: dict[str, Reply] = {
    "ASK_EMAIL": "What is your email?",
    "FOLLOW_UP_HOTEL": "Do you also need a hotel?",
}
BRAIN = keyword_brain(RULES, on_instructions=ON_INSTRUCTIONS)


# -- helpers ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def wire(
    server: OpenAIServer, agent: Agent, options: AsyncToolOptions = FAST
) -> AsyncIterator[tuple[AgentSession[Any], Any, Recorder]]:
    """A started text-mode session on the real openai.LLM; fails on any refused request
    (also when the body failed for another reason: the refusal is usually why)."""
    if server.brain is None:
        server.brain = BRAIN
    session: AgentSession[Any] = AgentSession(llm=server.llm())
    runtime = attach(session, options)
    rec = Recorder(runtime)
    try:
        async with session:
            await session.start(agent)
            yield session, runtime, rec
    except BaseException as exc:
        if server.rejections[server.reported :] or server.brain_errors:
            server.assert_clean()  # raises, naming the refused requests
        raise exc
    server.assert_clean()


def deliveries(server: OpenAIServer) -> list[ChatRequest]:
    """Accepted requests that asked the LLM to speak background results."""
    return [
        r
        for r in server.accepted
        if "Background results" in r.instructions or "cut off while telling" in r.instructions
    ]


async def poll(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``cond()`` holds (for state no session event announces)."""
    for _ in range(int(timeout / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def has_final(agent: Agent) -> bool:
    """Whether a final result item is in the agent's context."""
    return any(cid.endswith("_result") for cid in call_ids(agent))


def call_ids(agent: Agent) -> list[str]:
    return [it.call_id for it in agent.chat_ctx.items if isinstance(it, llm.FunctionCallOutput)]


# -- the server itself ------------------------------------------------------------------


def _body(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": list(messages), **extra}


def _call(call_id: str, name: str = "f") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}}


def _tool(name: str = "f", **function: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, **function}}


USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (_body(USER), None),
        (
            _body(
                USER,
                {"role": "assistant", "tool_calls": [_call("a"), _call("b")]},
                {"role": "tool", "tool_call_id": "b", "content": "x"},
                {"role": "tool", "tool_call_id": "a", "content": "y"},
            ),
            None,
        ),
        (
            _body(USER, {"role": "tool", "tool_call_id": "a", "content": "x"}),
            "must be a response to a preceeding message with 'tool_calls'",
        ),
        (
            _body(
                USER,
                {"role": "assistant", "tool_calls": [_call("a")]},
                {"role": "tool", "tool_call_id": "z", "content": "x"},
            ),
            "'tool_call_id' of 'z' not found in 'tool_calls' of previous message",
        ),
        (
            _body(USER, {"role": "assistant", "tool_calls": [_call("a"), _call("b")]}),
            "did not have response messages: a, b",
        ),
        (
            _body(
                USER,
                {"role": "assistant", "tool_calls": [_call("a")]},
                USER,
                {"role": "tool", "tool_call_id": "a", "content": "x"},
            ),
            "did not have response messages: a",
        ),
        (
            _body(
                USER,
                {"role": "assistant", "tool_calls": [_call("a")]},
                {"role": "tool", "tool_call_id": "a", "content": "x"},
                {"role": "assistant", "tool_calls": [_call("a")]},
                {"role": "tool", "tool_call_id": "a", "content": "x"},
            ),
            "Duplicate value for 'tool_call_id' of a",
        ),
        (
            _body(
                USER,
                {"role": "assistant", "tool_calls": [_call("c" * 41)]},
                {"role": "tool", "tool_call_id": "c" * 41, "content": "x"},
            ),
            "string_above_max_length",
        ),
        (_body(USER, tools=[]), "empty_array"),
        (_body(USER, tools=[_tool("bad name")]), "does not match pattern"),
        (_body(USER, tools=[_tool("x" * 65)]), "string_above_max_length"),
        (_body(USER, tool_choice="auto"), "only allowed when 'tools' are specified"),
        (_body(USER, parallel_tool_calls=True), "only allowed when 'tools' are specified"),
        (
            _body(
                USER,
                tools=[_tool("f")],
                tool_choice={"type": "function", "function": {"name": "g"}},
            ),
            "tool 'g' is not one of the declared tools",
        ),
        (
            _body(
                USER,
                tools=[_tool("f", strict=True, parameters={"type": "object", "properties": {}})],
            ),
            "'additionalProperties' is required to be supplied and to be false",
        ),
        (
            _body(
                USER,
                tools=[
                    _tool(
                        "f",
                        strict=True,
                        parameters={
                            "type": "object",
                            "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                            "required": ["a"],
                            "additionalProperties": False,
                        },
                    )
                ],
            ),
            "Missing 'b'",
        ),
        (_body(USER, stream_options={"include_usage": True}), "only allowed when 'stream'"),
    ],
)
def test_the_server_refuses_what_openai_refuses(body: dict[str, Any], expected: str | None) -> None:
    err = validate(body)
    if expected is None:
        assert err is None
    else:
        assert err is not None
        assert err.status == 400
        assert expected in f"{err.message} {err.code}"
        assert set(err.body()["error"]) == {"message", "type", "param", "code"}


async def test_a_refused_request_reaches_livekit_as_a_400_and_is_dumped(
    openai_server: OpenAIServer,
) -> None:
    bad = _body(USER, {"role": "tool", "tool_call_id": "a", "content": "x"})
    import httpx2 as httpx

    async with httpx.AsyncClient() as client:
        resp = await client.post(
            openai_server.base_url + "/chat/completions",
            json=bad,
            headers={"Authorization": "Bearer test"},
        )
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(AssertionError, match=r">> \[1\] tool a: 'x'"):
        openai_server.assert_clean()


async def test_streamed_text_and_tool_calls_reach_the_session(
    openai_server: OpenAIServer,
) -> None:
    agent = Travel()
    async with wire(openai_server, agent) as (session, _runtime, _rec):
        result = await session.run(user_input="flight and weather")
        calls = [e.item for e in result.events if e.type == "function_call"]
        assert [(c.name, json.loads(c.arguments)) for c in calls] == [
            ("search_flights", {"city": "Paris"}),
            ("get_weather", {"city": "Paris"}),
        ]
        assert all(len(c.call_id) == 29 and c.call_id.startswith("call_") for c in calls)
        assert spoken(session)[-1] == "One moment. Done: sunny in Paris"
        agent.flights.set()
        await _settle(session)
    first = openai_server.requests[0]
    assert first.body["stream"] is True
    assert first.body["stream_options"] == {"include_usage": True}
    assert {"search_flights", "search_hotels", "get_weather"} <= set(first.tool_names)


async def _settle(session: AgentSession[Any], timeout: float = 10) -> None:
    await attach(session).settle(timeout=timeout)


# -- scenarios --------------------------------------------------------------------------


async def test_ack_then_result(openai_server: OpenAIServer) -> None:
    agent = Travel()
    async with wire(openai_server, agent) as (session, runtime, rec):
        await session.run(user_input="find a flight")
        assert spoken(session) == ["One moment."]
        agent.flights.set()
        await runtime.settle(timeout=10)
        assert spoken(session) == ["One moment.", "Result: 3 flights to Paris"]
        assert [e.status for e in rec.of("reply_updated")] == ["scheduled", "delivered"]
        await session.run(user_input="thanks")  # the history is still valid afterwards


async def test_coalesced_updates_are_one_reply(openai_server: OpenAIServer) -> None:
    release = asyncio.Event()

    class Reporter(Travel):
        @function_tool
        async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
            """Search flights to a city."""
            await ctx.update("searching")
            await release.wait()
            await ctx.update("checked airline one")
            await ctx.update("checked airline two")
            return f"3 flights to {city}"

    async with wire(openai_server, Reporter()) as (session, runtime, _rec):
        await session.run(user_input="flight")
        release.set()
        await runtime.settle(timeout=10)
        assert len(deliveries(openai_server)) == 1
        assert spoken(session)[-1] == "Result: 3 flights to Paris"
        await session.run(user_input="thanks")


async def test_two_results_together(openai_server: OpenAIServer) -> None:
    agent = Travel()
    async with wire(openai_server, agent) as (session, runtime, _rec):
        await session.run(user_input="flight and hotel")
        agent.flights.set()
        agent.hotels.set()
        await runtime.settle(timeout=10)
        assert len(deliveries(openai_server)) == 1
        said = spoken(session)[-1]
        assert said.startswith("Result: ")
        assert sorted(said.removeprefix("Result: ").split("; ")) == [
            "3 flights to Paris",
            "3 hotels in Paris",
        ]
        await session.run(user_input="thanks")


async def test_result_waits_for_agent_task_and_is_spoken_by_the_origin(
    openai_server: OpenAIServer,
) -> None:
    travel = Travel()
    async with wire(openai_server, travel) as (session, runtime, rec):
        await session.run(user_input="find a flight")
        booking = session.generate_reply(user_input="book it")
        await until(
            session,
            lambda: (
                isinstance(session.current_agent, CollectEmail)
                and "What is your email?" in spoken(session)
                and session.agent_state == "listening"
            ),
            timeout=10,
        )
        task = session.current_agent
        travel.flights.set()
        await until(session, lambda: bool(rec.of("task_ended")), timeout=10)
        await asyncio.sleep(0.3)
        assert [e.status for e in rec.of("reply_updated")] == []
        await session.run(user_input="it is ann@example.com")
        await booking
        await runtime.settle(timeout=10)
        assert spoken(session)[-2:] == ["Done: email ann@example.com", "Result: 3 flights to Paris"]
        assert not any(
            "Result:" in (getattr(it, "text_content", "") or "") for it in task.chat_ctx.items
        )
        await session.run(user_input="thanks")


async def test_handoff_forward(openai_server: OpenAIServer) -> None:
    travel = Travel()
    async with wire(openai_server, travel) as (session, runtime, _rec):
        await session.run(user_input="flight")
        hotel = Hotel()
        session.update_agent(hotel)
        await until(session, lambda: session.current_agent is hotel and _closed(travel))
        travel.flights.set()
        await runtime.settle(timeout=10)
        assert spoken(session)[-1] == "Result: 3 flights to Paris"
        await session.run(user_input="thanks")


async def test_handoff_hold(openai_server: OpenAIServer) -> None:
    travel = HoldTravel()
    async with wire(openai_server, travel) as (session, runtime, rec):
        await session.run(user_input="flight")
        session.update_agent(Hotel())
        await until(session, lambda: _closed(travel))
        travel.flights.set()
        await until(session, lambda: bool(rec.of("task_ended")))
        await session.run(user_input="anything else")
        session.update_agent(travel)
        await runtime.settle(timeout=10)
        assert spoken(session)[-1] == "Result: 3 flights to Paris"
        await session.run(user_input="thanks")


async def test_handoff_cancel(openai_server: OpenAIServer) -> None:
    travel = CancelTravel()
    async with wire(openai_server, travel) as (session, runtime, rec):
        await session.run(user_input="flight")
        hotel = Hotel()
        session.update_agent(hotel)
        await until(session, lambda: bool(rec.of("task_ended")))
        await runtime.settle(timeout=10)
        assert rec.of("task_ended")[0].status == "cancelled"
        await session.run(user_input="flight please")  # the hotel agent's next request
        session.update_agent(travel := CancelTravel(chat_ctx=hotel.chat_ctx))
        await session.run(user_input="hello again")


def _closed(agent: Agent) -> bool:
    try:
        _ = agent.session
    except RuntimeError:
        return True
    return False


@pytest.mark.parametrize("next_agent", [Hotel, HotelWithFlights], ids=["other_tools", "same_tool"])
async def test_handoff_with_chat_ctx_copy_after_the_result(
    openai_server: OpenAIServer, next_agent: type[Agent]
) -> None:
    """``NewAgent(chat_ctx=self.chat_ctx)`` while the task still runs: the copy has the
    call and its acknowledgement; the result comes later and goes to the new agent."""
    travel = Travel()
    async with wire(openai_server, travel) as (session, runtime, _rec):
        await session.run(user_input="flight")
        nxt = next_agent(chat_ctx=travel.chat_ctx)
        session.update_agent(nxt)
        await until(session, lambda: _closed(travel))
        travel.flights.set()
        await runtime.settle(timeout=10)
        assert spoken(session)[-1] == "Result: 3 flights to Paris"
        await session.run(user_input="thanks")
        assert len(call_ids(nxt)) == len(set(call_ids(nxt)))


@pytest.mark.parametrize("next_agent", [Hotel, HotelWithFlights], ids=["other_tools", "same_tool"])
async def test_llm_handoff_with_chat_ctx_copy_while_a_result_waits(
    openai_server: OpenAIServer, next_agent: type[Agent]
) -> None:
    """A handoff tool returns ``NewAgent(chat_ctx=self.chat_ctx)`` right after the result
    was recorded in the origin (the tool dispatch keeps it from being spoken)."""
    travel = Travel()
    travel.hotel_agent = next_agent
    async with wire(openai_server, travel) as (session, runtime, _rec):
        await session.run(user_input="flight")
        await session.run(user_input="the hotel desk please")
        await runtime.settle(timeout=10)
        nxt = session.current_agent
        assert isinstance(nxt, next_agent)
        assert "Result: 3 flights to Paris" in spoken(session)
        await session.run(user_input="thanks")
        assert len(call_ids(nxt)) == len(set(call_ids(nxt)))


@pytest.mark.parametrize("next_agent", [Hotel, HotelWithFlights], ids=["other_tools", "same_tool"])
async def test_app_update_agent_with_chat_ctx_copy_while_a_result_waits(
    openai_server: OpenAIServer, next_agent: type[Agent]
) -> None:
    """The app calls ``update_agent(NewAgent(chat_ctx=old.chat_ctx))`` the moment the
    result is recorded (before the settle window lets it be spoken)."""
    travel = Travel()
    async with wire(openai_server, travel, AsyncToolOptions(settle_delay=0.5)) as (
        session,
        runtime,
        rec,
    ):
        await session.run(user_input="flight")
        travel.flights.set()
        await poll(lambda: has_final(travel))
        assert [e.status for e in rec.of("reply_updated")] == []  # not spoken yet
        nxt = next_agent(chat_ctx=travel.chat_ctx)
        session.update_agent(nxt)
        await runtime.settle(timeout=10)
        assert "Result: 3 flights to Paris" in spoken(session)
        await session.run(user_input="thanks")
        assert len(call_ids(nxt)) == len(set(call_ids(nxt)))


class ProgressTravel(Travel):
    @function_tool
    async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
        """Search flights to a city."""
        await ctx.update("searching")
        await self.flights.wait()
        await ctx.update("found some flights")
        await self.hotels.wait()
        return f"3 flights to {city}"


@pytest.mark.parametrize("next_agent", [Hotel, HotelWithFlights], ids=["other_tools", "same_tool"])
async def test_handoff_with_chat_ctx_copy_while_a_progress_update_waits(
    openai_server: OpenAIServer, next_agent: type[Agent]
) -> None:
    """A progress update recorded, not spoken, when the app hands off with a context copy;
    the task is still running (so the new agent gets the control tools) and ends later."""
    travel = ProgressTravel()
    async with wire(openai_server, travel, AsyncToolOptions(settle_delay=0.5)) as (
        session,
        runtime,
        _rec,
    ):
        await session.run(user_input="flight")
        travel.flights.set()
        await poll(lambda: any("_progress_" in cid for cid in call_ids(travel)))
        nxt = next_agent(chat_ctx=travel.chat_ctx)
        session.update_agent(nxt)
        await until(session, lambda: _closed(travel))
        await session.run(user_input="anything new?")
        travel.hotels.set()
        await runtime.settle(timeout=10)
        assert "Result: 3 flights to Paris" in " | ".join(spoken(session))
        await session.run(user_input="thanks")
        assert len(call_ids(nxt)) == len(set(call_ids(nxt)))


class VerifyingEmail(CollectEmail):
    def __init__(self, gate: asyncio.Event) -> None:
        super().__init__()
        self.gate = gate

    @function_tool
    async def verify_email(self, ctx: AsyncRunContext, email: str) -> str:
        """Check that an email address exists."""
        await ctx.update("checking the address")
        await self.gate.wait()
        return f"{email} exists"


async def test_agent_tasks_own_async_tool_is_delivered_to_the_task(
    openai_server: OpenAIServer,
) -> None:
    gate = asyncio.Event()

    class Booking(Travel):
        @function_tool
        async def collect_email(self) -> str:
            """Collect the caller's email address."""
            email = await VerifyingEmail(gate)
            return f"email {email}"

    openai_server.brain = keyword_brain(
        {**RULES, "verify": ToolCall("verify_email", {"email": "ann@example.com"})},
        on_instructions=ON_INSTRUCTIONS,
    )
    async with wire(openai_server, Booking()) as (session, runtime, rec):
        await session.run(user_input="find a flight")
        booking = session.generate_reply(user_input="book it")
        await until(
            session,
            lambda: (
                isinstance(session.current_agent, VerifyingEmail)
                and session.agent_state == "listening"
            ),
            timeout=10,
        )
        task = session.current_agent
        await session.run(user_input="please verify it")
        gate.set()
        await until(
            session,
            lambda: any(e.status == "delivered" for e in rec.of("reply_updated")),
            timeout=10,
        )
        assert session.current_agent is task
        assert "Result: ann@example.com exists" in spoken(session)
        await session.run(user_input="ann@example.com")
        await booking
        session.current_agent.flights.set()  # type: ignore[attr-defined]
        await runtime.settle(timeout=10)
        await session.run(user_input="thanks")


async def test_silent_updates_and_duplicate_calls(openai_server: OpenAIServer) -> None:
    class Quiet(Travel):
        @function_tool
        async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
            """Search flights to a city."""
            await ctx.update("searching")
            for n in range(3):
                await ctx.update(f"page {n}", delivery="silent")
            await self.flights.wait()
            return f"3 flights to {city}"

    agent = Quiet()
    async with wire(openai_server, agent) as (session, runtime, _rec):
        await session.run(user_input="flight")
        second = await session.run(user_input="flight again")  # rejected as a duplicate
        outs = [e.item.output for e in second.events if e.type == "function_call_output"]
        assert "already running" in outs[0]
        await session.run(user_input="how is it going")
        agent.flights.set()
        await runtime.settle(timeout=10)
        assert spoken(session)[-1] == "Result: 3 flights to Paris"
        await session.run(user_input="thanks")


async def test_control_tools_listed_and_used_by_the_llm(openai_server: OpenAIServer) -> None:
    def brain(req: ChatRequest) -> Reply:
        last = req.last
        names = req.tool_call_names()
        if last.get("role") == "tool" and names.get(last["tool_call_id"]) == "get_running_tasks":
            (task,) = json.loads(last["content"])
            return ToolCall("cancel_task", {"call_id": task["call_id"]})
        if last.get("role") == "user" and "stop" in req.last_user_text:
            assert "get_running_tasks" in req.tool_names
            return ToolCall("get_running_tasks")
        return BRAIN(req)

    openai_server.brain = brain
    agent = Travel()
    async with wire(openai_server, agent) as (session, runtime, rec):
        await session.run(user_input="hello")
        # the default ("auto"): offered from the first request, the list never changes
        assert "get_running_tasks" in openai_server.requests[-1].tool_names
        await session.run(user_input="flight")
        await session.run(user_input="stop that search")
        await runtime.settle(timeout=10)
        assert [e.status for e in rec.of("task_ended")] == ["cancelled"]
        assert agent.cancel_hooks == 1
        assert "was cancelled" in spoken(session)[-1]
        await session.run(user_input="thanks")


async def test_cancel_by_the_app(openai_server: OpenAIServer) -> None:
    agent = Travel()
    async with wire(openai_server, agent) as (session, runtime, rec):
        await session.run(user_input="flight")
        (task,) = runtime.tasks
        assert await runtime.cancel(task.call_id)
        await runtime.settle(timeout=10)
        assert [e.status for e in rec.of("task_ended")] == ["cancelled"]
        assert deliveries(openai_server) == []  # recorded, not spoken
        await session.run(user_input="what happened")
        assert any("was cancelled" in out for _cid, out in openai_server.requests[-1].outputs())


async def test_timeout(openai_server: OpenAIServer) -> None:
    class Slow(Travel):
        @function_tool(timeout=0.3)
        async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
            """Search flights to a city."""
            await ctx.update("searching")
            await asyncio.Event().wait()
            return "never"

    async with wire(openai_server, Slow()) as (session, runtime, rec):
        await session.run(user_input="flight")
        await runtime.settle(timeout=10)
        assert [e.status for e in rec.of("task_ended")] == ["timed_out"]
        assert (
            spoken(session)[-1]
            == "Result: search_flights was stopped after 0.3 seconds without a result."
        )
        await session.run(user_input="thanks")


async def test_tool_errors(openai_server: OpenAIServer) -> None:
    class Failing(Travel):
        @function_tool
        async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
            """Search flights to a city."""
            await ctx.update("searching")
            await self.flights.wait()
            raise ToolError(f"no flights to {city} on that date")

        @function_tool
        async def search_hotels(self, ctx: AsyncRunContext, city: str) -> str:
            """Search hotels in a city."""
            await ctx.update("searching")
            await self.hotels.wait()
            raise RuntimeError("database password=hunter2 refused")

    agent = Failing()
    async with wire(openai_server, agent) as (session, runtime, rec):
        await session.run(user_input="flight and hotel")
        agent.flights.set()
        agent.hotels.set()
        await runtime.settle(timeout=10)
        assert [e.status for e in rec.of("task_ended")] == ["failed", "failed"]
        said = spoken(session)[-1]
        assert "no flights to Paris on that date" in said
        assert "unexpected internal error" in said
        assert "hunter2" not in said
        await session.run(user_input="thanks")


def has_note(agent: Agent, marker: str) -> bool:
    return any(
        isinstance(it, llm.ChatMessage) and marker in (it.text_content or "")
        for it in agent.chat_ctx.items
    )


async def test_steer(openai_server: OpenAIServer) -> None:
    agent = Travel()
    async with wire(openai_server, agent) as (session, runtime, _rec):
        await session.run(user_input="flight")
        runtime.steer("STEER_GOLD: the caller is a gold member")
        await poll(lambda: has_note(agent, "STEER_GOLD"))
        await session.run(user_input="hello")
        assert "STEER_GOLD" in openai_server.requests[-1].instructions
        agent.flights.set()
        await runtime.settle(timeout=10)
        await session.run(user_input="thanks")


STEER_RACE = (
    "livekit hands a reply the agent's context object when generate_reply()/run() is called, "
    "with no await before; writing a note takes the async Agent.update_chat_ctx, which "
    "replaces that object, so a caller turn started in the same step as steer() is "
    "answered without the note (the package carries it to the next request only if the "
    "agent changes; livekit offers no synchronous public write)"
)


@pytest.mark.xfail(strict=True, reason=STEER_RACE)
async def test_steer_is_seen_by_the_very_next_request(openai_server: OpenAIServer) -> None:
    """``steer()`` and then at once a caller turn: that turn's request carries the note."""
    agent = Travel()
    async with wire(openai_server, agent) as (session, runtime, _rec):
        await session.run(user_input="flight")
        runtime.steer("STEER_GOLD: the caller is a gold member")
        await session.run(user_input="hello")
        assert "STEER_GOLD" in openai_server.requests[-1].instructions
        agent.flights.set()
        await runtime.settle(timeout=10)


async def test_steer_from_a_tool_while_its_call_is_dispatched(
    openai_server: OpenAIServer,
) -> None:
    class Steering(Travel):
        @function_tool
        async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
            """Search flights to a city."""
            ctx.steer("STEER_EARLY: prefer morning flights")
            await ctx.update("searching")
            ctx.steer("STEER_LATE: the caller is in a hurry")
            await self.flights.wait()
            return f"3 flights to {city}"

    agent = Steering()
    async with wire(openai_server, agent) as (session, runtime, _rec):
        await session.run(user_input="flight")
        agent.flights.set()
        await runtime.settle(timeout=10)
        await session.run(user_input="thanks")
        assert "STEER_LATE" in openai_server.requests[-1].instructions


async def test_follow_up(openai_server: OpenAIServer) -> None:
    agent = Travel()
    async with wire(openai_server, agent) as (session, runtime, _rec):
        await session.run(user_input="flight")
        runtime.follow_up("FOLLOW_UP_HOTEL: ask whether they need a hotel")
        agent.flights.set()
        await runtime.settle(timeout=10)
        said = " | ".join(spoken(session))
        assert "Do you also need a hotel?" in said
        assert "Result: 3 flights to Paris" in said
        await session.run(user_input="thanks")


async def test_redelivery_after_an_interrupted_reply(openai_server: OpenAIServer) -> None:
    agent = Travel()
    cuts: list[str | None] = []
    async with wire(openai_server, agent) as (session, runtime, rec):
        await session.run(user_input="flight")

        def cut(ev: Any) -> None:
            if ev.status == "scheduled" and not cuts:
                cuts.append(ev.speech_id)
                session.interrupt()

        runtime.on("reply_updated", cut)
        openai_server.delay = 0.1
        agent.flights.set()
        await runtime.settle(timeout=10)
        openai_server.delay = 0.0
        assert [e.status for e in rec.of("reply_updated")] == [
            "scheduled",
            "interrupted",
            "scheduled",
            "delivered",
        ]
        assert "cut off while telling" in deliveries(openai_server)[-1].instructions
        assert spoken(session)[-1] == "Result: 3 flights to Paris"
        await session.run(user_input="thanks")


async def test_redelivery_after_a_reply_cut_mid_stream(openai_server: OpenAIServer) -> None:
    """The cut lands while the reply streams: the partial text is in the history."""
    agent = Travel()
    async with wire(openai_server, agent) as (session, runtime, rec):
        await session.run(user_input="flight")
        openai_server.chunk_delay = 0.05
        runtime.on(
            "reply_updated",
            lambda ev: (
                asyncio.get_running_loop().call_later(0.12, session.interrupt)
                if ev.status == "scheduled" and len(rec.of("reply_updated")) == 1
                else None
            ),
        )
        agent.flights.set()
        await runtime.settle(timeout=10)
        openai_server.chunk_delay = 0.0
        assert "interrupted" in [e.status for e in rec.of("reply_updated")]
        await session.run(user_input="thanks")


async def test_interrupt_delivery(openai_server: OpenAIServer) -> None:
    release = asyncio.Event()

    class Urgent(Travel):
        @function_tool
        async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
            """Search flights to a city."""
            await ctx.update("watching the gate")
            await release.wait()
            await ctx.update("URGENT gate changed to C3", delivery="interrupt")
            await self.flights.wait()
            return f"3 flights to {city}"

    agent = Urgent()
    async with wire(openai_server, agent) as (session, runtime, _rec):
        await session.run(user_input="flight")
        openai_server.chunk_delay = 0.05
        story = session.generate_reply(user_input="tell me a story")
        await until(session, lambda: session.agent_state in ("thinking", "speaking"))
        release.set()
        await story
        await until(session, lambda: any("URGENT" in s for s in spoken(session)), timeout=10)
        openai_server.chunk_delay = 0.0
        agent.flights.set()
        await runtime.settle(timeout=10)
        await session.run(user_input="thanks")


async def test_result_delivery_interrupt(openai_server: OpenAIServer) -> None:
    class Urgent(Travel):
        @function_tool(result_delivery="interrupt")
        async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
            """Search flights to a city."""
            await ctx.update("searching")
            await self.flights.wait()
            return f"3 flights to {city}"

    agent = Urgent()
    async with wire(openai_server, agent) as (session, runtime, _rec):
        await session.run(user_input="flight")
        openai_server.chunk_delay = 0.05
        story = session.generate_reply(user_input="tell me a story")
        await until(session, lambda: session.agent_state in ("thinking", "speaking"))
        agent.flights.set()
        await story
        await runtime.settle(timeout=10)
        openai_server.chunk_delay = 0.0
        assert "Result: 3 flights to Paris" in spoken(session)
        await session.run(user_input="thanks")


async def test_async_and_plain_tool_in_one_turn(openai_server: OpenAIServer) -> None:
    agent = Travel()
    async with wire(openai_server, agent) as (session, runtime, _rec):
        await session.run(user_input="flight and weather")
        assert spoken(session) == ["One moment. Done: sunny in Paris"]
        agent.flights.set()
        await runtime.settle(timeout=10)
        assert spoken(session)[-1] == "Result: 3 flights to Paris"
        await session.run(user_input="thanks")


async def test_many_updates(openai_server: OpenAIServer) -> None:
    class Chatty(Travel):
        @function_tool
        async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
            """Search flights to a city."""
            await ctx.update("starting")
            for n in range(30):
                await asyncio.sleep(0.02)
                await ctx.update(f"checked airline {n + 1}")
            return f"3 flights to {city}"

    async with wire(openai_server, Chatty()) as (session, runtime, _rec):
        await session.run(user_input="flight")
        await runtime.settle(timeout=30)
        assert spoken(session)[-1] == "Result: 3 flights to Paris"
        await session.run(user_input="thanks")


@pytest.mark.parametrize("length", [35, 40])
async def test_long_provider_call_ids(openai_server: OpenAIServer, length: int) -> None:
    """Provider call ids of 35 and 40 characters (OpenAI accepts up to 40; its own are 29):
    ``<id>_result`` would be 41+ characters. Two calls, a progress update each."""
    openai_server.call_id_length = length

    class Reporting(Travel):
        async def _search(self, ctx: AsyncRunContext, what: str, gate: asyncio.Event) -> str:
            await ctx.update(f"searching {what}")
            await gate.wait()
            await ctx.update(f"almost done with {what}")
            return f"3 {what}"

    agent = Reporting()
    async with wire(openai_server, agent) as (session, runtime, _rec):
        await session.run(user_input="flight and hotel")
        agent.flights.set()
        await until(session, lambda: any("3 flights" in s for s in spoken(session)), timeout=10)
        agent.hotels.set()
        await runtime.settle(timeout=10)
        said = " | ".join(spoken(session))
        assert "3 flights to Paris" in said
        assert "3 hotels in Paris" in said
        await session.run(user_input="thanks")
    ids = [cid for r in openai_server.requests for cid, _out in r.outputs()]
    assert all(len(cid) <= 40 for cid in ids)
    assert len({cid for cid in ids if cid.startswith("call_")}) >= 6  # 2 calls, 2 acks...


async def test_a_thousand_updates_keep_ids_short(openai_server: OpenAIServer) -> None:
    class Chatty(Travel):
        @function_tool
        async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
            """Search flights to a city."""
            for n in range(1001):
                await ctx.update(f"row {n}", delivery="silent")
            await self.flights.wait()
            return f"3 flights to {city}"

    agent = Chatty()
    async with wire(openai_server, agent) as (session, runtime, _rec):
        await session.run(user_input="flight")
        agent.flights.set()
        await runtime.settle(timeout=30)
        await session.run(user_input="thanks")


# -- more wire-sensitive paths -----------------------------------------------------------


async def test_hold_result_through_a_chain_of_context_copies(openai_server: OpenAIServer) -> None:
    """A held result recorded in the origin travels through two ``chat_ctx`` copies (both
    with a same-named tool) and is spoken once, when the origin is back."""
    travel = HoldTravel()
    async with wire(openai_server, travel, AsyncToolOptions(settle_delay=0.3)) as (
        session,
        runtime,
        _rec,
    ):
        await session.run(user_input="flight")
        travel.flights.set()
        await poll(lambda: has_final(travel))
        hotel = HotelWithFlights(chat_ctx=travel.chat_ctx)
        session.update_agent(hotel)
        await until(session, lambda: _closed(travel))
        await session.run(user_input="hello hotel")
        other = HoldTravel(chat_ctx=hotel.chat_ctx)
        session.update_agent(other)
        await until(session, lambda: _closed(hotel))
        await session.run(user_input="hello again")
        session.update_agent(travel)
        await runtime.settle(timeout=10)
        await session.run(user_input="thanks")
        assert [s for s in spoken(session) if s.startswith("Result:")] == [
            "Result: 3 flights to Paris"
        ]


async def test_a_delivery_reply_that_calls_a_tool(openai_server: OpenAIServer) -> None:
    """The model answers the results and calls another tool in the same reply."""

    def brain(req: ChatRequest) -> Reply:
        if (
            "Background results" in req.instructions
            and "search_hotels" not in req.tool_call_names().values()
        ):
            return ["Here are your flights.", ToolCall("search_hotels", {"city": "Paris"})]
        return BRAIN(req)

    openai_server.brain = brain
    agent = Travel()
    async with wire(openai_server, agent) as (session, runtime, _rec):
        await session.run(user_input="flight")
        agent.flights.set()
        agent.hotels.set()
        await runtime.settle(timeout=10)
        assert "3 hotels in Paris" in " | ".join(spoken(session))
        await session.run(user_input="thanks")


async def test_replace_a_call_with_pending_progress(openai_server: OpenAIServer) -> None:
    class Replacing(ProgressTravel):
        @function_tool(on_duplicate="replace", cancellable=True, duplicate_scope="name")
        async def search_flights(self, ctx: AsyncRunContext, city: str) -> str:
            """Search flights to a city."""
            await ctx.update("searching")
            await self.flights.wait()
            await ctx.update("found some flights")
            await self.hotels.wait()
            return f"3 flights to {city}"

    agent = Replacing()
    async with wire(openai_server, agent) as (session, runtime, rec):
        await session.run(user_input="flight")
        agent.flights.set()
        await poll(lambda: any("_progress_" in cid for cid in call_ids(agent)))
        await session.run(user_input="flight")  # replaces the running call
        agent.hotels.set()
        await runtime.settle(timeout=10)
        assert sorted(e.status for e in rec.of("task_ended")) == ["cancelled", "succeeded"]
        await session.run(user_input="thanks")


async def test_cancel_while_a_delivery_reply_is_generated(openai_server: OpenAIServer) -> None:
    agent = Travel()
    async with wire(openai_server, agent) as (session, runtime, rec):
        await session.run(user_input="flight and hotel")
        openai_server.delay = 0.3

        def cancel_flights(ev: Any) -> None:
            running = [t for t in runtime.tasks if t.tool_name == "search_flights"]
            if ev.status == "scheduled" and running:
                runtime_tasks.append(asyncio.ensure_future(runtime.cancel(running[0].call_id)))

        runtime_tasks: list[asyncio.Future[bool]] = []
        runtime.on("reply_updated", cancel_flights)
        agent.hotels.set()
        await runtime.settle(timeout=10)
        openai_server.delay = 0.0
        assert await asyncio.gather(*runtime_tasks) == [True]
        assert sorted(e.status for e in rec.of("task_ended")) == ["cancelled", "succeeded"]
        await session.run(user_input="thanks")


async def test_cancel_task_with_an_unknown_id(openai_server: OpenAIServer) -> None:
    def brain(req: ChatRequest) -> Reply:
        if req.last.get("role") == "user" and "stop" in req.last_user_text:
            return ToolCall("cancel_task", {"call_id": "call_unknown"})
        return BRAIN(req)

    openai_server.brain = brain
    agent = Travel()
    async with wire(openai_server, agent) as (session, runtime, _rec):
        await session.run(user_input="flight")
        await session.run(user_input="stop it")
        assert "no running background task" in openai_server.requests[-1].outputs()[-1][1]
        agent.flights.set()
        await runtime.settle(timeout=10)
        await session.run(user_input="thanks")


async def test_session_closes_with_results_pending(openai_server: OpenAIServer) -> None:
    agent = Travel()
    async with wire(openai_server, agent, AsyncToolOptions(settle_delay=1.0)) as (
        session,
        runtime,
        rec,
    ):
        await session.run(user_input="flight and hotel")
        agent.flights.set()
        await poll(lambda: has_final(agent))
    await runtime.settle(timeout=10)
    assert "dropped" in [e.status for e in rec.of("reply_updated")]
    assert runtime.tasks == ()


# -- control-tool churn (issue 13, item 5) -----------------------------------------------


class Plain(Agent):
    """An agent that never uses async tools."""

    def __init__(self) -> None:
        super().__init__(instructions="You are the front desk.")

    @function_tool
    async def get_weather(self, city: str) -> str:
        """Today's weather in a city."""
        return f"sunny in {city}"


CONTROL = {"get_running_tasks", "cancel_task"}


@pytest.mark.parametrize("mode", ["auto", "dynamic", "always", "never"])
async def test_control_tool_churn(
    openai_server: OpenAIServer, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tool-list changes between consecutive requests, per background call (printed), and
    whether an agent that never uses async tools is shown the control tools."""
    calls = 3
    options = AsyncToolOptions(settle_delay=0.05, control_tools=mode)  # type: ignore[arg-type]

    plain_server = OpenAIServer(BRAIN)
    await plain_server.start()
    try:
        async with wire(plain_server, Plain(), options) as (session, _runtime, _rec):
            for n in range(3):
                await session.run(user_input=f"weather please {n}")
        plain_saw_control = any(CONTROL & set(r.tool_names) for r in plain_server.requests)
    finally:
        await plain_server.aclose()

    agent = Travel()
    async with wire(openai_server, agent, options) as (session, runtime, _rec):
        await session.run(user_input="hello")
        for n in range(calls):
            agent.flights = asyncio.Event()
            await session.run(user_input="flight")
            await session.run(user_input=f"small talk {n}")
            agent.flights.set()
            await runtime.settle(timeout=10)
            await session.run(user_input=f"more small talk {n}")
    reqs = openai_server.requests
    changes = openai_server.tool_list_changes()
    with_control = sum(1 for r in reqs if set(r.tool_names) >= CONTROL)
    with capsys.disabled():
        print(
            f"\ncontrol_tools={mode}: {changes} tool-list changes in {len(reqs)} requests for "
            f"{calls} background calls = {changes / calls:.2f} per call; control tools in "
            f"{with_control}/{len(reqs)} requests; shown to an agent without async tools: "
            f"{plain_saw_control}"
        )
    if mode == "never":
        assert changes == 0
        assert with_control == 0
    if mode == "always":
        assert changes == 0
    if mode == "auto":  # the default: stable, and hidden from agents without async tools
        assert changes == 0
        assert with_control == len(reqs)
        assert not plain_saw_control
