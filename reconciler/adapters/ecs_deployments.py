"""Service deployments: ECS's record of each UpdateService (its target revision, status,
alarms, rollback), found for a task definition and described in batches of up to 20 ARNs
from any cluster; the task definition of a service revision is fetched once (a revision
never changes)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from reconciler.adapters.aws import aws_errors
from reconciler.adapters.ecs_answers import (
    DESCRIBE_DEPLOYMENTS_BATCH,
    failures_of,
    moment_of,
    service_deployment,
    unsupported,
)
from reconciler.aio.batching import Batcher
from reconciler.decisions.model import ServiceDeployment
from reconciler.errors import AwsRejected

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # for a record without a creation time


class ServiceDeployments:
    def __init__(self, client: Any, *, batch_window: float) -> None:
        self._client = client
        # By ARN, from any cluster: answered with the record, or with why ECS has none (each
        # caller names its own cluster in the error).
        self._batch = Batcher[None, str, ServiceDeployment | str](
            self._describe,
            limit=DESCRIBE_DEPLOYMENTS_BATCH,
            window=batch_window,
            name="ecs-describe-service-deployments",
        )
        # Service revision ARN -> its task definition (a revision never changes).
        self._revisions: dict[str, str] = {}

    async def close(self) -> None:
        await self._batch.close()

    async def find(
        self,
        *,
        cluster: str,
        service: str,
        task_definition: str,
        created_after: datetime | None = None,
    ) -> ServiceDeployment | None:
        """The service's newest service deployment (created after `created_after`, if given)
        whose target revision runs `task_definition`; None when there is none, or where the
        region or the service keeps no service deployments. Raises AwsRejected when the calls
        are refused (AccessDenied), so the caller can judge by the `deployments` list instead.

        The daemon passes no `created_after`: a task definition is registered for one deploy,
        so it names the record alone, and a bound from this host's clock could miss a record
        stamped by AWS's clock when the two differ."""
        request: dict[str, Any] = {"cluster": cluster, "service": service}
        if created_after is not None:
            request["createdAt"] = {"after": created_after}
        while True:
            async with aws_errors():
                try:
                    answer = await self._client.list_service_deployments(**request)
                except ClientError as exc:
                    if unsupported(exc):
                        return None
                    raise
            # ECS answers newest first; sorted again so a differing order cannot pick an
            # older deployment of the same task definition.
            briefs = sorted(
                answer.get("serviceDeployments") or [],
                key=lambda b: moment_of(b.get("createdAt")) or _EPOCH,
                reverse=True,
            )
            revisions = [str(b.get("targetServiceRevisionArn") or "") for b in briefs]
            for i, (brief, revision) in enumerate(zip(briefs, revisions, strict=True)):
                if revision and revision not in self._revisions:
                    # This candidate and the next unknown ones, in one call.
                    await self._learn_revisions(revisions[i:])
                if self._revisions.get(revision) == task_definition:
                    arn = str(brief["serviceDeploymentArn"])
                    return await self.describe(cluster=cluster, arn=arn)
            token = answer.get("nextToken")
            if not token:
                return None
            request["nextToken"] = token

    async def _learn_revisions(self, arns: Sequence[str]) -> None:
        """Fetch the task definitions of the first 20 of these revisions not known yet."""
        unknown = list(dict.fromkeys(a for a in arns if a and a not in self._revisions))
        chunk = unknown[:DESCRIBE_DEPLOYMENTS_BATCH]
        async with aws_errors():
            answer = await self._client.describe_service_revisions(serviceRevisionArns=chunk)
        for raw in answer.get("serviceRevisions") or []:
            arn, definition = raw.get("serviceRevisionArn"), raw.get("taskDefinition")
            if arn and definition:
                self._revisions[str(arn)] = str(definition)

    async def describe(self, *, cluster: str, arn: str) -> ServiceDeployment:
        """One service deployment's record; concurrent callers share batched
        DescribeServiceDeployments calls of up to 20 ARNs (whatever their clusters)."""
        record = await self._batch.get(None, arn)
        if isinstance(record, str):
            raise AwsRejected(
                f"service deployment {arn} not found in cluster {cluster!r}: {record}"
            )
        return record

    async def _describe(
        self, _: None, arns: list[str]
    ) -> dict[str, ServiceDeployment | str | BaseException]:
        async with aws_errors():
            answer = await self._client.describe_service_deployments(serviceDeploymentArns=arns)
        found: dict[str, ServiceDeployment] = {}
        for raw in answer.get("serviceDeployments") or []:
            record = service_deployment(raw)
            found[record.arn] = record
        missing = {
            str(failure.get("arn") or ""): failures_of({"failures": [failure]})
            for failure in answer.get("failures") or []
        }
        return {arn: found.get(arn) or missing.get(arn) or "MISSING" for arn in arns}
