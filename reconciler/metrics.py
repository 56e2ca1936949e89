"""Prometheus metrics, in a registry owned by the daemon (not the process-global one)."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BUILD_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800)
ROLLOUT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800)
# Commit to live: minutes to weeks.
LEAD_TIME_BUCKETS = (300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 259200, 604800, 2592000)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.app_in_sync = Gauge(
            "reconciler_app_in_sync",
            "1 when the app's service runs the desired image, else 0.",
            ["app"],
            registry=self.registry,
        )
        self.drift = Gauge(
            "reconciler_drift",
            "1 when the app's live service differs from its definitions without a deploy of"
            " the daemon's (SPEC 19), else 0.",
            ["app"],
            registry=self.registry,
        )
        self.reconcile_total = Counter(
            "reconciler_reconcile_total",
            "Reconcile passes by outcome.",
            ["app", "result"],
            registry=self.registry,
        )
        self.build_seconds = Histogram(
            "reconciler_build_seconds",
            "Image build time.",
            buckets=BUILD_BUCKETS,
            registry=self.registry,
        )
        self.push_seconds = Histogram(
            "reconciler_push_seconds",
            "Image push time.",
            buckets=BUILD_BUCKETS,
            registry=self.registry,
        )
        self.test_seconds = Histogram(
            "reconciler_test_seconds",
            "Time the test command ran before anything was pushed.",
            buckets=BUILD_BUCKETS,
            registry=self.registry,
        )
        self.pre_deploy_seconds = Histogram(
            "reconciler_pre_deploy_seconds",
            "Time from RunTask of the pre-deploy task until it stopped.",
            buckets=ROLLOUT_BUCKETS,
            registry=self.registry,
        )
        self.rollout_seconds = Histogram(
            "reconciler_rollout_seconds",
            "Time from UpdateService to a settled rollout.",
            buckets=ROLLOUT_BUCKETS,
            registry=self.registry,
        )
        self.webhook_requests_total = Counter(
            "reconciler_webhook_requests_total",
            "Webhook deliveries by provider and outcome.",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.deploys_total = Counter(
            "reconciler_deploys_total",
            "UpdateService calls made, by app and kind (deploy or rollback).",
            ["app", "kind"],
            registry=self.registry,
        )
        self.deployments_total = Counter(
            "reconciler_deployments_total",
            "Releases that reached production, by app and result (deployed, failed,"
            " rolled_back, rollback_failed, pre_deploy_failed); the four keys' gauges"
            " (reconciler_four_keys_*) are computed from the kept history instead.",
            ["app", "result"],
            registry=self.registry,
        )
        self.lead_time_seconds = Histogram(
            "reconciler_lead_time_seconds",
            "Lead time for changes: from the revision's commit (git's committer time) to its"
            " release being live, per deployed release.",
            ["app"],
            buckets=LEAD_TIME_BUCKETS,
            registry=self.registry,
        )
        self.rollbacks_total = Counter(
            "reconciler_rollbacks_total",
            "Rollbacks after a failed rollout, by app and how they ended (rolled_back or "
            "rollback_failed), whether ECS or the daemon rolled back.",
            ["app", "outcome"],
            registry=self.registry,
        )
        self.state_write_failing = Gauge(
            "reconciler_state_write_failing",
            "1 while the app's state file cannot be written (no deploy starts meanwhile).",
            ["app"],
            registry=self.registry,
        )
        self.leases_held = Gauge(
            "reconciler_leases_held",
            "App leases this daemon holds (with [cluster].lease_table).",
            registry=self.registry,
        )
        self.lease_takeovers_total = Counter(
            "reconciler_lease_takeovers_total",
            "Apps taken over from a daemon whose lease ran out.",
            registry=self.registry,
        )
        self.lease_table_errors_total = Counter(
            "reconciler_lease_table_errors_total",
            "Calls to the lease table that failed (throttled, unreachable), by operation.",
            ["operation"],
            registry=self.registry,
        )
        self.config_reloads_total = Counter(
            "reconciler_config_reloads_total",
            "Config reloads by outcome.",
            ["outcome"],
            registry=self.registry,
        )

    def forget_app(self, app: str) -> None:
        """Drop every series of an app removed from the config, so none goes stale."""
        per_app: tuple[tuple[Gauge | Counter | Histogram, tuple[str, ...]], ...] = (
            (self.deployments_total, ("app", "result")),
            (self.lead_time_seconds, ("app",)),
            (self.app_in_sync, ("app",)),
            (self.drift, ("app",)),
            (self.state_write_failing, ("app",)),
            (self.reconcile_total, ("app", "result")),
            (self.deploys_total, ("app", "kind")),
            (self.rollbacks_total, ("app", "outcome")),
        )
        for metric, names in per_app:
            label_sets = {
                tuple(sample.labels[n] for n in names)
                for family in metric.collect()
                for sample in family.samples
                if sample.labels.get("app") == app
            }
            for values in label_sets:
                with contextlib.suppress(KeyError):
                    metric.remove(*values)

    def render(self) -> bytes:
        return generate_latest(self.registry)
