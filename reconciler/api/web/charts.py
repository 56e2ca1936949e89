"""What the pages draw, as plain geometry the templates lay out as inline SVG: a release's
timeline to scale, small per-day charts of the four keys, a lead-time sparkline. Drawn by
the server (no script, no CDN); every bar has its text in a <title> and every chart a table
beside it, so the numbers are there for screen readers and text browsers too."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from reconciler.decisions.four_keys import Keys
from reconciler.decisions.model import HistoryEntry, Result
from reconciler.decisions.timeline import StageTime, slowest, span

WIDTH = 720  # the drawing's width, in SVG units (it scales to the page)
LABELS = 190  # the room left of the bars for the stage names
ROW = 22
BAR = 16
CHART_W, CHART_H = 210, 48
SPARK_W, SPARK_H = 90, 20
SPARK_POINTS = 20


def seconds_text(seconds: float) -> str:
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    if seconds >= 60:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{seconds:.1f} s"


@dataclass(frozen=True)
class Bar:
    label: str
    kind: str  # CSS class: stage-build, stage-rollout, ...
    step: bool  # an ECS lifecycle stage inside a rollout
    running: bool
    x: float
    y: float
    width: float
    offset: float  # seconds from the release's start
    seconds: float
    started: str  # ISO, for the live script
    finished: str  # ISO, "" while running

    @property
    def title(self) -> str:
        state = "running, " if self.running else ""
        return (
            f"{self.label}: {state}{seconds_text(self.seconds)} (from +{seconds_text(self.offset)})"
        )


@dataclass(frozen=True)
class Timeline:
    revision: str
    running: bool
    result: str
    start: str  # ISO: where the scale begins
    seconds: float  # the scale's length
    height: int
    bars: list[Bar]
    ticks: list[tuple[float, str]]  # x, text

    @property
    def width(self) -> int:
        return WIDTH


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def timeline(
    stages: Sequence[StageTime],
    *,
    revision: str,
    start: datetime,
    end: datetime,
    now: datetime,
    running: bool,
    result: str,
) -> Timeline | None:
    """The stages drawn to one scale: the release's time (to now while it runs) across
    WIDTH - LABELS units, a row per stage in the order they began."""
    if not stages:
        return None
    first, last = span(stages, start, now if running else end)
    total = max((last - first).total_seconds(), 0.001)
    scale = (WIDTH - LABELS) / total
    bars = []
    for row, stage in enumerate(stages):
        offset = (stage.started_at - first).total_seconds()
        seconds = stage.seconds(now)
        bars.append(
            Bar(
                label=stage.label,
                kind="stage-" + "".join(c for c in stage.name if c.isalnum() or c == "_"),
                step=bool(stage.step),
                running=stage.finished_at is None,
                x=round(LABELS + offset * scale, 2),
                y=row * ROW + 4,
                width=round(max(seconds * scale, 1.0), 2),
                offset=offset,
                seconds=seconds,
                started=_iso(stage.started_at),
                finished=_iso(stage.finished_at) if stage.finished_at else "",
            )
        )
    ticks = [
        (round(LABELS + (WIDTH - LABELS) * i / 4, 2), "+" + seconds_text(total * i / 4))
        for i in range(5)
    ]
    return Timeline(
        revision=revision,
        running=running,
        result=result,
        start=_iso(first),
        seconds=total,
        height=len(stages) * ROW + 22,
        bars=bars,
        ticks=ticks,
    )


@dataclass(frozen=True)
class ReleaseRow:
    """One of the last releases: its total and its slowest stage."""

    revision: str
    result: str
    finished: str
    total: str
    slowest: str | None


def release_rows(
    history: Sequence[HistoryEntry], now: datetime, limit: int = 20
) -> list[ReleaseRow]:
    rows = []
    for entry in list(history)[:limit]:
        worst = slowest(entry.stages, now)
        total = entry.finished_at - min([entry.started_at, *(s.started_at for s in entry.stages)])
        rows.append(
            ReleaseRow(
                revision=entry.revision,
                result=entry.result.value.replace("_", " "),
                finished=_iso(entry.finished_at),
                total=seconds_text(max(0.0, total.total_seconds())),
                slowest=None
                if worst is None
                else f"{worst.label} ({seconds_text(worst.seconds(now))})",
            )
        )
    return rows


@dataclass(frozen=True)
class Column:
    x: float
    y: float
    height: float
    title: str


@dataclass(frozen=True)
class Chart:
    """A small per-day bar chart of one key over a window."""

    name: str
    summary: str  # the window's number, in words
    columns: list[Column]
    rows: list[tuple[str, str]]  # the table fallback: date, value

    @property
    def width(self) -> int:
        return CHART_W

    @property
    def height(self) -> int:
        return CHART_H


def _chart(
    name: str, summary: str, dates: list[str], values: list[float | None], unit: str
) -> Chart:
    peak = max([v for v in values if v is not None] or [0.0]) or 1.0
    step = CHART_W / max(len(values), 1)
    columns, rows = [], []
    for index, (date, value) in enumerate(zip(dates, values, strict=True)):
        text = "—" if value is None else (seconds_text(value) if unit == "s" else f"{value:g}")
        rows.append((date, text))
        height = 0.0 if value is None else max(1.0, value / peak * (CHART_H - 2))
        columns.append(
            Column(
                x=round(index * step + 1, 2),
                y=round(CHART_H - height, 2),
                height=round(height, 2),
                title=f"{date}: {text}",
            )
        )
    return Chart(name=name, summary=summary, columns=columns, rows=rows)


def key_charts(keys: Keys) -> list[Chart]:
    """Deployments, failures, lead time and time to restore per day of the window."""
    dates = [d.date for d in keys.per_day]
    rate = keys.failure_rate
    return [
        _chart(
            "Deployments",
            f"{keys.deployments} ({keys.frequency:.2f} a day)",
            dates,
            [float(d.deployments) for d in keys.per_day],
            "",
        ),
        _chart(
            "Lead time (p50)",
            "—"
            if keys.lead_p50 is None or keys.lead_p90 is None
            else f"p50 {seconds_text(keys.lead_p50)}, p90 {seconds_text(keys.lead_p90)}",
            dates,
            [d.lead_p50 for d in keys.per_day],
            "s",
        ),
        _chart(
            "Failed releases",
            "—" if rate is None else f"{rate * 100:.0f}% ({keys.failures} of {keys.releases})",
            dates,
            [float(d.failures) for d in keys.per_day],
            "",
        ),
        _chart(
            "Time to restore (p50)",
            ("—" if keys.restore_p50 is None else seconds_text(keys.restore_p50))
            + (f", {keys.unrestored} still failing" if keys.unrestored else ""),
            dates,
            [d.restore_p50 for d in keys.per_day],
            "s",
        ),
    ]


@dataclass(frozen=True)
class Sparkline:
    points: str  # for <polyline points=...>
    title: str

    @property
    def width(self) -> int:
        return SPARK_W

    @property
    def height(self) -> int:
        return SPARK_H


def lead_sparkline(history: Sequence[HistoryEntry]) -> Sparkline | None:
    """The lead times of the app's last SPARK_POINTS deployed releases, oldest first."""
    leads = [
        (e.finished_at - e.committed_at).total_seconds()
        for e in history
        if e.result is Result.DEPLOYED and e.committed_at is not None
    ][:SPARK_POINTS][::-1]
    if not leads:
        return None
    peak = max(leads) or 1.0
    step = SPARK_W / max(len(leads) - 1, 1)
    points = " ".join(
        f"{round(i * step, 1)},{round(SPARK_H - 1 - v / peak * (SPARK_H - 2), 1)}"
        for i, v in enumerate(leads)
    )
    if len(leads) == 1:
        points += f" {SPARK_W},{points.split(',')[1]}"
    title = f"lead time of the last {len(leads)} releases: newest {seconds_text(leads[-1])}"
    return Sparkline(points=points, title=title)
