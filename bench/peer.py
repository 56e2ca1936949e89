"""The peer, fabfuel/ecs-deploy, in a virtualenv of its own, pointed at the sandbox AWS.

ecs-deploy has no endpoint option; botocore reads `AWS_ENDPOINT_URL` from the environment
since 1.31.57 (boto3 1.28.57), and the pinned ecs-deploy installs a newer one, which
`ensure_peer` checks. It judges a rollout from ListTasks/DescribeTasks: done when the service
has one deployment and desiredCount RUNNING tasks of the new task definition, which the
sandbox keeps per service.

It gets the same job as the daemon: the managed container `app` gets the new image
(`--image app IMAGE`; `--tag` would also retag the sidecar), with its defaults otherwise
(it deregisters the previous task definition, polls every second).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.registry import Registry
from bench.sandbox import CREDENTIALS, AppSpec, timed_calls
from bench.stats import Row, Summary, number, spread
from reconciler.sandbox import SandboxAws

PEER_REQUIREMENT = "ecs-deploy==1.17.0"
VENV = Path(__file__).resolve().parent / ".venv-peer"
# botocore's first release that honours AWS_ENDPOINT_URL.
MIN_BOTOCORE = (1, 31, 57)


@dataclass(frozen=True)
class Peer:
    executable: Path
    version: str
    botocore: str


def ensure_peer(log: object = print) -> Peer:
    """The peer's `ecs` command, installing it into bench/.venv-peer when missing."""
    python = VENV / "bin" / "python"
    executable = VENV / "bin" / "ecs"
    if not executable.exists():
        if callable(log):
            log(f"installing {PEER_REQUIREMENT} into {VENV}")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        installed = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", PEER_REQUIREMENT],
            capture_output=True,
            text=True,
            check=False,
        )
        if installed.returncode != 0:
            shutil.rmtree(VENV, ignore_errors=True)
            raise RuntimeError(
                f"pip install {PEER_REQUIREMENT} failed:\n{installed.stderr[-2000:]}"
            )
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import botocore, importlib.metadata as m; "
            "print(m.version('ecs-deploy'), botocore.__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    version, botocore = probe.stdout.split()
    parts = tuple(int(p) for p in botocore.split(".")[:3])
    if parts < MIN_BOTOCORE:
        raise RuntimeError(f"the peer's botocore {botocore} ignores AWS_ENDPOINT_URL")
    return Peer(executable, version, botocore)


@dataclass
class PeerResults:
    version: str = ""
    sequential_wall: list[float] = field(default_factory=list)
    sequential_calls: list[dict[str, int]] = field(default_factory=list)
    parallel_wall: list[float] = field(default_factory=list)
    parallel_calls: list[dict[str, int]] = field(default_factory=list)
    skipped: str = ""


async def _deploy(peer: Peer, aws: SandboxAws, app: AppSpec, image: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(CREDENTIALS)
    env["AWS_ENDPOINT_URL"] = aws.endpoint_url
    process = await asyncio.create_subprocess_exec(
        str(peer.executable),
        "deploy",
        app.cluster,
        app.name,
        "--image",
        "app",
        image,
        "--region",
        aws.region,
        "--timeout",
        "120",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        tail = output.decode(errors="replace")[-1500:]
        raise RuntimeError(f"ecs deploy {app.name} exited {process.returncode}:\n{tail}")


def _live_image(aws: SandboxAws, app: AppSpec) -> str:
    import boto3

    ecs = boto3.client("ecs", region_name=aws.region, endpoint_url=aws.endpoint_url)
    service = ecs.describe_services(cluster=app.cluster, services=[app.name])["services"][0]
    definition = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])
    containers = definition["taskDefinition"]["containerDefinitions"]
    return str(next(c["image"] for c in containers if c["name"] == "app"))


