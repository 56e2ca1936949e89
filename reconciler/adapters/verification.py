"""The AWS side of verifying a definition (SPEC 19): whether the cluster, roles, secrets,
parameters, log groups, target groups and capacity providers it names exist, asked with the
app's own identity (the session its ECS calls use), all at once.

Only reads, and only what says whether a thing exists: DescribeSecret, never a secret's
value; GetParameter without decryption. A missing thing is an Answer (MISSING), so is a
refusal (DENIED: the identity may not ask); throttling and network errors stay
AwsUnavailable, so the pass is retried rather than a deploy held for a busy API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from contextlib import AsyncExitStack
from typing import Any

from aiobotocore.session import AioSession
from botocore.exceptions import ClientError

from reconciler.adapters.aws import aws_errors, describe, is_transient
from reconciler.adapters.aws_clients import RegionalClients
from reconciler.decisions.verification import Answer, Kind, Lookup, State

SERVICES: dict[Kind, str] = {
    "cluster": "ecs",
    "role": "iam",
    "parameter": "ssm",
    "secret": "secretsmanager",
    "log_group": "logs",
    "target_group": "elbv2",
    "capacity_provider": "ecs",
}
# Error codes that mean "no such thing" for the call each kind makes.
MISSING_CODES = frozenset(
    {
        "NoSuchEntity",  # IAM
        "ParameterNotFound",  # SSM
        "ResourceNotFoundException",  # Secrets Manager, Logs
        "TargetGroupNotFound",  # ELBv2
        "ClusterNotFoundException",  # ECS
    }
)
DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "AuthorizationError",
    }
)
# Credentials no call can use: not one check's problem but the whole identity's, raised
# (AwsRejected) rather than said once per check.
CREDENTIAL_CODES = frozenset(
    {"UnrecognizedClientException", "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException"}
)
# Calls in flight at once for one verification: a real definition needs fewer, so all of
# its checks run together; the limit only spares AWS a definition written to flood it.
CONCURRENT = 16
# DescribeLogGroups lists by prefix in name order, so the exact name, the smallest string
# with that prefix, is on the first page; a few more in case a service orders otherwise.
LOG_GROUPS_PAGE = 50

Client = Any
Ask = Callable[[Client, Lookup], Awaitable[Answer]]


class Verifier:
    """Answers verification lookups for one account and region."""

    def __init__(
        self, *, region: str, session: AioSession | None = None, endpoint_url: str = ""
    ) -> None:
        self._clients = RegionalClients(region=region, session=session, endpoint_url=endpoint_url)

    async def answers(self, lookups: Collection[Lookup]) -> dict[Lookup, Answer]:
        """Each lookup's answer, all asked concurrently; AwsUnavailable (or AwsRejected,
        for credentials that cannot be had) when any could not be asked."""
        unique = list(dict.fromkeys(lookups))
        async with AsyncExitStack() as stack:
            clients: dict[tuple[str, str], Client] = {}
            for lookup in unique:
                key = (SERVICES[lookup.kind], lookup.region or self._clients.region)
                if key not in clients:
                    clients[key] = await stack.enter_async_context(self._client(*key))
            slots = asyncio.Semaphore(CONCURRENT)

            async def ask(lookup: Lookup) -> Answer:
                async with slots:
                    key = (SERVICES[lookup.kind], lookup.region or self._clients.region)
                    return await _ask(clients[key], lookup)

            # Every question runs to its end before the clients close; then the first error.
            results = await asyncio.gather(
                *(ask(lookup) for lookup in unique), return_exceptions=True
            )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return dict(zip(unique, results, strict=True))  # type: ignore[arg-type]

    def _client(self, service: str, region: str) -> Any:
        return self._clients.client(service, region=region)


async def _ask(client: Client, lookup: Lookup) -> Answer:
    async with aws_errors():
        try:
            return await ASKS[lookup.kind](client, lookup)
        except ClientError as exc:
            answer = _answer_of(exc)
            if answer is None:
                raise  # aws_errors makes it AwsUnavailable (transient) or AwsRejected
            return answer


def _answer_of(error: ClientError) -> Answer | None:
    code = str(error.response.get("Error", {}).get("Code", ""))
    if is_transient(error) or code in CREDENTIAL_CODES:
        return None
    message = str(error.response.get("Error", {}).get("Message", ""))
    if code in MISSING_CODES:
        return Answer(State.MISSING)
    detail = " ".join(describe(error).split())  # one line, whatever the message holds
    if code in DENIED_CODES or "not authorized" in message.lower():
        return Answer(State.DENIED, detail=detail)
    return Answer(State.REFUSED, detail=detail)


async def _cluster(ecs: Client, lookup: Lookup) -> Answer:
    answer = await ecs.describe_clusters(clusters=[lookup.name])
    found = answer.get("clusters") or []
    if not found:
        return _failed(answer)
    status = str(found[0].get("status", ""))
    return Answer(State.FOUND) if status == "ACTIVE" else Answer(State.UNUSABLE, f"is {status}")


async def _capacity_provider(ecs: Client, lookup: Lookup) -> Answer:
    answer = await ecs.describe_capacity_providers(capacityProviders=[lookup.name])
    found = answer.get("capacityProviders") or []
    if not found:
        return _failed(answer)
    status = str(found[0].get("status", ""))
    return Answer(State.FOUND) if status == "ACTIVE" else Answer(State.UNUSABLE, f"is {status}")


def _failed(answer: dict[str, Any]) -> Answer:
    """ECS's describe calls name what they could not describe in `failures`."""
    failures = answer.get("failures") or []
    reason = str(failures[0].get("reason", "")) if failures else "MISSING"
    if reason == "MISSING":
        return Answer(State.MISSING)
    return Answer(State.REFUSED, detail=f"{reason}: {failures[0].get('detail', '')}".rstrip(": "))


async def _role(iam: Client, lookup: Lookup) -> Answer:
    answer = await iam.get_role(RoleName=lookup.name)
    return Answer(State.FOUND, trust_policy=answer["Role"].get("AssumeRolePolicyDocument"))


async def _parameter(ssm: Client, lookup: Lookup) -> Answer:
    # Without decryption: whether it exists is all that is asked, and no secret is read.
    await ssm.get_parameter(Name=lookup.name, WithDecryption=False)
    return Answer(State.FOUND)


async def _secret(secrets: Client, lookup: Lookup) -> Answer:
    answer = await secrets.describe_secret(SecretId=lookup.name)
    if answer.get("DeletedDate"):
        return Answer(State.UNUSABLE, "is scheduled for deletion")
    return Answer(State.FOUND)


async def _log_group(logs: Client, lookup: Lookup) -> Answer:
    answer = await logs.describe_log_groups(logGroupNamePrefix=lookup.name, limit=LOG_GROUPS_PAGE)
    names = {group.get("logGroupName") for group in answer.get("logGroups") or []}
    return Answer(State.FOUND) if lookup.name in names else Answer(State.MISSING)


async def _target_group(elbv2: Client, lookup: Lookup) -> Answer:
    await elbv2.describe_target_groups(TargetGroupArns=[lookup.name])
    return Answer(State.FOUND)


ASKS: dict[Kind, Ask] = {
    "cluster": _cluster,
    "role": _role,
    "parameter": _parameter,
    "secret": _secret,
    "log_group": _log_group,
    "target_group": _target_group,
    "capacity_provider": _capacity_provider,
}
