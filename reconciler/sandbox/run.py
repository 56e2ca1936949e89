"""`reconciler sandbox`: an embedded AWS on loopback, provisioned for every app of a config.

moto's server with ECS rollouts that progress like real rolling updates (and keep service
deployment records), plus the cluster, service, task definition and ECR repository each app
needs. Every rollout ends as `outcome` says: complete, fail (circuit breaker, rolled back),
alarm (a CloudWatch alarm rolls it back), rollback_fail (its rollback fails too), or stick.
Together with a local registry (`aws.registry = "127.0.0.1:5000"`) it shows the whole loop
without an AWS account.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from types import FrameType
from urllib.parse import urlparse

from reconciler.aio.loopback import is_loopback
from reconciler.cluster import admin as cluster_admin
from reconciler.config import Config
from reconciler.sandbox.aws import SandboxAws
from reconciler.sandbox.provision import provision_app, provision_schedule
from reconciler.sandbox.scenario import Outcome, Scenario

SANDBOX_ACCOUNT_REGISTRY = "123456789012.dkr.ecr.{region}.amazonaws.com"


def run_sandbox(config: Config, *, outcome: Outcome = "complete", after: float = 3.0) -> int:
    endpoint = urlparse(config.aws.endpoint_url)
    if endpoint.scheme != "http" or not is_loopback(endpoint.hostname):
        print(
            "error: aws.endpoint_url must be a loopback http:// URL for the sandbox, "
            f"e.g. http://127.0.0.1:4566 (got {config.aws.endpoint_url or 'nothing'!r})",
            file=sys.stderr,
        )
        return 2
    # moto accepts any credentials; set dummy ones so nothing reaches for real ones.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(key, "sandbox")
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    host = endpoint.hostname or "127.0.0.1"
    port = endpoint.port or 80
    with SandboxAws(host=host, port=port, region=config.aws.region) as aws:
        aws.rollouts.set_default(Scenario(outcome=outcome, after=after))
        registry = config.aws.registry or SANDBOX_ACCOUNT_REGISTRY.format(region=config.aws.region)
        for app in config.apps:
            for service in app.service_names:  # each in a family of its own
                provisioned = provision_app(
                    endpoint_url=aws.endpoint_url,
                    region=config.aws.region,
                    cluster=app.cluster,
                    service=service,
                    ecr_repository=app.ecr_repository,
                    family=service,
                    image=f"{registry}/{app.ecr_repository}:bootstrap",
                )
                print(
                    f"sandbox: app {app.name}: service {service} in cluster {app.cluster}, "
                    f"task definition {provisioned.task_definition_arn}",
                    flush=True,
                )
            for schedule in app.schedules:
                # Scheduled tasks run the last service's family (a worker's, typically).
                created = provision_schedule(
                    endpoint_url=aws.endpoint_url,
                    region=config.aws.region,
                    schedule=schedule,
                    cluster_arn=provisioned.cluster_arn,
                    task_definition=provisioned.task_definition_arn,
                )
                state = "created" if created else "exists"
                print(f"sandbox: app {app.name}: {schedule} {state}", flush=True)
        if config.cluster.lease_table:
            # Daemons sharing the apps through the sandbox's DynamoDB find their table ready.
            created = asyncio.run(cluster_admin.init(config))
            state = "created" if created else "exists"
            print(f"sandbox: lease table {config.cluster.lease_table} {state}", flush=True)
        print(
            f"sandbox: AWS on {aws.endpoint_url}; rollouts {outcome} after {after:g}s; "
            "Ctrl-C to stop",
            flush=True,
        )
        stop.wait()
    return 0
