"""Freeze windows: cron starts read in a time zone, wall-clock durations, chained windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reconciler.decisions.freeze import FreezeWindow, covering, parse_cron


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def window(
    cron: str,
    hours: float,
    *,
    tz: str = "Europe/Berlin",
    apps: tuple[str, ...] = ("*",),
    reason: str = "weekend",
) -> FreezeWindow:
    return FreezeWindow(
        apps=apps,
        cron=parse_cron(cron),
        duration=timedelta(hours=hours),
        timezone=tz,
        reason=reason,
    )


WEEKEND = window("0 17 * * FRI", 64)

# (what it shows, window, instant, the end of the freeze covering it or None)
COVERS = [
    ("before the start", WEEKEND, "2024-06-07T14:59:59", None),
    ("at the start (17:00 CEST)", WEEKEND, "2024-06-07T15:00:00", "2024-06-10T07:00:00"),
    ("in the middle", WEEKEND, "2024-06-09T12:00:00", "2024-06-10T07:00:00"),
    ("a second before the end", WEEKEND, "2024-06-10T06:59:59", "2024-06-10T07:00:00"),
    ("at the end: open again", WEEKEND, "2024-06-10T07:00:00", None),
    ("on a Wednesday", WEEKEND, "2024-06-12T12:00:00", None),
    # Winter: Friday 17:00 CET is 16:00 UTC, Monday 09:00 CET is 08:00 UTC.
    ("in winter", WEEKEND, "2024-01-06T12:00:00", "2024-01-08T08:00:00"),
    # The clocks go back on Sunday 27 October 2024: 64h of wall clock from Friday 17:00 CEST
    # still end Monday 09:00 local (CET), 65h later.
    ("over the autumn change", WEEKEND, "2024-10-27T12:00:00", "2024-10-28T08:00:00"),
    ("the autumn change's extra hour", WEEKEND, "2024-10-28T07:30:00", "2024-10-28T08:00:00"),
    # The clocks go forward on Sunday 31 March 2024: Monday 09:00 CEST is 07:00 UTC, 63h on.
    ("over the spring change", WEEKEND, "2024-03-31T12:00:00", "2024-04-01T07:00:00"),
    ("after the spring change's end", WEEKEND, "2024-04-01T07:30:00", None),
    # 02:30 does not exist on 31 March 2024 in Berlin: the window starts when the clocks
    # resume, 03:30 CEST (01:30 UTC), and lasts its hour of wall clock.
    ("a start the spring change skips", window("30 2 31 3 *", 1), "2024-03-31T01:29:00", None),
    (
        "a start the spring change skips, begun",
        window("30 2 31 3 *", 1),
        "2024-03-31T01:30:00",
        "2024-03-31T02:30:00",
    ),
    # 02:30 happens twice on 27 October 2024: the window starts at the first (00:30 UTC), and
    # its 30 minutes of wall clock end at 03:00 CET (02:00 UTC), after the repeated hour.
    (
        "a start the autumn change repeats",
        window("30 2 27 10 *", 0.5),
        "2024-10-27T00:45:00",
        "2024-10-27T02:00:00",
    ),
    ("... once: open at its end", window("30 2 27 10 *", 0.5), "2024-10-27T02:00:00", None),
    (
        "UTC",
        window("0 9-17 * * MON-FRI", 1, tz="UTC"),
        "2024-06-12T17:59:00",
        "2024-06-12T18:00:00",
    ),
    ("UTC, after hours", window("0 9-17 * * MON-FRI", 1, tz="UTC"), "2024-06-12T18:00:00", None),
    # Both day fields restricted: either matching starts the window (cron's own rule).
    (
        "day of month or weekday",
        window("0 0 1 * MON", 2, tz="UTC"),
        "2024-06-03T01:00:00",
        "2024-06-03T02:00:00",
    ),
    (
        "day of month or weekday, the 1st",
        window("0 0 1 * MON", 2, tz="UTC"),
        "2024-06-01T01:00:00",
        "2024-06-01T02:00:00",
    ),
    (
        "day of month or weekday, neither",
        window("0 0 1 * MON", 2, tz="UTC"),
        "2024-06-04T01:00:00",
        None,
    ),
    ("steps", window("*/15 * * * *", 0.1, tz="UTC"), "2024-06-04T10:45:30", "2024-06-04T10:51:00"),
    (
        "Sunday as 7",
        window("0 12 * * 7", 1, tz="UTC"),
        "2024-06-09T12:30:00",
        "2024-06-09T13:00:00",
    ),
    (
        "month names",
        window("0 0 1 DEC *", 24 * 31, tz="UTC"),
        "2024-12-24T12:00:00",
        "2025-01-01T00:00:00",
    ),
]


@pytest.mark.parametrize(("shows", "freeze", "at", "until"), COVERS, ids=[c[0] for c in COVERS])
def test_a_freeze_covers_its_windows_and_ends_on_the_wall_clock(
    shows: str, freeze: FreezeWindow, at: str, until: str | None
) -> None:
    """Whether a window covers an instant, and its end in UTC, across changes of the clocks."""
    found = covering([freeze], "web", utc(at))
    assert (found.until if found else None) == (utc(until) if until else None), shows


def test_a_freeze_covers_only_the_apps_its_globs_name() -> None:
    """`apps` globs pick the apps: web-production is frozen, web-staging is not."""
    freeze = window("0 17 * * FRI", 64, apps=("*-production",))
    at = utc("2024-06-08T12:00:00")
    assert covering([freeze], "web-production", at) is not None
    assert covering([freeze], "web-staging", at) is None


def test_windows_that_overlap_or_touch_are_one_freeze() -> None:
    """A freeze that runs into another ends when the last ends; the reason is the first's."""
    evening = window("0 18 * * *", 14, tz="UTC", reason="night")  # 18:00 - 08:00
    morning = window("0 8 * * *", 2, tz="UTC", reason="standup")  # 08:00 - 10:00, touching
    found = covering([evening, morning], "web", utc("2024-06-04T23:00:00"))
    assert found is not None
    assert (found.reason, found.until) == ("night", utc("2024-06-05T10:00:00"))


def test_the_next_start_is_found_from_any_instant() -> None:
    """`plan` shows when a freeze not in force starts next."""
    assert WEEKEND.next_start(utc("2024-06-12T00:00:00")) == utc("2024-06-14T15:00:00")
    assert WEEKEND.next_start(utc("2024-06-14T15:00:00")) == utc("2024-06-21T15:00:00")
    assert window("0 0 30 2 *", 1, tz="UTC").next_start(utc("2024-01-01T00:00:00")) is None


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 17 * *", "needs 5 fields"),
        ("60 * * * *", "minute '60' is out of range 0-59"),
        ("* 24 * * *", "hour '24' is out of range 0-23"),
        ("* * 0 * *", "day of month '0' is out of range 1-31"),
        ("* * * 13 *", "month '13' is out of range 1-12"),
        ("* * * * FUNDAY", "'FUNDAY' is not a number"),
        ("*/0 * * * *", "a step must be at least 1"),
        ("5-1 * * * *", "'5-1' is out of range"),
        ("1,,2 * * * *", "'' is not a number"),
    ],
)
def test_a_bad_cron_is_refused_with_one_line_naming_the_field(cron: str, message: str) -> None:
    """A cron that is not one says which field is wrong and how."""
    with pytest.raises(ValueError, match=message.replace("*", r"\*")):
        parse_cron(cron)
