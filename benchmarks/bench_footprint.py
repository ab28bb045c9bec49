"""(d) memory per pending call; (e) idle CPU of many sessions with pending calls."""

from __future__ import annotations

import asyncio
import cProfile
import gc
import pstats
import time
import tracemalloc

from bench_stats import Metric
from bench_variants import Bench, calls, open_bench, rotated, variants


async def memory(reps: int, per_session: int) -> list[Metric]:
    """(d) Memory still allocated after a turn that started ``per_session`` calls,
    per call (tracemalloc, after a full collection). Plain calls are answered, so
    their bytes are the chat items every variant keeps; the async calls are pending."""
    per_call = Metric(
        "d.bytes_per_call",
        f"(d) memory per pending call ({per_session} in one session)",
        "kB",
        1e-3,
        note="plain: the answered call's items (context and history), the floor for all",
    )
    for rep in range(reps):
        row: dict[str, float | None] = {}
        for name in rotated(variants(), rep):
            bench = await open_bench(name)
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            await bench.turn(calls(0, per_session), "ok")
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            row[name] = (after - before) / per_session
            await bench.aclose()
        per_call.record(row)
    return [per_call]


async def idle_cpu(
    rounds: int, sessions: int, per_session: int, window: float, tail: float
) -> list[Metric]:
    """(e) ``sessions`` sessions, each with ``per_session`` pending calls (plain:
    answered calls, the same context), then nothing happens: process CPU in a
    window of ``window`` seconds, after ``tail`` seconds for the turns' own tail.
    Python function calls in a one-second window (cProfile) show any polling."""
    cpu = Metric(
        "e.idle_cpu",
        f"(e) idle CPU, {sessions} sessions x {per_session} pending, per {window:g} s",
        "ms",
        1e3,
    )
    py_calls = Metric(
        "e.python_calls",
        "(e) Python calls on the loop in 1 s, same sessions",
        "calls",
        1,
        baseline=None,
    )
    for i in range(rounds):
        cpu_row: dict[str, float | None] = {}
        calls_row: dict[str, float | None] = {}
        for name in rotated(variants(), i):
            opened: list[Bench] = []
            for _ in range(sessions):
                bench = await open_bench(name, warm=False)
                await bench.turn(calls(0, per_session), "ok", collect=False)
                opened.append(bench)
            await asyncio.sleep(tail)
            gc.collect()
            c0 = time.process_time()
            await asyncio.sleep(window)
            cpu_row[name] = time.process_time() - c0

            profiler = cProfile.Profile()
            profiler.enable()
            await asyncio.sleep(1.0)
            profiler.disable()
            stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
            calls_row[name] = sum(row[1] for row in stats.values())
            for bench in opened:
                await bench.aclose()
        cpu.record(cpu_row)
        py_calls.record(calls_row)
    return [cpu, py_calls]
