"""The same tool body run three ways, and an open session of each to measure.

- ``plain``: a livekit ``function_tool`` that answers at once with what the
  async variants acknowledge with (the body without its slow part);
- ``native``: livekit's own async tool (livekit-agents >= 1.6): a
  ``RunContext`` tool that calls ``ctx.update()`` and goes on in the background;
- ``package``: this package's ``function_tool`` with an ``AsyncRunContext``.

The slow part of the body waits on a `Hold` the benchmark releases, one call or
all calls at once. Only public APIs are used: livekit's ``AgentSession``,
``Agent``, ``function_tool``, ``RunContext``, and this package's
``function_tool``, ``AsyncRunContext``, ``attach``, ``AsyncToolOptions``,
``runtime.settle()``.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bench_llm import BenchLLM, Mark, Reply, now
from livekit.agents import Agent, AgentSession, RunContext, llm
from livekit.agents import function_tool as lk_function_tool

from livekit_async_tools import AsyncRunContext, AsyncToolOptions, attach, function_tool
from livekit_async_tools.testing import ToolCall

VariantName = Literal["plain", "native", "package"]

NATIVE_ASYNC = hasattr(RunContext, "update")
"""livekit-agents has native async tools (``RunContext.update``, 1.6 and later)."""

SETTLE = 0.05
"""The package's ``settle_delay`` in every section; subtracted where noted."""

OPTIONS = AsyncToolOptions(settle_delay=SETTLE, max_tasks_per_session=100_000)
"""The package's options: a short settle window, no cap on live calls."""

RESULT = "RESULT-"
"""Every async result starts with this, so a request can count the results it carries."""

WAIT = 300.0
"""Upper bound of any single wait, so a broken engine fails instead of hanging."""


class Hold:
    """The slow part of the tool body: each call waits here until the benchmark
    sends it a step (``"update"``: report progress and wait again, ``"return"``)."""

    def __init__(self) -> None:
        self.auto: str | None = None
        """When set, every wait returns this at once (a body with no slow part)."""
        self._waiting: dict[int, list[asyncio.Future[str]]] = {}
        self.live = 0
        """Calls waiting here now."""

    async def wait(self, n: int) -> str:
        if self.auto is not None:
            return self.auto
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(n, []).append(fut)
        self.live += 1
        try:
            return await fut
        finally:
            self.live -= 1

    def send(self, n: int, step: str) -> None:
        """Wake the (oldest) call with argument ``n``."""
        waiting = self._waiting[n]
        fut = waiting.pop(0)
        if not waiting:
            del self._waiting[n]
        fut.set_result(step)

    def send_all(self, step: str) -> int:
        """Wake every waiting call; returns how many."""
        waiting, self._waiting = self._waiting, {}
        futures = [fut for group in waiting.values() for fut in group]
        for fut in futures:
            fut.set_result(step)
        return len(futures)

    def cancel_all(self) -> None:
        """End every held call with a cancellation (livekit's drain at close
        waits for non-cancellable tools, so a held call would hold the close)."""
        waiting, self._waiting = self._waiting, {}
        for group in waiting.values():
            for fut in group:
                fut.cancel()


class BenchAgent(Agent):  # type: ignore[misc]
    """Holds the tools; ``marks`` records moments inside the body."""

    def __init__(self, chat_ctx: llm.ChatContext | None = None) -> None:
        if chat_ctx is None:
            super().__init__(instructions="You are a benchmark.")
        else:
            super().__init__(instructions="You are a benchmark.", chat_ctx=chat_ctx)
        self.hold = Hold()
        self.marks: list[tuple[str, Mark]] = []

    def mark(self, what: str) -> None:
        self.marks.append((what, now()))

    def last_mark(self, what: str) -> Mark:
        for name, mark in reversed(self.marks):
            if name == what:
                return mark
        raise LookupError(what)

    @lk_function_tool
    async def ping(self) -> str:
        """An ordinary quick tool."""
        return "pong"


async def slow_lookup(agent: BenchAgent, update: Callable[[str], Awaitable[None]], n: int) -> str:
    """The body of the async variants: acknowledge, then the slow part."""
    await update("working")
    while await agent.hold.wait(n) == "update":
        agent.mark("update")
        await update(f"progress on {n}")
        agent.mark("updated")
    agent.mark("return")
    return f"{RESULT}{n}"


class PlainAgent(BenchAgent):
    @lk_function_tool
    async def lookup(self, n: int) -> str:
        """Look up n."""
        self.mark("return")
        return "working"


class NativeAgent(BenchAgent):
    @lk_function_tool
    async def lookup(self, ctx: RunContext, n: int) -> str:
        """Look up n."""
        return await slow_lookup(self, ctx.update, n)


class PackageAgent(BenchAgent):
    @function_tool
    async def lookup(self, ctx: AsyncRunContext, n: int) -> str:
        """Look up n."""
        return await slow_lookup(self, ctx.update, n)


