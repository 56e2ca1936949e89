"""Applying a validated config: added apps start, removed apps stop, changed apps restart
their loop; an edit that cannot be applied is said once and the last good config runs on."""

from __future__ import annotations

import structlog

from reconciler.adapters.git import source_of
from reconciler.adapters.ports import GitPort
from reconciler.config import Config
from reconciler.daemon.apps import AppLoops
from reconciler.daemon.in_force import InForce
from reconciler.daemon.ownership import Ownership
from reconciler.metrics import Metrics

log = structlog.get_logger("reconciler.supervisor")


class ReloadApplier:
    def __init__(
        self,
        *,
        in_force: InForce,
        apps: AppLoops,
        ownership: Ownership,
        metrics: Metrics,
        git: GitPort,
    ) -> None:
        self._in_force = in_force
        self._git = git
        self._apps = apps
        self._ownership = ownership
        self._metrics = metrics

    def reject(self, problems: list[str]) -> None:
        """An edit that cannot be applied: said once, the last good config keeps running."""
        self._in_force.rejected(problems)
        self._metrics.config_reloads_total.labels(outcome="invalid").inc()
        log.error(
            "config_invalid_keeping_last_good",
            problems=problems,
            config_sha256=self._in_force.record.sha256,
        )

    async def apply(self, new: Config, *, sha256: str) -> None:
        """Apply a validated config: start added apps, stop removed ones, restart changed ones."""
        old = self._in_force.config
        # The AWS clients, the HTTP socket, the state store and the Docker client are opened
        # once; [webhook] and daemon.api_token_file are read per request and apply at once.
        if old.aws != new.aws:
            log.warning("config_change_needs_restart", section="aws")
        if old.cluster != new.cluster:
            log.warning("config_change_needs_restart", section="cluster")
        if old.build != new.build:
            # The engines and the git mirrors take [build] when they are opened.
            log.warning("config_change_needs_restart", section="build")
        fixed = ("listen", "state_dir", "docker_host", "log_format")
        moved = [k for k in fixed if getattr(old.daemon, k) != getattr(new.daemon, k)]
        if moved:
            log.warning("config_change_needs_restart", section="daemon", keys=moved)
        # A loop takes poll_interval and the build semaphore when it starts: changing either
        # restarts every app (each resumes from what git, ECS and its state say).
        everything_changed = old.daemon.poll_interval != new.daemon.poll_interval
        old_apps = {a.name: a for a in old.apps}
        new_apps = {a.name: a for a in new.apps}
        removed = [n for n in old_apps if n not in new_apps]
        changed = [
            n
            for n in new_apps
            if n in old_apps and (everything_changed or old_apps[n] != new_apps[n])
        ]
        added = [n for n in new_apps if n not in old_apps]
        if new.daemon.max_concurrent_builds != old.daemon.max_concurrent_builds:
            # The loops started from now on share new build slots (daemon/wiring.py).
            changed = sorted(set(new_apps) - set(added))
        self._in_force.switch_to(new)
        # Branches and tags no app follows any more are dropped at the next fetch.
        self._git.track(source_of(app) for app in new.apps)
        await self._apps.stop(removed + changed)
        for name in removed:
            self._apps.forget(name)
        for name in changed + added:
            if self._ownership.holds(name):
                await self._apps.start(new_apps[name])
        self._in_force.applied(sha256)
        self._metrics.config_reloads_total.labels(outcome="applied").inc()
        log.info(
            "config_reloaded", added=added, removed=removed, changed=changed, config_sha256=sha256
        )
