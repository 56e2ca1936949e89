"""One daemon's lease rounds in a process of its own, for the benchmark's lease figures.

    python -m bench.lease_node --endpoint URL --table NAME --host ID --ttl S --apps N

A LeaseManager with production timings over the real LeaseTable (aiobotocore to the sandbox),
its tenant a stand-in that starts no app loop: the figures are the cost of the leases alone.
A process of its own so that the benchmark can SIGKILL it, as a host dies: no `leave`, no
`finally`, the heartbeat just stops.

On stdout, one JSON object a line: `{"ready": true}` once the signal handlers are in place;
then, on each SIGUSR1, a snapshot: the DynamoDB requests sent so far by action (counted at
botocore's before-send, so a retry counts as the call AWS would bill), the apps held and when
each was last taken. Times are `time.monotonic()`, one clock for every process of the
machine, so they compare with the benchmark's. Logs go to stderr. SIGTERM ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiobotocore.session import AioSession

from reconciler import logs
from reconciler.adapters.ecs import boto_config
from reconciler.app.status import AppStatus, RolloutView
from reconciler.cluster.manager import LeaseManager
from reconciler.cluster.ownership import LOOK_EVERY, ClusterOwnership, TableHealth
from reconciler.cluster.store import TableStateStore
from reconciler.cluster.table import LeaseTable
from reconciler.decisions.model import HistoryEntry, Phase, Result
from reconciler.metrics import Metrics

REGION = "us-east-1"


def app_names(count: int) -> list[str]:
    return [f"app-{index:03d}" for index in range(count)]


def settled_status(name: str) -> dict[str, Any]:
    """What a real daemon publishes for an app that is InSync with five deploys behind it,
    so that the view each round reads is as large as it would be in production."""
    at = datetime(2026, 12, 1, tzinfo=UTC)
    status = AppStatus(
        name=name,
        phase=Phase.IN_SYNC,
        desired_revision="d" * 40,
        desired_image=f"123456789012.dkr.ecr.us-east-1.amazonaws.com/{name}:{'d' * 40}",
        live_image=f"123456789012.dkr.ecr.us-east-1.amazonaws.com/{name}:{'d' * 40}",
        live_task_definition=f"arn:aws:ecs:us-east-1:123456789012:task-definition/{name}:6",
        last_transition=at,
        observed=True,
        rollout=RolloutView(
            deployment="ecs-svc/1234567890123456789",
            task_definition=f"arn:aws:ecs:us-east-1:123456789012:task-definition/{name}:6",
            status="COMPLETED",
            running=2,
            desired=2,
            started_at=at,
            finished_at=at,
        ),
    )
    for index in range(5):
        started = at - timedelta(days=index)
        status.history.append(
            HistoryEntry(f"{index}" * 40, Result.DEPLOYED, started, started + timedelta(minutes=2))
        )
    return status.to_json()


@dataclass
class StandInTenant:
    """The supervisor's part, minus the app loops: remembers what it holds and since when."""

    apps: list[str]
    taken_at: dict[str, float] = field(default_factory=dict)  # app -> monotonic, last take
    running: set[str] = field(default_factory=set)

    def app_names(self) -> list[str]:
        return list(self.apps)

    async def take(self, name: str) -> None:
        self.running.add(name)
        self.taken_at[name] = time.monotonic()

    async def give_up(self, name: str, *, grace: float) -> None:
        self.running.discard(name)

    def busy(self, name: str) -> bool:
        return False  # no app builds or rolls out here: a handover never waits

    def nudge(self, name: str) -> None:
        return None  # nobody nudges in the benchmark

    def sync(self, name: str) -> None:
        return None

    def local_document(self, name: str) -> dict[str, Any] | None:
        # A document that does not change, as an InSync app's does not: published once.
        return settled_status(name) if name in self.running else None


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.lease_node", description=__doc__)
    parser.add_argument("--endpoint", required=True, help="the sandbox AWS, on loopback")
    parser.add_argument("--table", required=True)
    parser.add_argument("--host", required=True, help="this daemon's host id")
    parser.add_argument("--ttl", type=float, required=True, help="lease TTL, seconds")
    parser.add_argument("--apps", type=int, required=True, help="how many apps the config has")
    parser.add_argument("--look-every", type=float, default=LOOK_EVERY)
    return parser.parse_args(argv)


def say(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


async def serve(args: argparse.Namespace) -> None:
    sent: Counter[str] = Counter()

    def count(event_name: str, **_: Any) -> None:
        sent[event_name.rpartition(".")[2]] += 1

    tenant = StandInTenant(app_names(args.apps))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # The client is opened as LeaseTable.connect opens it (same botocore config), here so
    # that the before-send hook can count what goes on the wire.
    async with AioSession().create_client(
        "dynamodb", region_name=REGION, endpoint_url=args.endpoint, config=boto_config()
    ) as client:
        client.meta.events.register("before-send.dynamodb", count)
        table = LeaseTable(client, args.table)
        metrics = Metrics()
        health = TableHealth(metrics)
        manager = LeaseManager(
            ownership=ClusterOwnership(
                table=table,
                host_id=args.host,
                ttl=args.ttl,
                health=health,
                look_every=args.look_every,
            ),
            table=table,
            store=TableStateStore(table, host_id=args.host),
            tenant=tenant,
            url=f"http://127.0.0.1/{args.host}",
            metrics=metrics,
            health=health,
            look_every=args.look_every,
        )

        def snapshot() -> None:
            say(
                {
                    "at": time.monotonic(),
                    "sent": dict(sent),
                    "held": sorted(manager.leases.held),
                    "taken_at": {a: tenant.taken_at[a] for a in tenant.running},
                }
            )

        loop.add_signal_handler(signal.SIGUSR1, snapshot)
        rounds = asyncio.create_task(manager.run(), name="leases")
        say({"ready": True})
        await stop.wait()
        rounds.cancel()
        await asyncio.gather(rounds, return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    logs.configure(log_format="json", stream=sys.stderr)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
