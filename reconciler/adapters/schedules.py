"""EventBridge rules and Scheduler schedules through aiobotocore, with the app's identity
(the session its ECS calls use): the reads and writes that move a scheduled task onto a
new task definition (SPEC 20).

A client is opened per call: a release moves a handful of schedules, once, so a pool kept
open for the daemon's life would cost more than it saves.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import botocore.session
from aiobotocore.session import AioSession

from reconciler.adapters.aws import aws_errors
from reconciler.adapters.aws_clients import RegionalClients
from reconciler.errors import AwsRejected

Target = dict[str, Any]
# GetSchedule's answer carries fields UpdateSchedule does not take (Arn, CreationDate...).
_NOT_SENT = frozenset({"Arn", "CreationDate", "LastModificationDate", "ResponseMetadata"})


class Schedules:
    """Rules and schedules of one account and region."""

    def __init__(
        self, *, region: str, session: AioSession | None = None, endpoint_url: str = ""
    ) -> None:
        self._clients = RegionalClients(region=region, session=session, endpoint_url=endpoint_url)

    async def rule_targets(self, rule: str) -> list[Target]:
        """Every target of the rule (default event bus), as ListTargetsByRule gives them."""
        targets: list[Target] = []
        async with self._client("events") as client, aws_errors():
            request: dict[str, Any] = {"Rule": rule}
            while True:
                answer = await client.list_targets_by_rule(**request)
                targets += answer.get("Targets", [])
                if not answer.get("NextToken"):
                    return targets
                request["NextToken"] = answer["NextToken"]

    async def put_targets(self, rule: str, targets: Sequence[Target]) -> None:
        """Write `targets` to the rule; AwsRejected when any entry was refused."""
        async with self._client("events") as client, aws_errors():
            answer = await client.put_targets(Rule=rule, Targets=list(targets))
        failed = answer.get("FailedEntries") or []
        if answer.get("FailedEntryCount") or failed:
            first = failed[0] if failed else {}
            raise AwsRejected(
                f"PutTargets: {first.get('ErrorCode', 'Failed')}: "
                f"{first.get('ErrorMessage', '')} (rule {rule}, target {first.get('TargetId')})"
            )

    async def schedule(self, *, group: str, name: str) -> dict[str, Any]:
        """The schedule as GetSchedule gives it."""
        async with self._client("scheduler") as client, aws_errors():
            answer = await client.get_schedule(GroupName=group, Name=name)
        return {k: v for k, v in answer.items() if k != "ResponseMetadata"}

    async def update_schedule(self, request: dict[str, Any]) -> None:
        """UpdateSchedule with `request` (every field, as UpdateSchedule resets the rest)."""
        async with self._client("scheduler") as client, aws_errors():
            await client.update_schedule(**request)

    def update_fields(self) -> frozenset[str]:
        """The fields of GetSchedule's answer that UpdateSchedule takes."""
        return _update_fields()

    def _client(self, service: str) -> Any:
        return self._clients.client(service)


@functools.cache
def _update_fields() -> frozenset[str]:
    """UpdateSchedule's input members, from botocore's model (so a field AWS adds is kept)."""
    model = botocore.session.get_session().get_service_model("scheduler")
    shape = model.operation_model("UpdateSchedule").input_shape
    assert shape is not None
    return frozenset(shape.members) - _NOT_SENT
