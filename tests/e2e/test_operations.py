"""Operating the daemon on the real stack: plan, status, sync, health, metrics, run and stop.

Real git, dockerd, registry and the sandbox AWS; the CLI runs as a subprocess, as an operator
would run it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from reconciler.sandbox.scenario import Scenario
from tests.support.cli import reconciler
from tests.support.daemon_process import DaemonProcess
from tests.support.probes import eventually
from tests.support.world import World

READ_ONLY_PREFIXES = ("Describe", "List", "Get", "BatchGet", "BatchCheck")


def registry_tags(registry: str, repository: str) -> list[str]:
    """The tags the registry holds for a repository (none when it does not exist)."""
    url = f"http://{registry}/v2/{repository}/tags/list"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return list(json.load(answer).get("tags") or [])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise


def bootstrap(world: World) -> str:
    """The image the sandbox's task definition starts with."""
    return f"{world.registry}/{world.name}:bootstrap"


def image_exists_locally(image: str) -> bool:
    probe = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    return probe.returncode == 0


def sample(metrics: str, name: str, **labels: str) -> float | None:
    """The value of one Prometheus sample, labels given in any order."""
    for line in metrics.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, label_text = series.partition("{")
        found = dict(
            part.split("=", 1) for part in label_text.rstrip("}").split(",") if "=" in part
        )
        found = {k: v.strip('"') for k, v in found.items()}
        if metric == name and all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return None


# --- plan -------------------------------------------------------------------------------


async def test_plan_shows_desired_live_and_action_and_writes_nothing(world: World) -> None:
    """Before the first deploy: build, push, deploy. No AWS write, no image, no state_dir."""
    path = world.write_config()
    before = world.aws.calls.snapshot()
    table = await reconciler("plan", "--config", str(path))
    as_json = await reconciler("plan", "--config", str(path), "--json")
    after = world.aws.calls.snapshot()

    assert table.code == 0, table
    header, row = table.stdout.splitlines()
    assert header.split() == ["APP", "DESIRED", "LIVE", "ACTION"]
    assert row.split()[:3] == [world.name, world.image(world.first_commit), bootstrap(world)]
    assert row.endswith("build, push, deploy")

    assert as_json.code == 0, as_json
    (planned,) = json.loads(as_json.stdout)["apps"]
    assert planned["app"] == world.name
    assert planned["revision"] == world.first_commit
    assert planned["desired"] == world.image(world.first_commit)
    assert planned["live"] == bootstrap(world)
    assert planned["task_definition"] == world.service()["taskDefinition"]
    assert planned["action"] == "build, push, deploy"

    called = {action for action in after if after[action] != before.get(action, 0)}
    assert "DescribeServices" in called  # it did look at the live service
    writes = sorted(a for a in called if not a.startswith(READ_ONLY_PREFIXES))
    assert writes == []
    assert world.updates() == 0
    assert registry_tags(world.registry, world.name) == []
    assert not image_exists_locally(world.image(world.first_commit))
    assert not (world.root / "state").exists()


async def test_plan_after_convergence_says_in_sync(world: World) -> None:
    """Plan reads the live service: once the daemon deployed the head, there is nothing to do."""
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.first_commit)
    ran = await reconciler("plan", "--config", str(world.root / "reconciler.toml"), "--json")
    assert ran.code == 0, ran
    (planned,) = json.loads(ran.stdout)["apps"]
    assert planned["live"] == planned["desired"] == world.image(world.first_commit)
    assert planned["action"] == "nothing (in sync)"


async def test_plan_of_an_unknown_app_is_exit_2(world: World) -> None:
    """--app with a name not in the config is a usage error, said in one line."""
    ran = await reconciler("plan", "--config", str(world.write_config()), "--app", "nope")
    assert ran.code == 2
    assert ran.stderr.strip() == "error: unknown app 'nope'"


# --- status and sync against the daemon ------------------------------------------------


async def test_cli_sync_clears_a_failed_hold_and_the_revision_is_deployed(world: World) -> None:
    """A Failed app shows as such in `status`; `reconciler sync APP` deploys the held revision."""
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.first_commit)
        world.aws.rollouts.set_scenario(world.cluster, world.name, Scenario("fail", after=0.2))
        second = world.repo.commit({"app.txt": "version 2\n"}, "second")
        await daemon.github_push()
        await daemon.wait_for(
            lambda s: s["phase"] == "Failed" and s["desired"]["revision"] == second, what="Failed"
        )

        table = await reconciler("status", "--url", daemon.url, "--config", str(daemon.config_path))
        assert table.code == 0, table
        row = next(line for line in table.stdout.splitlines() if line.startswith(world.name))
        assert row.split()[1:3] == ["Failed", second[:12]]
        as_json = await reconciler(
            "status", "--url", daemon.url, "--json", "--config", str(daemon.config_path)
        )
        (app,) = json.loads(as_json.stdout)["apps"]
        assert (app["name"], app["phase"]) == (world.name, "Failed")

        world.aws.rollouts.set_scenario(world.cluster, world.name, Scenario("complete"))
        sync = await reconciler(
            "sync", world.name, "--url", daemon.url, "--config", str(daemon.config_path)
        )
        assert sync.code == 0, sync
        await daemon.wait_phase("InSync", revision=second)
    assert world.live_image() == world.image(second)
    # The first deploy, the failed one (ECS's circuit breaker rolled it back), and the one
    # the sync allowed.
    assert world.updates() == 3


