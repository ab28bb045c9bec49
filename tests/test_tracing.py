"""Tracing: a span per background call and per deferred reply, and the timing fields of
`ReplyUpdated` (real text-mode sessions, virtual time, an in-memory span exporter)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from livekit.agents import Agent, AgentSession, telemetry
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from livekit_async_tools import (
    AsyncRunContext,
    ReplyUpdated,
    function_tool,
    tracing,
)
from livekit_async_tools.testing import ScriptedLLM, ToolCall

from .conftest import FAST, keyword_brain, spoken, start

pytestmark = pytest.mark.looptime


class Travel(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are a travel agent.")
        self.release = asyncio.Event()

    @function_tool
    async def search_flights(self, ctx: AsyncRunContext, city: str, password: str) -> str:
        """Search flights to a city with the caller's account."""
        await ctx.update("searching")
        await asyncio.sleep(10)
        return f"3 flights to {city}"

    @function_tool(cancellable=True)
    async def search_hotels(self, ctx: AsyncRunContext, city: str) -> str:
        """Search hotels in a city."""
        await ctx.update("searching")
        await self.release.wait()
        return f"2 hotels in {city}"

    @function_tool(timeout=5)
    async def hung_search(self, ctx: AsyncRunContext) -> str:
        """A search that never returns."""
        await ctx.update("searching")
        await asyncio.Event().wait()
        return "never"

    @function_tool
    async def quick_lookup(self, ctx: AsyncRunContext, city: str) -> str:
        """A lookup that returns within the acknowledgement window."""
        return f"{city} is sunny"


RULES: dict[str, Any] = {
    "flight": ToolCall("search_flights", {"city": "Rome", "password": "hunter2"}),
    "hotel": ToolCall("search_hotels", {"city": "Rome"}),
    "hung": ToolCall("hung_search"),
    "weather": ToolCall("quick_lookup", {"city": "Rome"}),
}


def brain(delay: float = 0.0) -> ScriptedLLM:
    return ScriptedLLM(keyword_brain(RULES), delay=delay)


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The package's spans, on a provider of this test only (`tracing.set_tracer_provider`)."""
    provider, exporter = _provider()
    tracing.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        tracing.set_tracer_provider(None)
        provider.shutdown()


@pytest.fixture
def livekit_spans() -> Iterator[InMemorySpanExporter]:
    """livekit's spans and the package's, through livekit's own tracer (the default)."""
    provider, exporter = _provider()
    telemetry.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        telemetry.set_tracer_provider(trace.get_tracer_provider())  # back to the global one
        provider.shutdown()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def record_times(session: AgentSession, runtime: Any) -> list[tuple[ReplyUpdated, float]]:
    """Each `ReplyUpdated` with the loop time it was emitted at."""
    loop = asyncio.get_running_loop()
    seen: list[tuple[ReplyUpdated, float]] = []
    runtime.on("reply_updated", lambda ev: seen.append((ev, loop.time())))
    return seen


