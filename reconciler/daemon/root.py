"""The composition root: opens the adapters, wires the supervisor, the web app, the config
watcher and systemd, owns the signals, and watches every background task.

Signals only set flags. A background task that dies (the watchdog, the config watcher, the
status reporter) is logged and stops the daemon cleanly, then the failure is raised, so
systemd restarts a daemon that can no longer do its job instead of keeping a half-alive one.
Shutdown stops the app loops (a deploy under way may finish, bounded), closes the HTTP
server and the adapters. A rollout in flight is left to ECS and awaited on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from reconciler import logs
from reconciler.adapters.accounts import Accounts
from reconciler.adapters.build_secrets import BuildSecrets
from reconciler.adapters.buildcontext import ContextLimits
from reconciler.adapters.docker import DockerEngine
from reconciler.adapters.ecr import Ecr
from reconciler.adapters.ecs import Ecs
from reconciler.adapters.engines import EnginePool
from reconciler.adapters.git import GitMirrors, source_of
from reconciler.adapters.housekeeping import Housekeeping
from reconciler.adapters.lookups import TemplateLookups
from reconciler.adapters.metrics import MetricSources
from reconciler.adapters.ports import Adapters, GitPort
from reconciler.adapters.registry import Registry
from reconciler.adapters.schedules import Schedules
from reconciler.adapters.verification import Verifier
from reconciler.aio import backoff
from reconciler.api.admin import build_admin_app
from reconciler.api.hooks import build_webhook_app
from reconciler.app.events import EventBus
from reconciler.app.state import FileStateStore, StateStore
from reconciler.cluster.manager import LeaseManager, Tenant
from reconciler.cluster.ownership import ClusterOwnership, TableHealth
from reconciler.cluster.store import TableStateStore
from reconciler.cluster.table import LeaseTable
from reconciler.config import Config
from reconciler.daemon.access import announce, open_access
from reconciler.daemon.applier import ReloadApplier
from reconciler.daemon.in_force import InForce
from reconciler.daemon.listener import listen, runner_options
from reconciler.daemon.ownership import Alone, Ownership
from reconciler.daemon.reload import ConfigWatcher, digest
from reconciler.daemon.supervisor import Supervisor
from reconciler.daemon.systemd import Notifier
from reconciler.daemon.view import StatusView
from reconciler.daemon.wiring import AccountClients, LoopMaker
from reconciler.errors import HostIdInUse, ReconcilerError
from reconciler.feedback import Dispatcher
from reconciler.metrics import Metrics

log = structlog.get_logger("reconciler.daemon")

HTTP_GRACE = 0.5  # requests in progress at shutdown get this long to finish
STATUS_EVERY = 2.0  # seconds between systemd STATUS= checks


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
        docker: DockerEngine | EnginePool
        if config.build.engines:
            docker = EnginePool.open(
                config.build.engines,
                tls=config.build.tls_files(),
                builder=config.build.builder,
                network=config.build.network,
                max_per_engine=config.build.max_per_engine,
                build_timeout=config.build.timeout,
            )
        else:
            docker = DockerEngine(
                url=config.daemon.docker_host or None,
                builder=config.build.builder,
                network=config.build.network,
                build_timeout=config.build.timeout,
            )
        stack.push_async_callback(docker.close)
        registry = Registry()
        stack.push_async_callback(registry.close)
        git = GitMirrors(
            config.daemon.state_dir,
            context_limits=ContextLimits(
                max_context_mb=config.build.max_context_mb, max_file_mb=config.build.max_file_mb
            ),
        )
        git.track(source_of(app) for app in config.apps)
        stack.callback(git.close)
        housekeeping = await stack.enter_async_context(
            Housekeeping.connect(region=config.aws.region, endpoint_url=config.aws.endpoint_url)
        )
        secrets = BuildSecrets(region=config.aws.region, endpoint_url=config.aws.endpoint_url)
        lookups = TemplateLookups(
            region=config.aws.region,
            endpoint_url=config.aws.endpoint_url,
            env_allow=config.definitions.env_allow,
        )
        yield Adapters(
            git=git,
            docker=docker,
            registry=registry,
            ecr=ecr,
            ecs=ecs,
            secrets=secrets,
            housekeeping=housekeeping,
            lookups=lookups,
            verifier=Verifier(region=config.aws.region, endpoint_url=config.aws.endpoint_url),
            schedules=Schedules(region=config.aws.region, endpoint_url=config.aws.endpoint_url),
            metrics=MetricSources(region=config.aws.region, endpoint_url=config.aws.endpoint_url),
        )


def host_id_of(config: Config) -> str:
    return config.cluster.host_id or f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Cluster:
    """The daemon's share of `[cluster].lease_table`: who owns which app, the app state kept
    in the table, and the lease manager to run once the daemon's apps can be handed over."""

    ownership: ClusterOwnership
    store: TableStateStore
    table: LeaseTable
    url: str
    metrics: Metrics
    health: TableHealth

    def manager(
        self, tenant: Tenant, *, adopt_feedback: Callable[[str, str | None], None]
    ) -> LeaseManager:
        return LeaseManager(
            ownership=self.ownership,
            table=self.table,
            store=self.store,
            tenant=tenant,
            url=self.url,
            metrics=self.metrics,
            health=self.health,
            adopt_feedback=adopt_feedback,
        )


