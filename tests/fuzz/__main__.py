"""The fuzzer's command line: ``python -m tests.fuzz [--runs N] [--minutes M] ...``.

Runs random plans (seed, seed+1, ...) until the run count or the time is
reached, prints progress (runs, runs/s) and, for each new class of violation,
the first failing plan minimized to a ready-to-paste reproduction. Exits 1 if
any invariant was violated.

``--replay 'Plan(...)'`` (or ``--replay-file FILE``) runs one plan and prints its
report and event log.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from collections import Counter

from .harness import Outcome, run_plan, run_seeds
from .plan import Job, Plan, ToolDef, random_plan
from .shrink import shrink, signature, snippet


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    p.add_argument("--runs", type=int, default=20_000, help="sessions to run (default 20000)")
    p.add_argument("--minutes", type=float, default=None, help="stop after this long")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    p.add_argument("--seed", type=int, default=None, help="first plan seed (default: time)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    p.add_argument(
        "--shrink-seconds", type=float, default=60.0, help="time to minimize each new class"
    )
    p.add_argument("--max-classes", type=int, default=20, help="stop after this many classes")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--replay", default=None, help="run one plan given as Plan(...) text")
    p.add_argument("--replay-file", default=None, help="run the Plan(...) in this file")
    return p.parse_args(argv)


def _eval_plan(text: str) -> Plan:
    plan = eval(text, {"Plan": Plan, "ToolDef": ToolDef, "Job": Job})
    if not isinstance(plan, Plan):
        raise SystemExit("--replay needs a Plan(...) expression")
    return plan


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.replay or args.replay_file:
        text = args.replay
        if args.replay_file:
            with open(args.replay_file, encoding="utf-8") as f:
                text = f.read()
        outcome = run_plan(_eval_plan(text))
        print(outcome.report(tail=10_000))
        return 1 if outcome.violations else 0

    limit = args.seconds if args.seconds is not None else None
    if args.minutes is not None:
        limit = args.minutes * 60
    first_seed = args.seed if args.seed is not None else int(time.time()) % 1_000_000_000
    started = time.monotonic()
    cpu0 = time.process_time()
    deadline = time.time() + limit if limit is not None else float("inf")
    print(
        f"fuzzing: up to {args.runs} sessions"
        + (f" or {limit:.0f} s" if limit is not None else "")
        + f", seeds from {first_seed}, {args.jobs} process(es)",
        flush=True,
    )
    runs = 0
    by_invariant: Counter[str] = Counter()
    classes: dict[str, tuple[int, int]] = {}  # signature -> (first seed, count)
    failing_runs = 0
    last_report = started
    shrinking = [0.0, 0.0]  # wall and CPU seconds spent minimizing (not fuzzing)

    def record(seed: int, violations: list[tuple[str, str]]) -> list[str]:
        nonlocal failing_runs
        new = []
        if violations:
            failing_runs += 1
        seen: set[str] = set()
        for inv, msg in violations:
            from .oracle import Violation

            sig = signature(Violation(inv, msg))
            if sig in seen:
                continue
            seen.add(sig)
            by_invariant[inv] += 1
            if sig not in classes:
                classes[sig] = (seed, 1)
                new.append(sig)
            else:
                classes[sig] = (classes[sig][0], classes[sig][1] + 1)
        return new

    def progress(force: bool = False) -> None:
        nonlocal last_report
        now = time.monotonic()
        if args.quiet or (not force and now - last_report < 10):
            return
        last_report = now
        elapsed = now - started - shrinking[0]
        print(
            f"  {runs} runs, {runs / max(elapsed, 1e-9):.1f} runs/s, {failing_runs} failing, "
            f"{len(classes)} violation classes",
            flush=True,
        )

    def report_new(sig: str, seed: int) -> None:
        plan = random_plan(seed)
        print(f"\nNEW {sig}\n  first seen with seed {seed}; minimizing...", flush=True)
        wall, cpu = time.monotonic(), time.process_time()
        small, outcome, n = shrink(plan, sig, seconds=args.shrink_seconds)
        shrinking[0] += time.monotonic() - wall
        shrinking[1] += time.process_time() - cpu
        print(f"  minimized in {n} runs; reproduction:\n")
        print("    " + snippet(small).replace("\n", "\n    "))
        if outcome is not None:
            print("  " + outcome.report(tail=40).replace("\n", "\n  "), flush=True)

    if args.jobs <= 1:
        seed = first_seed
        while runs < args.runs and time.time() < deadline and len(classes) < args.max_classes:
            outcome: Outcome = run_plan(random_plan(seed))
            runs += 1
            for sig in record(seed, [(v.invariant, v.message) for v in outcome.violations]):
                report_new(sig, seed)
            seed += 1
            progress()
    else:
        chunk = 50
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            batch = 0
            while runs < args.runs and time.time() < deadline and len(classes) < args.max_classes:
                tasks = []
                for j in range(args.jobs):
                    start = first_seed + batch * chunk * args.jobs + j
                    tasks.append((start, args.jobs, chunk, deadline))
                batch += 1
                for results in pool.map(run_seeds, tasks):
                    for seed, violations, _wall in results:
                        runs += 1
                        for sig in record(seed, violations):
                            report_new(sig, seed)
                progress()
    elapsed = time.monotonic() - started - shrinking[0]
    cpu = time.process_time() - cpu0 - shrinking[1]
    print("\nsummary")
    print(
        f"  runs: {runs} in {elapsed:.0f} s of fuzzing (+{shrinking[0]:.0f} s minimizing): "
        f"{runs / max(elapsed, 1e-9):.1f} runs/s",
        end="",
    )
    if args.jobs <= 1:
        print(f" ({runs / max(cpu, 1e-9):.1f} runs per CPU second)")
    else:
        print()
    print(f"  failing runs: {failing_runs}")
    for inv, n in sorted(by_invariant.items()):
        print(f"  invariant {inv}: {n} run(s)")
    for sig, (seed, n) in sorted(classes.items()):
        print(f"    {sig}  x{n} (first: seed {seed})")
    return 1 if classes else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
