"""(c) Cost per call and per session event with N live calls in one session.

For each N, one session per variant gets N calls in one LLM response (a
burst). The async calls stay live (held); the plain calls answer at once, so
the plain session ends up with a context of the same length and no live call:
it is the baseline for "what the session costs anyway at this context length".
Then, in interleaved rounds, each session runs

- a dispatch turn: one more ``lookup`` call with N live; its turn CPU and its
  call → ack. The async call is then released and its deferred reply awaited
  (not measured), so every dispatch sees exactly N live calls;
- an ordinary turn: a quick plain tool (``ping``) with N live. Its extra loop
  CPU over the plain session, divided by the session events the turn emitted,
  is the cost per session event of having N live calls (the gate's work, and
  anything else done per event or per turn);

and finally all N async calls return at once: the time until the LLM is asked
for a reply whose context holds all N results (baseline: the plain burst, N
calls answered in one turn and sent back to the LLM; the package's wall time
includes its settle window).

The package's session-event handlers (registered by ``attach`` through
``session.on``) are also timed directly: their loop CPU per session event is
the gate's own cost, free of the turn-to-turn noise of the derived figure.
"""

from __future__ import annotations

import asyncio
import gc

from bench_stats import Metric
from bench_variants import RESULT, WAIT, Bench, calls, now, open_bench, refreeze, rotated, variants
from livekit.agents import llm

from livekit_async_tools.testing import ToolCall

FAMILIES = {
    "burst": ("(c) N calls in one response -> acks, loop CPU per call", "us", 1e6, "plain"),
    "dispatch_cpu": ("(c) dispatch turn with N live, loop CPU", "ms", 1e3, "plain"),
    "dispatch_ack": ("(c) call -> ack with N live, loop CPU", "ms", 1e3, "plain"),
    "turn_cpu": ("(c) ordinary turn with N live, loop CPU", "ms", 1e3, "plain"),
    "event_extra": ("(c) extra loop CPU per session event vs plain", "us", 1e6, None),
    "handler": ("(c) loop CPU in the package's event handlers per event", "us", 1e6, None),
    "release_replies": ("(c) N results at once: deferred replies it took", "", 1, None),
    "release_cpu": ("(c) N results at once -> LLM asked with all, loop CPU", "ms", 1e3, "plain"),
    "release_wall": (
        "(c) N results at once -> LLM asked with all, wall (package: + settle)",
        "ms",
        1e3,
        "plain",
    ),
}

GROWTH = {
    "dispatch_cpu": "dispatch turn, loop CPU",
    "dispatch_ack": "call -> ack, loop CPU",
    "turn_cpu": "ordinary turn, loop CPU",
    "handler": "package event handlers, per event",
    "release_cpu": "N results at once, loop CPU per result",
}
"""The families whose growth from the smallest to the largest N is summed up."""

ORDINARY_TURNS = 4
"""Ordinary turns per variant and round (they are cheap and the per-event figure is noisy)."""


def family_metric(family: str, n: int) -> Metric:
    title, unit, scale, baseline = FAMILIES[family]
    return Metric(
        f"c.{family}.{n}",
        f"{title}, N={n}",
        unit,
        scale,
        baseline=baseline,
        # a rescaled ordinary-turn ratio, too noisy to read per event; kept in the JSON
        show=family != "event_extra",
    )


async def scale(n_values: list[int], reps: int, rounds: int) -> list[Metric]:
    by_n = {n: {f: family_metric(f, n) for f in FAMILIES} for n in n_values}
    for rep in range(reps):
        for n in n_values:
            await _one_n(n, rep, rounds, by_n[n])
    return [m for n in n_values for m in by_n[n].values()]


async def _one_n(n: int, rep: int, rounds: int, metrics: dict[str, Metric]) -> None:
    names = variants()
    benches: dict[str, Bench] = {}
    for name in rotated(names, rep):
        benches[name] = await open_bench(name)

    burst: dict[str, dict[str, float]] = {}
    for name in rotated(names, rep):
        burst[name] = await benches[name].turn(calls(0, n), "ok")
        assert not benches[name].is_async or benches[name].agent.hold.live == n
    metrics["burst"].record({k: r["ack_cpu"] / n for k, r in burst.items()})

    refreeze()  # what is alive now stays alive: keep the collector from walking it every turn
    try:
        released = await _rounds(benches, rep, rounds, metrics)
        release: dict[str, tuple[float, float, int]] = {
            "plain": (burst["plain"]["ack_wall"], burst["plain"]["ack_cpu"], 0)
        }
        for name in rotated([v for v in names if v != "plain"], rep):
            release[name] = await _release_all(benches[name], results_before=released)
        metrics["release_wall"].record({k: r[0] for k, r in release.items()})
        metrics["release_cpu"].record({k: r[1] for k, r in release.items()})
        metrics["release_replies"].record({k: r[2] for k, r in release.items() if k != "plain"})
    finally:
        for bench in benches.values():
            await bench.aclose()
        refreeze()


async def _rounds(
    benches: dict[str, Bench], rep: int, rounds: int, metrics: dict[str, Metric]
) -> int:
    """The dispatch and ordinary turns; returns how many async calls were released."""
    released = 0
    for i in range(-1, rounds):  # round -1 warms the sessions up
        dispatch: dict[str, dict[str, float]] = {}
        ordinary: list[dict[str, dict[str, float]]] = [{} for _ in range(ORDINARY_TURNS)]
        for name in rotated(list(benches), i + rep):
            bench = benches[name]
            call_n = 1_000_000 + i
            dispatch[name] = await bench.turn(ToolCall("lookup", {"n": call_n}), "ok")
            if bench.is_async:  # back to N live before the next measurement
                expected = len(bench.replies) + 1
                bench.agent.hold.send(call_n, "return")
                await bench.next_reply(expected)
            for row in ordinary:
                row[name] = await bench.turn(ToolCall("ping"), "ok")
        released += 1
        if i < 0:
            continue
        metrics["dispatch_cpu"].record({k: r["cpu"] for k, r in dispatch.items()})
        metrics["dispatch_ack"].record({k: r["ack_cpu"] for k, r in dispatch.items()})
        for row in ordinary:
            metrics["turn_cpu"].record({k: r["cpu"] for k, r in row.items()})
            base = row["plain"]["cpu"]
            metrics["event_extra"].record(
                {
                    k: (r["cpu"] - base) / r["events"]
                    for k, r in row.items()
                    if k != "plain" and r["events"]
                }
            )
            metrics["handler"].record(
                {k: r["handler_cpu"] / r["events"] for k, r in row.items() if k == "package"}
            )
    return released


async def _release_all(bench: Bench, *, results_before: int) -> tuple[float, float, int]:
    """All live calls return at once: wall and loop CPU until a request carries
    every result, and how many deferred replies were started until then."""
    expected = results_before + bench.agent.hold.live
    done = asyncio.Event()
    found: list[tuple[float, float]] = []

    def probe(chat_ctx: llm.ChatContext) -> None:
        if found:
            return
        count = sum(
            1
            for item in chat_ctx.items
            if item.type == "function_call_output" and RESULT in str(item.output)
        )
        if count >= expected:
            found.append(bench.llm.requests[-1])
            done.set()

    bench.llm.probe = probe
    replies = len(bench.replies)
    gc.collect()
    t0 = now()
    bench.agent.hold.send_all("return")
    await asyncio.wait_for(done.wait(), WAIT)
    bench.llm.probe = None
    wall, cpu = found[0][0] - t0[0], found[0][1] - t0[1]
    return wall, cpu, len(bench.replies) - replies
