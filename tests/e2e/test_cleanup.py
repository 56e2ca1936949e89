"""Housekeeping against the sandbox: task definition revisions deregistered and ECR images
deleted, and everything that must stay staying."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ecr.models import ecr_backends
from structlog.testing import capture_logs

from reconciler.adapters.ecs import boto_config
from reconciler.adapters.housekeeping import Housekeeping
from reconciler.app.stages.housekeeping import CleanupReport, clean_up
from reconciler.app.state import AppMemory, FileStateStore
from reconciler.cli.cleanup import cleanup_rows
from reconciler.config import AppConfig
from reconciler.decisions.housekeeping import APP_TAG, KEPT_EXTRA_TAG, KEPT_NEWEST, KEPT_REFERENCED
from reconciler.decisions.model import Hold
from reconciler.errors import ConfigError
from reconciler.sandbox import Scenario
from reconciler.sandbox.aws import SandboxAws
from tests.support.cli import reconciler
from tests.support.world import World

if TYPE_CHECKING:
    from mypy_boto3_ecr import ECRClient
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_ecs.type_defs import ContainerDefinitionOutputTypeDef


REGISTRY = "registry.test"  # names the images only: nothing is pulled or pushed
# botocore's max_attempts counts retries: each call is tried once more than that.
ATTEMPTS = 1 + int(boto_config().retries["max_attempts"])  # type: ignore[attr-defined]
START = datetime(2025, 1, 1, tzinfo=UTC)


def sha(n: int) -> str:
    return f"{n:040x}"


@dataclass
class App:
    """One provisioned app and the boto3 clients to arrange and inspect it."""

    aws: SandboxAws
    world: World
    ecs: ECSClient
    ecr: ECRClient
    first: str  # the bootstrap revision, registered untagged by the provisioning

    @property
    def name(self) -> str:
        return self.world.name

    @property
    def cluster(self) -> str:
        return self.world.cluster

    def config(self, *, task_definitions: int = 0, images: int = 0) -> AppConfig:
        self.world.app_overrides["cleanup"] = {
            "keep_task_definitions": task_definitions,
            "keep_images": images,
        }
        return self.world.config().apps[0]

    def image(self, n: int) -> str:
        return f"{REGISTRY}/{self.name}:{sha(n)}"

    def register(self, image: str, *, tagged: bool = True) -> str:
        """A copy of the bootstrap revision running `image`, tagged as the daemon tags."""
        first = self.ecs.describe_task_definition(taskDefinition=self.first, include=["TAGS"])
        definition = first["taskDefinition"]

        def with_image(c: ContainerDefinitionOutputTypeDef) -> ContainerDefinitionOutputTypeDef:
            return {**c, "image": image} if c["name"] == "app" else c

        tags = list(first.get("tags") or [])
        if tagged:
            tags.append({"key": APP_TAG, "value": self.name})
        registered = self.ecs.register_task_definition(
            family=definition["family"],
            containerDefinitions=[with_image(c) for c in definition["containerDefinitions"]],
            requiresCompatibilities=definition["requiresCompatibilities"],
            networkMode=definition["networkMode"],
            cpu=definition["cpu"],
            memory=definition["memory"],
            tags=tags,
        )
        return str(registered["taskDefinition"]["taskDefinitionArn"])

    def revisions(self, *, count: int, tagged: bool = True) -> dict[int, str]:
        """Register `count` revisions, each running the SHA image of its revision number."""
        arns: dict[int, str] = {}
        for _ in range(count):
            number = self.next_revision()
            arns[number] = self.register(self.image(number), tagged=tagged)
        return arns

    def next_revision(self) -> int:
        arns = [
            arn
            for status in ("ACTIVE", "INACTIVE")
            for arn in self.ecs.list_task_definitions(familyPrefix=self.name, status=status)[
                "taskDefinitionArns"
            ]
        ]
        return max(int(a.rpartition(":")[2]) for a in arns) + 1

    def active(self) -> list[int]:
        listed = self.ecs.list_task_definitions(familyPrefix=self.name, status="ACTIVE")
        return sorted(int(a.rpartition(":")[2]) for a in listed["taskDefinitionArns"])

    def deploy(self, arn: str, *, settles_on: str | None = None) -> None:
        """UpdateService to `arn` and wait until the service settles on `settles_on` (by
        default `arn`; the revision before when the rollout fails and is rolled back)."""
        self.ecs.update_service(cluster=self.cluster, service=self.name, taskDefinition=arn)
        expected = settles_on or arn
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            service = self.world.service()
            # A failed deployment may stay listed beside the one rolled back to.
            primary = next(d for d in service["deployments"] if d["status"] == "PRIMARY")
            if primary["taskDefinition"] == expected and primary["rolloutState"] == "COMPLETED":
                return
            time.sleep(0.05)
        raise AssertionError(f"the rollout to {arn} did not settle on {expected}")

    def push(self, n: int, *tags: str, pushed: datetime | None = None) -> str:
        """A manifest of its own (so a digest of its own) under `tags` (none: untagged);
        its push time set to `pushed` (default: START plus n minutes)."""
        layer = {
            "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "size": 32,
            "digest": f"sha256:{n:064x}",
        }
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "size": 8,
                    "digest": f"sha256:{n + 10_000:064x}",
                },
                "layers": [layer],
            }
        )
        if tags:
            answer = self.ecr.put_image(
                repositoryName=self.name, imageManifest=manifest, imageTag=tags[0]
            )
            for tag in tags[1:]:
                self.ecr.put_image(repositoryName=self.name, imageManifest=manifest, imageTag=tag)
        else:
            answer = self.ecr.put_image(repositoryName=self.name, imageManifest=manifest)
        digest = str(answer["image"]["imageId"]["imageDigest"])
        self._backdate(digest, pushed or START + timedelta(minutes=n))
        return digest

    def _backdate(self, digest: str, when: datetime) -> None:
        # The sandbox stamps pushes to the second; tests order them by a time of their own.
        repository = ecr_backends[DEFAULT_ACCOUNT_ID][self.aws.region].repositories[self.name]
        for image in repository.images:
            if image.get_image_digest() == digest:
                image.image_pushed_at = int(when.timestamp())

    def stored(self) -> dict[str, list[str]]:
        """Digest -> tags of every image in the repository."""
        found: dict[str, list[str]] = {}
        for raw in self.ecr.describe_images(repositoryName=self.name)["imageDetails"]:
            found.setdefault(raw["imageDigest"], []).extend(raw.get("imageTags") or [])
        return found


@pytest.fixture
def sandbox(aws: SandboxAws) -> SandboxAws:
    aws.faults.clear()
    return aws


@pytest.fixture
def app(tmp_path: Path, sandbox: SandboxAws) -> App:
    world = World.create(tmp_path, sandbox, REGISTRY, sidecar=False)
    ecs = boto3.client("ecs", region_name=sandbox.region, endpoint_url=sandbox.endpoint_url)
    ecr = boto3.client("ecr", region_name=sandbox.region, endpoint_url=sandbox.endpoint_url)
    first = str(world.service()["taskDefinition"])
    return App(sandbox, world, ecs, ecr, first)


@pytest.fixture
async def housekeeping(sandbox: SandboxAws) -> AsyncIterator[Housekeeping]:
    async with Housekeeping.connect(
        region=sandbox.region, endpoint_url=sandbox.endpoint_url
    ) as adapter:
        yield adapter


async def run(
    housekeeping: Housekeeping,
    app: App,
    config: AppConfig,
    *,
    protected: tuple[str, ...] = (),
    dry_run: bool = False,
) -> CleanupReport:
    service = await housekeeping.service(cluster=app.cluster, service=app.name)
    return await clean_up(
        housekeeping, app=config, service=service, protected=protected, dry_run=dry_run
    )


def kept(report: CleanupReport) -> dict[str, str]:
    return {k.name: k.reason for k in report.kept}


# --- task definitions ------------------------------------------------------------------------


async def test_keeps_the_newest_tagged_revisions_and_never_touches_untagged_ones(
    app: App, housekeeping: Housekeeping
) -> None:
    tagged = app.revisions(count=4)  # 2..5
    untagged = app.revisions(count=1, tagged=False)  # 6
    newest = app.revisions(count=1)  # 7
    assert app.active() == [1, 2, 3, 4, 5, 6, 7]
    with capture_logs() as logged:
        report = await run(housekeeping, app, app.config(task_definitions=2))
    # 7 and 5 are the newest two tagged; 1 (live, from provisioning) and 6 carry no tag.
    assert app.active() == [1, 5, 6, 7]
    assert not report.failed
    assert sorted(r.name for r in report.removed) == sorted(tagged[n] for n in (2, 3, 4))
    assert all(r.done for r in report.removed)
    reasons = kept(report)
    assert reasons[newest[7]] == reasons[tagged[5]] == KEPT_NEWEST
    assert reasons[untagged[6]] == "not registered by reconciler for this app"
    assert reasons[app.first] == "live"
    lines = [e for e in logged if e["event"] == "task_definition_deregistered"]
    assert sorted(e["task_definition"] for e in lines) == sorted(tagged[n] for n in (2, 3, 4))
    # Once tidy, a second run has nothing to do.
    again = await run(housekeeping, app, app.config(task_definitions=2))
    assert again.removed == ()


@pytest.mark.parametrize("by", ["ecs", "hand"])
async def test_after_a_rollback_the_running_revision_and_the_target_stay(
    sandbox: SandboxAws, app: App, housekeeping: Housekeeping, by: str
) -> None:
    arns = app.revisions(count=5)  # 2..6
    for n in range(2, 7):
        app.push(n, sha(n))
    app.push(1, sha(1))  # built, never deployed
    app.deploy(arns[3])
    if by == "ecs":
        # Revision 5 trips the circuit breaker and ECS puts the service back on 3.
        sandbox.rollouts.set_scenario(app.cluster, app.name, Scenario(outcome="fail"))
        app.deploy(arns[5], settles_on=arns[3])
    else:
        # Revision 5 failed its bake and was rolled back by the daemon's own UpdateService.
        app.deploy(arns[5])
        app.deploy(arns[3])
    # The service runs 3, older than the newest registered ones (4..6); a hold names 2.
    assert app.world.service()["taskDefinition"] == arns[3]
    report = await run(
        housekeeping, app, app.config(task_definitions=2, images=1), protected=(arns[2],)
    )
    assert app.active() == [1, 2, 3, 5, 6]
    reasons = kept(report)
    assert reasons[arns[3]] == "live"
    assert reasons[arns[2]] == "protected (a hold's rollback target)"
    assert reasons[arns[6]] == KEPT_NEWEST
    # After ECS's rollback the failed deployment of 5 is still listed: both reasons apply.
    assert reasons[arns[5]].startswith(KEPT_NEWEST)
    # Images: 6 is the newest; 2, 3 and 5 are named by revisions that stay; 4 went with
    # its revision, and 1 was never named by any.
    tags = sorted(t for found in app.stored().values() for t in found)
    assert tags == [sha(2), sha(3), sha(5), sha(6)]
    assert not report.failed


async def test_revisions_of_a_rollout_in_flight_stay(
    sandbox: SandboxAws, app: App, housekeeping: Housekeeping
) -> None:
    arns = app.revisions(count=5)  # 2..6
    app.deploy(arns[3])
    sandbox.rollouts.set_scenario(app.cluster, app.name, Scenario(outcome="stick"))
    app.ecs.update_service(cluster=app.cluster, service=app.name, taskDefinition=arns[4])
    in_flight = await housekeeping.in_flight_task_definitions(cluster=app.cluster, service=app.name)
    assert set(in_flight) == {arns[3], arns[4]}
    report = await run(housekeeping, app, app.config(task_definitions=1))
    # 6 is the newest; 4 rolls out, from 3; only 2 and 5 may go.
    assert app.active() == [1, 3, 4, 6]
    assert sorted(r.name for r in report.removed) == sorted([arns[2], arns[5]])


# --- images ----------------------------------------------------------------------------------


async def test_images_named_by_revisions_that_stay_or_with_another_tag_stay(
    app: App, housekeeping: Housekeeping
) -> None:
    orphan = app.push(1, sha(1))
    latest = app.push(2, sha(2), "latest")
    by_tag = app.push(3, sha(3))
    by_digest = app.push(4, sha(4))
    also_orphan = app.push(5, sha(5))
    untagged = app.push(6)
    newest = app.push(7, sha(7))
    app.register(app.image(3), tagged=False)
    app.register(f"{REGISTRY}/{app.name}@{by_digest}")
    with capture_logs() as logged:
        report = await run(housekeeping, app, app.config(images=1))
    assert set(app.stored()) == {latest, by_tag, by_digest, untagged, newest}
    assert sorted(r.name for r in report.removed) == sorted(
        f"{app.name}@{d}" for d in (orphan, also_orphan)
    )
    reasons = kept(report)
    assert reasons[f"{app.name}@{latest}"] == KEPT_EXTRA_TAG
    assert reasons[f"{app.name}@{by_tag}"] == KEPT_REFERENCED
    assert reasons[f"{app.name}@{by_digest}"] == KEPT_REFERENCED
    assert reasons[f"{app.name}@{newest}"] == KEPT_NEWEST
    assert reasons[f"{app.name}@{untagged}"] == "untagged"
    assert [e["event"] for e in logged].count("image_deleted") == 2


async def test_more_images_than_one_delete_call_takes(app: App, housekeeping: Housekeeping) -> None:
    for n in range(1, 131):
        app.push(n, sha(n))
    calls = app.aws.calls.count("BatchDeleteImage")
    report = await run(housekeeping, app, app.config(images=5))
    assert len(app.stored()) == 5
    assert sum(r.done for r in report.removed) == 125
    assert app.aws.calls.count("BatchDeleteImage") - calls == 2


# --- dry run and errors ----------------------------------------------------------------------


async def test_dry_run_changes_nothing(app: App, housekeeping: Housekeeping) -> None:
    app.revisions(count=4)
    for n in range(1, 6):
        app.push(n, sha(n))
    before = app.stored()
    calls = app.aws.calls.snapshot()
    report = await run(housekeeping, app, app.config(task_definitions=1, images=1), dry_run=True)
    assert app.active() == [1, 2, 3, 4, 5]
    assert app.stored() == before
    after = app.aws.calls.snapshot()
    for write in ("DeregisterTaskDefinition", "BatchDeleteImage"):
        assert after.get(write, 0) == calls.get(write, 0)
    # What would go: revisions 2..4, and images 1..4 (none named by what would stay).
    actions = [row["action"] for row in report.rows()]
    assert actions.count("would deregister") == 3
    assert actions.count("would delete") == 4


async def test_a_server_error_botocore_retries_does_not_show(
    sandbox: SandboxAws, app: App, housekeeping: Housekeeping
) -> None:
    app.revisions(count=2)
    sandbox.faults.inject("DeregisterTaskDefinition", times=1, status=500, code="ServerException")
    report = await run(housekeeping, app, app.config(task_definitions=1))
    assert app.active() == [1, 3]
    assert not report.failed


@pytest.mark.slow  # botocore backs off between its attempts
async def test_aws_errors_are_reported_not_raised(
    sandbox: SandboxAws, app: App, housekeeping: Housekeeping
) -> None:
    arns = app.revisions(count=4)  # 2..5
    for n in range(1, 4):
        app.push(n, sha(n))
    # Every attempt at the first deregistration fails: AWS is busy, so the rest waits too.
    sandbox.faults.inject(
        "DeregisterTaskDefinition", times=ATTEMPTS, status=500, code="ServerException"
    )
    sandbox.faults.inject("BatchDeleteImage", times=ATTEMPTS, status=500, code="ServerException")
    with capture_logs() as logged:
        report = await run(housekeeping, app, app.config(task_definitions=1, images=1))
    assert report.failed
    assert app.active() == [1, 2, 3, 4, 5]
    failed = [r for r in report.removed if r.error]
    assert [r.name for r in failed if r.kind == "task_definition"] == [arns[2]]
    assert "ServerException" in (failed[0].error or "")
    assert kept(report)[arns[3]].startswith("left for the next run")
    # Revisions 2..4 stay, so only image 1 (named by none) was to go, and its delete failed.
    assert [r.detail for r in failed if r.kind == "image"] == [sha(1)]
    events = [e["event"] for e in logged]
    assert "task_definition_deregister_failed" in events
    assert "image_delete_failed" in events
    # The next run, with AWS well again, finishes the job.
    again = await run(housekeeping, app, app.config(task_definitions=1, images=1))
    assert not again.failed
    assert [t for found in app.stored().values() for t in found] == [sha(3)]
    assert app.active() == [1, 5]


async def test_a_refused_image_delete_is_reported(
    sandbox: SandboxAws, app: App, housekeeping: Housekeeping
) -> None:
    for n in range(1, 4):
        app.push(n, sha(n))
    sandbox.faults.inject(
        "BatchDeleteImage", code="AccessDeniedException", message="not allowed: ecr:BatchDelete"
    )
    report = await run(housekeeping, app, app.config(images=1))
    assert len(app.stored()) == 3
    errors = [r.error or "" for r in report.removed]
    assert len(errors) == 2
    assert all("AccessDeniedException" in e for e in errors)


async def test_an_unreadable_listing_removes_nothing(
    sandbox: SandboxAws, app: App, housekeeping: Housekeeping
) -> None:
    app.revisions(count=3)
    app.push(1, sha(1))
    app.push(2, sha(2))
    sandbox.faults.inject("ListTaskDefinitions", code="AccessDeniedException", message="no")
    report = await run(housekeeping, app, app.config(task_definitions=1, images=1))
    assert app.active() == [1, 2, 3, 4]
    assert len(app.stored()) == 2
    assert report.errors and "AccessDeniedException" in report.errors[0]


# --- the command -----------------------------------------------------------------------------


async def test_cleanup_rows_keep_a_holds_rollback_target(tmp_path: Path, app: App) -> None:
    arns = app.revisions(count=4)  # 2..5
    app.deploy(arns[5])
    store = FileStateStore(tmp_path / "state")
    hold = Hold(revision=sha(9), reason="failed", config_fingerprint="f", rollback_to=arns[2])
    store.save_now(app.name, AppMemory(hold=hold))
    app.config(task_definitions=1)
    config = app.world.config()
    rows = await cleanup_rows(config, [app.name], dry_run=True)
    assert app.active() == [1, 2, 3, 4, 5]
    by_item: dict[str, dict[str, Any]] = {r["item"]: r for r in rows}
    assert by_item[arns[2]]["detail"] == "a hold's rollback target"
    assert {by_item[arns[n]]["action"] for n in (3, 4)} == {"would deregister"}
    rows = await cleanup_rows(config, dry_run=False)
    assert app.active() == [1, 2, 5]
    assert {r["action"] for r in rows} >= {"deregistered", "keep"}
    with pytest.raises(ConfigError, match="unknown app 'nope'"):
        await cleanup_rows(config, ["nope"])


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("AccessDeniedException", "User is not authorized to perform: ecs:ListServiceDeployments"),
        ("UnsupportedFeatureException", "service deployments are not available in this region"),
    ],
)
async def test_cleanup_falls_back_to_the_services_deployments_when_ecs_refuses_service_deployments(
    sandbox: SandboxAws, app: App, code: str, message: str
) -> None:
    """`reconciler cleanup` where ListServiceDeployments is refused (access denied, or an
    older region or API) while a rollout is in flight: what is in use is judged from the
    service's `deployments`, as rollouts judge then; the output says so, every revision
    listed there stays, the surplus goes, and the command exits 0."""
    arns = app.revisions(count=4)  # 2..5
    app.deploy(arns[3])
    sandbox.rollouts.set_scenario(app.cluster, app.name, Scenario(outcome="stick"))
    app.ecs.update_service(cluster=app.cluster, service=app.name, taskDefinition=arns[4])
    listed = {d["taskDefinition"]: d["status"] for d in app.world.service()["deployments"]}
    assert listed == {arns[4]: "PRIMARY", arns[3]: "ACTIVE"}
    sandbox.faults.inject("ListServiceDeployments", times=100, code=code, message=message)
    app.config(task_definitions=1)
    ran = await reconciler("cleanup", "--config", str(app.world.write_config()))
    assert ran.code == 0, ran
    rows = table_rows(ran.stdout)
    notes = [r for r in rows if r["ACTION"] == "fallback"]
    assert len(notes) == 1 and code in notes[0]["DETAIL"], ran.stdout
    assert "the service's deployments" in notes[0]["DETAIL"]
    # 5 is the newest; 4 rolls out and 3 is what it rolls from (both in the deployments
    # list); 1 was not registered by reconciler. Only 2 may go.
    assert app.active() == [1, 3, 4, 5]
    actions = {r["ITEM"]: r["ACTION"] for r in rows}
    assert actions[arns[2]] == "deregistered"
    assert {actions[arns[n]] for n in (3, 4, 5)} == {"keep"}
    assert sandbox.calls.count("ListServiceDeployments") >= 1


def table_rows(out: str) -> list[dict[str, str]]:
    """The rows of the table `reconciler cleanup` prints, by column name; the columns are
    cut where the header's names start (the last one runs to the end of the line)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("APP "))
    header = lines[start]
    names = header.split()
    edges = [header.index(name) for name in names] + [None]
    return [
        {name: line[edges[i] : edges[i + 1]].strip() for i, name in enumerate(names)}
        for line in lines[start + 1 :]
        if line.strip()
    ]
