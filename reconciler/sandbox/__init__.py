"""An embedded AWS for trying the daemon without an account (needs the `sandbox` extra).

`SandboxAws` serves moto on loopback with ECS deployments that progress like real rolling
updates (`Scenario`: complete, fail with a circuit-breaker rollback, or stick), injected AWS
errors and per-action call counts; `provision_app` creates one app's cluster, service, task
definition and ECR repository in it.
"""

from __future__ import annotations

from reconciler.sandbox.aws import SandboxAws
from reconciler.sandbox.faults import CallCounter, FaultInjector
from reconciler.sandbox.provision import ProvisionedApp, provision_app
from reconciler.sandbox.rollout import RolloutController, Scenario

__all__ = [
    "CallCounter",
    "FaultInjector",
    "ProvisionedApp",
    "RolloutController",
    "SandboxAws",
    "Scenario",
    "provision_app",
]