async def run_peer(
    peer: Peer,
    aws: SandboxAws,
    registry: Registry,
    *,
    sequential: list[AppSpec],
    parallel: list[AppSpec],
    rounds: int,
) -> PeerResults:
    results = PeerResults(version=peer.version)
    calls = timed_calls(aws)
    for round_number in range(rounds):
        for apps, walls, counts, concurrent in (
            (sequential, results.sequential_wall, results.sequential_calls, False),
            (parallel, results.parallel_wall, results.parallel_calls, True),
        ):
            tag = f"peer-{round_number}-{time.monotonic_ns()}"
            images = {a.name: f"{registry.host}/{a.ecr_repository}:{tag}" for a in apps}
            for app in apps:
                registry.push_tag(app.ecr_repository, tag)
            await asyncio.sleep(0.05)
            began = time.monotonic()
            if concurrent:
                await asyncio.gather(*(_deploy(peer, aws, a, images[a.name]) for a in apps))
            else:
                for app in apps:
                    await _deploy(peer, aws, app, images[app.name])
            done = time.monotonic()
            walls.append(done - began)
            counts.append(dict(calls.counts(began, done)))
            for app in apps:
                live = _live_image(aws, app)
                if live != images[app.name]:
                    raise RuntimeError(f"ecs-deploy reported success but {app.name} runs {live}")
    return results


def _per_deploy(counts: list[dict[str, int]], services: int) -> Summary:
    return Summary.of([sum(c.values()) / services for c in counts])


def _breakdown(counts: list[dict[str, int]], services: int) -> str:
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c)
    rounds = max(1, len(counts))
    parts = sorted(total.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {number(v / rounds / services)}" for k, v in parts)


def deploy_rows(
    *,
    services: int,
    daemon_wall: list[float],
    daemon_calls: list[dict[str, int]],
    peer: PeerResults,
    quick: bool,
) -> list[Row]:
    ours_wall = Summary.of(daemon_wall)
    ours_calls = _per_deploy(daemon_calls, services)
    ours_breakdown = _breakdown(daemon_calls, services)
    if peer.skipped:
        note = f"peer not run: {peer.skipped}"
        return [
            Row(
                f"{services} services, new pushed tag: wall time",
                spread(ours_wall, "s"),
                peer="not run",
                target=">= 10x faster than sequential",
                note=note,
            ),
            Row(
                "same: AWS API calls per deploy",
                spread(ours_calls),
                peer="not run",
                target="<= ecs-deploy's",
                note=f"daemon per deploy: {ours_breakdown}",
            ),
        ]
    seq_wall = Summary.of(peer.sequential_wall)
    par_wall = Summary.of(peer.parallel_wall)
    seq_calls = _per_deploy(peer.sequential_calls, services)
    par_total = Summary.of([sum(c.values()) for c in peer.parallel_calls])
    ours_total = Summary.of([sum(c.values()) for c in daemon_calls])
    seq_ratio = seq_wall.median / ours_wall.median
    par_ratio = par_wall.median / ours_wall.median
    scale = "" if services == 20 else f" (quick: {services} services)"
    return [
        Row(
            f"{services} services get a new pushed tag: wall time vs sequential `ecs deploy`"
            + scale,
            spread(ours_wall, "s"),
            peer=spread(seq_wall, "s"),
            ratio=number(seq_ratio, "x"),
            target=">= 10x",
            met=seq_ratio >= 10,
            note=(
                f"ecs-deploy {peer.version}; daemon: one signed webhook nudges the "
                f"{services} apps (one repository), timed until /status shows all InSync; "
                "peer: one `ecs deploy` per service, back to back. The fixture completes "
                "each rollout at once."
                + (" Quick mode: fewer services and rounds." if quick else "")
            ),
        ),
        Row(
            "same: AWS API calls per deploy",
            spread(ours_calls),
            peer=spread(seq_calls),
            ratio=number(seq_calls.median / ours_calls.median, "x"),
            target="<= ecs-deploy's",
            met=ours_calls.median <= seq_calls.median,
            note=(
                f"daemon per deploy: {ours_breakdown}. ecs-deploy per deploy: "
                f"{_breakdown(peer.sequential_calls, services)}."
            ),
        ),
        Row(
            f"same vs {services} parallel `ecs deploy`: wall time",
            spread(ours_wall, "s"),
            peer=spread(par_wall, "s"),
            ratio=number(par_ratio, "x"),
            target="no worse (ratio >= 1)",
            met=par_ratio >= 1,
        ),
        Row(
            f"same vs {services} parallel `ecs deploy`: total AWS API calls",
            spread(ours_total),
            peer=spread(par_total),
            ratio=number(par_total.median / ours_total.median, "x"),
            target="fewer",
            met=ours_total.median < par_total.median,
        ),
    ]