# --- health and metrics ------------------------------------------------------------------


async def test_readyz_waits_for_a_first_observation_and_metrics_show_the_outcome(
    world: World,
) -> None:
    """While AWS throttles every DescribeServices, the app is unobserved: /readyz 503,
    /healthz 200. Once AWS answers, the app converges, /readyz is 200 and /metrics says so."""
    world.aws.faults.inject("DescribeServices", times=100_000)
    async with world.daemon() as daemon:
        await daemon.wait_for(lambda s: s["last_error"] is not None, what="a failed observation")
        async with daemon.http.get(f"{daemon.url}/readyz") as answer:
            assert answer.status == 503
            assert (await answer.json())["waiting_for"] == [world.name]
        async with daemon.http.get(f"{daemon.url}/healthz") as answer:
            assert answer.status == 200
        async with daemon.http.get(f"{daemon.url}/metrics") as answer:
            before = await answer.text()
        assert sample(before, "reconciler_app_in_sync", app=world.name) == 0.0

        world.aws.faults.clear()
        await daemon.wait_phase("InSync", revision=world.first_commit)
        async with daemon.http.get(f"{daemon.url}/readyz") as answer:
            assert answer.status == 200
        assert (await daemon.github_push()).status == 202
        async with daemon.http.get(f"{daemon.url}/metrics") as answer:
            assert answer.status == 200
            metrics = await answer.text()

    app = world.name
    assert sample(metrics, "reconciler_app_in_sync", app=app) == 1.0
    assert sample(metrics, "reconciler_reconcile_total", app=app, result="deployed") == 1.0
    assert (sample(metrics, "reconciler_reconcile_total", app=app, result="retry") or 0) >= 1
    assert sample(metrics, "reconciler_build_seconds_count") == 1.0
    assert sample(metrics, "reconciler_rollout_seconds_count") == 1.0
    assert (
        sample(metrics, "reconciler_webhook_requests_total", provider="github", outcome="nudged")
        == 1.0
    )


# --- run as a process ------------------------------------------------------------------


async def test_run_stops_on_sigterm_mid_rollout_with_exit_0_and_json_logs(
    world: World, tmp_path: Path
) -> None:
    """SIGTERM during a rollout: the daemon exits 0 and leaves the rollout to ECS (no
    rollback). SIGHUP re-reads the config. Every line it prints, stderr included, is a JSON
    object with timestamp, level and event."""
    world.aws.rollouts.set_scenario(world.cluster, world.name, Scenario("stick"))
    daemon = DaemonProcess(world.write_config(), tmp_path / "daemon.log")
    await daemon.start()
    try:
        await daemon.wait_for(world.name, lambda s: s["phase"] == "Deploying", what="Deploying")

        os.kill(daemon.pid, signal.SIGHUP)
        reloaded = await wait_event(daemon, "config_reloaded")
        assert (reloaded["added"], reloaded["removed"], reloaded["changed"]) == ([], [], [])
    finally:
        # Generous: this bounds a hang, it does not measure the stop.
        code = daemon.stop(timeout=30)

    assert code == 0, daemon.text()
    lines = daemon.text().splitlines()
    assert "Traceback" not in daemon.text()
    records = [json.loads(line) for line in lines]
    for record in records:
        assert {"timestamp", "level", "event"} <= set(record), record
        assert record["timestamp"].endswith("Z"), record
    assert records[-1]["event"] == "stopped"
    built = next(r for r in records if r["event"] == "build_started")
    assert (built["app"], built["revision"]) == (world.name, world.first_commit)
    # The rollout was left in flight, not rolled back.
    assert world.updates() == 1
    assert world.live_image() == world.image(world.first_commit)


async def wait_event(daemon: DaemonProcess, event: str, *, timeout: float = 60) -> dict[str, Any]:
    """The first `event` the daemon logged, once it has."""

    def logged() -> list[dict[str, Any]]:
        return [e for e in daemon.events() if e.get("event") == event]

    await eventually(lambda: bool(logged()), timeout=timeout, what=event, interval=0.05)
    return logged()[0]
