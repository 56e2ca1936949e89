"""Freeze windows (SPEC 21): whether a freeze covers an app at an instant, and until when.

A window starts at each instant its 5-field cron names, read as wall-clock time in its time
zone, and lasts `duration` of wall-clock time from there (a freeze from Friday 17:00 for 64h
ends Monday 09:00 local, whether or not the clocks changed over the weekend). A start named
in the hour a spring change skips begins when the clocks resume (02:30 that does not exist
is 03:30); one named in the hour an autumn change repeats begins at its first occurrence.

Written here rather than taken from a library: the project has no cron dependency, the
matcher is forty lines, and croniter, the usual choice, was declared unmaintained in 2024.
Pure: no I/O but zoneinfo's reading of the system's zone files (cached by the stdlib).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from fnmatch import fnmatchcase
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["Cron", "FreezeWindow", "Frozen", "covering", "parse_cron", "zone"]

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# (name, lowest, highest, names counted from `lowest`)
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
# Overlapping windows are chained to find when a freeze really ends; this many at most.
MAX_CHAINED = 16


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday (7 is read as 0)
    days_restricted: bool  # the day-of-month field is not `*`
    weekdays_restricted: bool

    def runs_on(self, day: date) -> bool:
        """Whether the cron names some time of `day` (cron's rule: when both day fields are
        restricted, either one matching is enough)."""
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_month or in_week
        return in_month and in_week


def parse_cron(text: str) -> Cron:
    """A 5-field cron expression; ValueError with a one-line message when it is not one."""
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(f"cron {text!r} needs 5 fields (minute hour day month weekday)")
    sets = [
        _field(value, name=name, low=low, high=high, names=names)
        for value, (name, low, high, names) in zip(fields, _FIELDS, strict=True)
    ]
    weekdays = frozenset(d % 7 for d in sets[4])
    return Cron(
        minutes=sets[0],
        hours=sets[1],
        days=sets[2],
        months=sets[3],
        weekdays=weekdays,
        days_restricted=not fields[2].startswith("*"),
        weekdays_restricted=not fields[4].startswith("*"),
    )


def _field(text: str, *, name: str, low: int, high: int, names: tuple[str, ...]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        span, _, step_text = part.partition("/")
        step = _number(step_text, name=name, names=()) if step_text else 1
        if step < 1:
            raise ValueError(f"cron {name} {part!r}: a step must be at least 1")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            a, _, b = span.partition("-")
            first, last = _number(a, name=name, names=names), _number(b, name=name, names=names)
        else:
            first = _number(span, name=name, names=names)
            last = high if step_text else first
        if not low <= first <= last <= high:
            raise ValueError(f"cron {name} {part!r} is out of range {low}-{high}")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _number(text: str, *, name: str, names: tuple[str, ...]) -> int:
    upper = text.upper()
    if upper in names:
        offset = 1 if names is _MONTHS else 0
        return names.index(upper) + offset
    if not text.isdigit():
        raise ValueError(f"cron {name}: {text!r} is not a number")
    return int(text)


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`; ValueError naming it when the system does not know it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


@dataclass(frozen=True)
class FreezeWindow:
    apps: tuple[str, ...]  # globs over app names
    cron: Cron
    duration: timedelta
    timezone: str
    reason: str

    def names(self, app: str) -> bool:
        return any(fnmatchcase(app, glob) for glob in self.apps)

    def end_of_window_covering(self, at: datetime) -> datetime | None:
        """The end (UTC) of this window's occurrence that covers `at`, or None."""
        at = at.astimezone(UTC)
        tz = zone(self.timezone)
        local = at.astimezone(tz)
        day = local.date()
        earliest = (at - self.duration).astimezone(tz).date() - timedelta(days=1)
        while day >= earliest:
            for start in self._starts_on(day, tz, reverse=True):
                if start <= at:
                    end = self._end(start, tz)
                    # The latest start at or before `at` decides: an earlier one ends no later.
                    return end if end > at else None
            day -= timedelta(days=1)
        return None

    def next_start(self, after: datetime, *, within_days: int = 400) -> datetime | None:
        """The first start (UTC) later than `after`, looked for within a year or so."""
        after = after.astimezone(UTC)
        tz = zone(self.timezone)
        day = after.astimezone(tz).date() - timedelta(days=1)
        for _ in range(within_days):
            for start in self._starts_on(day, tz, reverse=False):
                if start > after:
                    return start
            day += timedelta(days=1)
        return None

    def _starts_on(self, day: date, tz: ZoneInfo, *, reverse: bool) -> Iterable[datetime]:
        if not self.cron.runs_on(day):
            return
        for hour in sorted(self.cron.hours, reverse=reverse):
            for minute in sorted(self.cron.minutes, reverse=reverse):
                # fold=0: an hour the clocks skip begins when they resume, a repeated one at
                # its first occurrence.
                local = datetime.combine(day, time(hour, minute), tzinfo=tz)
                yield local.astimezone(UTC)

    def _end(self, start: datetime, tz: ZoneInfo) -> datetime:
        # Aware arithmetic in the zone is wall-clock arithmetic: 64h from Friday 17:00 is
        # Monday 09:00 local across a change of the clocks.
        return (
            (start.astimezone(tz).replace(tzinfo=None) + self.duration)
            .replace(tzinfo=tz)
            .astimezone(UTC)
        )


@dataclass(frozen=True)
class Frozen:
    """A freeze covering an app: why, and when the last window chained to it ends (UTC)."""

    reason: str
    until: datetime


def covering(windows: Sequence[FreezeWindow], app: str, at: datetime) -> Frozen | None:
    """The freeze covering `app` at `at`, or None. Windows that overlap or touch are one
    freeze: its end is the end of the last of them; its reason the first covering `at`."""
    mine = [w for w in windows if w.names(app)]
    reason: str | None = None
    moment = at.astimezone(UTC)
    for _ in range(MAX_CHAINED):
        ends = [(w, w.end_of_window_covering(moment)) for w in mine]
        live = [(w, end) for w, end in ends if end is not None]
        if not live:
            break
        if reason is None:
            reason = live[0][0].reason
        moment = max(end for _, end in live)
    if reason is None:
        return None
    return Frozen(reason=reason, until=moment)
