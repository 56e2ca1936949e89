"""Approvals on the real stack (SPEC 21): a release waits after push and registration until
an approver of the app says yes, and a no holds it; both are in the audit log.

Real git, dockerd, registry and the sandbox AWS; the votes go through the CLI, as people
would send them, each with their own token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reconciler.adapters.tokens import add_token
from reconciler.sandbox.aws import SandboxAws
from tests.support.cli import reconciler
from tests.support.world import World


async def test_a_release_waits_for_an_approver_a_rejection_holds_it_an_approval_ships_it(
    world: World, tmp_path: Path
) -> None:
    """A push builds, pushes and registers, then waits in AwaitingApproval with its digest
    and no UpdateService; an approver's reject holds it (Failed, `rejected`, by them). The
    next push waits too; an operator the app does not name as approver is refused 403; the
    approver's approval deploys it once, the history naming them; the audit log has each."""
    tokens = tmp_path / "tokens.toml"
    for name in ("alice", "otto"):
        token = add_token(tokens, name=name, role="operator", apps=[world.name])
        (tmp_path / f"{name}.token").write_text(token)
    admin = add_token(tokens, name="ada", role="admin", apps=[])
    world.sections["auth"] = {"tokens_file": tokens}
    world.app_overrides["approval"] = {"approvers": ["alice"], "expire_after": "1h"}
    async with world.daemon(token=admin) as daemon:

        def vote(verb: str, who: str, *more: str) -> list[str]:
            return [
                verb, world.name, "--url", daemon.url,
                "--token-file", str(tmp_path / f"{who}.token"), *more,
            ]  # fmt: skip

        async def awaiting(revision: str) -> dict[str, object]:
            return await daemon.wait_for(
                lambda s: s["phase"] == "AwaitingApproval" and s["desired"]["revision"] == revision,
                what=f"AwaitingApproval at {revision[:12]}",
            )

        second = world.repo.commit({"app.txt": "version 2\n"}, "second")
        await daemon.github_push()
        waiting = (await awaiting(second))["approval"]
        assert isinstance(waiting, dict)
        assert (waiting["revision"], waiting["required"], waiting["approvals"]) == (second, 1, [])
        assert str(waiting["digest"]).startswith("sha256:")
        assert world.updates() == 0

        rejected = await reconciler(*vote("reject", "alice", "--comment", "not today"))
        assert rejected.code == 0, rejected
        failed = await daemon.wait_for(lambda s: s["phase"] == "Failed", what="Failed")
        assert (failed["history"][0]["result"], failed["history"][0]["by"]) == ("rejected", "alice")
        assert "rejected by alice: not today" in failed["last_error"]
        assert world.updates() == 0

        third = world.repo.commit({"app.txt": "version 3\n"}, "third")
        await daemon.github_push()
        digest = (await awaiting(third))["approval"]["digest"]  # type: ignore[index]

        refused = await reconciler(*vote("approve", "otto"))
        assert refused.code == 2, refused
        assert "403" in refused.stderr and "otto is not an approver" in refused.stderr
        assert world.updates() == 0

        approved = await reconciler(*vote("approve", "alice", "--comment", "ship it"))
        assert approved.code == 0, approved
        deployed = await daemon.wait_phase("InSync", revision=third)
        assert (deployed["history"][0]["result"], deployed["history"][0]["by"]) == (
            "deployed",
            "alice",
        )
        assert "approval" not in deployed
        assert world.live_image() == world.image(third)
        assert world.updates() == 1

        async with daemon.http.get(f"{daemon.url}/audit", params={"app": world.name}) as answer:
            entries = (await answer.json())["entries"]
    votes = [
        (e["identity"], e["action"], e["result"][:12], e["args"].get("comment"))
        for e in entries
        if e["action"] in {"approve", "reject"}
    ]
    assert sorted(votes) == sorted(
        [
            ("alice", "reject", "accepted", "not today"),
            ("otto", "approve", "refused: 403", ""),
            ("alice", "approve", "accepted", "ship it"),
        ]
    )
    shipped = next(e for e in entries if e["action"] == "approve" and e["identity"] == "alice")
    assert shipped["args"]["revision"] == third
    assert shipped["args"]["digest"] == digest


async def test_at_a_pause_hook_the_approval_holds_production_traffic_back(
    tmp_path: Path, aws: SandboxAws, registry: str, docker_engine: str
) -> None:
    """A BLUE_GREEN service whose deployments pause after the test traffic shift: the
    release's UpdateService goes out and the deployment waits at the hook, AwaitingApproval,
    no production traffic on the new revision; the approval continues it
    (ContinueServiceDeployment) and it goes live. A rejection of the next release at its
    hook sends it back: ECS rolls it back, the release is held."""
    hook = {"targetType": "PAUSE", "lifecycleStages": ["POST_TEST_TRAFFIC_SHIFT"]}
    world = World.create(tmp_path, aws, registry, strategy="BLUE_GREEN", lifecycle_hooks=[hook])
    tokens = tmp_path / "tokens.toml"
    alice = add_token(tokens, name="alice", role="operator", apps=[world.name])
    (tmp_path / "alice.token").write_text(alice)
    world.sections["auth"] = {"tokens_file": tokens}
    world.app_overrides["approval"] = {"expire_after": "1h"}
    async with world.daemon(token=alice) as daemon:

        def vote(verb: str, *more: str) -> list[str]:
            return [
                verb, world.name, "--url", daemon.url,
                "--token-file", str(tmp_path / "alice.token"), *more,
            ]  # fmt: skip

        def paused() -> dict[str, Any]:
            arn = world.service()["currentServiceDeployment"]
            answer = world.ecs().describe_service_deployments(serviceDeploymentArns=[arn])
            return dict(answer["serviceDeployments"][0])

        waiting = await daemon.wait_for(
            lambda s: s["phase"] == "AwaitingApproval", what="AwaitingApproval at the hook"
        )
        assert world.updates() == 1  # out already: held at the hook by ECS
        record = paused()
        assert record["status"] == "IN_PROGRESS"
        assert record["lifecycleStage"] == "POST_TEST_TRAFFIC_SHIFT"
        assert record["targetServiceRevision"]["requestedProductionTrafficWeight"] == 0.0
        assert waiting["approval"]["revision"] == world.first_commit

        approved = await reconciler(*vote("approve"))
        assert approved.code == 0, approved
        await daemon.wait_phase("InSync", revision=world.first_commit)
        assert world.live_image() == world.image(world.first_commit)
        assert aws.calls.count("ContinueServiceDeployment") == 1

        second = world.repo.commit({"app.txt": "version 2\n"}, "second")
        await daemon.github_push()
        await daemon.wait_for(
            lambda s: s["phase"] == "AwaitingApproval" and s["desired"]["revision"] == second,
            what="the second release at its hook",
        )
        rejected = await reconciler(*vote("reject", "--comment", "not today"))
        assert rejected.code == 0, rejected
        failed = await daemon.wait_for(lambda s: s["phase"] == "Failed", what="Failed")
    assert "rejected by alice: not today (sent back at its lifecycle hook)" in failed["last_error"]
    assert failed["history"][0]["result"] == "rolled_back"
    assert world.live_image() == world.image(world.first_commit)
    assert world.updates() == 2  # the rollback was ECS's
