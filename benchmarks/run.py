"""Benchmarks for the core, measured side by side in one run (``make bench``).

(a) per-call overhead: a turn whose tool is async (acknowledged by its first
    update) vs the same body as a plain livekit tool, in a real session;
(b) gate latency: from the session becoming quiet (+ settle_delay) to the
    deferred ``generate_reply`` call;
(c) CPU time of 100 sessions x 10 pending tasks over 10 s of wall time, next to
    the same 100 sessions with no task (no polling means both are near zero);
(d) memory per pending task (tracemalloc), next to a bare asyncio task.

Numbers vary with the machine; ratios in one run are what to compare. (c) also
counts the Python function calls on the event-loop thread in a 2 s window with
every task pending: polling would show up there.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import json
import pstats
import statistics
import sys
import time
import tracemalloc
from typing import Any

from livekit.agents import Agent, AgentSession
from livekit.agents import function_tool as lk_function_tool

from livekit_async_tools import AsyncRunContext, AsyncToolOptions, attach, function_tool
from livekit_async_tools.testing import ScriptedLLM, ToolCall

SETTLE = 0.05


class Bench(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="bench")
        self.forever = asyncio.Event()

    @function_tool
    async def async_tool(self, ctx: AsyncRunContext, n: int) -> str:
        """Async tool: acknowledged by its first update."""
        await ctx.update("working")
        return f"done {n}"

    @lk_function_tool
    async def plain_tool(self, n: int) -> str:
        """The same body as a plain livekit tool."""
        return f"done {n}"

    @function_tool
    async def pending_tool(self, ctx: AsyncRunContext, n: int) -> str:
        """Never finishes while measured."""
        await ctx.update("working")
        await self.forever.wait()
        return "late"


def script(tool: str, n: int) -> list[Any]:
    return [ToolCall(tool, {"n": n}), "ok", "result"]


async def overhead(rounds: int = 40) -> dict[str, float]:
    times: dict[str, list[float]] = {"async_tool": [], "plain_tool": []}
    for i in range(rounds):
        for tool in ("plain_tool", "async_tool") if i % 2 else ("async_tool", "plain_tool"):
            llm = ScriptedLLM(script(tool, i))
            session: AgentSession[Any] = AgentSession(llm=llm)
            runtime = attach(session, AsyncToolOptions(settle_delay=SETTLE))
            async with session:
                await session.start(Bench())
                t = time.perf_counter()
                await session.run(user_input="go")
                times[tool].append(time.perf_counter() - t)
                await runtime.settle(timeout=10)
    a = statistics.median(times["async_tool"]) * 1000
    p = statistics.median(times["plain_tool"]) * 1000
    return {"async_turn_ms": a, "plain_turn_ms": p, "ratio": a / p, "overhead_ms": a - p}


async def gate_latency(rounds: int = 30) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    lat: list[float] = []
    for i in range(rounds):
        llm = ScriptedLLM(script("async_tool", i))
        session: AgentSession[Any] = AgentSession(llm=llm)
        runtime = attach(session, AsyncToolOptions(settle_delay=SETTLE))
        quiet_at: list[float] = []
        called_at: list[float] = []
        session.on(
            "agent_state_changed",
            lambda ev, q=quiet_at: q.append(loop.time()) if ev.new_state == "listening" else None,
        )
        async with session:
            await session.start(Bench())
            original = session.generate_reply

            def spy(*, _orig: Any = original, _c: list[float] = called_at, **kw: Any) -> Any:
                _c.append(loop.time())
                return _orig(**kw)

            session.generate_reply = spy  # type: ignore[method-assign]
            await session.run(user_input="go")
            await runtime.settle(timeout=10)
        # the last generate_reply is the deferred one (session.run makes the first)
        if len(called_at) >= 2:
            last_quiet = max(q for q in quiet_at if q <= called_at[-1])
            lat.append((called_at[-1] - last_quiet - SETTLE) * 1000)
    return {
        "median_ms_after_settle": statistics.median(lat),
        "p95_ms_after_settle": sorted(lat)[int(len(lat) * 0.95) - 1],
        "samples": len(lat),
    }


async def idle_cpu(
    sessions: int = 100, per_session: int = 10, seconds: float = 10.0
) -> dict[str, float]:
    opened: list[tuple[AgentSession[Any], Any]] = []
    agents: list[Bench] = []
    for _ in range(sessions):
        calls = [ToolCall("pending_tool", {"n": n}) for n in range(per_session)]
        session: AgentSession[Any] = AgentSession(llm=ScriptedLLM([calls, "ok"]))
        runtime = attach(session, AsyncToolOptions(settle_delay=SETTLE))
        agent = Bench()
        await session.start(agent)
        opened.append((session, runtime))
        agents.append(agent)

    gc.collect()
    c0 = time.process_time()
    await asyncio.sleep(seconds)
    baseline = time.process_time() - c0

    tracemalloc.start()
    gc.collect()
    m0 = tracemalloc.get_traced_memory()[0]
    for session, _ in opened:
        await session.run(user_input="go")
    gc.collect()
    m1 = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    live = sum(len(rt.tasks) for _, rt in opened)
    assert live == sessions * per_session, live
    await asyncio.sleep(3.0)  # let the turns themselves (replies, metrics) finish first

    gc.collect()
    c0 = time.process_time()
    await asyncio.sleep(seconds)
    with_tasks = time.process_time() - c0

    # the direct evidence: Python function calls on the loop thread in a 2 s window
    profiler = cProfile.Profile()
    profiler.enable()
    await asyncio.sleep(2.0)
    profiler.disable()
    calls_in_window = sum(row[1] for row in pstats.Stats(profiler).stats.values())  # type: ignore[attr-defined]

    for agent in agents:
        agent.forever.set()
    for session, runtime in opened:
        await runtime.settle(timeout=60)
        await session.aclose()
    return {
        "cpu_s_idle_sessions": baseline,
        "cpu_s_with_pending_tasks": with_tasks,
        "extra_cpu_s": with_tasks - baseline,
        "pending_tasks": live,
        "python_calls_in_2s_window": calls_in_window,
        "bytes_per_pending_call_incl_turn": (m1 - m0) / live,
    }


async def bare_task_bytes(n: int = 1000) -> float:
    ev = asyncio.Event()
    tracemalloc.start()
    gc.collect()
    m0 = tracemalloc.get_traced_memory()[0]
    tasks = [asyncio.create_task(ev.wait()) for _ in range(n)]
    await asyncio.sleep(0)
    m1 = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    ev.set()
    await asyncio.gather(*tasks)
    return (m1 - m0) / n


async def main() -> None:
    quick = "--quick" in sys.argv
    results = {
        "a_overhead": await overhead(10 if quick else 40),
        "b_gate_latency": await gate_latency(10 if quick else 30),
        "c_d_idle_cpu_and_memory": await idle_cpu(20 if quick else 100, 10, 2.0 if quick else 10.0),
        "d_bare_asyncio_task_bytes": await bare_task_bytes(),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main())
