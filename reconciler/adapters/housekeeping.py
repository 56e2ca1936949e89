"""The AWS calls of housekeeping: list an app's task definition revisions and images, and
remove the ones the decision (decisions/housekeeping.py) selected.

A family that grew to a thousand revisions costs a DescribeTaskDefinition per revision to
learn its tags and images; the calls run a few at a time, so a first clean-up does not
starve the daemon's other ECS calls of the account's request rate. Revisions without the
daemon's tag never become candidates, and what they name never changes, so they are
described once per process; tagged revisions are described afresh on every listing, so a
tag removed by hand (to keep a revision) is seen at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from aiobotocore.session import AioSession

from reconciler.adapters.aws import aws_errors
from reconciler.adapters.ecs import boto_config
from reconciler.adapters.ecs_answers import service_state
from reconciler.decisions.housekeeping import (
    APP_TAG,
    Deleted,
    StoredImage,
    TaskDefinitionRevision,
    family_of,
)
from reconciler.decisions.model import ServiceState
from reconciler.errors import AwsRejected, ReconcilerError, ServiceDeploymentsUnreadable

LIST_PAGE = 100  # ListTaskDefinitions and ListServiceDeployments answer at most 100 per page
IMAGES_PAGE = 1000  # DescribeImages answers at most 1000 per page
DELETE_BATCH = 100  # BatchDeleteImage takes at most 100 image ids per call
# DescribeServiceDeployments and DescribeServiceRevisions take at most 20 ARNs per call.
DESCRIBE_BATCH = 20
# Service deployments whose source and target revisions may still run or be rolled back to.
IN_FLIGHT = (
    "PENDING",
    "IN_PROGRESS",
    "STOP_REQUESTED",
    "ROLLBACK_REQUESTED",
    "ROLLBACK_IN_PROGRESS",
)
DESCRIBE_CONCURRENCY = 4


def revision_of(definition: dict[str, Any], tags: Sequence[Any]) -> TaskDefinitionRevision:
    """A DescribeTaskDefinition answer (`taskDefinition`, `tags`) as the decision sees it."""
    arn = str(definition.get("taskDefinitionArn", ""))
    registered = definition.get("registeredAt")
    return TaskDefinitionRevision(
        arn=arn,
        family=str(definition.get("family") or family_of(arn)),
        revision=int(definition.get("revision") or 0),
        tags={str(t.get("key", "")): str(t.get("value", "")) for t in tags or ()},
        registered_at=registered if isinstance(registered, datetime) else None,
        images=tuple(
            str(c["image"]) for c in definition.get("containerDefinitions") or () if c.get("image")
        ),
    )


def image_of(raw: dict[str, Any]) -> StoredImage:
    """One DescribeImages `imageDetails` entry."""
    pushed = raw.get("imagePushedAt")
    return StoredImage(
        digest=str(raw.get("imageDigest", "")),
        tags=tuple(str(t) for t in raw.get("imageTags") or ()),
        pushed_at=pushed if isinstance(pushed, datetime) else None,
    )


class Housekeeping:
    """ECS and ECR clients for housekeeping; one per process, like the daemon's Ecs."""

    def __init__(self, ecs: Any, ecr: Any, *, concurrency: int = DESCRIBE_CONCURRENCY) -> None:
        self._ecs = ecs
        self._ecr = ecr
        self._slots = asyncio.Semaphore(concurrency)
        # Revisions described without the daemon's tag: ARN -> what they are (never changes).
        self._foreign: dict[str, TaskDefinitionRevision] = {}

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, *, region: str, endpoint_url: str = "", session: AioSession | None = None
    ) -> AsyncIterator[Housekeeping]:
        """Clients for `region`; with `session`, that session's credentials (an assumed
        role's)."""
        session = session or AioSession()
        endpoint = endpoint_url or None
        async with (
            session.create_client(
                "ecs", region_name=region, endpoint_url=endpoint, config=boto_config()
            ) as ecs,
            session.create_client(
                "ecr", region_name=region, endpoint_url=endpoint, config=boto_config()
            ) as ecr,
        ):
            yield cls(ecs, ecr)

    # Reads ----------------------------------------------------------------------------

    async def service(self, *, cluster: str, service: str) -> ServiceState:
        """The service as DescribeServices tells it now."""
        async with aws_errors():
            answer = await self._ecs.describe_services(cluster=cluster, services=[service])
        for raw in answer.get("services") or []:
            if raw.get("status") in {"ACTIVE", "DRAINING"}:
                return service_state(cluster, raw)
        raise AwsRejected(f"service {service!r} not found in cluster {cluster!r}")

    async def in_flight_task_definitions(self, *, cluster: str, service: str) -> dict[str, str]:
        """Task definition ARN -> why, for every revision a service deployment in flight
        deploys, rolls from or would roll back to. Raises ServiceDeploymentsUnreadable when
        the calls are refused (access denied) or ECS keeps no service deployments here (an
        older region or API), and AwsRejected when a revision named cannot be read."""
        arns = await self._in_flight_deployments(cluster=cluster, service=service)
        revisions: dict[str, str] = {}  # service revision ARN -> why
        for chunk in _chunks(arns, DESCRIBE_BATCH):
            async with _service_deployments_read():
                answer = await self._ecs.describe_service_deployments(serviceDeploymentArns=chunk)
            for raw in answer.get("serviceDeployments") or []:
                for arn, why in deployment_revisions(raw).items():
                    revisions.setdefault(arn, why)
        found: dict[str, str] = {}
        for chunk in _chunks(list(revisions), DESCRIBE_BATCH):
            async with _service_deployments_read():
                answer = await self._ecs.describe_service_revisions(serviceRevisionArns=chunk)
            for raw in answer.get("serviceRevisions") or []:
                arn, definition = raw.get("serviceRevisionArn"), raw.get("taskDefinition")
                if arn and definition:
                    found.setdefault(str(definition), revisions.get(str(arn), "in flight"))
            missing = [f for f in answer.get("failures") or [] if f.get("arn")]
            if missing:
                # A revision that cannot be read may run anything: nothing can be judged safe.
                raise AwsRejected(
                    f"DescribeServiceRevisions: cannot read {missing[0]['arn']}: "
                    f"{missing[0].get('reason') or 'unknown reason'}"
                )
        return found

    async def _in_flight_deployments(self, *, cluster: str, service: str) -> list[str]:
        """ARNs of the service's service deployments in flight."""
        arns: list[str] = []
        request: dict[str, Any] = {
            "cluster": cluster,
            "service": service,
            "status": list(IN_FLIGHT),
            "maxResults": LIST_PAGE,
        }
        async with _service_deployments_read():
            while True:
                answer = await self._ecs.list_service_deployments(**request)
                arns += [
                    str(d["serviceDeploymentArn"]) for d in answer.get("serviceDeployments") or []
                ]
                token = answer.get("nextToken")
                if not token:
                    return arns
                request["nextToken"] = token

    async def task_definitions(self, family: str) -> list[TaskDefinitionRevision]:
        """Every ACTIVE revision of `family`, with its tags and images."""
        arns: list[str] = []
        request: dict[str, Any] = {
            "familyPrefix": family,
            "status": "ACTIVE",
            "maxResults": LIST_PAGE,
        }
        async with aws_errors():
            while True:
                answer = await self._ecs.list_task_definitions(**request)
                arns += [str(a) for a in answer.get("taskDefinitionArns") or []]
                token = answer.get("nextToken")
                if not token:
                    break
                request["nextToken"] = token
        # The filter names a family; a revision of another family is never this app's.
        arns = [a for a in dict.fromkeys(arns) if family_of(a) == family]
        described = [asyncio.ensure_future(self.task_definition(a)) for a in arns]
        try:
            return list(await asyncio.gather(*described))
        finally:
            # One failure ends the listing: the describes still waiting are not sent.
            for pending in described:
                pending.cancel()
            await asyncio.gather(*described, return_exceptions=True)

    async def task_definition(self, arn: str) -> TaskDefinitionRevision:
        """One revision (ACTIVE or not) with its tags and images."""
        known = self._foreign.get(arn)
        if known is not None:
            return known
        async with self._slots, aws_errors():
            answer = await self._ecs.describe_task_definition(taskDefinition=arn, include=["TAGS"])
        revision = revision_of(answer["taskDefinition"], answer.get("tags") or ())
        if APP_TAG not in revision.tags:
            self._foreign[arn] = self._foreign[revision.arn] = revision
        return revision

    async def images(self, repository: str) -> list[StoredImage]:
        """Every image in the ECR repository, with its tags and push time."""
        found: list[StoredImage] = []
        request: dict[str, Any] = {"repositoryName": repository, "maxResults": IMAGES_PAGE}
        async with aws_errors():
            while True:
                answer = await self._ecr.describe_images(**request)
                found += [image_of(raw) for raw in answer.get("imageDetails") or []]
                token = answer.get("nextToken")
                if not token:
                    return found
                request["nextToken"] = token

    # Writes ---------------------------------------------------------------------------

    async def deregister(self, arn: str) -> None:
        """DeregisterTaskDefinition: the revision turns INACTIVE (tasks running it go on)."""
        async with aws_errors():
            await self._ecs.deregister_task_definition(taskDefinition=arn)
        self._foreign.pop(arn, None)

    async def delete_images(self, repository: str, digests: Sequence[str]) -> list[Deleted]:
        """BatchDeleteImage by digest, up to 100 a call; one entry per digest asked.

        A call that fails fails the digests it carried (the others are still tried); a
        digest the answer lists under `failures` failed, with ECR's reason.
        """
        results: list[Deleted] = []
        for chunk in _chunks(list(dict.fromkeys(digests)), DELETE_BATCH):
            try:
                async with aws_errors():
                    answer = await self._ecr.batch_delete_image(
                        repositoryName=repository,
                        imageIds=[{"imageDigest": d} for d in chunk],
                    )
            except ReconcilerError as exc:
                results += [Deleted(d, str(exc)) for d in chunk]
                continue
            failed: dict[str, str] = {}
            for failure in answer.get("failures") or []:
                digest = str((failure.get("imageId") or {}).get("imageDigest") or "")
                code = str(failure.get("failureCode") or "")
                if code == "ImageNotFound":
                    continue  # gone already: what was asked for is true
                failed[digest] = f"{code}: {failure.get('failureReason') or ''}".strip(": ")
            results += [Deleted(d, failed.get(d)) for d in chunk]
        return results