@asynccontextmanager
async def open_cluster(config: Config, metrics: Metrics) -> AsyncIterator[Cluster | None]:
    """The daemon's share of `[cluster].lease_table`; None when this daemon is alone."""
    if not config.cluster.enabled:
        yield None
        return
    async with LeaseTable.connect(
        name=config.cluster.lease_table,
        region=config.aws.region,
        endpoint_url=config.aws.endpoint_url,
    ) as table:
        daemon = config.daemon
        host_id = host_id_of(config)
        health = TableHealth(metrics)
        yield Cluster(
            ownership=ClusterOwnership(
                table=table, host_id=host_id, ttl=config.cluster.lease_ttl, health=health
            ),
            store=TableStateStore(table, host_id=host_id),
            table=table,
            # Until the admin listener is bound (its port may be chosen then).
            url=daemon.public_url or f"http://{daemon.admin_listen}",
            metrics=metrics,
            health=health,
        )


def register_secrets(config: Config) -> None:
    """Every secret the config names is scrubbed from every log line, from now on."""
    files = [
        config.webhook.github_secret_file,
        config.webhook.gitlab_token_file,
        config.daemon.api_token_file,
        config.github.token_file,
        config.gitlab.token_file,
    ]
    files += [a.git_token_file for a in config.apps]
    for file in files:
        if file is not None:
            with contextlib.suppress(OSError):
                logs.register_secret(file.read_text().strip())


