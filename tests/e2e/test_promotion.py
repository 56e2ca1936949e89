"""Promotion on the real stack: production, in another account, follows what staging proved,
with the same image digest and no build, and never a revision that failed in staging."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from reconciler.sandbox.aws import SandboxAws
from reconciler.sandbox.scenario import Scenario
from tests.support.accounts import in_account, service_in
from tests.support.multiapp import daemon_for
from tests.support.world import World

pytestmark = [pytest.mark.slow]
ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def digest(world: World, revision: str) -> str:
    request = urllib.request.Request(
        f"http://{world.registry}/v2/{world.name}/manifests/{revision}",
        method="HEAD",
        headers={"Accept": ACCEPT},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
        return str(answer.headers["Docker-Content-Digest"])


async def test_production_follows_what_staging_proved(
    tmp_path: Path, aws: SandboxAws, registry: str, docker_engine: str
) -> None:
    aws.faults.clear()
    staging = World.create(tmp_path / "staging", aws, registry)
    production = World.create(tmp_path / "production", aws, registry)
    in_account(production)  # production in another account and region than staging
    production.app_overrides.update(promote_from=staging.name, promote_after="2s")
    async with daemon_for([staging, production]) as (on_staging, on_production):
        await on_staging.wait_phase("InSync", revision=staging.first_commit)
        status = await on_production.wait_phase("InSync", revision=staging.first_commit)
        assert status["promoted_from"] == {"app": staging.name, "revision": staging.first_commit}
        assert digest(production, staging.first_commit) == digest(staging, staging.first_commit)
        promoted = [e for e in status["history"] if e["result"] == "deployed"]
        assert [e["revision"] for e in promoted] == [staging.first_commit]

        # A revision that fails in staging is never promoted.
        aws.rollouts.set_scenario(staging.cluster, staging.name, Scenario("fail", after=0.3))
        failing = staging.repo.commit({"app.txt": "version 2\n"}, "fails in staging")
        await on_staging.github_push()
        await on_staging.wait_for(
            lambda s: s["phase"] == "Failed" and s["history"][0]["revision"] == failing,
            what="failed in staging",
        )
        # The next good one is, once it has been live there long enough.
        aws.rollouts.set_scenario(staging.cluster, staging.name, Scenario("complete"))
        good = staging.repo.commit({"app.txt": "version 3\n"}, "good")
        await on_staging.github_push()
        await on_staging.wait_phase("InSync", revision=good)
        status = await on_production.wait_phase("InSync", revision=good)
    revisions = [e["revision"] for e in status["history"]]
    assert failing not in revisions
    assert digest(production, good) == digest(staging, good)
    assert production.updates() == 2
    assert str(service_in(production)["taskDefinition"]).endswith(":3")
