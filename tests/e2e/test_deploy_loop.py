"""Never a deploy loop: whatever takes the daemon's eyes off a failing rollout (a stop, a
SIGKILL, a loop restart by a reload, a full disk, a damaged state file), a failing revision
gets at most one UpdateService, and a stuck rollout is still rolled back.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from reconciler.sandbox.scenario import Scenario
from tests.support.daemon_process import DaemonProcess
from tests.support.probes import eventually
from tests.support.webhooks import signed_push
from tests.support.world import WEBHOOK_SECRET, World

pytestmark = [pytest.mark.slow]

FAIL_AFTER = 1.0  # seconds from UpdateService until the circuit breaker rolls back


@pytest.fixture
def spawn() -> Iterator[list[DaemonProcess]]:
    """Daemon processes of the test; whatever still runs at the end is killed."""
    started: list[DaemonProcess] = []
    yield started
    for process in started:
        process.kill()


async def start(world: World, spawn: list[DaemonProcess], run: int) -> DaemonProcess:
    process = DaemonProcess(world.write_config(), world.root / f"run{run}.log")
    spawn.append(process)
    await process.start()
    return process


def state_file(world: World) -> Path:
    return world.root / "state" / "apps" / f"{world.name}.json"


async def push_webhook(process: DaemonProcess, world: World) -> None:
    """A signed GitHub push for the app's repository: a nudge that clears nothing."""
    body, headers = signed_push(
        repo_url=world.repo.url, after=world.repo.head(), secret=WEBHOOK_SECRET
    )
    code, text = await process.post("/hooks/github", data=body, headers=headers)
    assert code == 202, text
    assert world.name in json.loads(text)["nudged"]


def failed_at(revision: str) -> Any:
    return lambda s: s["phase"] == "Failed" and s["desired"]["revision"] == revision


def registrations_of(world: World, revision: str) -> int:
    """Task definitions of the app's family that name the revision's image."""
    ecs = world.ecs()
    arns = ecs.list_task_definitions(familyPrefix=world.name)["taskDefinitionArns"]
    count = 0
    for arn in arns:
        definition = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        images = [c["image"] for c in definition["containerDefinitions"]]
        count += world.image(revision) in images
    return count


async def deployed_first(world: World, spawn: list[DaemonProcess]) -> DaemonProcess:
    process = await start(world, spawn, 0)
    await process.wait_for(
        world.name,
        lambda s: s["phase"] == "InSync" and s["live"]["image"] == world.image(world.first_commit),
        what="the first commit live",
    )
    return process


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
async def test_stopped_after_update_service_while_ecs_rolls_back_deploys_once(
    world: World, spawn: list[DaemonProcess], how: str
) -> None:
    """Stopped right after UpdateService, three times over, while ECS's circuit breaker rolls
    the revision back: one UpdateService in all, and the revision ends Failed and held."""
    process = await deployed_first(world, spawn)
    assert world.updates() == 1
    world.aws.rollouts.set_scenario(world.cluster, world.name, Scenario("fail", after=FAIL_AFTER))
    second = world.repo.commit({"app.txt": "version 2\n"}, "second")
    code, _ = await process.post(f"/apps/{world.name}/sync")
    assert code == 202
    await eventually(lambda: world.updates() == 2, what="the UpdateService of the second")

    for run in range(1, 4):
        if how == "SIGKILL":
            process.kill()
        else:
            assert process.stop() == 0
        # ECS rolls back while nobody watches (the sandbox settles rollouts as it is asked).
        await asyncio.sleep(FAIL_AFTER + 0.5)
        process = await start(world, spawn, run)
        status = await process.wait_for(world.name, failed_at(second), what="Failed and held")
        assert world.updates() == 2, f"redeployed after restart {run}"

    assert "rolled back while not watched" in status["last_error"]
    # More nudges change nothing: the hold is kept.
    for _ in range(3):
        await push_webhook(process, world)
        await process.wait_for(world.name, failed_at(second), what="still Failed")
    assert world.updates() == 2
    assert process.stop() == 0


