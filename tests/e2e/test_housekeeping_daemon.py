"""Housekeeping by the daemon after each successful rollout, and `reconciler cleanup`."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from tests.support.probes import eventually
from tests.support.world import World

pytestmark = [pytest.mark.slow]
RECONCILER = Path(sys.executable).with_name("reconciler")


def active_revisions(world: World) -> list[str]:
    ecs = world.ecs()
    arns = ecs.list_task_definitions(familyPrefix=world.name, status="ACTIVE")["taskDefinitionArns"]
    return sorted(arns, key=lambda arn: int(arn.rsplit(":", 1)[1]))


async def test_the_daemon_keeps_the_newest_and_what_runs_and_the_cli_dry_run_lists_nothing_more(
    world: World,
) -> None:
    world.app_overrides["cleanup"] = {"keep_task_definitions": 1}
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.first_commit)
        for version in (2, 3):
            commit = world.repo.commit({"app.txt": f"version {version}\n"}, f"v{version}")
            await daemon.github_push()
            await daemon.wait_phase("InSync", revision=commit)
        # Housekeeping runs right after the rollout is reported: wait for it to be done.
        await eventually(lambda: len(active_revisions(world)) == 3, what="the old one gone")
    kept = active_revisions(world)
    live = str(world.service()["taskDefinition"])
    # The bootstrap revision (not registered by the daemon) stays; of the daemon's own three,
    # the live one (the newest) and the one that ran before it stay.
    assert [arn.rsplit(":", 1)[1] for arn in kept] == ["1", "3", "4"]
    assert live == kept[-1]

    process = await asyncio.create_subprocess_exec(
        str(RECONCILER),
        "cleanup",
        "--config",
        str(world.write_config()),
        "--dry-run",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    actions = {}
    table = out.decode().splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("APP "))
    for line in table[header + 1 :]:
        arn = next(word for word in line.split() if word.startswith("arn:"))
        action = line.split(arn)[0].split(None, 1)[1].strip()
        actions[arn.rsplit(":", 1)[1]] = action
    assert actions == {"3": "would deregister", "4": "keep", "1": "keep"}, out.decode()
    assert active_revisions(world) == kept  # a dry run changes nothing
