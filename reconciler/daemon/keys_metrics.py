"""The four keys as Prometheus gauges, computed at each scrape from the releases this daemon
keeps (decisions/four_keys.py): the same numbers as the dashboard and `reconciler report`.
Per app (only the apps this daemon runs: another daemon's apps are its own to export) and
over them all (`app="*"`, no app can be named so), for each window (`days`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from reconciler.daemon.records import Releases
from reconciler.decisions.four_keys import WINDOWS, Keys, four_keys
from reconciler.decisions.model import utcnow

ALL = "*"
_GAUGES: tuple[tuple[str, str, Callable[[Keys], float | None]], ...] = (
    (
        "reconciler_four_keys_deployments",
        "Releases that went live in the window (deployment frequency is this over days).",
        lambda k: float(k.deployments),
    ),
    (
        "reconciler_four_keys_deployments_per_day",
        "Deployment frequency: releases that went live per day, over the window.",
        lambda k: k.frequency,
    ),
    (
        "reconciler_four_keys_lead_time_p50_seconds",
        "Lead time for changes, commit to live, median over the window.",
        lambda k: k.lead_p50,
    ),
    (
        "reconciler_four_keys_lead_time_p90_seconds",
        "Lead time for changes, commit to live, 90th percentile over the window.",
        lambda k: k.lead_p90,
    ),
    (
        "reconciler_four_keys_change_failure_rate",
        "Releases that reached production and failed or were rolled back, over all that did.",
        lambda k: k.failure_rate,
    ),
    (
        "reconciler_four_keys_time_to_restore_p50_seconds",
        "Time from a failed release to the app's next good one, median over the window.",
        lambda k: k.restore_p50,
    ),
)


class FourKeysCollector(Collector):
    def __init__(self, releases: Releases) -> None:
        self._releases = releases

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = utcnow()
        histories = {name: self._releases.of(name) for name in self._releases.held()}
        families = [GaugeMetricFamily(n, h, labels=["app", "days"]) for n, h, _ in _GAUGES]
        for days in WINDOWS:
            scopes = {name: {name: history} for name, history in histories.items()}
            scopes[ALL] = histories
            for app, chosen in scopes.items():
                keys = four_keys(chosen, now=now, days=days)
                for family, (_, _, value) in zip(families, _GAUGES, strict=True):
                    number = value(keys)
                    if number is not None:  # no sample rather than a made-up zero
                        family.add_metric([app, str(days)], number)
        yield from families