def cut_first_reply(session: AgentSession, runtime: Any) -> None:
    def on_reply(ev: ReplyUpdated) -> None:
        if ev.status == "scheduled" and not cut:
            cut.append(ev)
            session.interrupt()

    cut: list[ReplyUpdated] = []
    runtime.on("reply_updated", on_reply)


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_a_call_that_succeeds_and_its_reply(spans: InMemorySpanExporter) -> None:
    session, runtime, rec = await start(Travel(), brain())
    times = record_times(session, runtime)
    async with session:
        await session.run(user_input="flight please")
        await asyncio.sleep(11)
        await runtime.settle(timeout=10)
        assert spoken(session)[-1] == "Result: 3 flights to Rome"
    [call] = named(spans, tracing.CALL_SPAN)
    a = attrs(call)
    assert a[tracing.TOOL_NAME] == "search_flights"
    assert a[tracing.CALL_ID] == "call_1"
    assert a[tracing.STATUS] == "succeeded"
    assert a[tracing.DURATION] == pytest.approx(10, abs=0.1)
    assert a[tracing.RESULT_STATUS] == "scheduled"
    # the result waited for the floor for the settle delay, no more
    assert FAST.settle_delay <= a[tracing.RESULT_WAIT] < FAST.settle_delay + 0.1
    assert call.status.status_code is trace.StatusCode.UNSET

    [reply] = named(spans, tracing.REPLY_SPAN)
    r = attrs(reply)
    [(scheduled, _), (delivered, delivered_at)] = times
    assert (scheduled.status, delivered.status) == ("scheduled", "delivered")
    assert r[tracing.REPLY_CALL_IDS] == ("call_1",)
    assert r[tracing.SPEECH_ID] == delivered.speech_id
    assert r[tracing.REPLY_STATUS] == "delivered"
    assert r[tracing.REPLY_WAIT] == pytest.approx(a[tracing.RESULT_WAIT])
    assert r[tracing.REPLY_DURATION] >= 0
    assert parent_id(reply) == call.context.span_id
    assert [link.context.span_id for link in reply.links] == [call.context.span_id]

    # the timing fields: ready (the call's end) ≤ scheduled ≤ delivered, on the loop clock
    assert scheduled.ready_at is not None and scheduled.scheduled_at is not None
    assert delivered.ready_at == scheduled.ready_at
    assert delivered.scheduled_at == scheduled.scheduled_at
    assert scheduled.ready_at <= scheduled.scheduled_at <= delivered_at
    assert scheduled.scheduled_at - scheduled.ready_at == pytest.approx(a[tracing.RESULT_WAIT])
    # timing is not part of an event's identity
    assert delivered == ReplyUpdated(("call_1",), "delivered", speech_id=delivered.speech_id)
    assert rec.names("call_1")[-2:] == ["reply_scheduled", "reply_delivered"]


async def test_sensitive_arguments_are_not_recorded(spans: InMemorySpanExporter) -> None:
    session, runtime, _ = await start(Travel(), brain())
    async with session:
        await session.run(user_input="flight please")
        await asyncio.sleep(11)
        await runtime.settle(timeout=10)
    [call] = named(spans, tracing.CALL_SPAN)
    recorded = json.loads(attrs(call)[tracing.ARGUMENTS])
    assert recorded == {"city": "Rome", "password": "<redacted>"}
    everything = json.dumps([attrs(s) for s in spans.get_finished_spans()], default=str)
    assert "hunter2" not in everything


async def test_livekits_content_switch_leaves_arguments_out(
    spans: InMemorySpanExporter,
) -> None:
    gen_ai = getattr(telemetry, "gen_ai", None)
    if gen_ai is None:
        pytest.skip("livekit-agents < 1.8 has no switch: it records tool arguments always")
    was = gen_ai.capture_content_enabled()
    gen_ai.set_capture_content(False)
    try:
        session, runtime, _ = await start(Travel(), brain())
        async with session:
            await session.run(user_input="flight please")
            await asyncio.sleep(11)
            await runtime.settle(timeout=10)
    finally:
        gen_ai.set_capture_content(was)
    [call] = named(spans, tracing.CALL_SPAN)
    assert tracing.ARGUMENTS not in attrs(call)
    assert attrs(call)[tracing.STATUS] == "succeeded"


async def test_a_cancelled_call(spans: InMemorySpanExporter) -> None:
    agent = Travel()
    session, runtime, _ = await start(agent, brain())
    async with session:
        await session.run(user_input="hotel please")
        await asyncio.sleep(3)
        assert await runtime.cancel("call_1")
        await runtime.settle(timeout=10)
    [call] = named(spans, tracing.CALL_SPAN)
    a = attrs(call)
    assert a[tracing.STATUS] == "cancelled"
    assert a[tracing.DURATION] == pytest.approx(3, abs=0.1)
    assert tracing.RESULT_STATUS not in a  # a cancellation is recorded, not spoken
    assert call.status.status_code is trace.StatusCode.UNSET
    assert named(spans, tracing.REPLY_SPAN) == []


