"""The cluster's audit lines in the lease table have a retention: DynamoDB's TTL, turned on
by `cluster init` over an attribute only audit lines carry (never the leases' own
`expires_at`), removes a line `[cluster].audit_keep` after it was written. Against the
sandbox's DynamoDB over the real aiobotocore wire path."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import boto3

from reconciler.adapters.audit import AuditLog
from reconciler.cluster.audit import SharedAudit
from reconciler.cluster.table import PURGE_AT, LeaseTable
from reconciler.sandbox.aws import SandboxAws
from tests.unit.adapters.test_audit import entry

DAY = 86400.0


async def test_init_turns_on_the_audit_retention_once_and_lines_carry_their_end(
    aws: SandboxAws, tmp_path: Path
) -> None:
    name = f"leases-{uuid.uuid4().hex[:8]}"
    client = boto3.client("dynamodb", region_name=aws.region, endpoint_url=aws.endpoint_url)
    async with LeaseTable.connect(
        name=name, region=aws.region, endpoint_url=aws.endpoint_url
    ) as table:
        assert await table.create()
        ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        assert (ttl["AttributeName"], ttl["TimeToLiveStatus"]) == (PURGE_AT, "ENABLED")
        assert PURGE_AT != "expires_at"  # leases and members keep theirs out of its reach
        assert not await table.create()  # init again: the table and its TTL as they were

        audit = SharedAudit(AuditLog(tmp_path / "audit.jsonl"), table, host_id="d0", keep=30 * DAY)
        before = time.time()
        await audit.record(entry("web"))
        items = client.query(
            TableName=name,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": "audit"}},
        )["Items"]
    [item] = items
    purge_at = float(item[PURGE_AT]["N"])
    assert before + 30 * DAY - 1 <= purge_at <= time.time() + 30 * DAY
