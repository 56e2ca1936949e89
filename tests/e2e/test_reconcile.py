"""The reconcile loop end to end: real git, dockerd, registry, and moto's ECS with rollouts."""

from __future__ import annotations

import subprocess
from pathlib import Path

from reconciler.sandbox.scenario import Scenario
from tests.support.gitrepo import GitRepo
from tests.support.probes import passes as count_passes
from tests.support.probes import reconcile_count
from tests.support.world import DOCKERFILE, World


def labels(image: str) -> dict[str, str]:
    out = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    import json

    return dict(json.loads(out))


async def test_first_convergence_builds_pushes_and_deploys_the_branch_head(world: World) -> None:
    """A fresh app converges: image built from the commit, pushed, and running on the service."""
    async with world.daemon() as daemon:
        status = await daemon.wait_phase("InSync", revision=world.first_commit)
    assert world.live_image() == world.image(world.first_commit)
    assert (
        labels(world.image(world.first_commit))["org.opencontainers.image.revision"]
        == world.first_commit
    )
    assert status["history"][0]["result"] == "deployed"
    assert world.updates() == 1


async def test_new_commit_redeploys_and_keeps_sidecar_env_and_tags(world: World) -> None:
    """Only the managed container's image changes; sidecar, environment and tags carry over."""
    before, before_tags = world.task_definition()
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.first_commit)
        second = world.repo.commit({"app.txt": "version 2\n"}, "second")
        answer = await daemon.github_push()
        assert answer.status == 202
        await daemon.wait_phase("InSync", revision=second)
    after, after_tags = world.task_definition()
    assert world.live_image() == world.image(second)
    sidecar = {c["name"]: c for c in before["containerDefinitions"]}["log-router"]
    assert {c["name"]: c for c in after["containerDefinitions"]}["log-router"] == sidecar
    app_before = {c["name"]: c for c in before["containerDefinitions"]}["app"]
    app_after = {c["name"]: c for c in after["containerDefinitions"]}["app"]
    assert {k: v for k, v in app_after.items() if k != "image"} == {
        k: v for k, v in app_before.items() if k != "image"
    }
    # Every tag carries over, plus the one that marks it as registered by the daemon.
    marked = [*before_tags, {"key": "reconciler:app", "value": world.name}]
    assert sorted(after_tags, key=str) == sorted(marked, key=str)
    for key in ("cpu", "memory", "networkMode", "requiresCompatibilities", "family"):
        assert after.get(key) == before.get(key), key
    assert after["revision"] > before["revision"]
    assert world.updates() == 2


async def test_webhook_starts_the_redeploy_at_once(world: World) -> None:
    """With an hour-long poll interval, only the signed webhook can explain the redeploy."""
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.first_commit)
        second = world.repo.commit({"app.txt": "version 2\n"}, "second")
        answer = await daemon.github_push()
        assert answer.status == 202
        await daemon.wait_phase("InSync", revision=second, timeout=60)


async def test_bad_signature_gets_401_and_changes_nothing(world: World) -> None:
    """A forged webhook nudges nothing: the new commit is not deployed."""
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.first_commit)
        world.repo.commit({"app.txt": "version 2\n"}, "second")
        passes = count_passes(daemon)
        answer = await daemon.github_push(secret="not-the-secret")
        assert answer.status == 401
        status = await daemon.status()
        assert count_passes(daemon) == passes
    assert status["desired"]["revision"] == world.first_commit
    assert world.live_image() == world.image(world.first_commit)
    assert world.updates() == 1


