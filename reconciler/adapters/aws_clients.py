"""Clients of one AWS identity in one region: what every adapter beside ECS and ECR asks for
(schedules, lookups, verification, build secrets, CloudWatch metrics)."""

from __future__ import annotations

from typing import Any

from aiobotocore.session import AioSession

from reconciler.adapters.ecs import boto_config


class RegionalClients:
    """`session` (default: the usual credential chain) in `region`, against `endpoint_url`
    (the sandbox) when one is set, with the retries and timeouts of boto_config."""

    def __init__(
        self, *, region: str, session: AioSession | None = None, endpoint_url: str = ""
    ) -> None:
        self._session = session or AioSession()
        self.region = region
        self._endpoint_url = endpoint_url

    def client(self, service: str, *, region: str | None = None) -> Any:
        """A client of `service` (in `region`, default the identity's), to enter with
        `async with`."""
        return self._session.create_client(
            service,  # type: ignore[call-overload]
            region_name=region or self.region,
            endpoint_url=self._endpoint_url or None,
            config=boto_config(),
        )
