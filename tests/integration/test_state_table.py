"""An app's state in the lease table (cluster/store.py, over the sandbox's DynamoDB on the
real aiobotocore wire path): the history lives in an item of its own, written only when it
changed, so the memory written at every step of a release stays small; a new owner reads
both back as one memory; a memory an older daemon wrote (history inline) still reads."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import boto3

from reconciler.app.state import encode_memory
from reconciler.cluster.store import TableStateStore
from reconciler.cluster.table import LeaseTable
from reconciler.decisions.model import HistoryEntry, Result, utcnow
from reconciler.sandbox.aws import SandboxAws

APP = "web"


def entry(n: int) -> HistoryEntry:
    at = utcnow() + timedelta(minutes=n)
    return HistoryEntry(revision=f"{n:040x}", result=Result.DEPLOYED, started_at=at, finished_at=at)


async def test_the_history_is_written_apart_and_only_when_it_changed(aws: SandboxAws) -> None:
    name = f"leases-{uuid.uuid4().hex[:8]}"
    client = boto3.client("dynamodb", region_name=aws.region, endpoint_url=aws.endpoint_url)
    async with LeaseTable.connect(
        name=name, region=aws.region, endpoint_url=aws.endpoint_url
    ) as table:
        await table.create()
        version = await table.acquire(APP, me="d0", seen=None, now=time.time())
        assert version is not None
        store = TableStateStore(table, host_id="d0")
        memory = store.adopt(APP, version=version, text=None)
        memory.history = [entry(n) for n in range(300, 0, -1)]
        sent: list[bool] = []
        write = table.write_state

        async def watched(app: str, **kwargs: Any) -> bool:
            sent.append(kwargs.get("history") is not None)
            return await write(app, **kwargs)

        table.write_state = watched  # type: ignore[method-assign]
        assert await store.save(APP)
        memory.build_failures["abc"] = 1  # a step of a release: the history is unchanged
        assert await store.save(APP)
        memory.history.insert(0, entry(301))  # a release ended
        assert await store.save(APP)
        assert sent == [True, False, True]

        def item(pk: str) -> dict[str, Any]:
            key = {"pk": {"S": pk}, "sk": {"S": APP}}
            return dict(client.get_item(TableName=name, Key=key, ConsistentRead=True)["Item"])

        state, history = item("state"), item("history")
        assert len(state["memory"]["S"]) < 300 < len(history["history"]["S"]) // 100
        taken = (await table.read_taken([APP]))[APP]
        heir = TableStateStore(table, host_id="d1")
        again = heir.adopt(APP, version=version, text=taken.memory, history=taken.history)
        assert again.history == memory.history and again.build_failures == {"abc": 1}

        # An older daemon's memory, history inline and newer, wins over the item apart.
        again.history = [entry(400), *again.history]
        read = TableStateStore(table, host_id="d2").adopt(
            APP, version=version, text=encode_memory(again), history=taken.history
        )
        assert read.history[0].revision == f"{400:040x}"
