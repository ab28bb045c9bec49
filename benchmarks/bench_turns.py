"""(a) turn cost and call → ack; (b) quiet → deferred ``generate_reply``."""

from __future__ import annotations

from bench_stats import Metric
from bench_variants import open_bench, rotated, variants

from livekit_async_tools.testing import ToolCall


async def turn_cost(rounds: int) -> list[Metric]:
    """(a) One turn whose tool call is acknowledged (async) or answered (plain),
    in a fresh session each time. The async call stays held (the slow part has
    not returned) until the session is closed, so no deferred reply is measured."""
    turn_cpu = Metric("a.turn_cpu", "(a) turn with one tool call, loop CPU", "ms", 1e3)
    turn_wall = Metric("a.turn_wall", "(a) turn with one tool call, wall", "ms", 1e3)
    ack_wall = Metric("a.ack_wall", "(a) call -> ack, wall", "ms", 1e3)
    ack_cpu = Metric("a.ack_cpu", "(a) call -> ack, loop CPU", "ms", 1e3)
    for i in range(-1, rounds):  # round -1 warms up (imports, first-use caches)
        row = {}
        for name in rotated(variants(), i):
            bench = await open_bench(name)
            row[name] = await bench.turn(ToolCall("lookup", {"n": i}), "ok")
            await bench.aclose()
        if i < 0:
            continue
        turn_cpu.record({k: r["cpu"] for k, r in row.items()})
        turn_wall.record({k: r["wall"] for k, r in row.items()})
        ack_wall.record({k: r["ack_wall"] for k, r in row.items()})
        ack_cpu.record({k: r["ack_cpu"] for k, r in row.items()})
    return [turn_cpu, ack_cpu, turn_wall, ack_wall]


async def quiet_to_reply(rounds: int) -> list[Metric]:
    """(b) The call acknowledges and returns during its turn; from the moment the
    agent is back to listening (plus the settle window, for the package) to the
    deferred ``generate_reply`` call. Plain tools have no deferred reply, so the
    package is compared with native."""
    latency = Metric(
        "b.quiet_to_reply",
        "(b) quiet (+ settle) -> deferred generate_reply, wall",
        "ms",
        1e3,
        baseline="native" if "native" in variants() else None,
        note="package: settle_delay subtracted; plain tools have no deferred reply",
    )
    for i in range(-1, rounds):
        row: dict[str, float | None] = {}
        for name in rotated([v for v in variants() if v != "plain"], i):
            bench = await open_bench(name)
            bench.agent.hold.auto = "return"
            await bench.turn(ToolCall("lookup", {"n": i}), "ok")
            called, _ = await bench.next_reply(1)
            quiet = max(t for t in bench.listening if t <= called[0])
            row[name] = called[0] - quiet - bench.settle
            await bench.aclose()
        if i >= 0:
            latency.record(row)
    return [latency]
