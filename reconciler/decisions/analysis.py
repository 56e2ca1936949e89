"""Metric analysis of a release (SPEC 21), judged: pure, no I/O.

A check is measured `count` times, one `interval` apart, from the start of the bake (or of
the rollout where there is none). Each measurement is a value, no data, or an error (the
source did not answer within the interval). A check fails as soon as more than
`failure_limit` of its measurements are failures (a value past `min`/`max`, or an error:
an unanswered query is never a pass), or at once on no data with `on_no_data = "fail"`; it
passes once it has all `count` measurements without failing. The release passes when every
check passed and fails when any failed; until then it is running.

What has been measured is kept in the app's memory (AnalysisRun), so a daemon that restarts
or takes the app over mid-analysis goes on from the measurements really taken: it never
reports a pass it did not measure.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta


class Mark(enum.StrEnum):
    """What one measurement says."""

    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"  # a value past min or max
    NO_DATA = "no_data"
    ERROR = "error"  # the source did not answer within the interval


class State(enum.StrEnum):
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"


@dataclass(frozen=True)
class Limits:
    """What judging a check needs of its config."""

    name: str
    query: str  # the query as people read it: `prometheus sum(rate(...))`
    count: int
    minimum: float | None = None
    maximum: float | None = None
    failure_limit: int = 0
    no_data_passes: bool = False


@dataclass(frozen=True)
class Measurement:
    at: datetime
    value: float | None = None  # None: no data (or an error)
    error: str = ""  # why the source gave no answer


@dataclass(frozen=True)
class Verdict:
    state: State
    reason: str = ""  # for a failure: the check, its query and its values


@dataclass(frozen=True)
class CheckResult:
    """A check's measurements and verdict, as status and history show them."""

    name: str
    query: str
    values: tuple[float | None, ...]  # None: no data or no answer
    verdict: State


@dataclass(frozen=True)
class AnalysisRun:
    """The analysis of one rollout, as the app's memory keeps it: the rollout it judges,
    when its measurements started (None until the bake or the rollout began), what each
    check measured so far, and its verdict once there is one."""

    revision: str
    task_definition: str
    previous: str | None
    config_fingerprint: str
    started_at: datetime | None = None
    measurements: dict[str, tuple[Measurement, ...]] = field(default_factory=dict)
    state: State = State.RUNNING
    reason: str = ""

    def of(self, name: str) -> tuple[Measurement, ...]:
        return self.measurements.get(name, ())


def mark(measurement: Measurement, limits: Limits) -> Mark:
    """What one measurement says of the check."""
    if measurement.error:
        return Mark.ERROR
    value = measurement.value
    # NaN (Prometheus' 0/0, a rate of nothing) compares false with every bound: it is no
    # data, never a value within bounds.
    if value is None or math.isnan(value):
        return Mark.NO_DATA
    if limits.maximum is not None and value > limits.maximum:
        return Mark.FAIL
    if limits.minimum is not None and value < limits.minimum:
        return Mark.FAIL
    return Mark.PASS


def judge_check(limits: Limits, measurements: Sequence[Measurement]) -> Verdict:
    """The verdict of a check from its measurements so far."""
    marks = [mark(m, limits) for m in measurements]
    if Mark.NO_DATA in marks and not limits.no_data_passes:
        return Verdict(State.FAILED, _reason(limits, measurements, "no data"))
    failures = sum(1 for m in marks if m in (Mark.FAIL, Mark.ERROR))
    if failures > limits.failure_limit:
        said = f"{failures} of {len(marks)} measurements failed"
        return Verdict(State.FAILED, _reason(limits, measurements, said))
    if len(marks) >= limits.count:
        return Verdict(State.PASSED)
    return Verdict(State.RUNNING)


def judge_all(checks: Mapping[Limits, Sequence[Measurement]]) -> Verdict:
    """The release's verdict: failed when any check failed (every failure said), passed when
    every check passed, else running."""
    verdicts = [judge_check(limits, measured) for limits, measured in checks.items()]
    failed = [v.reason for v in verdicts if v.state is State.FAILED]
    if failed:
        return Verdict(State.FAILED, "; ".join(failed))
    if all(v.state is State.PASSED for v in verdicts):
        return Verdict(State.PASSED)
    return Verdict(State.RUNNING)


def next_due(
    started_at: datetime, measurements: Sequence[Measurement], *, interval: float
) -> datetime:
    """When the check's next measurement is due: one interval after the last (or after the
    start). A daemon that was away past it measures at once and keeps the interval from
    there: missed measurements are taken late, never made up."""
    last = measurements[-1].at if measurements else started_at
    return last + timedelta(seconds=interval)


def results(checks: Mapping[Limits, Sequence[Measurement]]) -> tuple[CheckResult, ...]:
    """Each check's values and verdict, for status and history."""
    return tuple(
        CheckResult(
            name=limits.name,
            query=limits.query,
            values=tuple(_shown(m) for m in measured),
            verdict=judge_check(limits, measured).state,
        )
        for limits, measured in checks.items()
    )


def _shown(measurement: Measurement) -> float | None:
    value = measurement.value
    return None if value is None or math.isnan(value) or measurement.error else value


def _reason(limits: Limits, measurements: Sequence[Measurement], said: str) -> str:
    bounds = []
    if limits.maximum is not None:
        bounds.append(f"max {limits.maximum:g}")
    if limits.minimum is not None:
        bounds.append(f"min {limits.minimum:g}")
    values = ", ".join(_value(m) for m in measurements)
    errors = sorted({m.error for m in measurements if m.error})
    why = f" ({'; '.join(errors)})" if errors else ""
    return (
        f"analysis {limits.name} failed: {said} ({', '.join(bounds)}, failure_limit "
        f"{limits.failure_limit}): {limits.query} = [{values}]{why}"
    )


def _value(measurement: Measurement) -> str:
    if measurement.error:
        return "error"
    value = measurement.value
    if value is None or math.isnan(value):
        return "no data"
    return f"{value:g}"
