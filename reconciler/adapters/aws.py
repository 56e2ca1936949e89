"""Translate botocore and network failures into the project's errors, at the edge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from reconciler.errors import AwsRejected, AwsUnavailable

# Error codes that say "later", not "never". ECS's "too many concurrent attempts" arrives as
# an InvalidParameterException/ServerException message, so messages are checked as well.
TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ServerException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalServerError",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "LimitExceededException",
        "ProvisionedThroughputExceededException",
    }
)
TRANSIENT_MESSAGES = ("too many concurrent attempts", "rate exceeded", "please try again")


def is_transient(error: ClientError) -> bool:
    code = str(error.response.get("Error", {}).get("Code", ""))
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    message = str(error.response.get("Error", {}).get("Message", "")).lower()
    return (
        code in TRANSIENT_CODES
        or status >= 500
        or status == 429
        or any(m in message for m in TRANSIENT_MESSAGES)
    )


def describe(error: ClientError) -> str:
    err = error.response.get("Error", {})
    operation = getattr(error, "operation_name", "request")
    return f"{operation}: {err.get('Code', 'Error')}: {err.get('Message', '')}".strip()


@asynccontextmanager
async def aws_errors() -> AsyncIterator[None]:
    """Every AWS call goes through this: nothing from botocore leaks past an adapter."""
    try:
        yield
    except ClientError as exc:
        if is_transient(exc):
            raise AwsUnavailable(describe(exc)) from exc
        raise AwsRejected(describe(exc)) from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise AwsRejected(f"AWS credentials: {exc}") from exc
    except ParamValidationError as exc:
        raise AwsRejected(f"AWS request invalid: {exc}") from exc
    except (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError) as exc:
        raise AwsUnavailable(f"AWS unreachable: {exc}") from exc
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise AwsUnavailable(f"AWS unreachable: {type(exc).__name__}: {exc}") from exc
    except BotoCoreError as exc:
        raise AwsUnavailable(f"AWS client error: {exc}") from exc
