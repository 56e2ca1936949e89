"""Faults end to end: each test breaks one real part and checks the end state, and what the
daemon did NOT do while it was broken (no registration, no UpdateService, no failed revision).

Parts are broken for real: the git remote is moved away, a registry of the test's own is
stopped, the Docker socket is dead, AWS answers with errors injected at the HTTP level.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from functools import partial
from pathlib import Path

import pytest
import structlog

from reconciler.sandbox.aws import SandboxAws
from reconciler.sandbox.scenario import Scenario
from tests.support.multiapp import daemon_for
from tests.support.probes import (
    assert_backoff,
    eventually,
    image_of,
    images_of_family,
    reconcile_count,
    record_delays,
    record_updates,
    slow_dockerfile,
)
from tests.support.probes import passes as count_passes
from tests.support.registry_process import RegistryProcess
from tests.support.world import DOCKERFILE, FAST, RunningDaemon, World


def held_more_than(daemon: RunningDaemon, count: float) -> bool:
    return reconcile_count(daemon, "held") > count


def history(status: dict[str, object]) -> list[tuple[str, str]]:
    entries = status["history"]
    assert isinstance(entries, list)
    return [(str(h["revision"]), str(h["result"])) for h in entries]


# --- git -----------------------------------------------------------------------------------


async def test_unreachable_git_remote_changes_nothing_backs_off_and_recovers(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Remote gone: service untouched, error in status, jittered backoff; back: converges."""
    delays = record_delays(monkeypatch)
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.first_commit)
        before = (world.updates(), images_of_family(world), world.service()["taskDefinition"])
        delays.clear()
        moved = world.repo.remote.with_name("moved-away.git")
        world.repo.remote.rename(moved)
        await daemon.github_push()
        status = await daemon.wait_for(
            lambda s: world.repo.url in (s["last_error"] or ""), what="the git error"
        )
        await eventually(lambda: len(delays) >= 5, what="five retries")
        assert_backoff(delays[:5], base=FAST.retry_base, cap=FAST.retry_cap)
        assert status["phase"] != "Failed"
        assert history(status) == [(world.first_commit, "deployed")]
        assert (world.updates(), images_of_family(world), world.service()["taskDefinition"]) == (
            before
        )

        moved.rename(world.repo.remote)
        second = world.repo.commit({"app.txt": "version 2\n"}, "second")
        # No webhook: the retries find the remote again by themselves.
        status = await daemon.wait_phase("InSync", revision=second)
    assert status["last_error"] is None
    assert world.updates() == before[0] + 1


