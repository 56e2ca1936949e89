"""The race of SPEC 22: push to live for a small Express app, the daemon against the pipeline
it replaces (a shell script of the same steps), on one machine, one Docker engine, one
registry and one sandbox, in one run.

Both ways deploy the same app (express, mocha and supertest from the npm registry, a
lockfile, a multi-stage Dockerfile with an npm cache mount, `npm test` as the gate) to a
service of their own whose rollouts the sandbox completes ROLLOUT_SECONDS after the update.
Each way has its own repository and a package.json of its own (a nonce in its description),
so neither finds the other's layers in the engine's cache. Three scenarios:

- cold: the app's first push, on a build host that has built other Node apps (the npm
  caches warm on both sides: the engine's cache mount and the script's npm cache are primed
  first). For the daemon the repository is empty until then (the app waits on
  `branch_empty`).
- warm: a one-line change in app.js, pushed again; median of `warm_runs`.
- new host: the engine's build cache pruned, the app's images and the base image removed,
  a fresh state_dir (a new daemon process) and a fresh npm cache for the script: only the
  registry has anything (the live image, and for the daemon its test stage's cache image).

Times: the daemon's from the webhook it is sent for the push until /status says InSync at
the new revision (rolled out and `latest` moved); the script's from its start until `aws ecs
wait services-stable` returns. Each stage's share: the daemon's from its log lines of the
revision, the script's from its `STEP` lines.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.control import Daemon, running_daemon
from bench.events import in_sync_at
from bench.race.nodebase import ensure_node_image
from bench.registry import Registry
from bench.sandbox import AppSpec, provision_apps, timed_rollouts
from bench.stats import Row, number
from reconciler.adapters import buildkit
from reconciler.sandbox import SandboxAws, Scenario
from tests.support.config import app_table
from tests.support.config import config_text as tests_config_text
from tests.support.gitrepo import GitRepo

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent.parent
CLUSTER = "bench-race"
DAEMON_APP, SCRIPT_APP = "race-daemon", "race-script"
ROLLOUT_SECONDS = 1.0  # the sandbox completes each rollout this long after its update
GREETING = 'const greeting = "hello from the race";'
SCENARIOS = ("cold", "warm", "new host")
# The daemon's stages, in order, from its log; "other" is what the total has beyond them.
DAEMON_STAGES = (
    "git, observe",
    "build, test beside",
    "test after",
    "push",
    "register, update",
    "rollout",
    "other",
)
SCRIPT_STAGES = (
    "clone",
    "npm ci",
    "npm test",
    "docker build",
    "docker push",
    "update-service",
    "wait services-stable",
    "other",
)
# The stages whose sum the warm push is held to (SPEC 22: its overhead within 1.3x).
WORK_STAGES = ("build, test beside", "test after", "push", "rollout")


@dataclass(frozen=True)
class RaceSizes:
    warm_runs: int
    app: str  # the app's folder beside this module: "app" (Express) or "tiny" (no packages)
    wait_delay: int | None  # the script's waiter delay; None: the aws CLI's own (15 s)


FULL = RaceSizes(warm_runs=3, app="app", wait_delay=None)
# Quick: an app without packages and a 1 s waiter, so the race takes well under a minute.
QUICK = RaceSizes(warm_runs=1, app="tiny", wait_delay=1)


@dataclass
class Run:
    """One push to live: seconds in all, and per stage."""

    total: float
    stages: dict[str, float]
    beside: dict[str, float] = field(default_factory=dict)  # work off the way to live
    cached: dict[str, int] = field(default_factory=dict)  # build -> its steps from cache


@dataclass
class RaceResults:
    app: str = ""
    packages: int = 0
    node_image: str = ""
    waiter: str = ""
    rollout: float = ROLLOUT_SECONDS
    daemon: dict[str, list[Run]] = field(default_factory=dict)
    script: dict[str, list[Run]] = field(default_factory=dict)


# The app and its repositories --------------------------------------------------------------


def app_files(kind: str, *, node_image: str, nonce: str) -> dict[str, str]:
    """The app's files as committed: the Dockerfile on `node_image`, package.json (and its
    lockfile) carrying `nonce`, so no earlier build's layers answer for its dependencies."""
    root = HERE / kind
    files = {
        str(path.relative_to(root)): path.read_text()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "node_modules" not in path.parts
    }
    files["Dockerfile"] = files["Dockerfile"].replace("{node_image}", node_image)
    for name in ("package.json", "package-lock.json"):
        document = json.loads(files[name])
        if name == "package.json":
            document["description"] = f"{document['description']} ({nonce})"
        files[name] = json.dumps(document, indent=2) + "\n"
    return files


