"""`reconciler rollback`, `unpin` and `history` on the real stack: a pin deploys an earlier
successful revision at once, survives a restart and pushes, and ends with unpin."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from reconciler.sandbox.scenario import Scenario
from tests.support.probes import eventually
from tests.support.world import RunningDaemon, World

pytestmark = [pytest.mark.slow]
RECONCILER = Path(sys.executable).with_name("reconciler")


async def cli(*args: str) -> tuple[int, str, str]:
    import asyncio

    process = await asyncio.create_subprocess_exec(
        str(RECONCILER), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def two_deploys(world: World, daemon: RunningDaemon) -> str:
    await daemon.wait_phase("InSync", revision=world.first_commit)
    second = world.repo.commit({"app.txt": "version 2\n"}, "second")
    await daemon.github_push()
    await daemon.wait_phase("InSync", revision=second)
    return second


async def test_rollback_pins_the_one_before_until_unpin_restarts_included(world: World) -> None:
    async with world.daemon() as daemon:
        second = await two_deploys(world, daemon)
        code, out, err = await cli(
            "rollback", world.name, "--url", daemon.url, "--config", str(daemon.config_path)
        )
        assert code == 0, err
        assert world.first_commit in out
        status = await daemon.wait_phase("InSync", revision=world.first_commit)
        assert (status["pinned_by"], status["pinned_revision"]) == ("rollback", world.first_commit)
        assert world.updates() == 3

    async with world.daemon() as daemon:  # a restart keeps the pin
        third = world.repo.commit({"app.txt": "version 3\n"}, "third")
        await daemon.github_push()
        status = await daemon.wait_phase("InSync", revision=world.first_commit)
        assert status["pinned_by"] == "rollback"
        assert world.updates() == 3

        code, out, _ = await cli(
            "unpin", world.name, "--url", daemon.url, "--config", str(daemon.config_path)
        )
        assert code == 0 and "back to following git" in out
        status = await daemon.wait_phase("InSync", revision=third)
        assert status["pinned_by"] is None

        code, out, _ = await cli(
            "history", world.name, "--url", daemon.url, "--config", str(daemon.config_path)
        )
        assert code == 0
        assert [line.split()[1] for line in out.splitlines()[1:4]] == ["deployed"] * 3
        assert second[:12] in out


async def test_rollback_to_a_revision_that_never_succeeded_is_refused(world: World) -> None:
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.first_commit)
        never = world.repo.commit({"app.txt": "never deployed\n"}, "unpushed")
        code, _, err = await cli(
            "rollback",
            world.name,
            "--to",
            never,
            "--url",
            daemon.url,
            "--config",
            str(daemon.config_path),
        )
        assert code == 2
        assert len(err.strip().splitlines()) == 1
        assert "never deployed successfully" in err
        status = await daemon.status()
        assert status["pinned_by"] is None


async def test_rollback_during_a_rollout_in_flight_goes_back_at_once(world: World) -> None:
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.first_commit)
        world.aws.rollouts.set_scenario(world.cluster, world.name, Scenario("stick"))
        stuck = world.repo.commit({"app.txt": "version 2\n"}, "sticks")
        await daemon.github_push()
        await daemon.wait_for(
            lambda s: s["phase"] == "Deploying" and s["desired"]["revision"] == stuck,
            what="the stuck rollout",
        )
        await eventually(lambda: world.updates() == 2, what="the stuck one's UpdateService")
        async with daemon.http.post(
            f"{daemon.url}/apps/{world.name}/rollback", json={"revision": world.first_commit}
        ) as answer:
            assert answer.status == 202, await answer.text()
            assert json.loads(await answer.text())["pinned"] == world.first_commit
        await daemon.wait_for(
            lambda s: s["phase"] == "Deploying" and s["desired"]["revision"] == world.first_commit,
            what="the rollback deploying while the other rollout was still stuck",
        )
        world.aws.rollouts.set_scenario(world.cluster, world.name, Scenario("complete"))
        status = await daemon.wait_phase("InSync", revision=world.first_commit)
    assert status["history"][0]["result"] == "deployed"
    assert any(h["result"] == "superseded" for h in status["history"])