async def test_a_timed_out_call(spans: InMemorySpanExporter) -> None:
    session, runtime, _ = await start(Travel(), brain())
    async with session:
        await session.run(user_input="hung search")
        await asyncio.sleep(6)
        await runtime.settle(timeout=10)
    [call] = named(spans, tracing.CALL_SPAN)
    a = attrs(call)
    assert a[tracing.STATUS] == "timed_out"
    assert a[tracing.DURATION] == pytest.approx(5, abs=0.1)
    assert call.status.status_code is trace.StatusCode.ERROR
    assert a[tracing.RESULT_STATUS] == "scheduled"  # the LLM tells the caller
    [reply] = named(spans, tracing.REPLY_SPAN)
    assert attrs(reply)[tracing.REPLY_STATUS] == "delivered"


async def test_an_inline_call_has_no_result_wait(spans: InMemorySpanExporter) -> None:
    session, runtime, _ = await start(Travel(), brain())
    async with session:
        await session.run(user_input="weather in Rome")
        await runtime.settle(timeout=10)
    [call] = named(spans, tracing.CALL_SPAN)
    a = attrs(call)
    assert a[tracing.STATUS] == "succeeded"
    assert tracing.RESULT_STATUS not in a and tracing.RESULT_WAIT not in a
    assert named(spans, tracing.REPLY_SPAN) == []


async def test_an_interrupted_result_is_redelivered_in_a_second_reply_span(
    spans: InMemorySpanExporter,
) -> None:
    session, runtime, _ = await start(Travel(), brain(delay=0.05))
    times = record_times(session, runtime)
    async with session:
        await session.run(user_input="flight please")
        cut_first_reply(session, runtime)
        await asyncio.sleep(11)
        await runtime.settle(timeout=10)
        assert spoken(session)[-1] == "Result: 3 flights to Rome"
    [call] = named(spans, tracing.CALL_SPAN)
    first, second = named(spans, tracing.REPLY_SPAN)
    assert [attrs(s)[tracing.REPLY_STATUS] for s in (first, second)] == [
        "interrupted",
        "delivered",
    ]
    assert attrs(first)[tracing.SPEECH_ID] != attrs(second)[tracing.SPEECH_ID]
    assert parent_id(first) == parent_id(second) == call.context.span_id
    # the call's wait for the floor ends at its first reply
    assert attrs(call)[tracing.RESULT_WAIT] == pytest.approx(attrs(first)[tracing.REPLY_WAIT])
    assert attrs(second)[tracing.REPLY_WAIT] > attrs(first)[tracing.REPLY_WAIT]

    statuses = [(ev.status, ev) for ev, _ in times]
    assert [s for s, _ in statuses] == ["scheduled", "interrupted", "scheduled", "delivered"]
    events = [ev for _, ev in statuses]
    # a re-delivered item keeps the time it became ready; each reply has its own schedule
    assert len({ev.ready_at for ev in events}) == 1
    assert events[0].scheduled_at == events[1].scheduled_at
    assert events[2].scheduled_at == events[3].scheduled_at
    assert events[0].scheduled_at is not None and events[2].scheduled_at is not None
    assert events[0].scheduled_at < events[2].scheduled_at <= times[-1][1]


async def test_spans_nest_under_livekits_function_tool_span(
    livekit_spans: InMemorySpanExporter,
) -> None:
    session, runtime, _ = await start(Travel(), brain())
    async with session:
        await session.run(user_input="flight please")
        await asyncio.sleep(11)
        await runtime.settle(timeout=10)
    [call] = named(livekit_spans, tracing.CALL_SPAN)
    [reply] = named(livekit_spans, tracing.REPLY_SPAN)
    tools = {s.context.span_id: s for s in named(livekit_spans, "function_tool")}
    parent = tools[parent_id(call)]  # type: ignore[index]
    assert attrs(parent)["lk.function_tool.id"] == "call_1"
    assert call.context.trace_id == parent.context.trace_id == reply.context.trace_id
    assert parent_id(reply) == call.context.span_id
    # livekit's dispatch span ended at the acknowledgement; the call's span at its end
    assert parent.end_time is not None and call.end_time is not None
    assert parent.end_time < call.end_time


async def test_a_follow_up_reply_has_a_trace_of_its_own(spans: InMemorySpanExporter) -> None:
    session, runtime, _ = await start(Travel(), brain())
    async with session:
        await session.run(user_input="hello")
        runtime.follow_up("Ask whether the caller wants a hotel too.")
        await runtime.settle(timeout=10)
    [reply] = named(spans, tracing.REPLY_SPAN)
    assert attrs(reply)[tracing.REPLY_CALL_IDS] == ("follow_up_1",)
    assert reply.parent is None and reply.links == ()