def packages(kind: str) -> int:
    lock = json.loads((HERE / kind / "package-lock.json").read_text())
    return sum(1 for name in lock.get("packages", {}) if name)


def changed_app(kind: str, number_: int) -> dict[str, str]:
    """app.js with one line changed, its greeting: what a warm push deploys."""
    text = (HERE / kind / "app.js").read_text()
    assert GREETING in text, kind
    return {"app.js": text.replace(GREETING, GREETING[:-2] + f', change {number_}";')}


def nonce() -> str:
    return f"{random.getrandbits(64):016x}"


# The engine ---------------------------------------------------------------------------------


def docker(*args: str, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, check=check)
    return done.stdout


def as_a_new_host(*repositories: str, base_image: str) -> None:
    """Forget every local trace of the app on the engine: its images (the test stages' too),
    the base image and the builder's cache, cache mounts included."""
    listed = docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}").split()
    names = [n for n in listed if any(n.rsplit(":", 1)[0].endswith(r) for r in repositories)]
    docker("image", "rm", "-f", *names, base_image, check=False)
    docker("builder", "prune", "-af")


def prime_engine(kind: str, *, node_image: str, scratch: Path, cli: str) -> None:
    """Fill the engine's npm cache mount with the app's packages, as building other Node
    apps would have: a build of the test stage of a copy nobody deploys."""
    write_tree(scratch, app_files(kind, node_image=node_image, nonce=nonce()))
    subprocess.run(
        [cli, "build", "--quiet", "--network", "host", "--target", "test", str(scratch)],
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
        capture_output=True,
        check=True,
    )


def prime_npm(kind: str, *, cache: Path, scratch: Path) -> None:
    """Fill the script's npm cache with the app's packages, as earlier jobs would have."""
    write_tree(scratch, app_files(kind, node_image="unused", nonce=nonce()))
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=scratch,
        env={**os.environ, "npm_config_cache": str(cache)},
        capture_output=True,
        check=True,
    )


def write_tree(root: Path, files: Mapping[str, str]) -> None:
    shutil.rmtree(root, ignore_errors=True)
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


# The daemon's way ---------------------------------------------------------------------------


def daemon_config(*, aws: SandboxAws, registry: Registry, repo: GitRepo, run_dir: Path) -> str:
    return tests_config_text(
        daemon={
            "listen": "127.0.0.1:0",
            "poll_interval": 3600,
            "state_dir": run_dir / "state",
            "log_format": "json",
            "max_concurrent_builds": 2,
        },
        aws={"region": aws.region, "endpoint_url": aws.endpoint_url, "registry": registry.host},
        webhook={"github_secret_file": run_dir / "secret"},
        build={"builder": "buildkit", "network": "host"},
        apps=[
            app_table(
                DAEMON_APP,
                repo.url,
                cluster=CLUSTER,
                rollout_timeout="120s",
                extra_tags=["latest"],
                test={"command": ["npm", "test"], "target": "test"},
            )
        ],
    )


async def daemon_push(daemon: Daemon, repo: GitRepo, files: Mapping[str, str]) -> Run:
    revision = repo.commit(files, "push")
    began_wall, began = time.time(), time.monotonic()
    nudged = await daemon.github_push(repo_url=repo.url, after=revision)
    if nudged != [DAEMON_APP]:
        raise RuntimeError(f"the webhook nudged {nudged}; see {daemon.run_dir}/daemon.log")
    done = await daemon.wait_until([DAEMON_APP], in_sync_at(revision), within=600, interval=0.02)
    total = done - began
    await asyncio.sleep(0.5)  # the cache image's push, beside the deploy, may still be logging
    return Run(
        total=total,
        stages=daemon_stages(daemon, revision, began_wall, total),
        beside=beside_stages(daemon, revision),
        cached=cached_steps(daemon, revision),
    )


def _wall(entry: Mapping[str, Any]) -> float:
    return datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00")).timestamp()


