"""What a daemon's metrics say, read the way Prometheus would scrape them."""

from __future__ import annotations

from reconciler.metrics import Metrics


def passes_of(metrics: Metrics, app: str) -> float:
    """The app's finished passes: each pass ends with one result in reconciler_reconcile_total
    (in sync, deployed, held, retry, ...)."""
    return sum(
        sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == "reconciler_reconcile_total" and sample.labels.get("app") == app
    )
