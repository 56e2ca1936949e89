"""The pipeline's gates on the real stack: BuildKit builds with cache mounts, a test before the
push, a pre-deploy task before the service update, and extra tags after the rollout."""

from __future__ import annotations

import asyncio
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from reconciler.sandbox.tasks import TaskScenario
from tests.support.aws_proxy import AwsProxy
from tests.support.daemon_process import DaemonProcess
from tests.support.probes import eventually
from tests.support.world import World

pytestmark = [pytest.mark.slow]

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def digest_of(world: World, tag: str) -> str | None:
    """The registry's digest for `tag` of the app's repository, None when it has no such tag."""
    request = urllib.request.Request(
        f"http://{world.registry}/v2/{world.name}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": MANIFEST_TYPES},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
            return str(answer.headers["Docker-Content-Digest"])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def registrations_of(world: World, revision: str) -> int:
    ecs = world.ecs()
    arns = ecs.list_task_definitions(familyPrefix=world.name)["taskDefinitionArns"]
    images = [
        c["image"]
        for arn in arns
        for c in ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"][
            "containerDefinitions"
        ]
    ]
    return images.count(world.image(revision))


def read_from_image(image: str, path: str) -> str:
    out = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", image, "cat", path],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.strip()


def on_busybox(world: World, base_image: str, dockerfile_tail: str = "") -> None:
    world.sections["build"] = {"network": "none"}
    world.first_commit = world.repo.commit(
        {"Dockerfile": f"FROM {base_image}\nCOPY app.txt /app.txt\n{dockerfile_tail}"},
        "on busybox",
    )


async def test_a_cache_mount_dockerfile_builds_and_its_second_build_reuses_the_cache(
    world: World, base_image: str
) -> None:
    """`RUN --mount=type=cache` builds with the default builder; the second build of a changed
    commit sees what the first left in the cache."""
    on_busybox(
        world,
        base_image,
        "RUN --mount=type=cache,target=/cache sh -c "
        "'n=$(cat /cache/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /cache/n; "
        "echo $n > /built-count'\n",
    )
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.first_commit)
        first = read_from_image(world.image(world.first_commit), "/built-count")
        second = world.repo.commit({"app.txt": "version 2\n"}, "second")
        await daemon.github_push()
        await daemon.wait_phase("InSync", revision=second)
    assert int(read_from_image(world.image(second), "/built-count")) == int(first) + 1


async def test_a_failed_test_is_never_pushed_and_the_next_passing_commit_deploys(
    world: World, base_image: str
) -> None:
    on_busybox(world, base_image)
    world.repo.commit({"app.txt": "bad\n"}, "breaks the test")
    failing = world.repo.head()
    world.app_overrides["test"] = {
        "command": [
            "sh",
            "-c",
            "echo checking; grep -q good /app.txt || { echo 'not ok 1'; exit 1; }",
        ],
        "timeout": "60s",
    }
    async with world.daemon() as daemon:
        status = await daemon.wait_for(
            lambda s: s["phase"] == "Failed" and s["desired"]["revision"] == failing,
            what="the failed test",
        )
        assert "not ok 1" in status["last_error"]
        assert status["history"][0]["result"] == "test_failed"
        assert "not ok 1" in status["history"][0]["error"]
        assert digest_of(world, failing) is None
        assert registrations_of(world, failing) == 0
        assert world.updates() == 0

        passing = world.repo.commit({"app.txt": "good\n"}, "fixes it")
        await daemon.github_push()
        await daemon.wait_phase("InSync", revision=passing)
    assert digest_of(world, passing) is not None
    assert world.updates() == 1


async def test_a_test_that_hangs_is_killed_at_its_timeout(world: World, base_image: str) -> None:
    on_busybox(world, base_image)
    world.app_overrides["test"] = {"command": ["sleep", "600"], "timeout": "2s"}
    async with world.daemon() as daemon:
        status = await daemon.wait_for(lambda s: s["phase"] == "Failed", what="timed out")
    assert "test timed out after 2s" in status["last_error"]
    leftover = await asyncio.to_thread(
        subprocess.run,
        ["docker", "ps", "-a", "--filter", f"ancestor={world.image(world.first_commit)}", "-q"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert leftover.stdout.strip() == ""
    assert digest_of(world, world.first_commit) is None


async def test_a_test_target_that_does_not_exist_is_named(world: World, base_image: str) -> None:
    on_busybox(world, base_image)
    world.app_overrides["test"] = {"command": ["true"], "target": "no-such-stage"}
    async with world.daemon() as daemon:
        status = await daemon.wait_for(lambda s: s["phase"] == "Failed", what="Failed")
    assert "no-such-stage" in status["last_error"]
    assert digest_of(world, world.first_commit) is None


async def test_a_failing_pre_deploy_task_leaves_the_service_untouched(world: World) -> None:
    world.aws.tasks.set_scenario(world.cluster, TaskScenario(exit_code=1, after=0.3))
    world.app_overrides["pre_deploy"] = {"command": ["./manage.py", "migrate"]}
    async with world.daemon() as daemon:
        status = await daemon.wait_for(lambda s: s["phase"] == "Failed", what="Failed")
        assert "exited 1" in status["last_error"]
        assert status["history"][0]["result"] == "pre_deploy_failed"
        await daemon.github_push()
        await daemon.wait_for(lambda s: s["phase"] == "Failed", what="still held")
    assert world.updates() == 0
    started = world.aws.tasks.started(world.cluster)
    assert len(started) == 1
    overrides = started[0].overrides["containerOverrides"]
    assert [o["command"] for o in overrides] == [["./manage.py", "migrate"]]


async def test_a_passing_pre_deploy_task_runs_once_per_revision_across_restarts(
    world: World,
) -> None:
    world.aws.tasks.set_scenario(world.cluster, TaskScenario(exit_code=0, after=0.3))
    world.app_overrides["pre_deploy"] = {"command": ["migrate"]}
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.first_commit)
    async with world.daemon() as daemon:
        await daemon.github_push()
        await asyncio.sleep(0.5)
        await daemon.wait_phase("InSync", revision=world.first_commit)
    assert len(world.aws.tasks.started(world.cluster)) == 1
    assert world.updates() == 1


async def test_extra_tags_name_what_runs_after_a_deploy_and_after_a_pin(world: World) -> None:
    world.app_overrides["extra_tags"] = ["latest", "production"]
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.first_commit)
        first_digest = digest_of(world, world.first_commit)
        assert first_digest is not None
        assert digest_of(world, "latest") == digest_of(world, "production") == first_digest

        second = world.repo.commit({"app.txt": "version 2\n"}, "second")
        await daemon.github_push()
        await daemon.wait_phase("InSync", revision=second)
        assert digest_of(world, "latest") == digest_of(world, second) != first_digest

        world.app_overrides["revision"] = world.first_commit  # roll back by pin
        daemon.config_path.write_text(world.config_text())
        await daemon.wait_phase("InSync", revision=world.first_commit)
        assert digest_of(world, "latest") == first_digest
    definition, _ = world.task_definition()
    images = [c["image"] for c in definition["containerDefinitions"]]
    assert not any(image.endswith((":latest", ":production")) for image in images)


