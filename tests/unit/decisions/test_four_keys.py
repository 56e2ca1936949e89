"""The four keys from a scripted history with known answers (tests/support/releases.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from reconciler.decisions.four_keys import Keys, four_keys, percentile
from reconciler.decisions.model import HistoryEntry, Result
from tests.support.releases import EXPECTED, HISTORIES, NOW, WEB


def _keys(app: str, days: int) -> Keys:
    chosen = HISTORIES if app == "*" else {app: HISTORIES[app]}
    return four_keys(chosen, now=NOW, days=days)


@pytest.mark.parametrize(("app", "days"), sorted(EXPECTED))
def test_the_keys_of_the_scripted_history(app: str, days: int) -> None:
    """Deployments, failures among releases that reached production, lead time p50/p90 and
    time to restore are the answers worked out by hand for each window and scope."""
    keys, expected = _keys(app, days), EXPECTED[(app, days)]
    assert keys.deployments == expected["deployments"]
    assert keys.frequency == pytest.approx(expected["deployments"] / days)
    assert keys.releases == expected["releases"]
    assert keys.failures == expected["failures"]
    assert keys.failure_rate == pytest.approx(expected["change_failure_rate"])
    assert keys.lead_p50 == expected["lead_p50"]
    assert keys.lead_p90 == expected["lead_p90"]
    assert keys.restore_p50 == expected["restore_p50"]
    assert keys.unrestored == expected["unrestored"]


def test_a_rollback_and_a_failure_after_it_are_one_outage_restored_by_the_next_deploy() -> None:
    """The outage begins with the rollback (day -2 10:00), the failure at 10:30 is the same
    one, and the deploy at 11:00 restores it: one restore of an hour, not two."""
    keys = _keys("web", 7)
    assert keys.restores == (3600.0,)


def test_a_build_or_test_failure_never_reached_production_and_counts_nowhere() -> None:
    only = [e for e in WEB if e.result is Result.BUILD_FAILED]
    keys = four_keys({"web": only}, now=NOW, days=7)
    assert (keys.releases, keys.failures, keys.failure_rate) == (0, 0, None)


def test_per_day_counts_add_up_to_the_window() -> None:
    keys = _keys("web", 7)
    assert len(keys.per_day) == 7
    assert keys.per_day[-1].date == NOW.date().isoformat()
    assert sum(d.deployments for d in keys.per_day) == keys.deployments
    assert sum(d.failures for d in keys.per_day) == keys.failures
    two_days_ago = keys.per_day[-3]
    assert (two_days_ago.deployments, two_days_ago.failures) == (1, 2)
    assert two_days_ago.lead_p50 == 900.0
    assert two_days_ago.restore_p50 == 3600.0


def test_a_release_without_a_commit_time_is_counted_without_a_lead_time() -> None:
    entry = HistoryEntry("a" * 40, Result.DEPLOYED, NOW - timedelta(minutes=5), NOW)
    keys = four_keys({"web": [entry]}, now=NOW, days=7)
    assert (keys.deployments, keys.lead_times, keys.lead_p50) == (1, (), None)


def test_nothing_in_the_window_gives_no_numbers_rather_than_zeros() -> None:
    keys = four_keys({"web": WEB}, now=NOW + timedelta(days=400), days=7)
    assert keys.deployments == 0
    assert (keys.lead_p50, keys.failure_rate, keys.restore_p50) == (None, None, None)


def test_the_json_says_the_same_numbers() -> None:
    keys = _keys("web", 7)
    document = keys.to_json()
    assert document["change_failure_rate"] == 0.5
    assert document["lead_time_seconds"] == {"p50": 3600.0, "p90": 5400.0}
    assert document["time_to_restore_seconds"] == {"p50": 3600.0}
    assert document["unrestored"] == 1


def test_percentiles_are_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([5.0], 0.9) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.9) == 4.0
