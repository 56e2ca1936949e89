"""The service settings an app may own in `<definitions>/service.json` (SPEC 19): the fields of
UpdateService that describe how the service runs, not which task definition it runs."""

from __future__ import annotations

SERVICE_FIELDS = (
    "deploymentConfiguration",
    "healthCheckGracePeriodSeconds",
    "networkConfiguration",
    "capacityProviderStrategy",
    "platformVersion",
    "enableExecuteCommand",
    "propagateTags",
    "enableECSManagedTags",
    "serviceConnectConfiguration",
    "loadBalancers",
    "desiredCount",
)
