"""Build secrets (`[apps.build_secrets]`), read when a build is about to start.

Each value comes from a file, the daemon's environment, an SSM parameter (decrypted) or a
Secrets Manager secret, the last two with the app's own AWS identity: the session and
endpoint its ECS calls use. A value is held in memory for the one build and handed to the
BuildKit CLI (buildkit.py); it is never written to state_dir or any cache. Before it is
returned, each of its forms (decisions/scrub.py) is registered with logs.register_secret, so
it is blanked in every log line and every build or test output line from then on.

A secret that cannot be read (a missing file, an unset variable, a parameter or secret that
does not exist or may not be read) needs a human: StalledError (AwsRejected for AWS), naming
the key and the source, never the value. Throttling and network errors are AwsUnavailable.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from aiobotocore.session import AioSession

from reconciler import logs
from reconciler.adapters.aws import aws_errors
from reconciler.adapters.aws_clients import RegionalClients
from reconciler.config import BuildSecretSource
from reconciler.decisions.scrub import forms_of
from reconciler.errors import AwsRejected, AwsUnavailable, StalledError

# BuildKit refuses a larger secret (its MaxSecretSize); refused here before the build starts,
# and a huge file is never read whole into memory.
MAX_SECRET_BYTES = 500 * 1024


class BuildSecrets:
    """Reads build secrets with one account's AWS identity: `session` (default: the usual
    credential chain) in `region`. `environ` is where `env` sources are looked up."""

    def __init__(
        self,
        *,
        region: str,
        session: AioSession | None = None,
        endpoint_url: str = "",
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._clients = RegionalClients(region=region, session=session, endpoint_url=endpoint_url)
        self._environ = os.environ if environ is None else environ

    def _client(self, service: str) -> Any:
        return self._clients.client(service)

    async def read(self, secrets: Mapping[str, BuildSecretSource]) -> dict[str, bytes]:
        """Key -> value for every secret, each registered for scrubbing before it is returned.

        StalledError (or AwsRejected) for a secret that cannot be read, AwsUnavailable when
        AWS is busy or out of reach; the message names the key and the source.
        """
        values: dict[str, bytes] = {}
        async with AsyncExitStack() as stack:
            clients: dict[str, Any] = {}
            for key, source in secrets.items():
                value = await self._read(source, clients=clients, stack=stack, key=key)
                if not value:
                    raise StalledError(f"build secret {key} ({source.describe()}) is empty")
                if len(value) > MAX_SECRET_BYTES:
                    raise StalledError(
                        f"build secret {key} ({source.describe()}) is larger than BuildKit's"
                        f" limit of {MAX_SECRET_BYTES // 1024} KiB"
                    )
                for form in forms_of(value):
                    logs.register_secret(form)
                values[key] = value
        return values

    async def _read(
        self,
        source: BuildSecretSource,
        *,
        clients: dict[str, Any],
        stack: AsyncExitStack,
        key: str,
    ) -> bytes:
        where = f"build secret {key} ({source.describe()})"
        if source.file is not None:
            try:
                return await asyncio.to_thread(_head, source.file)
            except OSError as exc:
                raise StalledError(f"{where} cannot be read: {exc.strerror or exc}") from exc
        if source.env is not None:
            value = self._environ.get(source.env)
            if value is None:
                raise StalledError(f"{where} is not set in the daemon's environment")
            return value.encode()
        service = source.kind
        if service not in clients:
            clients[service] = await stack.enter_async_context(self._client(service))
        try:
            async with aws_errors():
                return await _fetch(clients[service], source)
        except AwsUnavailable as exc:
            raise AwsUnavailable(f"{where}: {exc}") from exc
        except AwsRejected as exc:
            raise AwsRejected(f"{where}: {exc}") from exc


def _head(path: Path) -> bytes:
    """The file's bytes, at most one more than MAX_SECRET_BYTES (enough to tell it is over)."""
    with path.open("rb") as file:
        return file.read(MAX_SECRET_BYTES + 1)


async def _fetch(client: Any, source: BuildSecretSource) -> bytes:
    if source.ssm is not None:
        answer = await client.get_parameter(Name=source.ssm, WithDecryption=True)
        return str(answer["Parameter"]["Value"]).encode()
    answer = await client.get_secret_value(SecretId=source.secretsmanager)
    if "SecretString" in answer:
        return str(answer["SecretString"]).encode()
    return bytes(answer["SecretBinary"])
