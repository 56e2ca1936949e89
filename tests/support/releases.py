"""A scripted history of two apps with known four keys (decisions/four_keys.py), for the
unit tests of the keys and for the same numbers on the page, in metrics and in the report.

`web`, NOW = 2026-01-10 12:00 UTC, each line one release (entry finished at):
  day -8 12:00  deployed   committed 2 h before  (outside 7 days, inside 30)
  day -3 10:00  deployed   committed 1 h before
  day -2 10:00  rolled_back                       an outage begins
  day -2 10:30  failed                            the same outage
  day -2 11:00  deployed   committed 15 min before; restored after 1 h
  day -1 10:00  build_failed                      never reached production: not counted
  day -1 12:00  deployed   committed 90 min before
  day  0 09:00  failed                            not restored yet
`api`:
  day -1 11:00  deployed   committed 10 min before
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reconciler.decisions.model import HistoryEntry, Result

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


def _at(day: int, hour: int, minute: int = 0) -> datetime:
    return NOW.replace(hour=hour, minute=minute) + timedelta(days=day)


def _entry(n: int, result: Result, finished: datetime, lead: float | None = None) -> HistoryEntry:
    return HistoryEntry(
        revision=f"{n:x}" * 40 if n < 16 else "f" * 40,
        result=result,
        started_at=finished - timedelta(minutes=5),
        finished_at=finished,
        committed_at=None if lead is None else finished - timedelta(seconds=lead),
    )


WEB = [  # newest first, as the state keeps it
    _entry(8, Result.FAILED, _at(0, 9)),
    _entry(7, Result.DEPLOYED, _at(-1, 12), lead=5400),
    _entry(6, Result.BUILD_FAILED, _at(-1, 10)),
    _entry(5, Result.DEPLOYED, _at(-2, 11), lead=900),
    _entry(4, Result.FAILED, _at(-2, 10, 30)),
    _entry(3, Result.ROLLED_BACK, _at(-2, 10)),
    _entry(2, Result.DEPLOYED, _at(-3, 10), lead=3600),
    _entry(1, Result.DEPLOYED, _at(-8, 12), lead=7200),
]
API = [_entry(9, Result.DEPLOYED, _at(-1, 11), lead=600)]
HISTORIES = {"web": WEB, "api": API}

# The answers, (app or "*" for all, days) -> what four_keys gives.
EXPECTED = {
    ("web", 7): {
        "deployments": 3,
        "releases": 6,
        "failures": 3,
        "change_failure_rate": 0.5,
        "lead_p50": 3600.0,
        "lead_p90": 5400.0,
        "restore_p50": 3600.0,
        "unrestored": 1,
    },
    ("web", 30): {
        "deployments": 4,
        "releases": 7,
        "failures": 3,
        "change_failure_rate": 3 / 7,
        "lead_p50": 3600.0,
        "lead_p90": 7200.0,
        "restore_p50": 3600.0,
        "unrestored": 1,
    },
    ("*", 7): {
        "deployments": 4,
        "releases": 7,
        "failures": 3,
        "change_failure_rate": 3 / 7,
        "lead_p50": 900.0,
        "lead_p90": 5400.0,
        "restore_p50": 3600.0,
        "unrestored": 1,
    },
}