async def test_deleted_branch_changes_nothing_backs_off_and_recovers(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Branch deleted: service untouched, error in status, backoff; pushed again: converges."""
    delays = record_delays(monkeypatch)
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.first_commit)
        before = (world.updates(), images_of_family(world))
        delays.clear()
        world.repo.remote_git("update-ref", "-d", "refs/heads/main")
        await daemon.github_push()
        status = await daemon.wait_for(
            lambda s: "branch 'main' not found" in (s["last_error"] or ""), what="the error"
        )
        await eventually(lambda: len(delays) >= 5, what="five retries")
        assert_backoff(delays[:5], base=FAST.retry_base, cap=FAST.retry_cap)
        assert (world.updates(), images_of_family(world)) == before
        assert world.live_image() == world.image(world.first_commit)

        world.repo.remote_git("update-ref", "refs/heads/main", world.first_commit)
        status = await daemon.wait_for(
            lambda s: s["last_error"] is None and s["phase"] == "InSync", what="recovery"
        )
    assert history(status) == [(world.first_commit, "deployed")]
    assert world.updates() == before[0]


# --- registry ------------------------------------------------------------------------------


async def test_registry_down_during_push_registers_nothing_then_converges(
    tmp_path: Path,
    aws: SandboxAws,
    docker_engine: str,
    base_image: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The push fails: no task definition, no UpdateService, no failed revision; then it lands."""
    aws.faults.clear()
    delays = record_delays(monkeypatch)
    with RegistryProcess(tmp_path / "registry") as registry:
        world = World.create(tmp_path / "world", aws, registry.address)
        head = world.repo.commit({"Dockerfile": slow_dockerfile(base_image)}, "slow build")
        with structlog.testing.capture_logs() as logs:
            async with world.daemon() as daemon:
                await daemon.wait_for(lambda s: s["phase"] == "Building", what="the build")
                delays.clear()
                registry.stop()
                await eventually(
                    lambda: any("push of" in str(e.get("error")) for e in logs), what="push error"
                )
                status = await daemon.wait_for(
                    lambda s: registry.address in (s["last_error"] or ""), what="error in status"
                )
                await eventually(lambda: len(delays) >= 3, what="retries")
                assert_backoff(delays[:3], base=FAST.retry_base, cap=FAST.retry_cap)
                assert world.updates() == 0
                assert images_of_family(world) == [f"{registry.address}/{world.name}:bootstrap"]
                assert history(status) == []

                registry.start()
                status = await daemon.wait_phase("InSync", revision=head)
    failed_push = next(e for e in logs if "push of" in str(e.get("error")))
    assert failed_push["kind"] == "RegistryUnavailable"
    assert history(status) == [(head, "deployed")]
    assert world.updates() == 1
    assert world.live_image() == world.image(head)


# --- Docker engine -------------------------------------------------------------------------


async def test_dead_docker_socket_changes_nothing_until_restarted_with_the_right_one(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No engine: nothing registered or updated, no failed revision; the right socket deploys."""
    dead = tmp_path / "dead-docker.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(dead))  # a socket file nobody listens on, as a crashed dockerd leaves
    world.daemon_overrides["docker_host"] = f"unix://{dead}"
    delays = record_delays(monkeypatch)
    async with world.daemon() as daemon:
        status = await daemon.wait_for(
            lambda s: "Docker engine unavailable" in (s["last_error"] or ""), what="the error"
        )
        await eventually(lambda: len(delays) >= 4, what="retries")
        assert_backoff(delays[:4], base=FAST.retry_base, cap=FAST.retry_cap)
        status = await daemon.status()
        assert status["phase"] == "Pending"
        assert history(status) == []
    assert world.updates() == 0
    assert images_of_family(world) == [world.image("bootstrap")]

    del world.daemon_overrides["docker_host"]
    async with world.daemon() as daemon:
        status = await daemon.wait_phase("InSync", revision=world.first_commit)
    assert history(status) == [(world.first_commit, "deployed")]
    assert world.updates() == 1


# --- broken Dockerfile ---------------------------------------------------------------------


async def test_broken_dockerfile_fails_after_three_builds_and_a_fixed_commit_deploys(
    world: World, base_image: str
) -> None:
    """Failed with the build's output in status; 3 builds, whatever the nudges; a fix deploys."""
    marker = uuid.uuid4().hex[:8]
    broken = world.repo.commit(
        {"Dockerfile": f'FROM {base_image}\nRUN echo "out-{marker}-$((6*7))" && exit 3\n'},
        "broken",
    )
    async with world.daemon() as daemon:
        status = await daemon.wait_for(
            lambda s: s["phase"] == "Failed" and s["desired"]["revision"] == broken,
            what="Failed",
        )
        assert f"out-{marker}-42" in status["last_error"]  # printed by the RUN step itself
        assert "exit code: 3" in status["last_error"]  # the failing step's own error (BuildKit)
        for _ in range(3):  # each nudge runs a pass, and each pass stays held
            held = reconcile_count(daemon, "held")
            await daemon.github_push()
            await eventually(partial(held_more_than, daemon, held), what="held pass")
        status = await daemon.status()
        assert history(status).count((broken, "build_failed")) == 3
        assert status["phase"] == "Failed"
        assert f"out-{marker}-42" in status["last_error"]  # still there after held passes
        state = json.loads((world.root / "state" / "apps" / f"{world.name}.json").read_text())
        assert state["build_failures"] == {broken: 3}
        assert world.updates() == 0
        assert images_of_family(world) == [world.image("bootstrap")]

        fixed = world.repo.commit({"Dockerfile": DOCKERFILE}, "fix the Dockerfile")
        await daemon.github_push()
        status = await daemon.wait_phase("InSync", revision=fixed)
    assert status["last_error"] is None
    assert world.updates() == 1


# --- failed rollouts -----------------------------------------------------------------------


async def test_circuit_breaker_failure_is_held_until_sync(world: World) -> None:
    """ECS rolls back: Failed, previous task definition, no redeploy on nudges; sync clears it."""
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.first_commit)
        first_td = world.service()["taskDefinition"]
        world.aws.rollouts.set_scenario(world.cluster, world.name, Scenario("fail", after=0.3))
        second = world.repo.commit({"app.txt": "version 2\n"}, "second")
        await daemon.github_push()
        status = await daemon.wait_for(
            lambda s: s["phase"] == "Failed" and s["desired"]["revision"] == second, what="Failed"
        )
        assert "circuit breaker" in status["last_error"]
        updates = world.updates()
        for _ in range(3):
            held = reconcile_count(daemon, "held")
            await daemon.github_push()
            await eventually(partial(held_more_than, daemon, held), what="held pass")
        assert world.updates() == updates == 2
        assert world.service()["taskDefinition"] == first_td

        world.aws.rollouts.set_scenario(world.cluster, world.name, Scenario("complete"))
        async with daemon.http.post(f"{daemon.url}/apps/{world.name}/sync") as answer:
            assert answer.status == 202
        status = await daemon.wait_phase("InSync", revision=second)
    assert world.updates() == 3
    assert history(status)[:2] == [(second, "deployed"), (second, "rolled_back")]


async def test_stuck_rollout_is_rolled_back_held_across_a_restart_and_a_new_commit_clears_it(
    world: World,
) -> None:
    """Past rollout_timeout: rolled back and held, also after a restart; a new commit deploys."""
    world.app_overrides["rollout_timeout"] = "1s"
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.first_commit)
        first_td = world.service()["taskDefinition"]
        world.aws.rollouts.set_scenario(
            world.cluster, world.name, Scenario("stick", revert="complete")
        )
        second = world.repo.commit({"app.txt": "version 2\n"}, "second")
        await daemon.github_push()
        status = await daemon.wait_for(
            lambda s: s["phase"] == "Failed" and s["desired"]["revision"] == second, what="Failed"
        )
        assert "did not complete within 1s" in status["last_error"]
        assert world.service()["taskDefinition"] == first_td
        assert world.updates() == 3  # first, second, and the rollback

    async with world.daemon() as daemon:
        status = await daemon.wait_for(lambda s: s["phase"] == "Failed", what="still Failed")
        held = reconcile_count(daemon, "held")
        await daemon.github_push()
        await eventually(lambda: reconcile_count(daemon, "held") > held, what="held pass")
        assert world.updates() == 3
        assert world.service()["taskDefinition"] == first_td

        world.aws.rollouts.set_scenario(world.cluster, world.name, Scenario("complete"))
        third = world.repo.commit({"app.txt": "version 3\n"}, "third")
        await daemon.github_push()
        status = await daemon.wait_phase("InSync", revision=third)
    assert world.updates() == 4
    assert (second, "deployed") not in history(status)


