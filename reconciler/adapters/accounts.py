"""AWS sessions per account and region: an app's ECS, ECR and RunTask calls, and the reads of
its build secrets, go out with its own region and, with `role_arn`, credentials of a role
assumed through STS.

Apps of one account and region share one ECS and one ECR client, so their DescribeServices
are still batched together; apps elsewhere never share a call. Assumed credentials are
fetched when first needed and refreshed before they expire (botocore's refreshable
credentials, here the asynchronous kind); a role that cannot be assumed is an error of the
apps that use it, naming the role, never of the daemon.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiobotocore.credentials import AioDeferredRefreshableCredentials
from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError, ClientError

from reconciler.adapters.build_secrets import BuildSecrets
from reconciler.adapters.ecr import Ecr
from reconciler.adapters.ecs import Ecs, boto_config
from reconciler.adapters.housekeeping import Housekeeping
from reconciler.adapters.lookups import TemplateLookups
from reconciler.adapters.metrics import MetricSources
from reconciler.adapters.schedules import Schedules
from reconciler.adapters.verification import Verifier
from reconciler.config import AppConfig
from reconciler.errors import AwsRejected, AwsUnavailable

ROLE_SESSION = "reconciler"
ROLE_SECONDS = 3600


@dataclass(frozen=True)
class Account:
    """Where an app's AWS calls go: a region and, optionally, a role to assume there."""

    region: str
    role_arn: str = ""
    external_id: str = ""


def account_of(app: AppConfig, *, default_region: str) -> Account:
    """Where `app`'s AWS calls go."""
    return Account(
        region=app.region or default_region, role_arn=app.role_arn, external_id=app.external_id
    )


def assume_role_fetcher(account: Account, *, endpoint_url: str) -> Any:
    """An async function that assumes the account's role and returns botocore's credential
    metadata; AwsRejected naming the role when it cannot be assumed."""

    async def fetch() -> dict[str, str]:
        request: dict[str, Any] = {
            "RoleArn": account.role_arn,
            "RoleSessionName": ROLE_SESSION,
            "DurationSeconds": ROLE_SECONDS,
        }
        if account.external_id:
            request["ExternalId"] = account.external_id
        try:
            async with AioSession().create_client(
                "sts",
                region_name=account.region,
                endpoint_url=endpoint_url or None,
                config=boto_config(),
            ) as sts:
                answer = await sts.assume_role(**request)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise AwsRejected(
                f"cannot assume role {account.role_arn}: {error.get('Code', 'Error')}: "
                f"{error.get('Message', '')}".rstrip(": ")
            ) from exc
        except (BotoCoreError, OSError) as exc:
            raise AwsUnavailable(f"STS unreachable to assume {account.role_arn}: {exc}") from exc
        credentials = answer["Credentials"]
        return {
            "access_key": credentials["AccessKeyId"],
            "secret_key": credentials["SecretAccessKey"],
            "token": credentials["SessionToken"],
            "expiry_time": credentials["Expiration"].isoformat(),
        }

    return fetch


def session_for(account: Account, *, endpoint_url: str) -> AioSession:
    """A session of its own for the account: with `role_arn`, credentials of that role."""
    session = AioSession()
    if not account.role_arn:
        return session
    # Deferred: nothing is asked of STS until the first call that needs credentials, so a
    # role that cannot be assumed fails that app's pass, not the daemon's start.
    # The session has no public setter for refreshable credentials; botocore's own
    # assume-role provider sets this attribute the same way.
    session._credentials = AioDeferredRefreshableCredentials(  # type: ignore[attr-defined]
        refresh_using=assume_role_fetcher(account, endpoint_url=endpoint_url),
        method="sts-assume-role",
    )
    return session


class Accounts:
    """The ECS and ECR clients of every account and region apps use, opened on demand and
    closed with the daemon."""

    def __init__(self, *, endpoint_url: str, registry_override: str) -> None:
        self._endpoint_url = endpoint_url
        self._registry_override = registry_override
        self._stack = AsyncExitStack()
        self._opened: dict[Account, tuple[Ecs, Ecr]] = {}
        self._sessions: dict[Account, AioSession] = {}
        self._housekeeping: dict[Account, Housekeeping] = {}

    @classmethod
    @asynccontextmanager
    async def open(cls, *, endpoint_url: str, registry_override: str) -> AsyncIterator[Accounts]:
        accounts = cls(endpoint_url=endpoint_url, registry_override=registry_override)
        try:
            yield accounts
        finally:
            with contextlib.suppress(Exception):
                await accounts._stack.aclose()

    async def clients(self, account: Account) -> tuple[Ecs, Ecr]:
        opened = self._opened.get(account)
        if opened is None:
            session = self._session(account)
            ecs = await self._stack.enter_async_context(
                Ecs.connect(region=account.region, endpoint_url=self._endpoint_url, session=session)
            )
            ecr = await self._stack.enter_async_context(
                Ecr.connect(
                    region=account.region,
                    endpoint_url=self._endpoint_url,
                    registry_override=self._registry_override,
                    session=session,
                )
            )
            opened = self._opened[account] = (ecs, ecr)
        return opened

    async def housekeeping(self, account: Account) -> Housekeeping:
        found = self._housekeeping.get(account)
        if found is None:
            found = await self._stack.enter_async_context(
                Housekeeping.connect(
                    region=account.region,
                    endpoint_url=self._endpoint_url,
                    session=self._session(account),
                )
            )
            self._housekeeping[account] = found
        return found

    def secrets(self, account: Account) -> BuildSecrets:
        """Build secrets read with the account's identity, through the same session (and
        assumed credentials) as its ECS and ECR clients."""
        return BuildSecrets(
            session=self._session(account),
            region=account.region,
            endpoint_url=self._endpoint_url,
        )

    def lookups(self, account: Account, *, env_allow: tuple[str, ...]) -> TemplateLookups:
        """What definition templates read, with the account's identity for ssm() and
        secret_arn(), and only the `env_allow` variables for env()."""
        return TemplateLookups(
            session=self._session(account),
            region=account.region,
            endpoint_url=self._endpoint_url,
            env_allow=env_allow,
        )

    def verifier(self, account: Account) -> Verifier:
        """Whether what a definition names exists, asked with the account's identity."""
        return Verifier(
            session=self._session(account), region=account.region, endpoint_url=self._endpoint_url
        )

    def schedules(self, account: Account) -> Schedules:
        """EventBridge rules and Scheduler schedules, moved with the account's identity."""
        return Schedules(
            session=self._session(account), region=account.region, endpoint_url=self._endpoint_url
        )

    def metrics(self, account: Account) -> MetricSources:
        """Analysis checks' sources: CloudWatch with the account's identity."""
        return MetricSources(
            session=self._session(account), region=account.region, endpoint_url=self._endpoint_url
        )

    def _session(self, account: Account) -> AioSession:
        """One session per account, so its assumed credentials are fetched once for all."""
        session = self._sessions.get(account)
        if session is None:
            session = self._sessions[account] = session_for(
                account, endpoint_url=self._endpoint_url
            )
        return session
