"""How feedback is faring: deliveries counted by target and outcome, and what keeps it from
arriving now, by target (and repository or URL), for /status and the dashboard."""

from __future__ import annotations

import time

import structlog
from prometheus_client import CollectorRegistry, Counter

log = structlog.get_logger("reconciler.feedback")


class Health:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter(
            "reconciler_feedback_total",
            "Feedback deliveries (commit statuses, deployments, chat messages) by target "
            "and outcome: sent, retried, rejected (refused for good), dropped.",
            ["target", "outcome"],
            registry=registry,
        )
        self._problems: dict[str, str] = {}
        self._retrying_since: dict[str, float] = {}

    def problems(self) -> dict[str, str]:
        return dict(self._problems)

    def count(self, target: str, outcome: str) -> None:
        self.sent.labels(target=target, outcome=outcome).inc()

    def problem(self, where: str, reason: str) -> None:
        """`where` (a target and what of it) is refusing for a reason a retry will not end."""
        self._problems[where] = reason

    def solved(self, where: str) -> None:
        self._problems.pop(where, None)

    def failing(self, target: str, reason: str) -> None:
        """A delivery to `target` failed and is retried; logged once per spell of failures."""
        since = self._retrying_since.setdefault(target, time.time())
        first = target not in self._problems
        stamp = time.strftime("%H:%M:%S", time.gmtime(since))
        self._problems[target] = f"retrying since {stamp} UTC: {reason}"
        if first:
            log.warning("feedback_retrying", target=target, reason=reason)

    def recovered(self, target: str) -> None:
        if self._retrying_since.pop(target, None) is not None:
            log.info("feedback_recovered", target=target)
        self._problems.pop(target, None)
