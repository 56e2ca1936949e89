"""Summaries of samples (median and spread) and the one table the benchmark prints."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), fraction in [0, 1]."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Summary:
    """Median and spread of repeated measurements of one figure."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        return cls(tuple(float(v) for v in values))

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else math.nan

    @property
    def low(self) -> float:
        """p10 for ten or more samples, else the minimum."""
        return percentile(self.values, 0.10) if self.n >= 10 else min(self.values, default=math.nan)

    @property
    def high(self) -> float:
        """p90 for ten or more samples, else the maximum."""
        return percentile(self.values, 0.90) if self.n >= 10 else max(self.values, default=math.nan)

    def p(self, fraction: float) -> float:
        return percentile(self.values, fraction)

    @property
    def maximum(self) -> float:
        return max(self.values, default=math.nan)

    def spread_label(self) -> str:
        return "p10-p90" if self.n >= 10 else "min-max"


def number(value: float, unit: str = "") -> str:
    """A figure for the table: few significant digits, its unit attached."""
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf"
    magnitude = abs(value)
    if magnitude >= 100 or float(value).is_integer():
        text = f"{value:.0f}"
    elif magnitude >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".rstrip() if unit and unit != "x" else f"{text}{unit}"


def spread(summary: Summary, unit: str = "", *, scale: float = 1.0) -> str:
    """`median (low-high, n=N)` in `unit`, values multiplied by `scale`."""
    if summary.n == 0:
        return "n/a"
    median = number(summary.median * scale, unit)
    if summary.n == 1:
        return median
    low = number(summary.low * scale)
    high = number(summary.high * scale)
    return f"{median} ({summary.spread_label()} {low}-{high}, n={summary.n})"


@dataclass
class Row:
    """One line of the table: a figure, both measurements, their ratio and the verdict."""

    figure: str
    ours: str
    peer: str = "-"
    ratio: str = "-"
    target: str = ""
    met: bool | None = None  # None: no target, or not judged in this mode
    note: str = ""
    details: dict[str, float] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        if self.met is None:
            return "-"
        return "met" if self.met else "MISSED"


# The peer is ecs-deploy, but in the race's rows the old pipeline's script (SPEC 22).
HEADERS = (
    "figure",
    "this project",
    "peer (ecs-deploy, or the script)",
    "ratio",
    "target",
    "verdict",
)


def render_table(rows: Sequence[Row]) -> str:
    """A Markdown table (readable as plain text too), with the notes as footnotes."""
    cells = [HEADERS]
    notes: list[str] = []
    for row in rows:
        figure = row.figure
        if row.note:
            notes.append(row.note)
            figure = f"{figure} [{len(notes)}]"
        cells.append((figure, row.ours, row.peer, row.ratio, row.target, row.verdict))
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADERS))]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    out = [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(c) for c in cells[1:]]
    if notes:
        out.append("")
        out += [f"[{i}] {text}" for i, text in enumerate(notes, start=1)]
    return "\n".join(out)
