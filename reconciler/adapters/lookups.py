"""What a definition template may read from outside (SPEC 19): `env(NAME)` from the daemon's
environment, `ssm(NAME)` a parameter's value and `secret_arn(NAME)` a secret's ARN, the last
two with the app's own AWS identity (the session its ECS calls use).

Whoever can push writes the templates, and what they render lands in a task definition they
can read back; so env() reads only variables `[definitions].env_allow` lists, ssm() refuses
SecureString parameters (a secret belongs in `secrets` by ARN, read by ECS at task start,
never in the definition), and secret_arn() answers the ARN, never the value.

Each failure is a DefinitionError naming the function and the name; throttling and network
errors stay AwsUnavailable (retried).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from typing import Any

from aiobotocore.session import AioSession

from reconciler.adapters.aws import aws_errors
from reconciler.adapters.aws_clients import RegionalClients
from reconciler.errors import AwsRejected, DefinitionError


class TemplateLookups:
    """env(), ssm() and secret_arn() for one account and region."""

    def __init__(
        self,
        *,
        region: str,
        session: AioSession | None = None,
        endpoint_url: str = "",
        env_allow: tuple[str, ...] = (),
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._clients = RegionalClients(region=region, session=session, endpoint_url=endpoint_url)
        self._env_allow = env_allow
        self._environ = os.environ if environ is None else environ

    async def look_up(self, function: str, name: str) -> str:
        """The value `function(name)` renders as; DefinitionError when it has none."""
        where = f"{function}({name!r})"
        if function == "env":
            return self._env(name, where)
        try:
            if function == "ssm":
                return await self._parameter(name, where)
            if function == "secret_arn":
                return await self._secret_arn(name)
        except AwsRejected as exc:
            raise DefinitionError(f"{where}: {exc}") from exc
        raise DefinitionError(f"{where}: no such function")

    def _env(self, name: str, where: str) -> str:
        if not any(fnmatch.fnmatchcase(name, pattern) for pattern in self._env_allow):
            raise DefinitionError(
                f"{where}: not in [definitions].env_allow (the daemon's environment is"
                " readable by templates only where allowed)"
            )
        value = self._environ.get(name)
        if value is None:
            raise DefinitionError(f"{where}: not set in the daemon's environment")
        return value

    async def _parameter(self, name: str, where: str) -> str:
        async with self._client("ssm") as ssm, aws_errors():
            answer = await ssm.get_parameter(Name=name, WithDecryption=False)
        parameter = answer["Parameter"]
        if parameter.get("Type") == "SecureString":
            raise DefinitionError(
                f"{where}: a SecureString; reference it in `secrets` by its ARN"
                f" ({parameter.get('ARN', 'arn:aws:ssm:...')}), so its value never enters"
                " the task definition"
            )
        return str(parameter["Value"])

    async def _secret_arn(self, name: str) -> str:
        async with self._client("secretsmanager") as secrets, aws_errors():
            answer = await secrets.describe_secret(SecretId=name)
        return str(answer["ARN"])

    def _client(self, service: str) -> Any:
        return self._clients.client(service)
