"""Benchmarks: the same tool body as a plain livekit tool, as livekit's native
async tool and with this package, side by side in one process (``make bench``).

(a) turn cost and call -> ack;
(b) quiet -> deferred ``generate_reply``;
(c) dispatch cost and cost per session event with N live calls in one session,
    and N results finishing at once;
(d) memory per pending call;
(e) idle CPU of many sessions with pending calls;
(f) ``update()`` and delivery cost as the chat context grows.

The variants run interleaved (each round takes them in a rotating order) and
every figure is a median with its p10-p90 spread; ratios are taken per round,
to the plain tool unless the table says otherwise. These are measurements, not
tests: nothing here asserts a time. See benchmarks/README.md for what each row
measures.

    python benchmarks/run.py [--quick] [--label NAME] [--only a,c] [--n 1,10,100,1000]
    python benchmarks/run.py --compare before now after
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench_compare
import bench_context
import bench_footprint
import bench_scale
import bench_turns
import livekit.agents
from bench_stats import Metric, render, table
from bench_variants import NATIVE_ASYNC, SETTLE, refreeze, variants

import livekit_async_tools

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Plan:
    turn_rounds: int
    reply_rounds: int
    scale_n: tuple[int, ...]
    scale_reps: int
    scale_rounds: int
    memory_reps: int
    memory_calls: int
    idle_rounds: int
    idle_sessions: int
    idle_window: float
    idle_tail: float
    context_lengths: tuple[int, ...]
    context_rounds: int


FULL = Plan(
    turn_rounds=30,
    reply_rounds=20,
    scale_n=(1, 10, 100, 1000),
    scale_reps=2,
    scale_rounds=6,
    memory_reps=2,
    memory_calls=100,
    idle_rounds=2,
    idle_sessions=100,
    idle_window=2.0,
    idle_tail=2.0,
    context_lengths=(100, 1000, 3000),
    context_rounds=8,
)

QUICK = Plan(
    turn_rounds=6,
    reply_rounds=4,
    scale_n=(1, 10, 100),
    scale_reps=1,
    scale_rounds=3,
    memory_reps=1,
    memory_calls=50,
    idle_rounds=1,
    idle_sessions=20,
    idle_window=1.0,
    idle_tail=0.5,
    context_lengths=(100, 1000),
    context_rounds=2,
)


async def measure(plan: Plan, only: set[str]) -> list[Metric]:
    metrics: list[Metric] = []
    steps: list[tuple[str, Any]] = [
        ("a", lambda: bench_turns.turn_cost(plan.turn_rounds)),
        ("b", lambda: bench_turns.quiet_to_reply(plan.reply_rounds)),
        (
            "c",
            lambda: bench_scale.scale(list(plan.scale_n), plan.scale_reps, plan.scale_rounds),
        ),
        ("d", lambda: bench_footprint.memory(plan.memory_reps, plan.memory_calls)),
        (
            "e",
            lambda: bench_footprint.idle_cpu(
                plan.idle_rounds, plan.idle_sessions, 10, plan.idle_window, plan.idle_tail
            ),
        ),
        (
            "f",
            lambda: bench_context.context_growth(list(plan.context_lengths), plan.context_rounds),
        ),
    ]
    for section, step in steps:
        if section not in only:
            continue
        refreeze()
        t0 = time.perf_counter()
        print(f"section ({section}) ...", file=sys.stderr, flush=True)
        metrics.extend(await step())
        print(f"section ({section}) {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return metrics


def growth(metrics: list[Metric], n_values: tuple[int, ...]) -> dict[str, Any]:
    """(c) from the smallest to the largest N: each variant's median, and its
    median ratio to plain, at both ends."""
    out: dict[str, Any] = {}
    if len(n_values) < 2:
        return out
    lo, hi = n_values[0], n_values[-1]
    by_key = {m.key: m for m in metrics}
    for family in bench_scale.GROWTH:
        a, b = by_key.get(f"c.{family}.{lo}"), by_key.get(f"c.{family}.{hi}")
        if a is None or b is None:
            continue
        per = {lo: 1.0, hi: 1.0} if family != "release_cpu" else {lo: lo, hi: hi}
        row: dict[str, Any] = {"unit": a.unit}
        for v in variants():
            if not a.values(v) or not b.values(v):
                continue
            ja, jb = a.to_json()["variants"][v], b.to_json()["variants"][v]
            entry = {
                "lo": ja["abs"]["median"] / per[lo],
                "hi": jb["abs"]["median"] / per[hi],
            }
            entry["growth"] = entry["hi"] / entry["lo"] if entry["lo"] > 0 else None
            if "ratio" in ja and "ratio" in jb:
                entry["ratio_lo"] = ja["ratio"]["median"]
                entry["ratio_hi"] = jb["ratio"]["median"]
            row[v] = entry
        out[family] = row
    return {"lo": lo, "hi": hi, "rows": out}


def growth_table(g: dict[str, Any]) -> str:
    if not g or not g["rows"]:
        return ""
    lo, hi = g["lo"], g["hi"]
    rows = [[f"(c) N={lo} -> N={hi}", *variants()]]
    for family, row in g["rows"].items():
        cells = []
        for v in variants():
            e = row.get(v)
            if e is None:
                cells.append("-")
                continue
            text = f"{e['lo']:.3g} -> {e['hi']:.3g} {row['unit']}"
            if e["growth"] is not None:
                text += f" ({e['growth']:.2f}x)"
            if "ratio_lo" in e:
                text += f"; vs plain {e['ratio_lo']:.2f}x -> {e['ratio_hi']:.2f}x"
            cells.append(text)
        rows.append([bench_scale.GROWTH[family], *cells])
    return render(rows)


def describe() -> dict[str, Any]:
    package_dir = Path(livekit_async_tools.__file__).resolve().parent
    info: dict[str, Any] = {
        "livekit_agents": livekit.agents.__version__,
        "native_async_tools": NATIVE_ASYNC,
        "package_file": str(package_dir / "__init__.py"),
        "python": platform.python_version(),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "settle_delay": SETTLE,
    }
    try:
        git = ["git", "-C", str(package_dir)]
        info["package_commit"] = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "."], capture_output=True, text=True, check=True
        ).stdout
        info["package_dirty"] = bool(dirty.strip())
    except (OSError, subprocess.CalledProcessError):
        info["package_commit"] = None
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (< 60 s)")
    parser.add_argument("--label", default="latest", help="names the JSON file")
    parser.add_argument(
        "--out", type=Path, help="JSON path (default benchmarks/results-LABEL.json)"
    )
    parser.add_argument("--only", default="abcdef", help="sections to run, e.g. 'a,c'")
    parser.add_argument("--n", help="N values for (c), e.g. '1,10,100,1000'")
    parser.add_argument(
        "--compare",
        nargs="+",
        metavar="LABEL",
        help="measure nothing: print the results-LABEL.json files side by side",
    )
    args = parser.parse_args()

    if args.compare:
        runs = {label: bench_compare.load(HERE / f"results-{label}.json") for label in args.compare}
        for label, data in runs.items():
            run = data["run"]
            print(
                f"{label}: {run['package_file']} ({run.get('package_commit')}), "
                f"livekit-agents {run['livekit_agents']}, {'quick' if run['quick'] else 'full'}"
            )
        print()
        print(bench_compare.compare(runs))
        print()
        print(bench_compare.compare_growth(runs))
        return

    plan = QUICK if args.quick else FULL
    if args.n:
        plan = Plan(**{**plan.__dict__, "scale_n": tuple(int(x) for x in args.n.split(","))})
    only = {c for c in args.only if c.isalpha()}
    info = describe()
    info.update(label=args.label, quick=args.quick, plan=plan.__dict__)

    print(
        f"livekit-agents {info['livekit_agents']}; livekit_async_tools from "
        f"{info['package_file']} ({info.get('package_commit')}"
        f"{', modified' if info.get('package_dirty') else ''})"
    )
    if not NATIVE_ASYNC:
        print(
            "native: skipped, this livekit-agents has no native async tools "
            "(RunContext.update arrived in 1.6)"
        )

    logging.basicConfig(level=logging.ERROR)
    t0 = time.perf_counter()
    metrics = asyncio.run(measure(plan, only))
    info["seconds"] = round(time.perf_counter() - t0, 1)

    print()
    print("median [p10-p90]; plain (or the named baseline) absolute, others as a ratio to it")
    print(table(metrics, variants()))
    g = growth(metrics, plan.scale_n)
    if g:
        print()
        print(growth_table(g))
    print(f"\n{info['seconds']} s")

    out = args.out or HERE / f"results-{args.label}.json"
    result = {"run": info, "growth": g, "metrics": {m.key: m.to_json() for m in metrics}}
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
