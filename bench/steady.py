"""Steady state: many apps, nothing changes, the daemon polls. What does a pass cost?

The window starts once /readyz says every app was observed once (the first pass), and is cut
into poll-interval slices. Per slice: AWS calls the sandbox saw, the daemon's git network
operations and passes (its own counters), CPU time from /proc; RSS is sampled every second.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.control import Daemon, config_text, running_daemon
from bench.events import DOCKERFILE
from bench.registry import Registry
from bench.sandbox import AppSpec, provision_apps, timed_calls
from bench.stats import Row, Summary, number, spread
from reconciler.sandbox import SandboxAws
from tests.support.gitrepo import GitRepo

MB = 1024 * 1024


@dataclass(frozen=True)
class SteadySizes:
    apps: int
    clusters: int
    repos: int
    poll_interval: float
    slices: int  # poll intervals measured after the first pass


FULL = SteadySizes(apps=500, clusters=5, repos=50, poll_interval=30, slices=3)
QUICK = SteadySizes(apps=20, clusters=2, repos=4, poll_interval=3, slices=2)


@dataclass
class SteadyResults:
    sizes: SteadySizes
    per_cluster: dict[str, int] = field(default_factory=dict)
    first_pass_seconds: float = math.nan
    first_pass_calls: dict[str, int] = field(default_factory=dict)
    passes: list[float] = field(default_factory=list)  # app passes / apps, per slice
    describe_calls: list[int] = field(default_factory=list)  # per slice
    ls_remote_calls: list[int] = field(default_factory=list)  # per slice
    describe_per_pass: list[float] = field(default_factory=list)  # per slice of >= 0.5 pass
    task_definition_calls: list[int] = field(default_factory=list)
    ls_remote_per_pass: list[float] = field(default_factory=list)
    fetches: list[int] = field(default_factory=list)
    other_calls: Counter[str] = field(default_factory=Counter)
    cpu_percent: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    profile: str = ""


def make_apps(registry: Registry, root: Path, sizes: SteadySizes) -> list[AppSpec]:
    heads: list[tuple[str, str]] = []
    for index in range(sizes.repos):
        repo = GitRepo(root / "repos" / f"steady-{index:02d}")
        head = repo.commit({"Dockerfile": DOCKERFILE, "app.txt": f"repo {index}\n"}, "first")
        heads.append((repo.url, head))
    apps = []
    for index in range(sizes.apps):
        url, head = heads[index % sizes.repos]
        name = f"st-{index:03d}"
        cluster = f"bench-steady-{index % sizes.clusters}"
        apps.append(AppSpec(name, cluster, url, f"{registry.host}/{name}:{head}"))
    return apps


async def run_steady(
    aws: SandboxAws,
    registry: Registry,
    root: Path,
    sizes: SteadySizes,
    *,
    profile: bool,
    log: Any,
) -> SteadyResults:
    results = SteadyResults(sizes)
    log(f"steady state: provisioning {sizes.apps} apps in {sizes.clusters} clusters")
    apps = make_apps(registry, root, sizes)
    provision_apps(aws, apps)
    results.per_cluster = dict(Counter(a.cluster for a in apps))
    run_dir = root / "steady-daemon"
    config = config_text(
        state_dir=run_dir / "state",
        secret_file=run_dir / "secret",
        endpoint_url=aws.endpoint_url,
        region=aws.region,
        registry=registry.host,
        apps=apps,
        poll_interval=sizes.poll_interval,
    )
    calls = timed_calls(aws)
    began = time.monotonic()
    async with running_daemon(run_dir=run_dir, config=config) as daemon:
        await daemon.wait_ready(within=600)
        ready = time.monotonic()
        results.first_pass_seconds = ready - began
        results.first_pass_calls = dict(calls.counts(began, ready))
        statuses = await daemon.statuses()
        out_of_sync = [n for n, s in statuses.items() if s["phase"] != "InSync"]
        if out_of_sync:
            raise RuntimeError(f"steady-state apps not InSync after the first pass: {out_of_sync}")
        log(
            f"steady state: first pass took {ready - began:.1f} s; measuring "
            f"{sizes.slices} x {sizes.poll_interval:g} s"
        )
        await _measure(daemon, aws, sizes, results)
        if profile:
            log("profiling the steady state")
            await daemon.toggle_profile()
            await asyncio.sleep(sizes.poll_interval * 2)
            await daemon.toggle_profile()
            results.profile = (daemon.run_dir / "profile.txt").read_text()
    return results


async def _measure(
    daemon: Daemon, aws: SandboxAws, sizes: SteadySizes, results: SteadyResults
) -> None:
    """Slices of one poll interval each; a slice in which no pass started gives no ratio."""
    calls = timed_calls(aws)
    apps = _apps(results)
    start_stats = await daemon.stats()
    start = time.monotonic()
    cpu = daemon.cpu_seconds()
    for _ in range(sizes.slices):
        slice_start, slice_stats, slice_cpu = start, start_stats, cpu
        end = slice_start + sizes.poll_interval
        while (now := time.monotonic()) < end:
            results.rss_mb.append(daemon.rss_bytes() / MB)
            await asyncio.sleep(min(1.0, end - now))
        start_stats = await daemon.stats()
        start = time.monotonic()
        cpu = daemon.cpu_seconds()
        counts = calls.counts(slice_start, start)
        results.cpu_percent.append((cpu - slice_cpu) / (start - slice_start) * 100)
        results.task_definition_calls.append(counts.pop("DescribeTaskDefinition", 0))
        results.fetches.append(start_stats["fetch_count"] - slice_stats["fetch_count"])
        describe = counts.pop("DescribeServices", 0)
        ls_remote = start_stats["ls_remote_count"] - slice_stats["ls_remote_count"]
        results.other_calls.update(counts)
        passes = (start_stats["passes"] - slice_stats["passes"]) / apps
        results.passes.append(passes)
        results.describe_calls.append(describe)
        results.ls_remote_calls.append(ls_remote)
        if passes >= 0.5:  # a slice with a few stray passes says nothing per pass
            results.describe_per_pass.append(describe / passes)
            results.ls_remote_per_pass.append(ls_remote / passes)


def _apps(results: SteadyResults) -> int:
    return sum(results.per_cluster.values())


def steady_rows(results: SteadyResults, *, quick: bool) -> list[Row]:
    sizes = results.sizes
    floor = sum(math.ceil(n / 10) for n in results.per_cluster.values())
    describe = Summary.of(results.describe_per_pass)
    ls_remote = Summary.of(results.ls_remote_per_pass)
    passes = sum(results.passes)
    cpu_window = statistics.fmean(results.cpu_percent) if results.cpu_percent else math.nan
    describe_window = sum(results.describe_calls) / passes if passes else math.nan
    ls_remote_window = sum(results.ls_remote_calls) / passes if passes else math.nan
    cpu = Summary.of(results.cpu_percent)
    rss = Summary.of(results.rss_mb)
    shape = f"{sizes.apps} apps / {sizes.clusters} clusters / {sizes.repos} repos"
    other = ", ".join(f"{k} {v}" for k, v in sorted(results.other_calls.items())) or "none"
    first = ", ".join(f"{k} {v}" for k, v in sorted(results.first_pass_calls.items()))
    quick_note = (
        f" Quick mode: poll_interval {sizes.poll_interval:g} s, so CPU is not comparable to "
        "the 30 s target and is not judged."
        if quick
        else ""
    )
    return [
        Row(
            f"steady state ({shape}): DescribeServices calls per pass",
            f"{number(describe_window)}; slices {spread(describe)}",
            target=f"<= {floor} (ceil(services per cluster/10) per cluster)",
            met=describe_window <= floor,
            note=(
                f"Each slice is one poll interval ({sizes.poll_interval:g} s) after the first "
                f"pass; per pass = calls in the window / (app passes / apps), then per slice "
                "(slices where under half the apps passed left out); passes per app per "
                f"slice: {', '.join(number(p) for p in results.passes)}. First pass "
                f"({number(results.first_pass_seconds, 's')}): {first}. Other calls in the "
                f"window: {other}.{quick_note}"
            ),
        ),
        Row(
            "same: DescribeTaskDefinition calls after the first pass",
            str(sum(results.task_definition_calls)),
            target="0",
            met=sum(results.task_definition_calls) == 0,
        ),
        Row(
            "same: git ls-remote per pass (one per repo is the floor)",
            f"{number(ls_remote_window)}; slices {spread(ls_remote)}",
            target=f"<= {sizes.repos} (one per repo)",
            met=ls_remote_window <= sizes.repos,
        ),
        Row(
            "same: git fetches after the first pass",
            str(sum(results.fetches)),
            target="0 (no head moved)",
            met=sum(results.fetches) == 0,
        ),
        Row(
            f"same: RSS at poll_interval {sizes.poll_interval:g} s",
            f"{number(rss.median, 'MB')} (max {number(rss.maximum, 'MB')})",
            target="< 200 MB",
            met=rss.maximum < 200,
        ),
        Row(
            f"same: CPU at poll_interval {sizes.poll_interval:g} s",
            f"{number(cpu_window, '%')}; slices {spread(cpu, '%')}",
            target="< 5 % of one core",
            met=None if quick else cpu_window < 5,
        ),
    ]