@asynccontextmanager
async def _service_deployments_read() -> AsyncIterator[None]:
    """As aws_errors, but a refusal, or an answer that this region or API keeps no service
    deployments (UnsupportedFeatureException and the like), is ServiceDeploymentsUnreadable:
    neither is fixed by asking again, and both leave the service's `deployments` list as
    what tells which revisions are in use."""
    try:
        async with aws_errors():
            yield
    except AwsRejected as exc:
        raise ServiceDeploymentsUnreadable(str(exc)) from exc


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def deployment_revisions(raw: dict[str, Any]) -> dict[str, str]:
    """Service revision ARN -> why, for one DescribeServiceDeployments entry: the revision
    it deploys, those it rolls from, and the one it rolls back to."""
    status = str(raw.get("status") or "")
    found: dict[str, str] = {}
    target = (raw.get("targetServiceRevision") or {}).get("arn")
    if target:
        found[str(target)] = f"target of a service deployment {status}"
    for source in raw.get("sourceServiceRevisions") or []:
        if source.get("arn"):
            found.setdefault(str(source["arn"]), f"source of a service deployment {status}")
    back = (raw.get("rollback") or {}).get("serviceRevisionArn")
    if back:
        found.setdefault(str(back), f"rollback of a service deployment {status}")
    return found
