"""ECR credentials for pushing and for asking the registry about tags.

The authorization token lasts 12 hours; it is fetched once and refreshed well before it
expires, so a push never starts with a token that dies half-way through.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

from aiobotocore.session import AioSession

from reconciler import logs
from reconciler.adapters.aws import aws_errors
from reconciler.adapters.ecs import boto_config
from reconciler.adapters.registry import RegistryAuth
from reconciler.errors import AwsRejected

REFRESH_MARGIN = 3600.0  # refresh an hour before expiry


class Ecr:
    def __init__(self, client: Any, *, registry_override: str = "") -> None:
        self._client = client
        self._override = registry_override
        self._auth: RegistryAuth | None = None
        self._ecr_host = ""
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        *,
        region: str,
        endpoint_url: str = "",
        registry_override: str = "",
        session: AioSession | None = None,
    ) -> AsyncIterator[Ecr]:
        session = session or AioSession()
        async with session.create_client(
            "ecr", region_name=region, endpoint_url=endpoint_url or None, config=boto_config()
        ) as client:
            yield cls(client, registry_override=registry_override)

    async def auth(self) -> RegistryAuth:
        """Credentials for the registry images are pushed to, refreshed before they expire."""
        async with self._lock:
            if self._auth is None or time.monotonic() >= self._refresh_at:
                await self._refresh()
            assert self._auth is not None
            return self._auth

    async def registry(self) -> str:
        """The registry host images go to: the override, else the account's ECR host."""
        if self._override:
            return self._override
        await self.auth()
        return self._ecr_host

    async def _refresh(self) -> None:
        async with aws_errors():
            answer = await self._client.get_authorization_token()
        data = (answer.get("authorizationData") or [None])[0]
        if not data:
            raise AwsRejected("GetAuthorizationToken returned no authorization data")
        username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        # The password must never be printed, whatever message it ends up in.
        logs.register_secret(password)
        self._ecr_host = urlparse(str(data.get("proxyEndpoint", ""))).netloc
        self._auth = RegistryAuth(
            username=username, password=password, server=self._override or self._ecr_host
        )
        expires = data.get("expiresAt")
        lifetime = 12 * 3600.0
        if isinstance(expires, datetime):
            lifetime = expires.timestamp() - time.time()
        self._refresh_at = time.monotonic() + max(60.0, lifetime - REFRESH_MARGIN)
