"""Samples paired by round, their medians, spreads and ratios, and the table."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

VARIANTS = ("plain", "native", "package")


def quantile(values: Iterable[float], q: float) -> float:
    """The ``q`` quantile with linear interpolation (``q=0.5`` is the median)."""
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(values: Iterable[float]) -> dict[str, float]:
    xs = list(values)
    return {
        "median": quantile(xs, 0.5),
        "p10": quantile(xs, 0.1),
        "p90": quantile(xs, 0.9),
        "n": len(xs),
    }


@dataclass
class Metric:
    """One measured quantity, sampled for each variant once per round.

    Samples of one round share an index, so ratios are taken per round (the
    rounds interleave the variants; pairing cancels the machine's drift).
    """

    key: str
    title: str
    unit: str
    scale: float
    """Factor from the recorded value (seconds, bytes, ...) to ``unit``."""
    baseline: str | None = "plain"
    """The variant ratios are taken to; ``None`` shows absolute values only."""
    note: str = ""
    show: bool = True
    """In the printed table (everything is in the JSON file)."""
    samples: dict[str, list[float | None]] = field(default_factory=dict)

    def record(self, values: Mapping[str, float | None]) -> None:
        rounds = max((len(v) for v in self.samples.values()), default=0)
        for name in set(values) | set(self.samples):
            column = self.samples.setdefault(name, [])
            column.extend([None] * (rounds - len(column)))
            column.append(values.get(name))

    def values(self, variant: str) -> list[float]:
        return [v for v in self.samples.get(variant, []) if v is not None]

    def ratios(self, variant: str) -> list[float]:
        if self.baseline not in self.samples or variant not in self.samples:
            return []
        pairs = zip(self.samples[variant], self.samples[self.baseline], strict=True)
        return [v / b for v, b in pairs if v is not None and b is not None and b > 0]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "title": self.title,
            "unit": self.unit,
            "baseline": self.baseline,
            "note": self.note,
            "variants": {},
        }
        for name in VARIANTS:
            if not self.values(name):
                continue
            entry: dict[str, Any] = {
                "samples": [None if v is None else v * self.scale for v in self.samples[name]],
                "abs": {
                    k: v * self.scale if k != "n" else v
                    for k, v in summary(self.values(name)).items()
                },
            }
            if self.baseline is not None and name != self.baseline:
                entry["ratio"] = summary(self.ratios(name))
            out["variants"][name] = entry
        return out


def _num(x: float) -> str:
    if math.isnan(x):
        return "nan"
    a = abs(x)
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}" if a >= 0.1 or a == 0 else f"{x:.3f}"


def cell(metric: Metric, variant: str) -> str:
    """``median [p10-p90]``: absolute for the baseline, a ratio for the others."""
    if not metric.values(variant):
        return "-"
    if metric.baseline is None or variant == metric.baseline:
        s = summary(v * metric.scale for v in metric.values(variant))
        return f"{_num(s['median'])} {metric.unit} [{_num(s['p10'])}-{_num(s['p90'])}]"
    s = summary(metric.ratios(variant))
    if not s["n"]:
        return "-"
    return f"{s['median']:.2f}x [{s['p10']:.2f}-{s['p90']:.2f}]"


def render(rows: list[list[str]]) -> str:
    """Left-aligned columns, a rule under the first row."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def table(metrics: Iterable[Metric], variants: Iterable[str]) -> str:
    """One row per metric, one column per variant."""
    names = list(variants)
    rows = [[m.title, *(cell(m, v) for v in names)] for m in metrics if m.show]
    return render([["", *names], *rows])