class _Broken(TracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        raise RuntimeError("broken tracer")


async def test_a_broken_tracer_never_reaches_the_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(RuntimeError):
        tracing.set_tracer_provider(_Broken())
    tracing.set_tracer_provider(None)

    class Raising(trace.NoOpTracer):
        def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
            raise RuntimeError("span refused")

    class RaisingProvider(trace.NoOpTracerProvider):
        def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
            return Raising()

    tracing.set_tracer_provider(RaisingProvider())
    try:
        session, runtime, rec = await start(Travel(), brain())
        async with session:
            await session.run(user_input="flight please")
            await asyncio.sleep(11)
            await runtime.settle(timeout=10)
            assert spoken(session)[-1] == "Result: 3 flights to Rome"
    finally:
        tracing.set_tracer_provider(None)
    assert rec.names("call_1")[-2:] == ["reply_scheduled", "reply_delivered"]
    assert not [r for r in caplog.records if r.getMessage() == "event callback raised"]


async def test_nothing_is_kept_without_a_tracer_provider() -> None:
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        pytest.skip("a global tracer provider was set in this process")
    session, runtime, _ = await start(Travel(), brain())
    observer = runtime._core._spans
    async with session:
        await session.run(user_input="flight please")
        assert observer._calls == {}
        await asyncio.sleep(11)
        await runtime.settle(timeout=10)
        assert observer._calls == {} and observer._replies == {}


async def test_items_dropped_before_any_reply_have_no_schedule(
    spans: InMemorySpanExporter,
) -> None:
    agent = Travel()
    session, runtime, rec = await start(agent, brain())
    async with session:
        await session.run(user_input="hotel please")
        agent.release.set()
        for _ in range(5):  # the result is queued; the gate's settle delay has not passed
            await asyncio.sleep(0)
        await runtime.aclose()
    [dropped] = [ev for ev in rec.of("reply_updated") if ev.status == "dropped"]
    assert (dropped.call_ids, dropped.reason) == (("call_1",), "session_closed")
    assert dropped.ready_at is not None and dropped.scheduled_at is None
    [call] = named(spans, tracing.CALL_SPAN)
    a = attrs(call)
    assert (a[tracing.RESULT_STATUS], a[tracing.RESULT_REASON]) == ("dropped", "session_closed")
    assert tracing.RESULT_WAIT not in a
    assert named(spans, tracing.REPLY_SPAN) == []


class _Handle:
    def __init__(self, speech_id: str) -> None:
        self.id = speech_id
        self.callbacks: list[Any] = []

    def add_done_callback(self, callback: Any) -> None:
        self.callbacks.append(callback)


class _Session:
    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def on(self, name: str, callback: Any) -> None:
        self.handlers[name] = callback

    def off(self, name: str, callback: Any) -> None:
        self.handlers.pop(name, None)


async def test_a_reply_that_failed_and_went_back_to_wait(spans: InMemorySpanExporter) -> None:
    """No status is reported for a failed reply whose items wait again (livekit 1.8
    `SpeechHandle.exception()`): its span ends when its speech handle is done."""
    from livekit_async_tools._core import EVENTS

    listeners: dict[str, list[Any]] = {name: [] for name in EVENTS}
    session = _Session()
    tracing.SpanObserver(listeners, session, [])  # type: ignore[arg-type]
    handle = _Handle("speech_1")
    session.handlers["speech_created"](type("Ev", (), {"speech_handle": handle})())
    scheduled = ReplyUpdated(("follow_up_1",), "scheduled", speech_id="speech_1")
    for listener in listeners["reply_updated"]:
        listener(scheduled)
    for callback in handle.callbacks:
        callback(handle)
    await asyncio.sleep(0)
    [reply] = named(spans, tracing.REPLY_SPAN)
    assert attrs(reply)[tracing.REPLY_STATUS] == "failed"
    assert reply.status.status_code is trace.StatusCode.ERROR
    session.handlers["close"](None)
    assert session.handlers == {}