# --- AWS throttling and server errors ------------------------------------------------------

AWS_FAULTS = [
    pytest.param("DescribeServices", 400, "ThrottlingException", "Rate exceeded", id="describe"),
    pytest.param(
        "RegisterTaskDefinition",
        400,
        "InvalidParameterException",
        "Too many concurrent attempts to create a new revision of the specified family.",
        id="register-concurrent",
    ),
    pytest.param("UpdateService", 500, "ServerException", "Service unavailable", id="update-5xx"),
    pytest.param(
        "GetAuthorizationToken", 400, "ThrottlingException", "Rate exceeded", id="ecr-token"
    ),
]


@pytest.mark.parametrize(("action", "status_code", "code", "message"), AWS_FAULTS)
async def test_aws_errors_are_retried_and_never_fail_the_revision(
    world: World, action: str, status_code: int, code: str, message: str
) -> None:
    """Each error is retried; one registration, one UpdateService, history shows the deploy."""
    calls = world.aws.calls.count(action)
    world.aws.faults.inject(action, times=3, status=status_code, code=code, message=message)
    async with world.daemon() as daemon:
        status = await daemon.wait_phase("InSync", revision=world.first_commit)
        retries = reconcile_count(daemon, "retry")
    assert world.aws.calls.count(action) >= calls + 4  # the 3 faults and a success
    assert retries >= 1
    assert history(status) == [(world.first_commit, "deployed")]
    assert world.updates() == 1
    assert images_of_family(world) == [
        world.image("bootstrap"),
        world.image(world.first_commit),
    ]


async def test_throttled_describe_during_a_rollout_keeps_watching_it(world: World) -> None:
    """Losing sight of a rollout is not a failure: no rollback, the deploy completes."""
    world.aws.rollouts.set_scenario(world.cluster, world.name, Scenario("complete", after=1.0))
    async with world.daemon() as daemon:
        await daemon.wait_for(lambda s: s["phase"] == "Deploying", what="the rollout")
        calls = world.aws.calls.count("DescribeServices")
        world.aws.faults.inject("DescribeServices", times=6, status=500, code="ServerException")
        status = await daemon.wait_phase("InSync", revision=world.first_commit)
    assert world.aws.calls.count("DescribeServices") >= calls + 6
    assert history(status) == [(world.first_commit, "deployed")]
    assert world.updates() == 1


# --- a newer revision wins -----------------------------------------------------------------


