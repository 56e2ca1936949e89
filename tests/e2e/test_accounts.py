"""Apps in other accounts and regions: each app's ECS and ECR calls go out with its own
region and assumed role; a role that cannot be assumed is that app's error, naming the role."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.sandbox.aws import SandboxAws
from tests.support.accounts import OTHER_ACCOUNT_ROLE, OTHER_REGION, in_account, service_in
from tests.support.multiapp import daemon_for
from tests.support.world import World

pytestmark = [pytest.mark.slow]

PRODUCTION_ROLE = OTHER_ACCOUNT_ROLE


async def test_apps_in_two_accounts_deploy_each_in_its_own(
    tmp_path: Path, aws: SandboxAws, registry: str, docker_engine: str
) -> None:
    aws.faults.clear()
    staging = World.create(tmp_path / "staging", aws, registry)
    production = World.create(tmp_path / "production", aws, registry)
    in_account(production)
    before = aws.calls.count("AssumeRole")
    async with daemon_for([staging, production]) as (on_staging, on_production):
        await on_staging.wait_phase("InSync", revision=staging.first_commit)
        await on_production.wait_phase("InSync", revision=production.first_commit)
    assert aws.calls.count("AssumeRole") > before
    # Production's service in its own account and region runs the new image ...
    running = service_in(production)
    assert str(running["serviceArn"]).startswith(f"arn:aws:ecs:{OTHER_REGION}:111111111111:")
    assert str(running["taskDefinition"]).endswith(":2")
    # ... and the same-named service in the daemon's own account was never touched.
    assert str(production.service()["taskDefinition"]).endswith(":1")
    assert staging.live_image() == staging.image(staging.first_commit)


async def test_a_role_that_cannot_be_assumed_is_the_apps_error_naming_the_role(
    tmp_path: Path, aws: SandboxAws, registry: str, docker_engine: str
) -> None:
    aws.faults.clear()
    healthy = World.create(tmp_path / "healthy", aws, registry)
    denied = World.create(tmp_path / "denied", aws, registry)
    denied.app_overrides.update(role_arn=PRODUCTION_ROLE)
    aws.faults.inject("AssumeRole", times=10_000, status=403, code="AccessDenied")
    try:
        async with daemon_for([healthy, denied]) as (on_healthy, on_denied):
            await on_healthy.wait_phase("InSync", revision=healthy.first_commit)
            status = await on_denied.wait_for(
                lambda s: f"cannot assume role {PRODUCTION_ROLE}" in (s["last_error"] or ""),
                what="the role named",
            )
    finally:
        aws.faults.clear()
    assert status["phase"] != "InSync"
    assert denied.updates() == 0
