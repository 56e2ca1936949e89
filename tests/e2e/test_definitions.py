"""Definitions as code, the whole daemon on the real stack (git, dockerd, the registry, the
sandbox AWS): a change of the files deploys once, a console edit is shown as drift and
nothing written with drift = "alert", and reverted with "heal"; desiredCount is never sent."""

from __future__ import annotations

import json
from typing import Any

from tests.support.cli import reconciler
from tests.support.metrics import passes_of
from tests.support.world import DOCKERFILE, RunningDaemon, World


def task_file(world: World, *, memory: int = 256, level: str = "info") -> str:
    return json.dumps(
        {
            "family": world.name,
            "containerDefinitions": [
                {
                    "name": "app",
                    "image": "{{ image }}",
                    "memory": memory,
                    "essential": True,
                    "environment": [
                        {"name": "LOG_LEVEL", "value": level},
                        {"name": "REVISION", "value": "{{ revision }}"},
                    ],
                }
            ],
        },
        indent=1,
    )


def defined(world: World, **overrides: Any) -> World:
    world.app_overrides.update(definitions="deploy/ecs", **overrides)
    world.repo.commit(
        {
            "deploy/ecs/task-definition.json": task_file(world),
            "deploy/ecs/service.json": '{"desiredCount": 1, "healthCheckGracePeriodSeconds": 15}',
        },
        "definitions",
    )
    return world


def app_container(world: World) -> dict[str, Any]:
    definition, _ = world.task_definition()
    return dict(next(c for c in definition["containerDefinitions"] if c["name"] == "app"))


async def another_pass(daemon: RunningDaemon) -> None:
    """Nudge the app and wait until that pass has finished."""
    before = passes_of(daemon.daemon.metrics, daemon.world.name)
    daemon.loop().nudge()
    await daemon.wait_for(
        lambda _: passes_of(daemon.daemon.metrics, daemon.world.name) > before,
        what="another pass",
    )


def console_edit(world: World, **changes: Any) -> str:
    """What an edit in the console does: a new revision of the live task definition, and
    the service pointed at it."""
    definition, _ = world.task_definition()
    edited: dict[str, Any] = {
        k: v
        for k, v in definition.items()
        if k in {"family", "containerDefinitions", "networkMode", "cpu", "memory", "volumes"}
    }
    for container in edited["containerDefinitions"]:
        if container["name"] == "app":
            container.update(changes)
    registered = world.ecs().register_task_definition(**edited)
    arn = registered["taskDefinition"]["taskDefinitionArn"]
    world.ecs().update_service(cluster=world.cluster, service=world.name, taskDefinition=arn)
    return str(arn)


async def test_a_definition_change_deploys_once_and_desired_count_is_never_sent(
    world: World,
) -> None:
    defined(world)
    async with world.daemon() as daemon:
        head = world.repo.head()
        await daemon.wait_phase("InSync", revision=head)
        assert world.updates() == 1
        assert app_container(world)["memory"] == 256
        assert world.service()["healthCheckGracePeriodSeconds"] == 15

        world.ecs().update_service(cluster=world.cluster, service=world.name, desiredCount=3)
        change = world.repo.commit(
            {
                "deploy/ecs/task-definition.json": task_file(world, memory=512, level="debug"),
                "Dockerfile": DOCKERFILE + "LABEL also=changed\n",
            },
            "more memory, debug logs and a new image in one commit",
        )
        await daemon.github_push()
        await daemon.wait_phase("InSync", revision=change)
        await another_pass(daemon)

    assert world.updates() == 2  # one deploy for the image and the definition together
    container = app_container(world)
    assert container["memory"] == 512
    assert {"name": "LOG_LEVEL", "value": "debug"} in container["environment"]
    assert {"name": "REVISION", "value": change} in container["environment"]
    assert world.service()["desiredCount"] == 3  # autoscaling's, never reset


async def test_a_console_edit_is_drift_shown_and_left_with_alert_and_reverted_with_heal(
    world: World,
) -> None:
    defined(world)
    async with world.daemon() as daemon:
        head = world.repo.head()
        await daemon.wait_phase("InSync", revision=head)
        updates = world.updates()
        edited = console_edit(world, memory=1024)
        await another_pass(daemon)
        status = await daemon.wait_for(lambda s: "drift" in s, what="drift shown")
        assert status["phase"] == "InSync"
        assert status["drift"]["fields"] == ["containerDefinitions[app].memory"]
        assert status["drift"]["changes"] == ["containerDefinitions[app].memory: 1024 -> 256"]
        assert world.service()["taskDefinition"] == edited  # nothing written
        assert world.updates() == updates + 1  # the console's own update only

        world.app_overrides["drift"] = "heal"
        daemon.config_path.write_text(world.config_text())
        await daemon.wait_for(lambda s: "drift" not in s, what="drift healed", timeout=120)
    assert app_container(world)["memory"] == 256
    assert world.service()["taskDefinition"] != edited


async def test_diff_is_silent_in_sync_and_names_a_console_edit_and_render_shows_the_files(
    world: World,
) -> None:
    """`reconciler diff` on an unchanged service prints nothing and exits 0 (no noise from
    what ECS fills in); after a console edit it prints the path with both values and exits 1.
    `render` prints what would be deployed; `render --from-live` writes starting files that,
    deployed as they are, would change nothing."""
    defined(world)
    async with world.daemon() as daemon:
        head = world.repo.head()
        await daemon.wait_phase("InSync", revision=head)
        config = str(daemon.config_path)

        same = await reconciler("diff", world.name, "--config", config)
        assert (same.code, same.stdout, same.stderr) == (0, "", "")

        rendered = await reconciler("render", world.name, "--config", config)
        assert rendered.code == 0, rendered.stderr
        files = json.loads(rendered.stdout)
        assert set(files) == {"deploy/ecs/task-definition.json", "deploy/ecs/service.json"}
        app = files["deploy/ecs/task-definition.json"]["containerDefinitions"][0]
        assert app["image"] == world.image(head)
        assert files["deploy/ecs/service.json"] == {"healthCheckGracePeriodSeconds": 15}

        out = world.root / "from-live"
        written = await reconciler(
            "render", "--from-live", world.name, "--config", config, "--out", str(out)
        )
        assert written.code == 0, written.stderr
        start = json.loads((out / "task-definition.json").read_text())
        assert start["containerDefinitions"][0]["image"] == "{{ image }}"
        assert "taskDefinitionArn" not in start and "revision" not in start
        again = await reconciler(
            "render", "--from-live", world.name, "--config", config, "--out", str(out)
        )
        assert again.code == 1 and "exists; not overwritten" in again.stderr

        console_edit(world, memory=2048)
        edited = await reconciler("diff", world.name, "--config", config)
    assert edited.code == 1
    assert edited.stdout.splitlines() == ["containerDefinitions[app].memory: 2048 -> 256"]
