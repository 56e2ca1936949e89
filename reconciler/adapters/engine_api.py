"""Talking to the Docker engine's API: which failures mean "the engine is unavailable", and
the one-line form an engine's message takes in an error or a log."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
from aiodocker.exceptions import DockerError

from reconciler.errors import DockerUnavailable

LOG_TAIL_LINES = 20  # lines of a build's or a test's output kept for its error

# What aiodocker and aiohttp raise when the engine is missing, slow, or drops a stream half
# way. FileNotFoundError and ConnectionError cover a socket path that vanished under us. The
# test suite raises one of each through `engine_errors`, so a type added here is a type mapped.
ENGINE_ERRORS: tuple[type[Exception], ...] = (
    DockerError,
    aiohttp.ClientError,
    TimeoutError,
    ConnectionError,
    FileNotFoundError,
)


def one_line(message: str, *, secret: str | None = None) -> str:
    """`message` on one line, with `secret` (if any) blanked out."""
    if secret:
        message = message.replace(secret, "***")
    return " ".join(message.split())


@contextmanager
def engine_errors(action: str, *, secret: str | None = None) -> Iterator[None]:
    """Turn a failure to talk to the engine during `action` into DockerUnavailable."""
    try:
        yield
    except ENGINE_ERRORS as exc:
        detail = exc.message if isinstance(exc, DockerError) else str(exc)
        detail = one_line(detail or type(exc).__name__, secret=secret)
        raise DockerUnavailable(f"Docker engine unavailable ({action}): {detail}") from exc
