"""The sandbox AWS with timestamps: when each API call arrived, when each rollout started.

`SandboxAws` counts calls per action; the benchmark also needs *when*: the moment an
UpdateService reached "AWS" (webhook latency) and the moment a rollout started (a rollout
fixture completing `after` seconds later completes at start + after). Both clocks are
`time.monotonic()`, which on Linux is one clock for every process on the machine, so the
times compare directly with the benchmark's and the daemon's.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3

from reconciler.sandbox import CallCounter, RolloutController, SandboxAws
from reconciler.sandbox import provision as sandbox_provision

if TYPE_CHECKING:
    from mypy_boto3_ecr import ECRClient
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_ecs.type_defs import CreateServiceRequestTypeDef

REGION = "us-east-1"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


class TimedCalls(CallCounter):
    """Per-action counts, plus the arrival time of every call."""

    def __init__(self) -> None:
        super().__init__()
        self._timeline_lock = threading.Lock()
        self._times: list[float] = []
        self._actions: list[str] = []

    def record(self, action: str, params: dict[str, Any] | None = None) -> None:
        super().record(action, params)
        if action:
            with self._timeline_lock:
                self._times.append(time.monotonic())
                self._actions.append(action)

    def between(self, start: float, end: float = float("inf")) -> list[tuple[float, str]]:
        """The calls that arrived in [start, end), oldest first."""
        with self._timeline_lock:
            low = bisect.bisect_left(self._times, start)
            high = bisect.bisect_left(self._times, end)
            return list(zip(self._times[low:high], self._actions[low:high], strict=True))

    def counts(self, start: float, end: float = float("inf")) -> Counter[str]:
        return Counter(action for _, action in self.between(start, end))

    def first(self, action: str, start: float, end: float = float("inf")) -> float | None:
        return next((t for t, a in self.between(start, end) if a == action), None)


class TimedRollouts(RolloutController):
    """Rollout scenarios as usual, plus when each task-definition changing update started."""

    def __init__(self) -> None:
        super().__init__()
        self.started: dict[tuple[str, str], list[float]] = {}

    def _count_update(self, cluster: str, service: str) -> None:
        # Called under the controller's lock right after the new deployment was made, so
        # this is the instant the sandbox's rollout clock starts.
        super()._count_update(cluster, service)
        self.started.setdefault((cluster, service), []).append(time.monotonic())

    def started_after(self, cluster: str, service: str, moment: float) -> float | None:
        with self.lock:
            return next((t for t in self.started.get((cluster, service), []) if t >= moment), None)


@contextmanager
def running_sandbox() -> Iterator[SandboxAws]:
    """SandboxAws on a loopback port with timed counters, and credentials in the environment."""
    os.environ.update(CREDENTIALS)
    aws = SandboxAws(region=REGION)
    aws.calls = TimedCalls()
    aws.rollouts = TimedRollouts()
    with aws:
        yield aws


def timed_calls(aws: SandboxAws) -> TimedCalls:
    assert isinstance(aws.calls, TimedCalls)
    return aws.calls


def timed_rollouts(aws: SandboxAws) -> TimedRollouts:
    assert isinstance(aws.rollouts, TimedRollouts)
    return aws.rollouts


@dataclass(frozen=True)
class AppSpec:
    """One app: its service in the sandbox and its place in the daemon's config."""

    name: str
    cluster: str
    repo_url: str
    image: str  # what its task definition runs at the start
    branch: str = "main"

    @property
    def ecr_repository(self) -> str:
        return self.name


def provision_apps(aws: SandboxAws, apps: Sequence[AppSpec]) -> None:
    """Cluster, ECR repository, task definition and service for each app, as provision_app
    makes them (same containers with a sidecar, tags, FARGATE, awsvpc, circuit breaker).

    Many apps at once: `provision_app` builds three boto3 clients and asks for the default
    network on every call, which costs ~0.2 s an app; here the clients and the network are
    shared, so 500 apps take a minute less.
    """
    session = boto3.session.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 (moto accepts any credentials)
        aws_session_token="testing",  # noqa: S106
        region_name=aws.region,
    )
    ecs: ECSClient = session.client("ecs", endpoint_url=aws.endpoint_url)
    ecr: ECRClient = session.client("ecr", endpoint_url=aws.endpoint_url)
    ec2 = session.client("ec2", endpoint_url=aws.endpoint_url)
    network = sandbox_provision._default_network(ec2)
    existing = {c["clusterName"] for c in ecs.describe_clusters(clusters=_unique(apps))["clusters"]}
    for cluster in _unique(apps):
        if cluster not in existing:
            ecs.create_cluster(clusterName=cluster)
    for app in apps:
        ecr.create_repository(repositoryName=app.ecr_repository)
        registered = ecs.register_task_definition(
            family=app.name,
            containerDefinitions=sandbox_provision._containers(app.image, sidecar=True),
            requiresCompatibilities=["FARGATE"],
            networkMode="awsvpc",
            cpu="256",
            memory="512",
            tags=[{"key": "team", "value": "bench"}, {"key": "app", "value": app.name}],
        )
        request: CreateServiceRequestTypeDef = {
            "cluster": app.cluster,
            "serviceName": app.name,
            "taskDefinition": registered["taskDefinition"]["taskDefinitionArn"],
            "desiredCount": 1,
            "launchType": "FARGATE",
            "deploymentConfiguration": {
                "deploymentCircuitBreaker": {"enable": True, "rollback": True},
                "maximumPercent": 200,
                "minimumHealthyPercent": 100,
            },
        }
        if network is not None:
            request["networkConfiguration"] = network
        ecs.create_service(**request)


def _unique(apps: Iterable[AppSpec]) -> list[str]:
    return list(dict.fromkeys(a.cluster for a in apps))


def sandbox_round_trip(aws: SandboxAws, cluster: str, service: str, *, count: int = 20) -> float:
    """Median seconds of one DescribeServices from a plain boto3 client: the sandbox's floor."""
    client: ECSClient = boto3.client("ecs", region_name=aws.region, endpoint_url=aws.endpoint_url)
    client.describe_services(cluster=cluster, services=[service])
    samples = []
    for _ in range(count):
        began = time.monotonic()
        client.describe_services(cluster=cluster, services=[service])
        samples.append(time.monotonic() - began)
    samples.sort()
    return samples[len(samples) // 2]