async def test_failed_rollout_is_rolled_back_and_the_app_shows_failed(world: World) -> None:
    """A circuit-breaker rollback is a failure, never a success, and the revision is held."""
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.first_commit)
        world.aws.rollouts.set_scenario(world.cluster, world.name, Scenario("fail", after=0.3))
        second = world.repo.commit({"app.txt": "version 2\n"}, "second")
        await daemon.github_push()
        status = await daemon.wait_for(
            lambda s: s["phase"] == "Failed" and s["desired"]["revision"] == second, what="Failed"
        )
        updates_after_failure = world.updates()
        # A further nudge must not deploy the held revision again.
        await daemon.github_push()
        await daemon.wait_for(lambda s: s["phase"] == "Failed", what="still Failed")
    assert status["history"][0]["result"] in {"rolled_back", "failed"}
    assert status["history"][0]["revision"] == second
    assert "circuit breaker" in (status["last_error"] or "")
    assert world.live_image() == world.image(world.first_commit)
    assert world.updates() == updates_after_failure == 2


async def test_stuck_rollout_times_out_and_rolls_back(world: World) -> None:
    """Nothing COMPLETED within rollout_timeout: the service returns to its previous revision."""
    world.app_overrides["rollout_timeout"] = "2s"
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.first_commit)
        first_td = world.service()["taskDefinition"]
        world.aws.rollouts.set_scenario(
            world.cluster, world.name, Scenario("stick", revert="complete")
        )
        second = world.repo.commit({"app.txt": "version 2\n"}, "second")
        await daemon.github_push()
        status = await daemon.wait_for(
            lambda s: s["phase"] == "Failed" and s["history"][0]["revision"] == second,
            what="Failed, with the rollback's outcome recorded",
        )
    assert "did not complete within 2s" in status["last_error"]
    assert status["history"][0]["result"] == "rolled_back"
    assert world.service()["taskDefinition"] == first_td
    assert world.live_image() == world.image(world.first_commit)


# Polls of /status while a push is picked up: enough to cover git, the look at ECS and the
# start of the build many times over (each answers in about a millisecond in process).
STATUS_POLLS = 3000


async def test_status_never_says_in_sync_beside_a_revision_ecs_does_not_run(world: World) -> None:
    """/status polled as fast as it answers while a pushed commit is picked up never shows
    phase InSync beside a desired image other than the live one; the app then converges."""
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.first_commit)
        second = world.repo.commit({"app.txt": "version 2\n"}, "second")
        assert (await daemon.github_push()).status == 202
        seen = []
        for _ in range(STATUS_POLLS):
            status = await daemon.status()
            seen.append(status)
            if status["phase"] != "InSync":
                break  # the pass left InSync: what follows is the rollout's own phases
        await daemon.wait_phase("InSync", revision=second)
    false_in_sync = [
        (s["desired"]["revision"], s["live"]["image"])
        for s in seen
        if s["phase"] == "InSync" and s["desired"]["image"] != s["live"]["image"]
    ]
    assert false_in_sync == []
    assert seen[-1]["phase"] != "InSync", f"the pass never left InSync in {len(seen)} polls"
    assert world.live_image() == world.image(second)


async def test_a_repository_with_no_commit_yet_waits_for_its_first_push(
    world: World, tmp_path: Path
) -> None:
    """Not an error: the daemon is ready, the status says why nothing happens and no pass
    fails; the first push's webhook deploys the first commit."""
    world.repo = GitRepo(tmp_path / "empty")
    async with world.daemon() as daemon:
        status = await daemon.wait_for(
            lambda s: "has no commit yet" in (s["last_error"] or ""), what="branch_empty"
        )
        assert status["phase"] == "Pending" and status["history"] == []
        async with daemon.http.get(f"{daemon.url}/readyz") as ready:
            assert ready.status == 200  # nothing more to look at
        assert reconcile_count(daemon, "branch_empty") >= 1
        assert [reconcile_count(daemon, r) for r in ("error", "stalled", "retry")] == [0, 0, 0]
        first = world.repo.commit({"Dockerfile": DOCKERFILE, "app.txt": "first\n"}, "first")
        assert (await daemon.github_push()).status == 202
        status = await daemon.wait_phase("InSync", revision=first)
    assert status["last_error"] is None
    assert world.live_image() == world.image(first)
