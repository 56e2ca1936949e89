"""An embedded AWS for trying the daemon without an account (needs the `sandbox` extra).

`SandboxAws` serves moto on loopback with ECS deployments that progress like real rolling
updates (`Scenario`: complete, fail with a circuit-breaker rollback, roll back on an alarm,
fail to roll back, or stick), service deployment records for them (ListServiceDeployments,
DescribeServiceDeployments, DescribeServiceRevisions, StopServiceDeployment), injected AWS
errors and per-action call counts; `provision_app` creates one app's cluster, service, task
definition and ECR repository in it, with the deployment strategy, bake time, alarms and
deployment controller asked for.

The optional extra: nothing but the CLI and the tests import it. May import cluster, config,
aio and the foundation.
"""

from __future__ import annotations

from reconciler.sandbox.aws import SandboxAws
from reconciler.sandbox.faults import CallCounter, FaultInjector
from reconciler.sandbox.provision import ProvisionedApp, provision_app
from reconciler.sandbox.rollout import RolloutController
from reconciler.sandbox.scenario import Outcome, Scenario

__all__ = [
    "CallCounter",
    "FaultInjector",
    "Outcome",
    "ProvisionedApp",
    "RolloutController",
    "SandboxAws",
    "Scenario",
    "provision_app",
]