async def test_a_push_during_the_build_means_the_older_revision_is_never_deployed(
    world: World, base_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B pushed while A builds: B goes live, A is never registered nor sent to UpdateService."""
    updates = record_updates(monkeypatch)
    older = world.repo.commit({"Dockerfile": slow_dockerfile(base_image)}, "A")
    async with world.daemon() as daemon:
        await daemon.wait_for(
            lambda s: s["phase"] == "Building" and s["desired"]["revision"] == older, what="A"
        )
        newer = world.repo.commit({"app.txt": "version B\n"}, "B")
        await daemon.github_push()
        status = await daemon.wait_phase("InSync", revision=newer)
        await daemon.github_push()
        await daemon.wait_phase("InSync", revision=newer)
    assert [image_of(world, arn) for arn in updates] == [world.image(newer)]
    assert world.image(older) not in images_of_family(world)
    assert (older, "superseded") in history(status)
    assert world.live_image() == world.image(newer)


async def test_a_push_during_the_rollout_ends_with_the_newer_revision_live(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B pushed while A rolls out: B goes live after A, and A never comes back after B."""
    updates = record_updates(monkeypatch)
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.first_commit)
        world.aws.rollouts.set_scenario(world.cluster, world.name, Scenario("complete", after=2))
        older = world.repo.commit({"app.txt": "version A\n"}, "A")
        await daemon.github_push()
        await daemon.wait_for(
            lambda s: s["phase"] == "Deploying" and s["desired"]["revision"] == older, what="A"
        )
        newer = world.repo.commit({"app.txt": "version B\n"}, "B")
        await daemon.github_push()
        await daemon.wait_for(lambda s: s["desired"]["revision"] == newer, what="B wanted")
        # A is still rolling out (2 s); from here on rollouts settle quickly.
        world.aws.rollouts.set_scenario(world.cluster, world.name, Scenario("complete", after=0.3))
        await daemon.wait_phase("InSync", revision=newer)
        for _ in range(2):
            await daemon.github_push()
        status = await daemon.wait_phase("InSync", revision=newer)
    images = [image_of(world, arn) for arn in updates]
    assert images == [world.image(c) for c in (world.first_commit, older, newer)]
    assert world.live_image() == world.image(newer)
    assert history(status)[:2] == [(newer, "deployed"), (older, "superseded")]


# --- a webhook burst -----------------------------------------------------------------------


async def test_a_burst_of_500_webhooks_and_replays_costs_two_passes_and_one_deploy(
    world: World,
) -> None:
    """500 signed deliveries at once plus replays: at most two passes, one UpdateService."""
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.first_commit)
        loop = daemon.loop()
        passes, updates = count_passes(daemon), world.updates()
        second = world.repo.commit({"app.txt": "version 2\n"}, "second")
        replayed = str(uuid.uuid4())
        answers = await asyncio.gather(
            *(daemon.github_push() for _ in range(500)),
            *(daemon.github_push(delivery=replayed) for _ in range(20)),
        )
        assert all(a.status == 202 for a in answers)
        await daemon.wait_phase("InSync", revision=second)
        await eventually(lambda: not loop._wakeup.is_set(), what="no pass pending")
        await asyncio.sleep(0.2)  # room for a pass that should not happen
        assert count_passes(daemon) - passes <= 2
        assert world.updates() == updates + 1


# --- one failing app does not hold up another ----------------------------------------------


@pytest.mark.slow
async def test_a_failing_app_never_holds_up_a_healthy_one(
    tmp_path: Path, aws: SandboxAws, registry: str, docker_engine: str, base_image: str
) -> None:
    """One app fails its build, then loses its service under throttling; the other deploys
    every new commit all the while."""
    aws.faults.clear()
    healthy = World.create(tmp_path / "healthy", aws, registry)
    failing = World.create(tmp_path / "failing", aws, registry)
    broken = failing.repo.commit({"Dockerfile": f"FROM {base_image}\nRUN exit 1\n"}, "broken")
    async with daemon_for([healthy, failing]) as (good, bad):
        await good.wait_phase("InSync", revision=healthy.first_commit)
        await bad.wait_for(
            lambda s: s["phase"] == "Failed" and s["desired"]["revision"] == broken, what="Failed"
        )
        second = healthy.repo.commit({"app.txt": "version 2\n"}, "second")
        await good.github_push()
        await good.wait_phase("InSync", revision=second)

        # Now the failing app keeps retrying: its service is gone.
        failing.ecs().delete_service(cluster=failing.cluster, service=failing.name, force=True)
        failing.repo.commit({"Dockerfile": DOCKERFILE}, "fixed, but no service to deploy to")
        await bad.github_push()
        await bad.wait_for(lambda s: "not found" in (s["last_error"] or ""), what="no service")
        # And AWS throttles (faults are per action, so the healthy app gets its share too).
        aws.faults.inject("DescribeServices", times=4, code="ThrottlingException")
        aws.faults.inject("UpdateService", times=2, code="ThrottlingException")
        third = healthy.repo.commit({"app.txt": "version 3\n"}, "third")
        await good.github_push()
        await good.wait_phase("InSync", revision=third)
        assert good.supervisor.view.alive
        async with good.http.get(f"{good.url}/healthz") as answer:
            assert answer.status == 200
        assert reconcile_count(bad, "stalled", app=failing.name) >= 1
        assert (await bad.status())["phase"] != "InSync"
    assert healthy.updates() == 3
    assert failing.updates() == 0
