"""(f) ``update()`` and delivery cost as the chat context grows past 1000 items.

Each session starts with a context of L messages. In interleaved rounds, the
async call is acknowledged, then (the session quiet) reports one progress
``update()`` and later returns; each time, the loop CPU from that moment in the
tool body to the LLM request of the deferred reply (the loop is idle during
the settle window, so it is not in the figure; the wall time, which includes
it, is only in the JSON file). Also the loop CPU of the ``await ctx.update()``
itself. The plain baseline is the plain way of getting a result to the LLM:
from the plain tool's return to the request that carries its output.
"""

from __future__ import annotations

import gc

from bench_stats import Metric
from bench_variants import Bench, open_bench, refreeze, rotated, variants
from livekit.agents import llm

from livekit_async_tools.testing import ToolCall

FAMILIES = {
    "update_call": ("(f) await ctx.update(), loop CPU", "us", 1e6, "native"),
    "update_cpu": ("(f) update -> reply request, loop CPU", "ms", 1e3, "native"),
    "result_cpu": ("(f) result -> reply request, loop CPU", "ms", 1e3, "plain"),
    "result_wall": ("(f) result -> reply request, wall (package: + settle)", "ms", 1e3, "plain"),
}


def prefilled(length: int) -> llm.ChatContext:
    ctx = llm.ChatContext()
    for i in range(length):
        ctx.add_message(role="user" if i % 2 == 0 else "assistant", content=f"message {i}")
    return ctx


async def context_growth(lengths: list[int], rounds: int) -> list[Metric]:
    out: list[Metric] = []
    for length in lengths:
        metrics = {
            f: Metric(
                f"f.{f}.{length}",
                f"{title}, L={length}",
                unit,
                scale,
                baseline=base if base in variants() else None,
                # the settle window dominates it; the cost is the loop CPU (kept in the JSON)
                show=f != "result_wall",
            )
            for f, (title, unit, scale, base) in FAMILIES.items()
        }
        benches = {name: await open_bench(name, chat_ctx=prefilled(length)) for name in variants()}
        refreeze()  # the prefilled contexts stay alive: keep the collector off them
        try:
            for i in range(-1, rounds):  # round -1 warms the sessions up
                row: dict[str, dict[str, float]] = {}
                for name in rotated(variants(), i):
                    row[name] = await _round(benches[name], 10_000 + i)
                if i < 0:
                    continue
                for family, metric in metrics.items():
                    metric.record({k: r.get(family) for k, r in row.items()})
        finally:
            for bench in benches.values():
                await bench.aclose()
            refreeze()
        out.extend(metrics.values())
    return out


async def _round(bench: Bench, n: int) -> dict[str, float]:
    await bench.turn(ToolCall("lookup", {"n": n}), "ok")
    agent, fake = bench.agent, bench.llm
    if not bench.is_async:
        start = agent.last_mark("return")
        request = fake.request_after(start[0])
        assert request is not None
        return {"result_cpu": request[1] - start[1], "result_wall": request[0] - start[0]}

    out: dict[str, float] = {}
    expected = len(bench.replies) + 1
    gc.collect()
    agent.hold.send(n, "update")
    await bench.next_reply(expected)
    start, end = agent.last_mark("update"), agent.last_mark("updated")
    request = fake.request_after(start[0])
    assert request is not None
    out["update_call"] = end[1] - start[1]
    out["update_cpu"] = request[1] - start[1]

    gc.collect()
    agent.hold.send(n, "return")
    await bench.next_reply(expected + 1)
    start = agent.last_mark("return")
    request = fake.request_after(start[0])
    assert request is not None
    out["result_cpu"] = request[1] - start[1]
    out["result_wall"] = request[0] - start[0]
    return out