def daemon_stages(daemon: Daemon, revision: str, began: float, total: float) -> dict[str, float]:
    """Each stage's seconds on the way to live, from the daemon's log lines of `revision`
    (wall clock): one after the other, so they add up to the total. The build ends when the
    production image and the test stage are built and the test stage's test has run (beside
    the production build); "test after" is what a test still takes then (all of it for a
    test in the production image). What runs beside (the test stage's build and test run,
    the cache image's push beside the deploy) is in `beside_stages`."""

    def at(event: str, **match: str) -> float:
        found = daemon.log_events(event, app=DAEMON_APP, revision=revision, **match)
        if not found:
            raise RuntimeError(f"no {event} for {revision}; see {daemon.run_dir}/daemon.log")
        return _wall(found[-1])

    build_start, built = at("build_started"), at("build_finished")
    tested = max(built, at("test_passed"))
    pushed, updated = at("push_finished"), at("service_updated")
    live = at("rollout_succeeded")
    stages = {
        "git, observe": build_start - began,
        "build, test beside": built - build_start,
        "test after": tested - built,
        "push": pushed - at("phase_changed", phase="Pushing"),
        "register, update": updated - pushed,
        "rollout": live - updated,
    }
    stages["other"] = total - sum(stages.values())
    return stages


def beside_stages(daemon: Daemon, revision: str) -> dict[str, float]:
    """What ran beside the way to live: the test stage's build, its test run, the cache
    image's push (seconds each)."""
    found: dict[str, float] = {}
    for event, name in (("test_build_finished", "test stage"), ("cache_pushed", "cache push")):
        entries = daemon.log_events(event, app=DAEMON_APP, revision=revision)
        if entries:
            found[name] = float(entries[-1]["seconds"])
    started = daemon.log_events("test_started", app=DAEMON_APP, revision=revision)
    passed = daemon.log_events("test_passed", app=DAEMON_APP, revision=revision)
    if started and passed:
        found["test run"] = _wall(passed[-1]) - _wall(started[-1])
    return found


def cached_steps(daemon: Daemon, revision: str) -> dict[str, int]:
    """The steps each build of `revision` took from the cache (FROM left out)."""
    found: dict[str, int] = {}
    for event, name in (("build_finished", "production"), ("test_build_finished", "test stage")):
        entries = daemon.log_events(event, app=DAEMON_APP, revision=revision)
        if entries:
            found[name] = int(entries[-1]["cached_steps"])
    return found


# The script's way ---------------------------------------------------------------------------


@dataclass
class Script:
    """The pipeline script and what it runs with."""

    repo: GitRepo
    image: str
    work: Path
    env: dict[str, str]

    def run(self, files: Mapping[str, str], label: str) -> Run:
        revision = self.repo.commit(files, "push")
        work = self.work / label
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        argv = [str(HERE / "pipeline.sh"), self.repo.url, revision, self.image]
        argv += [CLUSTER, SCRIPT_APP, str(work)]
        began = time.monotonic()
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, check=False)
        total = time.monotonic() - began
        if done.returncode != 0:
            raise RuntimeError(f"the pipeline script failed:\n{done.stdout}\n{done.stderr}")
        return Run(total=total, stages=script_stages(done.stdout, total))


def script_stages(output: str, total: float) -> dict[str, float]:
    names = dict(zip(SCRIPT_STAGES, SCRIPT_STAGES, strict=False))
    names.update(
        clone="clone",
        npm_ci="npm ci",
        npm_test="npm test",
        docker_build="docker build",
        docker_push="docker push",
        update_service="update-service",
        wait_stable="wait services-stable",
    )
    stages: dict[str, float] = {}
    for line in output.splitlines():
        if line.startswith("STEP "):
            _, name, start, end = line.split()
            stages[names[name]] = float(end) - float(start)
    stages["other"] = total - sum(stages.values())
    return stages


def aws_command(wait_delay: int | None) -> tuple[str, str]:
    """The `aws` the script calls and how it is described: the aws CLI when it is installed
    (and the wait is its own 15 s), else boto3 through awsshim with the same waiter."""
    cli = shutil.which("aws")
    if wait_delay is None and cli is not None:
        version = subprocess.run([cli, "--version"], capture_output=True, text=True, check=False)
        if version.returncode == 0:
            said = (version.stdout or version.stderr).split()[0]
            return cli, f"{said}, its services-stable waiter (every 15 s)"
    delay = wait_delay or 15
    shim = f"{sys.executable} -m bench.race.awsshim"
    return shim, f"boto3's services-stable waiter (every {delay} s)"


def script_env(
    aws: SandboxAws, *, cli: str, npm_cache: Path, aws_cli: str, wait_delay: int | None
) -> dict[str, str]:
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": aws.endpoint_url,
        "AWS_DEFAULT_REGION": aws.region,
        "AWS_REGION": aws.region,
        "DOCKER": cli,
        "AWS": aws_cli,
        "npm_config_cache": str(npm_cache),
        "PYTHONPATH": str(PROJECT),
    }
    if wait_delay is not None:
        env["RACE_WAIT_DELAY"] = str(wait_delay)
    return env


# The race -----------------------------------------------------------------------------------