async def test_stopped_during_a_stuck_rollout_still_rolls_it_back_after_the_restart(
    world: World, spawn: list[DaemonProcess]
) -> None:
    """The restart keeps the deadline of the deploy it found and rolls back once it passes."""
    world.app_overrides["rollout_timeout"] = "3s"
    process = await deployed_first(world, spawn)
    first_td = world.service()["taskDefinition"]
    world.aws.rollouts.set_scenario(world.cluster, world.name, Scenario("stick", revert="complete"))
    second = world.repo.commit({"app.txt": "version 2\n"}, "second")
    await process.post(f"/apps/{world.name}/sync")
    await eventually(lambda: world.updates() == 2, what="the UpdateService of the second")
    process.kill()

    process = await start(world, spawn, 1)
    status = await process.wait_for(world.name, failed_at(second), what="Failed")
    assert "did not complete within 3s" in status["last_error"]
    assert world.service()["taskDefinition"] == first_td
    assert world.updates() == 3  # first, second, the rollback
    assert process.stop() == 0


async def test_loop_restarts_by_reload_during_a_failing_rollout_deploy_once(
    world: World,
) -> None:
    """Each poll_interval edit restarts the app's loop; the failing revision is registered and
    deployed once, never again."""
    world.daemon_overrides["poll_interval"] = 3600
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.first_commit)
        registered = world.aws.calls.count("RegisterTaskDefinition")
        world.aws.rollouts.set_scenario(world.cluster, world.name, Scenario("fail", after=3.0))
        second = world.repo.commit({"app.txt": "version 2\n"}, "second")
        await daemon.github_push()
        await eventually(lambda: world.updates() == 2, what="the UpdateService of the second")
        for interval in (3500, 3400, 3300, 3200):
            before = daemon.supervisor.apps.loops[world.name]
            world.daemon_overrides["poll_interval"] = interval
            daemon.config_path.write_text(world.config_text())
            await eventually(
                partial(restarted, daemon.supervisor.apps.loops, world.name, before),
                what="the loop restarted",
            )
        status = await daemon.wait_for(failed_at(second), what="Failed", timeout=60)
    assert world.updates() == 2
    assert world.aws.calls.count("RegisterTaskDefinition") == registered + 1
    assert registrations_of(world, second) == 1
    assert "circuit breaker" in status["last_error"] or "not watched" in status["last_error"]


def restarted(loops: Mapping[str, object], name: str, before: object) -> bool:
    return loops.get(name) not in (None, before)


# --- a full state_dir ------------------------------------------------------------------------


@contextmanager
def small_tmpfs(path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs at `path` (root only), unmounted at the end."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Take every free byte of the file system holding `directory`."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            os.write(fd, b"\0" * 1024)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


async def test_a_full_state_dir_stops_deploys_and_never_stops_a_rollback(world: World) -> None:
    """Disk full before a deploy: nothing is deployed and the error is shown. Disk full
    during a stuck rollout: the rollback still goes out and the revision stays held."""
    world.app_overrides["rollout_timeout"] = "2s"
    apps = world.root / "state" / "apps"
    with small_tmpfs(apps):
        await full_disk_scenario(world, apps)


async def full_disk_scenario(world: World, apps: Path) -> None:
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.first_commit)
        first_td = world.service()["taskDefinition"]
        filler = fill(apps)
        # The history entry of the first deploy is in memory; the disk takes no more.
        second = world.repo.commit({"app.txt": "version 2\n"}, "second")
        await daemon.github_push()
        status = await daemon.wait_for(
            lambda s: (
                s["desired"]["revision"] == second
                and "No space left on device" in (s["last_error"] or "")
            ),
            what="the write error shown",
        )
        assert status["phase"] != "InSync"
        assert world.updates() == 1
        metric = daemon.daemon.metrics.registry.get_sample_value(
            "reconciler_state_write_failing", {"app": world.name}
        )
        assert metric == 1.0

        # Room again: the deploy goes ahead; it sticks and the disk fills meanwhile.
        world.aws.rollouts.set_scenario(
            world.cluster, world.name, Scenario("stick", revert="complete")
        )
        filler.unlink()
        await eventually(lambda: world.updates() == 2, what="the UpdateService of the second")
        filler = fill(apps)
        status = await daemon.wait_for(failed_at(second), what="Failed after the timeout")
        await eventually(lambda: world.updates() == 3, what="the rollback")
        assert world.service()["taskDefinition"] == first_td
        for _ in range(3):
            await daemon.github_push()
            await daemon.wait_for(failed_at(second), what="still held")
        assert world.updates() == 3
        filler.unlink()


