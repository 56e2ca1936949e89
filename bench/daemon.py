"""The daemon as the benchmark runs it: `reconciler run`, plus a window onto its counters.

    python -m bench.daemon CONFIG RUN_DIR

Runs the same Daemon as `reconciler run` (same logging, production timings) in its own
process, so its CPU and memory are its own and the sandbox AWS it talks to is elsewhere. On
top it writes `RUN_DIR/listening.json` once it listens, and on SIGUSR1 it writes
`RUN_DIR/stats.json`: git network operations, passes, and how many DescribeServices requests
the app loops made (to compare with the calls that reached AWS). SIGUSR2 starts pyinstrument
and, the second time, stops it and writes `RUN_DIR/profile.txt` (call tree, then functions
by own time), `profile.html` and the raw session `profile.pyisession`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry

from reconciler import logs
from reconciler.adapters.ecs import Ecs
from reconciler.adapters.git import GitMirrors
from reconciler.adapters.ports import Adapters, TaskDefinition
from reconciler.config import Config, load_config
from reconciler.daemon import root as daemon_module
from reconciler.daemon.access import admin_token_path
from reconciler.daemon.root import Daemon
from reconciler.decisions.model import ServiceState
from tests.support.inprocess import started

if TYPE_CHECKING:
    from pyinstrument import Profiler

_T = TypeVar("_T")


class CountedEcs(Ecs):
    """The daemon's ECS client, counting the app loops' reads as they ask."""

    describe_requests = 0
    task_definition_requests = 0

    async def describe_service(
        self, cluster: str, service: str, *, max_age: float = 0.0
    ) -> ServiceState:
        self.describe_requests += 1
        return await super().describe_service(cluster, service, max_age=max_age)

    async def task_definition(self, arn: str) -> tuple[TaskDefinition, list[Any]]:
        self.task_definition_requests += 1
        return await super().task_definition(arn)


class Instrumented:
    """Keeps the git mirrors and the ECS client the daemon opens, to read their counters."""

    def __init__(self) -> None:
        self.git: GitMirrors | None = None
        self.ecs: CountedEcs | None = None

    def install(self) -> None:
        opened = daemon_module.open_adapters

        @asynccontextmanager
        async def open_adapters(config: Config) -> AsyncIterator[Adapters]:
            async with opened(config) as adapters:
                if isinstance(adapters.git, GitMirrors):
                    self.git = adapters.git
                ecs: object = adapters.ecs
                if isinstance(ecs, Ecs):
                    # The daemon's own client, state and all, from now on counting its reads:
                    # a subclass that only adds counters, so every other call is untouched.
                    ecs.__class__ = CountedEcs
                if isinstance(ecs, CountedEcs):
                    self.ecs = ecs
                yield adapters

        daemon_module.open_adapters = open_adapters

    def counts(self) -> dict[str, int]:
        return {
            "ls_remote_count": self.git.ls_remote_count if self.git else 0,
            "fetch_count": self.git.fetch_count if self.git else 0,
            "describe_requests": self.ecs.describe_requests if self.ecs else 0,
            "task_definition_requests": self.ecs.task_definition_requests if self.ecs else 0,
        }


def passes(registry: CollectorRegistry) -> int:
    """The app loops' passes so far: each ends with one reconcile result counted."""
    return int(
        sum(
            sample.value
            for metric in registry.collect()
            for sample in metric.samples
            if sample.name == "reconciler_reconcile_total"
        )
    )


def _write_json(path: Path, document: dict[str, Any]) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(document))
    partial.replace(path)


class Profiling:
    def __init__(self, run_dir: Path) -> None:
        self._run_dir = run_dir
        self._profiler: Profiler | None = None

    def toggle(self) -> None:
        from pyinstrument import Profiler

        if self._profiler is None:
            self._profiler = Profiler(interval=0.0005, async_mode="disabled")
            self._profiler.start()
            return
        profiler, self._profiler = self._profiler, None
        profiler.stop()
        tree = profiler.output_text(unicode=False, color=False, show_all=False)
        flat = profiler.output_text(unicode=False, color=False, flat=True)
        top = "\n".join(flat.splitlines()[:60])
        (self._run_dir / "profile.txt").write_text(f"{tree}\n\nBy own time:\n{top}\n")
        (self._run_dir / "profile.html").write_text(profiler.output_html())
        profiler.last_session.save(str(self._run_dir / "profile.pyisession"))
        _write_json(self._run_dir / "profile.done", {"t": time.monotonic()})


async def serve(config_path: Path, run_dir: Path) -> None:
    config = load_config(config_path)
    logs.configure(log_format=config.daemon.log_format)
    instrumented = Instrumented()
    instrumented.install()
    daemon = Daemon(config=config, config_path=config_path)
    profiling = Profiling(run_dir)

    def stats() -> None:
        supervisor = daemon.supervisor
        counts = instrumented.counts()
        _write_json(
            run_dir / "stats.json",
            {
                "t": time.monotonic(),
                "ls_remote_count": counts["ls_remote_count"],
                "fetch_count": counts["fetch_count"],
                "passes": passes(daemon.metrics.registry),
                "apps": len(supervisor.apps.loops) if supervisor is not None else 0,
                "describe_requests": counts["describe_requests"],
                "task_definition_requests": counts["task_definition_requests"],
            },
        )

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, stats)
    loop.add_signal_handler(signal.SIGUSR2, profiling.toggle)
    # The controller gives up on a daemon that has not listened within a minute.
    async with started(daemon, install_signals=True, start_timeout=60) as running:
        assert daemon.listening is not None and daemon.admin_listening is not None
        host, port = daemon.listening
        admin_host, admin_port = daemon.admin_listening
        token = admin_token_path(daemon.in_force.config).read_text().strip()
        _write_json(
            run_dir / "listening.json",
            {
                "host": host,
                "port": port,
                "admin": f"{admin_host}:{admin_port}",
                "token": token,
                "pid": os.getpid(),
            },
        )
        await running  # until a signal stops it, as `reconciler run` does


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m bench.daemon CONFIG RUN_DIR", file=sys.stderr)
        return 2
    asyncio.run(serve(Path(argv[0]), Path(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
