"""Side by side: the package's figures in several result files (``--compare``).

Absolute times differ from run to run (the machine, its load); the ratios to
the plain tool measured in the same run are what compare. For each metric
this shows, per run, native's and the package's median ratio (or the median
itself where a metric has no baseline).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench_scale import GROWTH
from bench_stats import render


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _cell(metric: dict[str, Any] | None, variant: str) -> str:
    if metric is None or variant not in metric["variants"]:
        return "-"
    entry = metric["variants"][variant]
    if "ratio" in entry:
        return f"{entry['ratio']['median']:.2f}x"
    return f"{entry['abs']['median']:.3g} {metric['unit']}"


def compare(runs: dict[str, dict[str, Any]]) -> str:
    """One row per metric shown in the first run; native | package per run."""
    labels = list(runs)
    first = runs[labels[0]]["metrics"]
    header = [""]
    for label in labels:
        header += [f"{label}: native", f"{label}: package"]
    rows = [header]
    for key, metric in first.items():
        # files written before "show" existed: the same two families were hidden
        hidden = ".event_extra." in key or key.startswith("f.result_wall")
        if not metric.get("show", not hidden):
            continue  # not in the printed table either
        row = [metric["title"]]
        for label in labels:
            other = runs[label]["metrics"].get(key)
            row += [_cell(other, "native"), _cell(other, "package")]
        rows.append(row)
    return render(rows)


def compare_growth(runs: dict[str, dict[str, Any]]) -> str:
    """The package's (c) growth from the smallest to the largest N, per run."""
    rows = [["(c) package, N=lo -> N=hi", *runs]]
    families: list[str] = []
    for data in runs.values():
        for family in (data.get("growth") or {}).get("rows", {}):
            if family not in families:
                families.append(family)
    for family in families:
        row = [GROWTH.get(family, family)]
        for data in runs.values():
            g = data.get("growth") or {}
            entry = g.get("rows", {}).get(family, {}).get("package")
            if entry is None:
                row.append("-")
                continue
            unit = g["rows"][family]["unit"]
            text = f"N={g['lo']}..{g['hi']}: {entry['lo']:.3g} -> {entry['hi']:.3g} {unit}"
            if "ratio_lo" in entry:
                text += f" (vs plain {entry['ratio_lo']:.2f}x -> {entry['ratio_hi']:.2f}x)"
            row.append(text)
        rows.append(row)
    return render(rows)
