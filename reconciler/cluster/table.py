"""The DynamoDB table the daemons share: members, app leases and app state.

One table, keyed by `pk` (partition) and `sk` (sort):
- pk "cluster", sk "member#<host id>": a daemon; each heartbeat raises `beat`, under the
  `instance` (random per process) that owns the item; `url` says where its API listens;
  `expires_at` (the holder's wall clock plus the TTL) is shown to people and judges nothing
  (liveness.py).
- pk "cluster", sk "app#<name>": the app's lease: `owner` (absent when free), `version` (the
  fencing token, raised by every acquisition), `since`; counters `nudges` and `syncs` that
  any daemon raises to wake the owner.
- pk "status", sk "<name>": the owner's last word on the app (JSON) for the others'
  /status, with the lease `version` it was written under; read only when someone asks, so
  the view every daemon reads each look stays small however much the statuses say.
- pk "state", sk "<name>": the app's `memory` (JSON) and `feedback`, what its commit
  statuses and chat messages already said (JSON), both read by each new owner. Each is
  written in a transaction with a check that the lease is still the writer's at its
  version, so a daemon that lost the lease can no longer change either.
- pk "history", sk "<name>": the app's `history` (JSON), its releases, kept apart from the
  memory: up to a few hundred KB that change once a release, where the memory changes at
  every step of one (DynamoDB counts a write by the size of the whole item). Written in the
  same transaction as the memory when it changed, under the same check. A memory written
  by an older daemon may hold a history of its own: the newer of the two is read.
Members and leases share a partition so that one Query reads the whole cluster view.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiobotocore.session import AioSession
from botocore.exceptions import ClientError

from reconciler.adapters.aws import aws_errors, describe
from reconciler.adapters.ecs import boto_config
from reconciler.errors import AwsUnavailable

CLUSTER = "cluster"
STATE = "state"
HISTORY = "history"
PURGE_AT = "purge_at"  # epoch seconds after which DynamoDB's TTL removes an audit line
STATUS = "status"
AUDIT = "audit"
MEMBER = "member#"
APP = "app#"


@dataclass(frozen=True)
class Member:
    host_id: str
    expires_at: float  # epoch seconds by the holder's clock: for people, never for decisions
    url: str = ""
    started_at: float = 0.0
    instance: str = ""  # the process that owns the item (random per start)
    beat: int = 0  # raised by every heartbeat


@dataclass(frozen=True)
class LeaseItem:
    app: str
    owner: str | None
    version: int
    since: float = 0.0  # epoch seconds the owner took it
    nudges: int = 0
    syncs: int = 0


@dataclass(frozen=True)
class Published:
    """An app's status as an owner published it."""

    version: int  # the lease version its publisher held
    status: dict[str, Any]


@dataclass(frozen=True)
class ClusterView:
    members: dict[str, Member] = field(default_factory=dict)
    leases: dict[str, LeaseItem] = field(default_factory=dict)


def _n(item: dict[str, Any], key: str, default: float = 0) -> float:
    raw = item.get(key)
    return float(raw["N"]) if raw and "N" in raw else default


def _s(item: dict[str, Any], key: str) -> str | None:
    raw = item.get(key)
    return str(raw["S"]) if raw and "S" in raw else None


def _member(host: str, item: dict[str, Any]) -> Member:
    return Member(
        host_id=host,
        expires_at=_n(item, "expires_at"),
        url=_s(item, "url") or "",
        started_at=_n(item, "started_at"),
        instance=_s(item, "instance") or "",
        beat=int(_n(item, "beat")),
    )


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


