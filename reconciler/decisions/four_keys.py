"""The four keys of software delivery, from an app's own history. Pure: no I/O.

Over a window of the last `days` days (an entry counts by when it finished):

- deployment frequency: releases that went live (`deployed`), per day;
- lead time for changes: for each of those, from its commit (git's committer time) to its
  entry's end (live, extra tags moved), as p50 and p90 (nearest rank);
- change failure rate: releases that reached production and failed (`failed`,
  `rolled_back`, `rollback_failed`, and `pre_deploy_failed`, whose task ran against
  production) over all releases that reached production (those and `deployed`); builds,
  tests, rejections and superseded passes never reached it and are not counted;
- time to restore: from a failed release to the app's next deployed one, p50 over the
  failures in the window that were restored (the first failure of a run counts; the
  failures after it until the restore are the same outage). One still failing is counted
  apart (`unrestored`).

"All apps" pools every app's releases (and each app's restores).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from reconciler.decisions.model import HistoryEntry, Result

FAILED = frozenset(
    {Result.FAILED, Result.ROLLED_BACK, Result.ROLLBACK_FAILED, Result.PRE_DEPLOY_FAILED}
)
RELEASED = FAILED | {Result.DEPLOYED}
WINDOWS = (7, 30)  # days the dashboard, the metrics and the report show by default
MAX_DAYS = 366  # the longest window asked for


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank percentile `q` (0..1) of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Day:
    """One day of a window (UTC), for the small charts."""

    date: str  # 2024-05-01
    deployments: int
    failures: int
    lead_p50: float | None  # seconds
    restore_p50: float | None  # seconds, of the failures restored that began that day


@dataclass(frozen=True)
class Keys:
    days: int
    deployments: int
    releases: int  # deployed and failed together
    failures: int
    lead_times: tuple[float, ...]  # seconds, oldest first
    restores: tuple[float, ...]  # seconds, oldest first
    unrestored: int
    per_day: tuple[Day, ...]

    @property
    def frequency(self) -> float:
        """Deployments per day."""
        return self.deployments / self.days

    @property
    def lead_p50(self) -> float | None:
        return percentile(self.lead_times, 0.5)

    @property
    def lead_p90(self) -> float | None:
        return percentile(self.lead_times, 0.9)

    @property
    def failure_rate(self) -> float | None:
        return self.failures / self.releases if self.releases else None

    @property
    def restore_p50(self) -> float | None:
        return percentile(self.restores, 0.5)

    def to_json(self) -> dict[str, object]:
        return {
            "days": self.days,
            "deployments": self.deployments,
            "deployments_per_day": round(self.frequency, 4),
            "releases": self.releases,
            "failures": self.failures,
            "change_failure_rate": _round(self.failure_rate),
            "lead_time_seconds": {"p50": _round(self.lead_p50), "p90": _round(self.lead_p90)},
            "lead_time_samples": len(self.lead_times),
            "time_to_restore_seconds": {"p50": _round(self.restore_p50)},
            "restores": len(self.restores),
            "unrestored": self.unrestored,
            "per_day": [
                {
                    "date": d.date,
                    "deployments": d.deployments,
                    "failures": d.failures,
                    "lead_time_p50_seconds": _round(d.lead_p50),
                    "time_to_restore_p50_seconds": _round(d.restore_p50),
                }
                for d in self.per_day
            ],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass(frozen=True)
class _Restore:
    failed_at: datetime
    seconds: float | None  # None: not restored yet


def _restores(history: Sequence[HistoryEntry]) -> list[_Restore]:
    """Each outage of one app: its first failed release, and how long until the next
    deployed one (None while there is none)."""
    outages: list[_Restore] = []
    failing: datetime | None = None
    for entry in sorted(history, key=lambda e: e.finished_at):
        if entry.result in FAILED and failing is None:
            failing = entry.finished_at
        elif entry.result is Result.DEPLOYED and failing is not None:
            seconds = (entry.finished_at - failing).total_seconds()
            outages.append(_Restore(failing, seconds))
            failing = None
    if failing is not None:
        outages.append(_Restore(failing, None))
    return outages


def _lead(entry: HistoryEntry) -> float | None:
    if entry.result is not Result.DEPLOYED or entry.committed_at is None:
        return None
    return max(0.0, (entry.finished_at - entry.committed_at).total_seconds())


def four_keys(histories: Mapping[str, Sequence[HistoryEntry]], *, now: datetime, days: int) -> Keys:
    """The keys over the last `days` days of the apps' `histories` (any order)."""
    since = now - timedelta(days=days)

    def inside(moment: datetime) -> bool:
        return since < moment <= now

    entries = [e for h in histories.values() for e in h if inside(e.finished_at)]
    entries.sort(key=lambda e: e.finished_at)
    released = [e for e in entries if e.result in RELEASED]
    deployed = [e for e in released if e.result is Result.DEPLOYED]
    leads = [lead for e in deployed if (lead := _lead(e)) is not None]
    outages = [o for h in histories.values() for o in _restores(h) if inside(o.failed_at)]
    outages.sort(key=lambda o: o.failed_at)
    return Keys(
        days=days,
        deployments=len(deployed),
        releases=len(released),
        failures=len(released) - len(deployed),
        lead_times=tuple(leads),
        restores=tuple(o.seconds for o in outages if o.seconds is not None),
        unrestored=sum(1 for o in outages if o.seconds is None),
        per_day=_per_day(released, outages, now=now, days=days),
    )


def _per_day(
    released: Sequence[HistoryEntry], outages: Sequence[_Restore], *, now: datetime, days: int
) -> tuple[Day, ...]:
    today = now.date()
    shown = []
    for back in range(days - 1, -1, -1):
        date = today - timedelta(days=back)
        on = [e for e in released if e.finished_at.date() == date]
        good = [e for e in on if e.result is Result.DEPLOYED]
        leads = [lead for e in good if (lead := _lead(e)) is not None]
        restores = [
            o.seconds for o in outages if o.failed_at.date() == date and o.seconds is not None
        ]
        shown.append(
            Day(
                date=date.isoformat(),
                deployments=len(good),
                failures=len(on) - len(good),
                lead_p50=percentile(leads, 0.5),
                restore_p50=percentile(restores, 0.5),
            )
        )
    return tuple(shown)