# --- damaged state files ---------------------------------------------------------------------


async def held_second(world: World, spawn: list[DaemonProcess]) -> tuple[str, DaemonProcess]:
    """The second commit failed by circuit breaker and is held; the daemon still runs."""
    process = await deployed_first(world, spawn)
    world.aws.rollouts.set_scenario(world.cluster, world.name, Scenario("fail", after=0.3))
    second = world.repo.commit({"app.txt": "version 2\n"}, "second")
    await process.post(f"/apps/{world.name}/sync")
    await process.wait_for(world.name, failed_at(second), what="the second held")
    assert world.updates() == 2
    return second, process


def truncate(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[: len(text) // 2])


def drop_keys(path: Path) -> None:
    document = json.loads(path.read_text())
    del document["hold"]["revision"]
    path.write_text(json.dumps(document))


@pytest.mark.parametrize("damage", [truncate, drop_keys], ids=["truncated", "key-less"])
async def test_a_damaged_state_file_at_start_fails_closed(
    world: World, spawn: list[DaemonProcess], damage: Any
) -> None:
    """The held revision is not redeployed, the daemon runs, the file is kept aside, and
    `sync` is the way on."""
    second, process = await held_second(world, spawn)
    assert process.stop() == 0
    damage(state_file(world))

    process = await start(world, spawn, 1)
    status = await process.wait_for(world.name, lambda s: s["phase"] == "Failed", what="Failed")
    assert "state file damaged" in status["last_error"]
    assert "`reconciler sync" in status["last_error"]
    assert (state_file(world).parent / f"{world.name}.json.corrupt").exists()
    code, _ = await process.get("/healthz")
    assert code == 200
    await asyncio.sleep(1.0)  # passes come and go; none deploys
    assert world.updates() == 2

    world.aws.rollouts.set_scenario(world.cluster, world.name, Scenario("complete"))
    code, _ = await process.post(f"/apps/{world.name}/sync")
    assert code == 202
    await process.wait_for(
        world.name,
        lambda s: s["phase"] == "InSync" and s["live"]["image"] == world.image(second),
        what="deployed after sync",
    )
    assert world.updates() == 3
    assert process.stop() == 0


@pytest.mark.parametrize("damage", [truncate, drop_keys], ids=["truncated", "key-less"])
async def test_a_state_file_damaged_while_running_changes_nothing_until_read_again(
    world: World, spawn: list[DaemonProcess], damage: Any
) -> None:
    """The daemon keeps what it knows in memory: nudged passes go on, the hold stays, no pass
    crashes; after a restart the damage is found and fails closed."""
    second, process = await held_second(world, spawn)
    damage(state_file(world))
    for _ in range(3):
        await push_webhook(process, world)
        status = await process.wait_for(world.name, failed_at(second), what="still held")
        assert "'revision'" not in (status["last_error"] or "")
    assert world.updates() == 2
    assert "pass_crashed" not in [e.get("event") for e in process.events()]
    assert process.stop() == 0

    process = await start(world, spawn, 1)
    status = await process.wait_for(world.name, lambda s: s["phase"] == "Failed", what="Failed")
    assert "state file damaged" in status["last_error"]
    await asyncio.sleep(1.0)
    assert world.updates() == 2
    assert process.stop() == 0


def test_the_failure_table_names_every_case() -> None:
    """The README says what happens for each of these faults."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for words in ("rolled back while not watched", "state file damaged", "`state_dir` is full"):
        assert words in readme, words
    assert shutil.which("mount"), "mount is needed for the full-disk test"