async def run_race(
    aws: SandboxAws,
    registry: Registry,
    root: Path,
    sizes: RaceSizes,
    *,
    log: Callable[[str], None],
) -> RaceResults:
    kind = sizes.app
    cli = await buildkit.find_cli()
    if cli is None:
        raise RuntimeError("the race needs a docker CLI that builds with BuildKit")
    results = RaceResults(app=kind, packages=packages(kind))
    log("race: the Node base image")
    node_image = results.node_image = ensure_node_image(registry.host)
    host = registry.host
    provision_apps(
        aws,
        [
            AppSpec(DAEMON_APP, CLUSTER, "file:///dev/null", f"{host}/{DAEMON_APP}:bootstrap"),
            AppSpec(SCRIPT_APP, CLUSTER, "file:///dev/null", f"{host}/{SCRIPT_APP}:latest"),
        ],
    )
    for service in (DAEMON_APP, SCRIPT_APP):
        timed_rollouts(aws).set_scenario(CLUSTER, service, Scenario(after=ROLLOUT_SECONDS))
    aws_cli, results.waiter = aws_command(sizes.wait_delay)
    daemon_repo, script_repo = GitRepo(root / "daemon-repo"), GitRepo(root / "script-repo")
    npm_cache = root / "npm-cache"
    script = Script(
        repo=script_repo,
        image=f"{host}/{SCRIPT_APP}",
        work=root / "script-work",
        env=script_env(
            aws, cli=cli.path, npm_cache=npm_cache, aws_cli=aws_cli, wait_delay=sizes.wait_delay
        ),
    )
    log("race: priming the npm caches (engine and script)")
    prime_engine(kind, node_image=node_image, scratch=root / "prime-engine", cli=cli.path)
    prime_npm(kind, cache=npm_cache, scratch=root / "prime-npm")
    daemon_runs: dict[str, list[Run]] = {s: [] for s in SCENARIOS}
    script_runs: dict[str, list[Run]] = {s: [] for s in SCENARIOS}
    first = root / "daemon-1"
    async with running_daemon(
        run_dir=first,
        config=daemon_config(aws=aws, registry=registry, repo=daemon_repo, run_dir=first),
    ) as daemon:
        await daemon.wait_ready(within=120)  # the repository is empty: branch_empty
        log("race: cold, the daemon")
        files = app_files(kind, node_image=node_image, nonce=nonce())
        daemon_runs["cold"].append(await daemon_push(daemon, daemon_repo, files))
        log("race: cold, the script")
        files = app_files(kind, node_image=node_image, nonce=nonce())
        script_runs["cold"].append(await asyncio.to_thread(script.run, files, "cold"))
        for number_ in range(1, sizes.warm_runs + 1):
            log(f"race: warm {number_} of {sizes.warm_runs}, both ways")
            change = changed_app(kind, number_)
            daemon_runs["warm"].append(await daemon_push(daemon, daemon_repo, change))
            script_runs["warm"].append(
                await asyncio.to_thread(script.run, change, f"warm-{number_}")
            )
    log("race: a new build host, the daemon")
    as_a_new_host(DAEMON_APP, SCRIPT_APP, base_image=node_image)
    second = root / "daemon-2"
    async with running_daemon(
        run_dir=second,
        config=daemon_config(aws=aws, registry=registry, repo=daemon_repo, run_dir=second),
    ) as daemon:
        await daemon.wait_ready(within=120)
        await daemon.wait_until([DAEMON_APP], lambda s: s["phase"] == "InSync", within=120)
        change = changed_app(kind, 100)
        daemon_runs["new host"].append(await daemon_push(daemon, daemon_repo, change))
    log("race: a new build host, the script")
    as_a_new_host(DAEMON_APP, SCRIPT_APP, base_image=node_image)
    shutil.rmtree(npm_cache, ignore_errors=True)
    script_runs["new host"].append(
        await asyncio.to_thread(script.run, changed_app(kind, 100), "new-host")
    )
    results.daemon, results.script = daemon_runs, script_runs
    return results


# Rows ---------------------------------------------------------------------------------------


