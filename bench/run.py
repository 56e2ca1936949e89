"""`python -m bench.run [--quick] [--no-peer] [--profile]`: run every scenario, print one table.

Needs dockerd and the registry on 127.0.0.1:5000 (`scripts/host-services.sh` starts both);
starts the sandbox AWS itself, makes its git repositories in a temporary directory, and
installs the peer (ecs-deploy) into bench/.venv-peer on first use. Writes the table and the
raw numbers to bench/out/ (and the profiles with --profile).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import context, events, leases, peer, steady
from bench.race import race
from bench.registry import Registry
from bench.sandbox import AppSpec, provision_apps, running_sandbox
from bench.stats import Row, render_table
from reconciler.adapters.docker import DockerEngine
from reconciler.errors import ReconcilerError
from reconciler.sandbox import SandboxAws

OUT = Path(__file__).resolve().parent / "out"
# events: webhook latency, rollout detection, deploys (with the peer), builds; race: push to
# live both ways (SPEC 22).
SCENARIOS = ("events", "steady", "leases", "context", "race")
# Scenarios that need dockerd and the registry (the leases need neither).
NEEDS_DOCKER = frozenset(("events", "steady", "context", "race"))


@dataclass(frozen=True)
class Options:
    quick: bool
    peer: bool
    profile: bool
    out: Path
    keep: bool
    only: frozenset[str]


def parse(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    parser.add_argument("--no-peer", action="store_true", help="skip the ecs-deploy columns")
    parser.add_argument(
        "--profile", action="store_true", help="also profile the daemon (needs pyinstrument)"
    )
    parser.add_argument("--out", type=Path, default=OUT, help="where results go")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios to run, of {', '.join(SCENARIOS)} (default: all)",
    )
    args = parser.parse_args(argv)
    only = frozenset(s.strip() for s in args.only.split(",") if s.strip())
    if not only or only - set(SCENARIOS):
        parser.error(f"--only takes scenarios from {', '.join(SCENARIOS)}")
    return Options(args.quick, not args.no_peer, args.profile, args.out, args.keep, only)


def machine() -> dict[str, str]:
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kilobytes = int(meminfo.read_text().split("\n")[0].split()[1])
        memory = f"{kilobytes / 1024 / 1024:.1f} GiB"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "memory": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load": " ".join(f"{v:.2f}" for v in os.getloadavg()),
    }


class Progress:
    def __init__(self) -> None:
        self.began = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.began:6.1f}s] {message}", file=sys.stderr, flush=True)


async def check_services(registry: Registry) -> None:
    if not registry.up():
        raise SystemExit(f"no registry at {registry.host} (scripts/host-services.sh starts one)")
    engine = DockerEngine()
    try:
        await engine.ping()
    except ReconcilerError as exc:
        raise SystemExit(f"no Docker engine: {exc}") from exc
    finally:
        await engine.close()


async def run(options: Options) -> list[Row]:
    log = Progress()
    registry = Registry()
    if options.only & NEEDS_DOCKER:
        await check_services(registry)
    the_peer: peer.Peer | None = None
    if options.peer and "events" in options.only:
        the_peer = peer.ensure_peer(log)
        log(f"peer: ecs-deploy {the_peer.version} (botocore {the_peer.botocore})")
    root = Path(tempfile.mkdtemp(prefix="reconciler-bench-"))
    options.out.mkdir(parents=True, exist_ok=True)
    raw: dict[str, Any] = {"machine": machine(), "quick": options.quick}
    rows: list[Row] = []
    build_rows: list[Row] = []
    try:
        with running_sandbox() as aws:
            log(f"sandbox AWS at {aws.endpoint_url}")
            if "events" in options.only:
                event_rows, build_rows = await run_events(
                    options,
                    aws=aws,
                    registry=registry,
                    root=root,
                    the_peer=the_peer,
                    raw=raw,
                    log=log,
                )
                rows += event_rows
            if "steady" in options.only:
                sizes = steady.QUICK if options.quick else steady.FULL
                steady_results = await steady.run_steady(
                    aws, registry, root / "steady", sizes, profile=options.profile, log=log
                )
                raw["steady"] = asdict(steady_results)
                rows += steady.steady_rows(steady_results, quick=options.quick)
                if options.profile:
                    save_profile(options.out, "steady", steady_results.profile)
            if "leases" in options.only:
                lease_sizes = leases.QUICK if options.quick else leases.FULL
                lease_results = await leases.run_leases(aws, root / "leases", lease_sizes, log=log)
                raw["leases"] = asdict(lease_results)
                rows += leases.lease_rows(lease_results)
            if "race" in options.only:
                race_sizes = race.QUICK if options.quick else race.FULL
                race_results = await race.run_race(
                    aws, registry, root / "race", race_sizes, log=log
                )
                raw["race"] = asdict(race_results)
                rows += race.race_rows(race_results, quick=options.quick)
                name = "quick" if options.quick else "full"
                (options.out / f"race-stages-{name}.md").write_text(
                    race.stage_table(race_results) + "\n"
                )
        if "context" in options.only:
            log("build context export")
            context_sizes = context.QUICK if options.quick else context.FULL
            context_results = await context.run_context(root / "context", context_sizes, log=log)
            raw["context"] = asdict(context_results)
            rows += context.context_rows(context_results)
        rows += build_rows
    finally:
        if options.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    raw["rows"] = [asdict(r) for r in rows]
    name = "quick" if options.quick else "full"
    (options.out / f"results-{name}.json").write_text(json.dumps(raw, indent=1, default=str))
    log("done")
    return rows


async def run_events(
    options: Options,
    *,
    aws: SandboxAws,
    registry: Registry,
    root: Path,
    the_peer: peer.Peer | None,
    raw: dict[str, Any],
    log: Progress,
) -> tuple[list[Row], list[Row]]:
    """The webhook-driven scenarios on one daemon, then the peer on services like them.

    Returns the rows, and apart the build row (the table shows it last).
    """
    sizes = events.QUICK if options.quick else events.FULL
    log("making repositories and services")
    world = events.EventWorld.create(aws, registry, root / "events", sizes)
    n = sizes.deploy_services
    sequential = [
        AppSpec(f"seq-{i:02d}", "bench-seq", "file:///dev/null", world.deploy[i].image)
        for i in range(n)
    ]
    parallel = [
        AppSpec(f"par-{i:02d}", "bench-par", "file:///dev/null", world.deploy[i].image)
        for i in range(n)
    ]
    provision_apps(aws, sequential + parallel)
    results = await events.run_events(
        world, root / "events-daemon", profile=options.profile, log=log
    )
    raw["events"] = asdict(results)
    if options.profile:
        save_profile(options.out, "webhook", results.profile)
    peer_results = peer.PeerResults(skipped="" if the_peer else "--no-peer")
    if the_peer is not None:
        rounds = 1 if options.quick else 3
        log(f"peer: {n} sequential and {n} parallel `ecs deploy` x {rounds}")
        peer_results = await peer.run_peer(
            the_peer, aws, registry, sequential=sequential, parallel=parallel, rounds=rounds
        )
    raw["peer"] = asdict(peer_results)
    rows = events.latency_rows(results) + events.detection_rows(results, sizes.detection_after)
    rows += peer.deploy_rows(
        services=n,
        daemon_wall=results.deploy_wall,
        daemon_calls=results.deploy_calls,
        peer=peer_results,
        quick=options.quick,
    )
    return rows, events.build_rows(results)


def save_profile(out: Path, name: str, profile: str) -> None:
    (out / f"profile-{name}.txt").write_text(profile)


def raw_load(options: Options) -> str:
    name = "quick" if options.quick else "full"
    raw = json.loads((options.out / f"results-{name}.json").read_text())
    return str(raw["machine"]["load"])


def main(argv: list[str] | None = None) -> int:
    options = parse(sys.argv[1:] if argv is None else argv)
    rows = asyncio.run(run(options))
    info = machine()
    header = (
        f"reconciler benchmark ({'quick' if options.quick else 'full'}), {info['date']}: "
        f"{info['nproc']} cores, {info['memory']}, Linux {info['kernel']}, "
        f"Python {info['python']}; load average at the start {raw_load(options)}, "
        f"at the end {info['load']}"
    )
    table = render_table(rows)
    name = "quick" if options.quick else "full"
    (options.out / f"table-{name}.md").write_text(header + "\n\n" + table + "\n")
    print(header)
    print()
    print(table)
    return 0 if all(r.ours != "n/a" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