async def test_killed_while_the_pre_deploy_task_runs_the_restart_awaits_it(
    world: World, tmp_path: Path
) -> None:
    """SIGKILL while the migration runs: the next start finds that task by the state (and
    `startedBy`) and awaits it; RunTask happens once, UpdateService once."""
    world.aws.tasks.set_scenario(world.cluster, TaskScenario(exit_code=0, after=4.0))
    world.app_overrides["pre_deploy"] = {"command": ["migrate"]}
    first = DaemonProcess(world.write_config(), tmp_path / "run1.log")
    second = DaemonProcess(world.write_config(), tmp_path / "run2.log")
    try:
        await first.start()
        await first.wait_for(world.name, lambda s: s["phase"] == "Migrating", what="migrating")
        # Killed once the task runs (killed before RunTask, a restart starts it afresh).
        await eventually(
            lambda: len(world.aws.tasks.started(world.cluster)) == 1, what="the task started"
        )
        first.kill()
        assert world.updates() == 0
        await second.start()
        await second.wait_for(
            world.name,
            lambda s: (
                s["phase"] == "InSync" and s["live"]["image"] == world.image(world.first_commit)
            ),
            what="in sync",
        )
        assert "pre_deploy_found" in [e.get("event") for e in second.events()]
    finally:
        first.kill()
        second.kill()
    assert len(world.aws.tasks.started(world.cluster)) == 1
    assert world.updates() == 1


async def test_a_pre_deploy_task_that_never_starts_names_the_reason(world: World) -> None:
    world.aws.tasks.set_scenario(world.cluster, TaskScenario(never_starts=True, after=0.3))
    world.app_overrides["pre_deploy"] = {"command": ["migrate"]}
    async with world.daemon() as daemon:
        status = await daemon.wait_for(lambda s: s["phase"] == "Failed", what="Failed")
    assert "TaskFailedToStart" in status["last_error"]
    assert "CannotPullContainerError" in status["last_error"]
    assert status["history"][0]["result"] == "pre_deploy_failed"
    assert world.updates() == 0


async def test_a_pre_deploy_task_past_its_timeout_is_stopped(world: World) -> None:
    world.aws.tasks.set_scenario(world.cluster, TaskScenario(hang=True))
    world.app_overrides["pre_deploy"] = {"command": ["migrate"], "timeout": "2s"}
    async with world.daemon() as daemon:
        status = await daemon.wait_for(lambda s: s["phase"] == "Failed", what="Failed")
    assert "did not finish within 2s and was stopped" in status["last_error"]
    assert world.aws.calls.count("StopTask") >= 1
    assert world.updates() == 0


async def test_a_runtask_whose_answers_are_lost_runs_one_task(world: World, tmp_path: Path) -> None:
    """RunTask reaches ECS but its answer is lost, for botocore's attempts and then for the
    daemon's own retry: every attempt carries the same clientToken, so one task runs."""
    world.aws.tasks.set_scenario(world.cluster, TaskScenario(exit_code=0, after=0.1))
    world.app_overrides["pre_deploy"] = {"command": ["migrate"]}
    async with AwsProxy.serving(world.aws.endpoint_url) as proxy:
        proxy.lose_answers("RunTask", times=3)
        config = tmp_path / "proxied.toml"
        config.write_text(world.config_text().replace(world.aws.endpoint_url, proxy.url))
        daemon = DaemonProcess(config, tmp_path / "run.log")
        try:
            await daemon.start()
            await daemon.wait_for(
                world.name,
                lambda s: (
                    s["phase"] == "InSync" and s["live"]["image"] == world.image(world.first_commit)
                ),
                what="in sync",
                timeout=120,
            )
        finally:
            daemon.kill()
    calls = [c for c in world.aws.calls.logged("RunTask") if c.get("cluster") == world.cluster]
    assert len(calls) >= 4, calls  # the three lost, and the one answered
    assert len({c.get("clientToken") for c in calls}) == 1
    assert len(world.aws.tasks.started(world.cluster)) == 1
    assert world.updates() == 1