class Daemon:
    def __init__(
        self,
        *,
        config: Config,
        config_path: Path | None = None,
        timings: backoff.Timings | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self._config_path = config_path
        self._config_text = config_path.read_bytes() if config_path else b""
        self.in_force = InForce(
            config,
            sha256=digest(self._config_text),
            path=str(config_path) if config_path else None,
        )
        self.timings = timings or backoff.Timings()
        self.metrics = Metrics()
        self.bus = EventBus()
        self.notifier = notifier or Notifier()
        # Feedback and the app side, made in run() once the adapters and the lease table
        # are open.
        self.feedback: Dispatcher | None = None
        self.supervisor: Supervisor | None = None
        self._reload = asyncio.Event()
        self._stop = asyncio.Event()
        self.listening: tuple[str, int] | None = None  # the webhook listener
        self.admin_listening: tuple[str, int] | None = None
        self._sites: dict[web.AppRunner, tuple[str, int]] = {}
        register_secrets(config)

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        """Read the config file again now (SIGHUP), even if it looks unchanged."""
        self._reload.set()

    def _open_feedback(self, git: GitPort) -> Dispatcher:
        """Commit statuses, deployments and chat messages; it reads the config in force at
        each use, so a reload applies to it without a restart. Subscribed to the events
        from now on, before any pass begins."""
        return Dispatcher(
            config=lambda: self.in_force.config,
            bus=self.bus,
            registry=self.metrics.registry,
            state_dir=self.in_force.config.daemon.state_dir,
            git=git,
            retry_base=self.timings.retry_base,
            retry_cap=self.timings.retry_cap,
        )

    def _supervise(
        self,
        adapters: Adapters,
        accounts: AccountClients,
        cluster: Cluster | None,
        feedback: Dispatcher,
    ) -> Supervisor:
        """The app side: alone, every app runs here with its state in state_dir; with a
        cluster, the apps whose lease this daemon holds, with their state in the table."""
        ownership: Ownership = Alone() if cluster is None else cluster.ownership
        store: StateStore = (
            FileStateStore(self.in_force.config.daemon.state_dir)
            if cluster is None
            else cluster.store
        )
        return Supervisor(
            in_force=self.in_force,
            maker=LoopMaker(
                in_force=self.in_force,
                adapters=adapters,
                accounts=accounts,
                ownership=ownership,
                store=store,
                metrics=self.metrics,
                bus=self.bus,
                timings=self.timings,
            ),
            ownership=ownership,
            store=store,
            git=adapters.git,
            metrics=self.metrics,
            bus=self.bus,
            feedback_status=lambda: {
                "problems": feedback.problems(),
                "pending": feedback.pending(),
            },
        )

    def _watch_config(self, reload: ReloadApplier) -> asyncio.Task[None] | None:
        if self._config_path is None:
            return None

        async def apply(config: Config, sha256: str) -> None:
            register_secrets(config)
            await reload.apply(config, sha256=sha256)

        watcher = ConfigWatcher(
            self._config_path,
            current=self._config_text,
            apply=apply,
            reject=reload.reject,
            requested=self._reload,
        )
        return asyncio.create_task(watcher.run(), name="config-watch")

    async def run(self, *, install_signals: bool = True) -> None:
        """Run until request_stop() (or SIGTERM/SIGINT); then shut down within the grace."""
        if install_signals:
            self._install_signals()
        failure: BaseException | None = None
        config = self.in_force.config
        async with (
            open_adapters(config) as adapters,
            Accounts.open(
                endpoint_url=config.aws.endpoint_url, registry_override=config.aws.registry
            ) as accounts,
            open_cluster(config, self.metrics) as cluster,
        ):
            self.feedback = feedback = self._open_feedback(adapters.git)
            self.supervisor = supervisor = self._supervise(adapters, accounts, cluster, feedback)
            leases = None
            if cluster is not None:
                # What was said about an app's commits moves with its lease.
                leases = cluster.manager(supervisor.tenant, adopt_feedback=feedback.adopt_record)
                feedback.mirror_records(cluster.ownership.mirror_feedback)
            daemon = config.daemon
            access, made = open_access(
                config,
                listening=self._admin_address,
                public_url=lambda: self.in_force.config.daemon.public_url,
                table=cluster.table if cluster is not None else None,
                host_id=host_id_of(config),
            )
            hooks = await self._serve(
                build_webhook_app(supervisor.view, supervisor.steering),
                host=daemon.host,
                port=daemon.port,
            )
            try:
                admin = await self._serve(
                    build_admin_app(supervisor.view, supervisor.steering, access),
                    host=daemon.admin_host,
                    port=daemon.admin_port,
                )
            except BaseException:
                await hooks.cleanup()
                raise
            self.listening = self._bound_of(hooks)
            self.admin_listening = self._bound_of(admin)
            log.info(
                "listening",
                address=f"{daemon.host}:{self.listening[1]}",
                admin_address=self._admin_address(),
            )
            if made is not None:
                announce(made, base=daemon.public_url or f"http://{self._admin_address()}")
            await supervisor.start()
            self.notifier.ready(supervisor.view.summary())
            background = self._background(supervisor, feedback)
            if leases is not None:
                # Where the other daemons' pages link to this one's: the bound admin port.
                leases.url = daemon.public_url or f"http://{self._admin_address()}"
                background.add(asyncio.create_task(leases.run(), name="leases"))
            try:
                failure = await self._until_stopped(background)
            finally:
                log.info("stopping", apps=len(supervisor.apps.loops))
                self.notifier.stopping()
                for task in background:
                    task.cancel()
                await supervisor.stop()
                await asyncio.gather(*background, return_exceptions=True)
                if leases is not None:
                    # The apps move to the other daemons at their next look, not after the TTL.
                    await leases.leave()
                # What the last passes said goes out now if the targets answer within a second.
                await feedback.close()
                await admin.cleanup()
                await hooks.cleanup()
        log.info("stopped")
        if isinstance(failure, HostIdInUse):
            raise failure
        if failure is not None:
            raise ReconcilerError(f"stopped because a background task failed: {failure}") from (
                failure
            )

    def _bound_of(self, runner: web.AppRunner) -> tuple[str, int]:
        return self._sites[runner]

    def _admin_address(self) -> str:
        host = self.in_force.config.daemon.admin_host
        port = self.admin_listening[1] if self.admin_listening is not None else 0
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def _serve(self, app: web.Application, *, host: str, port: int) -> web.AppRunner:
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=HTTP_GRACE,
            **runner_options(),
        )
        await runner.setup()
        try:
            self._sites[runner] = await listen(runner, host=host, port=port)
        except BaseException:
            await runner.cleanup()
            raise
        return runner

    def _background(self, supervisor: Supervisor, feedback: Dispatcher) -> set[asyncio.Task[None]]:
        view = supervisor.view
        tasks = {
            asyncio.create_task(
                self.notifier.watchdog(healthy=lambda: view.alive), name="systemd-watchdog"
            ),
            asyncio.create_task(self._report_status(view), name="systemd-status"),
            asyncio.create_task(feedback.run(), name="feedback"),
        }
        watching = self._watch_config(supervisor.reload)
        if watching is not None:
            tasks.add(watching)
        return tasks

    async def _until_stopped(self, background: set[asyncio.Task[None]]) -> BaseException | None:
        """Wait for a stop request; a background task that raises ends the wait too."""
        stop = asyncio.create_task(self._stop.wait(), name="stop-requested")
        watched: set[asyncio.Task[Any]] = {stop, *background}
        try:
            while True:
                done, watched = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                if stop in done:
                    return None
                for task in done:
                    if not task.cancelled() and task.exception() is not None:
                        error = task.exception()
                        log.error(
                            "background_task_crashed",
                            task=task.get_name(),
                            error=repr(error),
                            exc_info=error,
                        )
                        return error
                # A task that ended without error (nothing to do here) is simply done.
        finally:
            stop.cancel()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)

    async def _report_status(self, view: StatusView) -> None:
        if not self.notifier.enabled:
            return
        last = ""
        while True:
            await asyncio.sleep(STATUS_EVERY)
            summary = view.summary()
            if summary != last:
                self.notifier.status(summary)
                last = summary