async def _unless(code: str, call: Callable[..., Awaitable[Any]], **kwargs: Any) -> Any | None:
    """The call's answer, or None when AWS refused it with `code` (a condition that did not
    hold, a table that exists); every other error as the project's own."""
    async with aws_errors():
        try:
            return await call(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == code:
                return None
            raise


_FAILED = "ConditionalCheckFailedException"


def _held_by(me: str, version: int) -> dict[str, Any]:
    """The condition, on an app's lease item, that `me` still holds it at `version`."""
    return {
        "ConditionExpression": "#owner = :me AND #version = :v",
        "ExpressionAttributeNames": {"#owner": "owner", "#version": "version"},
        "ExpressionAttributeValues": {":me": {"S": me}, ":v": {"N": str(version)}},
    }


BATCH_GET_LIMIT = 100  # keys DynamoDB reads in one BatchGetItem


@dataclass(frozen=True)
class Taken:
    """An app's state item as a new owner reads it (None: never written)."""

    memory: str | None
    feedback: str | None
    history: str | None = None


class LeaseTable:
    """The table through one aiobotocore client. Conditions that fail return False or None;
    everything else AWS says becomes AwsUnavailable or AwsRejected."""

    def __init__(self, client: Any, name: str) -> None:
        self._client = client
        self.name = name

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, *, name: str, region: str, endpoint_url: str = ""
    ) -> AsyncIterator[LeaseTable]:
        async with AioSession().create_client(
            "dynamodb", region_name=region, endpoint_url=endpoint_url or None, config=boto_config()
        ) as client:
            yield cls(client, name)

    # The table itself --------------------------------------------------------------------

    async def create(self) -> bool:
        """Create the table (on-demand capacity) and wait until it is active; False when it
        existed already."""
        created = await _unless(
            "ResourceInUseException",
            self._client.create_table,
            TableName=self.name,
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        if created is not None:
            async with aws_errors():
                waiter = self._client.get_waiter("table_exists")
                await waiter.wait(TableName=self.name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        await self._expire_audit_lines()
        return created is not None

    async def _expire_audit_lines(self) -> None:
        """Turn on DynamoDB's TTL over PURGE_AT (an attribute only audit lines carry: the
        leases' own `expires_at` is never one DynamoDB may act on); done already is fine."""
        async with aws_errors():
            described = await self._client.describe_time_to_live(TableName=self.name)
            now = described.get("TimeToLiveDescription", {})
            if now.get("AttributeName") == PURGE_AT and now.get("TimeToLiveStatus") in (
                "ENABLED",
                "ENABLING",
            ):
                return
            await self._client.update_time_to_live(
                TableName=self.name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": PURGE_AT},
            )

    # Members and leases ------------------------------------------------------------------

    async def view(self) -> ClusterView:
        """Every member and lease, read consistently (one Query per MB)."""
        members: dict[str, Member] = {}
        leases: dict[str, LeaseItem] = {}
        async for item in self._partition(CLUSTER):
            sk = str(item["sk"]["S"])
            if sk.startswith(MEMBER):
                host = sk[len(MEMBER) :]
                members[host] = _member(host, item)
            elif sk.startswith(APP):
                app = sk[len(APP) :]
                leases[app] = LeaseItem(
                    app=app,
                    owner=_s(item, "owner"),
                    version=int(_n(item, "version")),
                    since=_n(item, "since"),
                    nudges=int(_n(item, "nudges")),
                    syncs=int(_n(item, "syncs")),
                )
        return ClusterView(members=members, leases=leases)

    async def _partition(self, pk: str) -> AsyncIterator[dict[str, Any]]:
        """Every item of partition `pk`, read consistently, page after page."""
        start: dict[str, Any] | None = None
        while True:
            kwargs: dict[str, Any] = {
                "TableName": self.name,
                "KeyConditionExpression": "pk = :pk",
                "ExpressionAttributeValues": {":pk": {"S": pk}},
                "ConsistentRead": True,
            }
            if start:
                kwargs["ExclusiveStartKey"] = start
            async with aws_errors():
                answer = await self._client.query(**kwargs)
            for item in answer.get("Items", []):
                yield item
            start = answer.get("LastEvaluatedKey")
            if not start:
                return

    async def heartbeat(self, member: Member, *, replacing: Member | None = None) -> bool:
        """Write the member item if it is this instance's, or absent, or exactly `replacing`
        (a dead predecessor's); False when another instance holds the host id."""
        values: dict[str, Any] = {":me": {"S": member.instance}}
        condition = "attribute_not_exists(sk) OR #instance = :me"
        if replacing is not None:
            condition += " OR (#instance = :was AND #beat = :beat AND #expires = :expires)"
            values[":was"] = {"S": replacing.instance}
            values[":beat"] = {"N": str(replacing.beat)}
            values[":expires"] = {"N": repr(replacing.expires_at)}
        answer = await _unless(
            _FAILED,
            self._client.put_item,
            TableName=self.name,
            Item={
                **_key(CLUSTER, MEMBER + member.host_id),
                "expires_at": {"N": repr(member.expires_at)},
                "url": {"S": member.url},
                "started_at": {"N": repr(member.started_at)},
                "instance": {"S": member.instance},
                "beat": {"N": str(member.beat)},
            },
            ConditionExpression=condition,
            ExpressionAttributeNames={"#instance": "instance"}
            | ({"#beat": "beat", "#expires": "expires_at"} if replacing else {}),
            ExpressionAttributeValues=values,
        )
        return answer is not None

    async def member(self, host_id: str) -> Member | None:
        """The member item of `host_id`, read consistently (None: there is none)."""
        async with aws_errors():
            answer = await self._client.get_item(
                TableName=self.name, Key=_key(CLUSTER, MEMBER + host_id), ConsistentRead=True
            )
        item = answer.get("Item")
        return None if not item else _member(host_id, item)

    async def leave(self, member: Member) -> None:
        """Remove this instance's member item: the others stop counting this daemon at once."""
        await _unless(
            _FAILED,
            self._client.delete_item,
            TableName=self.name,
            Key=_key(CLUSTER, MEMBER + member.host_id),
            ConditionExpression="#instance = :me",
            ExpressionAttributeNames={"#instance": "instance"},
            ExpressionAttributeValues={":me": {"S": member.instance}},
        )

    async def acquire(self, app: str, *, me: str, seen: LeaseItem | None, now: float) -> int | None:
        """Take the lease as it was `seen` (free, or held by a daemon that died); the new
        version, or None when someone changed it first."""
        values: dict[str, Any] = {":me": {"S": me}, ":now": {"N": repr(now)}}
        if seen is None or seen.owner is None:
            condition = "attribute_not_exists(#owner)"
            version = (seen.version if seen else 0) + 1
            if seen is not None:
                condition += " AND (attribute_not_exists(#version) OR #version = :old)"
                values[":old"] = {"N": str(seen.version)}
        else:
            condition = "#owner = :prev AND #version = :old"
            values[":prev"] = {"S": seen.owner}
            values[":old"] = {"N": str(seen.version)}
            version = seen.version + 1
        values[":new"] = {"N": str(version)}
        answer = await _unless(
            _FAILED,
            self._client.update_item,
            TableName=self.name,
            Key=_key(CLUSTER, APP + app),
            UpdateExpression="SET #owner = :me, #version = :new, #since = :now",
            ConditionExpression=condition,
            ExpressionAttributeNames={"#owner": "owner", "#version": "version", "#since": "since"},
            ExpressionAttributeValues=values,
        )
        return None if answer is None else version

    async def release(self, app: str, *, me: str, version: int) -> bool:
        """Give the lease up (the version stays, so the next owner's is higher)."""
        answer = await _unless(
            _FAILED,
            self._client.update_item,
            TableName=self.name,
            Key=_key(CLUSTER, APP + app),
            UpdateExpression="REMOVE #owner",
            **_held_by(me, version),
        )
        return answer is not None

    async def publish_status(
        self, app: str, *, me: str, version: int, status: dict[str, Any]
    ) -> bool:
        """The owner's view of the app, for the other daemons' /status; False when an owner
        with a newer lease has published since."""
        answer = await _unless(
            _FAILED,
            self._client.put_item,
            TableName=self.name,
            Item={
                **_key(STATUS, app),
                "owner": {"S": me},
                "version": {"N": str(version)},
                "status": {"S": json.dumps(status, separators=(",", ":"))},
            },
            ConditionExpression="attribute_not_exists(#version) OR #version <= :v",
            ExpressionAttributeNames={"#version": "version"},
            ExpressionAttributeValues={":v": {"N": str(version)}},
        )
        return answer is not None

    async def statuses(self) -> dict[str, Published]:
        """What the owners last published, by app."""
        found: dict[str, Published] = {}
        async for item in self._partition(STATUS):
            text = _s(item, "status")
            if text is not None:
                found[str(item["sk"]["S"])] = Published(
                    version=int(_n(item, "version")), status=json.loads(text)
                )
        return found

    async def append_audit(self, key: str, line: str, *, purge_at: float) -> None:
        """One audit line, under a key that sorts by time (`<iso time>#<host>#<n>`), which
        DynamoDB's TTL removes after `purge_at` (epoch seconds)."""
        item = {**_key(AUDIT, key), "line": {"S": line}, PURGE_AT: {"N": str(int(purge_at))}}
        async with aws_errors():
            await self._client.put_item(TableName=self.name, Item=item)

    async def audit_lines(self, *, newest: int) -> list[str]:
        """The newest `newest` audit lines of every daemon, oldest first."""
        lines: list[str] = []
        start: dict[str, Any] | None = None
        while len(lines) < newest:
            kwargs: dict[str, Any] = {
                "TableName": self.name,
                "KeyConditionExpression": "pk = :pk",
                "ExpressionAttributeValues": {":pk": {"S": AUDIT}},
                "ScanIndexForward": False,
                "Limit": newest - len(lines),
            }
            if start:
                kwargs["ExclusiveStartKey"] = start
            async with aws_errors():
                answer = await self._client.query(**kwargs)
            lines += [text for item in answer.get("Items", []) if (text := _s(item, "line"))]
            start = answer.get("LastEvaluatedKey")
            if not start:
                break
        return list(reversed(lines))

    async def bump(self, app: str, counter: str) -> None:
        """Raise the app's `nudges` or `syncs` counter: its owner acts on it at its next look."""
        if counter not in ("nudges", "syncs"):
            raise ValueError(f"unknown counter {counter!r}")
        async with aws_errors():
            await self._client.update_item(
                TableName=self.name,
                Key=_key(CLUSTER, APP + app),
                UpdateExpression="ADD #counter :one",
                ExpressionAttributeNames={"#counter": counter},
                ExpressionAttributeValues={":one": {"N": "1"}},
            )

    # App state ---------------------------------------------------------------------------

    async def read_taken(self, apps: list[str]) -> dict[str, Taken]:
        """The memory and feedback record of apps whose leases this daemon just won, read
        consistently, up to 100 apps a request (what a request leaves unprocessed is asked
        again)."""
        states: dict[str, dict[str, Any]] = {}
        histories: dict[str, str | None] = {}
        per_request = BATCH_GET_LIMIT // 2  # two items an app: its state and its history
        for start in range(0, len(apps), per_request):
            chosen = apps[start : start + per_request]
            keys = [_key(pk, app) for app in chosen for pk in (STATE, HISTORY)]
            while keys:
                async with aws_errors():
                    answer = await self._client.batch_get_item(
                        RequestItems={self.name: {"Keys": keys, "ConsistentRead": True}}
                    )
                for item in answer.get("Responses", {}).get(self.name, []):
                    app = str(item["sk"]["S"])
                    if item["pk"]["S"] == HISTORY:
                        histories[app] = _s(item, "history")
                    else:
                        states[app] = item
                keys = answer.get("UnprocessedKeys", {}).get(self.name, {}).get("Keys", [])
        return {
            app: Taken(
                memory=_s(item, "memory"),
                feedback=_s(item, "feedback"),
                history=histories.get(app),
            )
            for app, item in states.items()
        }

    async def write_state(
        self, app: str, *, me: str, version: int, memory: str, history: str | None = None
    ) -> bool:
        """Write the app's memory (and its history, when given) if its lease is still `me`
        at `version`; False when it is not (another daemon has taken the app since)."""
        also = [] if history is None else [(HISTORY, "history", history)]
        return await self._write_fenced(
            app, me=me, version=version, attribute="memory", text=memory, also=also
        )

    async def write_feedback(self, app: str, *, me: str, version: int, record: str) -> bool:
        """Write what the app's feedback said, on the same condition as its memory."""
        return await self._write_fenced(
            app, me=me, version=version, attribute="feedback", text=record
        )

    async def _write_fenced(
        self,
        app: str,
        *,
        me: str,
        version: int,
        attribute: str,
        text: str,
        also: list[tuple[str, str, str]] | None = None,
    ) -> bool:
        """One attribute of the app's state item (and of the items `also` names: partition,
        attribute, text), in a transaction with a check that the lease is still `me` at
        `version`: the lease itself is the fence."""
        check = {"TableName": self.name, "Key": _key(CLUSTER, APP + app), **_held_by(me, version)}
        updates = [
            {
                "Update": {
                    "TableName": self.name,
                    "Key": _key(pk, app),
                    "UpdateExpression": "SET #value = :value",
                    "ExpressionAttributeNames": {"#value": name},
                    "ExpressionAttributeValues": {":value": {"S": value}},
                }
            }
            for pk, name, value in [(STATE, attribute, text), *(also or [])]
        ]
        async with aws_errors():
            try:
                await self._client.transact_write_items(
                    TransactItems=[{"ConditionCheck": check}, *updates]
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                    raise
                reasons = exc.response.get("CancellationReasons") or []
                if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                    return False
                # Cancelled by a conflicting write or throttling: worth trying again.
                raise AwsUnavailable(describe(exc)) from exc
        return True

    async def read_states(self) -> dict[str, tuple[str, str | None]]:
        """Every app's memory and history (JSON; None: none apart), for read-only commands."""
        histories: dict[str, str | None] = {}
        async for item in self._partition(HISTORY):
            histories[str(item["sk"]["S"])] = _s(item, "history")
        found: dict[str, tuple[str, str | None]] = {}
        async for item in self._partition(STATE):
            memory = _s(item, "memory")
            if memory is not None:
                app = str(item["sk"]["S"])
                found[app] = (memory, histories.get(app))
        return found
