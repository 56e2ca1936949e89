"""Starts, reloads and stops the app loops; owns the adapters, the HTTP server and shutdown.

The only holder of mutable state shared across apps. Signals only set flags; shutdown stops
the loops (letting a task-definition registration or service update that is under way
finish, bounded), cancels what hangs, and closes the adapters. A rollout in flight is left
to ECS and awaited again on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from reconciler import backoff
from reconciler.adapters.docker import DockerEngine
from reconciler.adapters.ecr import Ecr
from reconciler.adapters.ecs import Ecs
from reconciler.adapters.git import GitMirrors
from reconciler.adapters.registry import Registry
from reconciler.config import AppConfig, Config, parse_config
from reconciler.errors import ConfigError, ReconcilerError
from reconciler.loop import Adapters, AppLoop
from reconciler.metrics import Metrics
from reconciler.model import Phase, utcnow
from reconciler.state import StateStore
from reconciler.status import AppStatus
from reconciler.systemd import Notifier
from reconciler.webhooks import PushEvent, matches

log = structlog.get_logger("reconciler.supervisor")

STOP_GRACE = 8.0  # SPEC: stop within 10 s of SIGTERM
HTTP_GRACE = 0.5  # requests in progress at shutdown get this long to finish
CONFIG_CHECK_INTERVAL = 1.0  # SPEC: a changed config is applied within 2 s
# A changed file is read again after this long and applied only if it reads the same: an
# editor that truncates and then writes must not make the daemon report a bogus error.
CONFIG_SETTLE = 0.2


@dataclass
class ConfigInForce:
    path: str | None
    sha256: str
    loaded_at: datetime = field(default_factory=utcnow)
    last_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "loaded_at": self.loaded_at.isoformat().replace("+00:00", "Z"),
            "last_error": self.last_error,
        }


@asynccontextmanager
async def open_adapters(config: Config) -> AsyncIterator[Adapters]:
    async with AsyncExitStack() as stack:
        ecs = await stack.enter_async_context(
            Ecs.connect(region=config.aws.region, endpoint_url=config.aws.endpoint_url)
        )
        ecr = await stack.enter_async_context(
            Ecr.connect(
                region=config.aws.region,
                endpoint_url=config.aws.endpoint_url,
                registry_override=config.aws.registry,
            )
        )
        docker = DockerEngine(url=config.daemon.docker_host or None)
        stack.push_async_callback(docker.close)
        registry = Registry()
        stack.push_async_callback(registry.close)
        git = GitMirrors(config.daemon.state_dir)
        stack.callback(git.close)
        yield Adapters(git=git, docker=docker, registry=registry, ecr=ecr, ecs=ecs)


def _digest(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()


class Supervisor:
    def __init__(
        self,
        *,
        config: Config,
        config_path: Path | None = None,
        timings: backoff.Timings | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self._config_path = config_path
        # The bytes last read from the file, good or bad; None once it could not be read, so
        # the file reappearing is noticed even with the same content.
        self._config_bytes: bytes | None = config_path.read_bytes() if config_path else b""
        self.config_in_force = ConfigInForce(
            path=str(config_path) if config_path else None,
            sha256=_digest(self._config_bytes or b""),
        )
        self.timings = timings or backoff.Timings()
        self.notifier = notifier or Notifier()
        self.metrics = Metrics()
        self.statuses: dict[str, AppStatus] = {}
        self.loops: dict[str, AppLoop] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._adapters: Adapters | None = None
        self._store = StateStore(config.daemon.state_dir)
        self._build_slots = asyncio.Semaphore(config.daemon.max_concurrent_builds)
        self._stop = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self.listening: tuple[str, int] | None = None

    # Queries used by the HTTP layer ------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Every app of the config in force has been observed at least once."""
        return not self.waiting_for()

    def waiting_for(self) -> list[str]:
        """The configured apps not yet observed once (an app just added by a reload too)."""
        return [
            name
            for name in self.app_names()
            if name not in self.statuses or not self.statuses[name].observed
        ]

    @property
    def alive(self) -> bool:
        return all(not t.done() for t in self._tasks.values())

    def app_names(self) -> list[str]:
        return [a.name for a in self.config.apps]

    def nudge_matching(self, event: PushEvent) -> list[str]:
        nudged = []
        for app in self.config.apps:
            if matches(event, repo_url=app.repo, branch=app.branch) and app.name in self.loops:
                self.loops[app.name].nudge()
                nudged.append(app.name)
        if nudged:
            log.info("webhook_nudged", apps=nudged)
        return nudged

    def sync(self, name: str) -> bool:
        """Clear the app's Failed hold and start a pass; False if it has no loop right now
        (unknown, or restarting after a config change)."""
        loop = self.loops.get(name)
        if loop is None:
            return False
        log.info("sync_requested", app=name)
        loop.sync()
        return True

    # Running -------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        """Read the config file again now (SIGHUP), even if it looks unchanged."""
        self._reload_requested.set()

    async def run(self, *, install_signals: bool = True) -> None:
        """Run until request_stop() (or SIGTERM/SIGINT); then shut down within the grace."""
        from reconciler.http import build_app  # the HTTP layer depends on us, not the reverse

        if install_signals:
            self._install_signals()
        async with open_adapters(self.config) as adapters:
            self._adapters = adapters
            runner = web.AppRunner(
                build_app(self),
                access_log=None,
                handle_signals=False,
                shutdown_timeout=HTTP_GRACE,
            )
            await runner.setup()
            await self._listen(runner)
            for app in self.config.apps:
                self._start_app(app)
            self.notifier.ready(self._summary())
            background = [
                asyncio.create_task(
                    self.notifier.watchdog(healthy=lambda: self.alive), name="systemd-watchdog"
                ),
                asyncio.create_task(self._watch_config(), name="config-watch"),
                asyncio.create_task(self._report_status(), name="systemd-status"),
            ]
            try:
                await self._stop.wait()
            finally:
                log.info("stopping", apps=len(self._tasks))
                self.notifier.stopping()
                for task in background:
                    task.cancel()
                await self._stop_apps(list(self._tasks))
                await asyncio.gather(*background, return_exceptions=True)
                await runner.cleanup()
                self._adapters = None
        log.info("stopped")

    async def _listen(self, runner: web.AppRunner) -> None:
        daemon = self.config.daemon
        site = web.TCPSite(runner, daemon.host, daemon.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ReconcilerError(
                f"daemon.listen: cannot listen on {daemon.listen}: {exc.strerror or exc}"
            ) from exc
        if runner.addresses:
            host, port = runner.addresses[0][:2]
            self.listening = (str(host), int(port))
        port = self.listening[1] if self.listening else daemon.port
        log.info("listening", address=f"{daemon.host}:{port}")

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)

    def _start_app(self, app: AppConfig) -> None:
        assert self._adapters is not None
        status = self.statuses.get(app.name) or AppStatus(name=app.name)
        self.statuses[app.name] = status
        loop = AppLoop(
            app=app,
            poll_interval=self.config.daemon.poll_interval,
            adapters=self._adapters,
            build_slots=self._build_slots,
            store=self._store,
            status=status,
            metrics=self.metrics,
            timings=self.timings,
        )
        self.loops[app.name] = loop
        # The series exists (0) from the start, so "not in sync yet" is visible as such.
        self.metrics.app_in_sync.labels(app=app.name)
        self._tasks[app.name] = asyncio.create_task(loop.run(), name=f"app:{app.name}")
        log.info("app_started", app=app.name)

    async def _stop_apps(self, names: Iterable[str]) -> None:
        names = list(names)
        loops = [self.loops.pop(n) for n in names if n in self.loops]
        tasks = [self._tasks.pop(n) for n in names if n in self._tasks]
        await asyncio.gather(*(loop.quiesce(STOP_GRACE) for loop in loops))
        for task in tasks:
            task.cancel()
        done, pending = await asyncio.wait(tasks, timeout=1.0) if tasks else (set(), set())
        for task in pending:
            log.error("app_loop_did_not_stop", task=task.get_name())
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("app_loop_crashed", task=task.get_name(), error=str(task.exception()))

    # Reload ----------------------------------------------------------------------------

    async def _watch_config(self) -> None:
        if self._config_path is None:
            return
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reload_requested.wait(), CONFIG_CHECK_INTERVAL)
            forced = self._reload_requested.is_set()
            self._reload_requested.clear()
            try:
                await self._check_config(self._config_path, forced=forced)
            except Exception:
                # A bug here must not end reloading for the rest of the daemon's life.
                log.exception("config_reload_crashed")

    async def _check_config(self, path: Path, *, forced: bool) -> None:
        try:
            current = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            if self._config_bytes is not None:  # reported once, not every second
                self._config_bytes = None
                reason = "file not found" if isinstance(exc, FileNotFoundError) else exc.strerror
                self._reject_config([f"{path}: {reason}"])
            return
        if current == self._config_bytes and not forced:
            return
        if not forced:
            await asyncio.sleep(CONFIG_SETTLE)
            try:
                settled = await asyncio.to_thread(path.read_bytes)
            except OSError:
                return  # the next check reports it
            if settled != current:
                return  # still being written; the next check looks again
        self._config_bytes = current
        try:
            # Parsed from the very bytes whose digest is reported as the config in force.
            new = parse_config(current.decode("utf-8"), source=str(path))
        except UnicodeDecodeError as exc:
            self._reject_config([f"{path}: cannot read: {exc}"])
            return
        except ConfigError as exc:
            self._reject_config(exc.problems)
            return
        await self.apply(new, sha256=_digest(current))

    def _reject_config(self, problems: list[str]) -> None:
        self.config_in_force.last_error = "; ".join(problems)
        self.metrics.config_reloads_total.labels(outcome="invalid").inc()
        log.error(
            "config_invalid_keeping_last_good",
            problems=problems,
            config_sha256=self.config_in_force.sha256,
        )

    async def apply(self, new: Config, *, sha256: str) -> None:
        """Apply a validated config: start added apps, stop removed ones, restart changed ones."""
        old = self.config
        # The AWS clients, the HTTP socket, the state store and the Docker client are opened
        # once; [webhook] and daemon.api_token_file are read per request and apply at once.
        if old.aws != new.aws:
            log.warning("config_change_needs_restart", section="aws")
        fixed = ("listen", "state_dir", "docker_host", "log_format")
        moved = [k for k in fixed if getattr(old.daemon, k) != getattr(new.daemon, k)]
        if moved:
            log.warning("config_change_needs_restart", section="daemon", keys=moved)
        # A loop takes poll_interval and the build semaphore when it starts: changing either
        # restarts every app (each resumes from what git and ECS say, so nothing is lost).
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
            self._build_slots = asyncio.Semaphore(new.daemon.max_concurrent_builds)
            changed = sorted(set(new_apps) - set(added))
        self.config = new
        await self._stop_apps(removed + changed)
        for name in removed:
            self.statuses.pop(name, None)
            self.metrics.forget_app(name)
        for name in changed + added:
            self._start_app(new_apps[name])
        self.config_in_force = ConfigInForce(path=self.config_in_force.path, sha256=sha256)
        self.metrics.config_reloads_total.labels(outcome="applied").inc()
        log.info(
            "config_reloaded", added=added, removed=removed, changed=changed, config_sha256=sha256
        )

    # systemd ---------------------------------------------------------------------------

    def _summary(self) -> str:
        phases = [s.phase for s in self.statuses.values()]
        in_sync = sum(p is Phase.IN_SYNC for p in phases)
        failed = sum(p is Phase.FAILED for p in phases)
        busy = sum(p in {Phase.BUILDING, Phase.PUSHING, Phase.DEPLOYING} for p in phases)
        return f"{len(phases)} apps: {in_sync} in sync, {busy} deploying, {failed} failed"

    async def _report_status(self) -> None:
        if not self.notifier.enabled:
            return
        last = ""
        while True:
            await asyncio.sleep(2.0)
            summary = self._summary()
            if summary != last:
                self.notifier.status(summary)
                last = summary