@dataclass
class Bench:
    """One open session of one variant, instrumented."""

    variant: VariantName
    session: AgentSession[Any]
    agent: BenchAgent
    llm: BenchLLM
    runtime: Any = None
    replies: list[tuple[Mark, Any]] = field(default_factory=list)
    """Every deferred ``generate_reply`` call (when, and the speech handle)."""
    listening: list[float] = field(default_factory=list)
    """When the agent went back to listening."""
    events: int = 0
    """Session events emitted so far."""
    handler_cpu: float = 0.0
    """Loop CPU spent so far in the session-event handlers ``attach`` registered."""
    _reply_seen: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def is_async(self) -> bool:
        return self.variant != "plain"

    @property
    def settle(self) -> float:
        """The settle window this variant waits before a deferred reply."""
        return SETTLE if self.variant == "package" else 0.0

    async def turn(self, *replies: Reply, collect: bool = True) -> dict[str, float]:
        """One user turn answered by ``replies``: its wall and loop-CPU time, the
        session events it emitted and, when it starts with a tool call, call → ack
        (from the end of the response that carried the call to the request that
        carries its output). A collection first (``collect``) keeps the previous
        work's garbage out of the measured turn."""
        streamed = len(self.llm.streamed)
        self.llm.queue(*replies)
        if collect:
            gc.collect()
        events, handler_cpu = self.events, self.handler_cpu
        t0 = now()
        await asyncio.wait_for(self.session.run(user_input="go"), WAIT)
        t1 = now()
        out = {
            "wall": t1[0] - t0[0],
            "cpu": t1[1] - t0[1],
            "events": self.events - events,
            "handler_cpu": self.handler_cpu - handler_cpu,
        }
        if replies and not isinstance(replies[0], str):
            sent = self.llm.streamed[streamed]
            ack = self.llm.request_after(sent[0])
            assert ack is not None, "no request after the tool call"
            out["ack_wall"] = ack[0] - sent[0]
            out["ack_cpu"] = ack[1] - sent[1]
        return out

    async def next_reply(self, count: int) -> tuple[Mark, Any]:
        """Wait for the ``count``-th deferred reply and for it to finish."""
        while len(self.replies) < count:
            self._reply_seen.clear()
            await asyncio.wait_for(self._reply_seen.wait(), WAIT)
        mark, handle = self.replies[count - 1]
        await asyncio.wait_for(handle.wait_for_playout(), WAIT)
        return mark, handle

    async def aclose(self) -> None:
        self.agent.hold.cancel_all()
        await asyncio.wait_for(self.session.aclose(), WAIT)


async def open_bench(
    variant: VariantName, *, chat_ctx: llm.ChatContext | None = None, warm: bool = True
) -> Bench:
    """Start a text-mode session of ``variant`` with the fake LLM and instrument it;
    ``warm`` runs one text turn first (a session's first turn pays one-time costs)."""
    agent_cls: type[BenchAgent] = {
        "plain": PlainAgent,
        "native": NativeAgent,
        "package": PackageAgent,
    }[variant]
    fake = BenchLLM()
    # user_away_timeout: its one-shot timer would run in the measured windows
    session: AgentSession[Any] = AgentSession(llm=fake, user_away_timeout=None)
    agent = agent_cls(chat_ctx)
    bench = Bench(variant=variant, session=session, agent=agent, llm=fake)
    if variant == "package":
        bench.runtime = _attach_timed(bench)

    emit = session.emit

    def counting_emit(event: str, *args: Any) -> None:
        bench.events += 1
        emit(event, *args)

    session.emit = counting_emit

    def on_state(ev: Any) -> None:
        if ev.new_state == "listening":
            bench.listening.append(now()[0])

    session.on("agent_state_changed", on_state)
    await session.start(agent)

    generate_reply = session.generate_reply

    def spy(**kwargs: Any) -> Any:
        mark = now()
        handle = generate_reply(**kwargs)
        if "user_input" not in kwargs:  # session.run's own call carries the user input
            bench.replies.append((mark, handle))
            bench._reply_seen.set()
        return handle

    session.generate_reply = spy
    if warm:
        await bench.turn("Hello.")
    return bench


def _attach_timed(bench: Bench) -> Any:
    """``attach`` with every session-event handler it registers (through the
    public ``session.on``) wrapped to add its loop CPU to ``bench.handler_cpu``."""
    session = bench.session
    real_on, real_off = session.on, session.off
    timed: dict[Callable[..., Any], Callable[..., Any]] = {}

    def wrap(handler: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            t = time.thread_time()
            try:
                return handler(*args)
            finally:
                bench.handler_cpu += time.thread_time() - t

        return timed.setdefault(handler, run)

    def on(event: str, callback: Callable[..., Any] | None = None) -> Any:
        if callback is None:
            return lambda cb: on(event, cb)
        real_on(event, wrap(callback))
        return callback

    def off(event: str, callback: Callable[..., Any]) -> None:
        real_off(event, timed.get(callback, callback))

    session.on, session.off = on, off
    try:
        return attach(session, OPTIONS)
    finally:
        del session.on  # what subscribes later (the benchmark itself) is not timed


def refreeze() -> None:
    """Collect everything, then freeze what survives: later full collections (one
    before each measured turn) walk only what was made since. Call it when
    long-lived things were created, and after closing sessions."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def variants() -> tuple[VariantName, ...]:
    """The variants this livekit-agents version can run."""
    return ("plain", "native", "package") if NATIVE_ASYNC else ("plain", "package")


def rotated(names: Sequence[VariantName], i: int) -> list[VariantName]:
    """``names`` in the order of round ``i``: each variant takes every position in turn."""
    k = i % len(names)
    order = list(names[k:]) + list(names[:k])
    return order if (i // len(names)) % 2 == 0 else order[::-1]


def calls(start: int, count: int) -> list[ToolCall]:
    """``count`` calls of ``lookup`` with distinct arguments, in one response."""
    return [ToolCall("lookup", {"n": n}) for n in range(start, start + count)]