def median_run(runs: Sequence[Run]) -> Run | None:
    """The run of median total (the lower middle one of an even count)."""
    if not runs:
        return None
    ordered = sorted(runs, key=lambda r: r.total)
    return ordered[(len(ordered) - 1) // 2]


def _totals(runs: Sequence[Run]) -> str:
    if not runs:
        return "n/a"
    middle = statistics.median(r.total for r in runs)
    if len(runs) == 1:
        return number(middle, "s")
    low, high = min(r.total for r in runs), max(r.total for r in runs)
    return f"{number(middle, 's')} (min-max {number(low)}-{number(high)}, n={len(runs)})"


def _shares(run: Run) -> str:
    shares = ", ".join(
        f"{name} {number(seconds, 's')} ({seconds / run.total:.0%})"
        for name, seconds in run.stages.items()
    )
    if run.beside:
        shares += (
            " (beside them: "
            + ", ".join(f"{name} {number(seconds, 's')}" for name, seconds in run.beside.items())
            + ")"
        )
    return shares


def race_rows(results: RaceResults, *, quick: bool) -> list[Row]:
    """The race's rows: each scenario both ways with its ratio and target, then the
    daemon's new host against its own cold push and its warm push against its stages."""
    targets = {"cold": 3.0, "warm": 7.0, "new host": 5.0}
    app = (
        f"an Express app ({results.packages} packages)"
        if results.app == "app"
        else "a tiny Node app (no packages; quick mode)"
    )
    rows: list[Row] = []
    medians: dict[str, tuple[Run | None, Run | None]] = {}
    for scenario in SCENARIOS:
        ours, theirs = results.daemon.get(scenario, []), results.script.get(scenario, [])
        daemon_run, script_run = median_run(ours), median_run(theirs)
        medians[scenario] = (daemon_run, script_run)
        ratio = script_run.total / daemon_run.total if daemon_run and script_run else float("nan")
        target = targets[scenario]
        notes = []
        if daemon_run is not None:
            notes.append(f"daemon (median run): {_shares(daemon_run)}")
        if script_run is not None:
            notes.append(f"script (median run): {_shares(script_run)}")
        if daemon_run is not None and daemon_run.cached:
            steps = ", ".join(f"{name} {n}" for name, n in daemon_run.cached.items())
            notes.append(f"the daemon's builds' steps from cache (FROM left out): {steps}")
        rows.append(
            Row(
                f"race, {scenario} push -> live: daemon vs the old pipeline's script",
                _totals(ours),
                peer=_totals(theirs),
                ratio=number(ratio, "x"),
                target=f">= {target:g}x",
                met=None if quick else ratio >= target,
                note=f"{app}; " + "; ".join(notes),
            )
        )
    cold, _ = medians["cold"]
    new_host, _ = medians["new host"]
    warm, _ = medians["warm"]
    if cold is not None and new_host is not None:
        share = new_host.total / cold.total
        rows.append(
            Row(
                "same: the daemon's new-host push vs its own cold push",
                f"{number(share, 'x')} ({number(new_host.total, 's')} / {number(cold.total, 's')})",
                target="<= 0.6x",
                met=None if quick else share <= 0.6,
            )
        )
    if warm is not None:
        work = sum(warm.stages.get(name, 0.0) for name in WORK_STAGES)
        share = warm.total / work if work else float("nan")
        rows.append(
            Row(
                "same: the daemon's warm push vs the sum of its build, test, push and rollout",
                f"{number(share, 'x')} ({number(warm.total, 's')} / {number(work, 's')})",
                target="<= 1.3x",
                met=None if quick else share <= 1.3,
                note=(
                    f"The sandbox completes each rollout {results.rollout:g} s after its update; "
                    f"the script waits with {results.waiter}. Base image {results.node_image} "
                    "(the host's node and npm, made here)."
                ),
            )
        )
    return rows


def stage_table(results: RaceResults) -> str:
    """Each stage's seconds for the median run of each scenario, both ways side by side."""
    columns = [(way, s) for s in SCENARIOS for way in ("daemon", "script")]
    header = "| stage | " + " | ".join(f"{way} {s}" for way, s in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    runs = {
        (way, s): median_run((results.daemon if way == "daemon" else results.script).get(s, []))
        for way, s in columns
    }
    for stage in dict.fromkeys([*DAEMON_STAGES, *SCRIPT_STAGES]):
        cells = []
        for column in columns:
            run = runs[column]
            seconds = run.stages.get(stage) if run is not None else None
            cells.append("" if seconds is None else number(seconds, "s"))
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    for beside in ("test stage", "test run", "cache push"):
        cells = []
        for column in columns:
            run = runs[column]
            seconds = run.beside.get(beside) if run is not None else None
            cells.append("" if seconds is None else f"({number(seconds, 's')})")
        lines.append(f"| beside: {beside} | " + " | ".join(cells) + " |")
    totals = [number(r.total, "s") if r else "n/a" for r in runs.values()]
    lines.append("| **push -> live** | " + " | ".join(f"**{t}**" for t in totals) + " |")
    return "\n".join(lines)
