"""structlog set-up: one JSON object per line on stdout for everything the process prints.

The standard library's logging (aiohttp, botocore), warnings and uncaught exceptions are all
routed through the same renderer, so a log shipper never sees a bare traceback. Known secret
values are replaced by `***` in every event, whatever field they hide in.
"""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog


class _Secrets:
    """The values never to print. `longest_first` is what redact() reads: replaced whole
    under the lock, never changed in place, so a thread scrubbing a line while another
    registers a value sees one consistent tuple. The longest first: a secret that contains
    another is blanked whole, not around the shorter one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self.longest_first: tuple[str, ...] = ()

    def add(self, value: str) -> None:
        with self._lock:
            if value not in self._values:
                self._values.add(value)
                self._publish()

    def discard(self, value: str) -> None:
        with self._lock:
            self._values.discard(value)
            self._publish()

    def _publish(self) -> None:
        self.longest_first = tuple(sorted(self._values, key=len, reverse=True))


_secrets = _Secrets()


def register_secret(value: str) -> None:
    """Never print this value again (tokens, webhook secrets, the ECR password, build
    secrets): it becomes `***` in every log line and every line redact() is given."""
    if len(value) >= 4:
        _secrets.add(value)


def redact(text: str) -> str:
    return _blank(text, _secrets.longest_first)


def redact_lines(lines: list[str]) -> list[str]:
    """redact() of each line; the many lines of a chunk of output are searched as one text
    for each secret, and only the secrets found there are looked for line by line."""
    secrets = _secrets.longest_first
    if not secrets or not lines:
        return lines
    joined = "\n".join(lines)
    found = tuple(secret for secret in secrets if secret in joined)
    if not found:
        return lines
    return [_blank(line, found) for line in lines]


def _blank(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


def _redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    if not _secrets.longest_first:
        return event_dict
    return {k: _redact_value(v) for k, v in event_dict.items()}


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redact_processor,
    ]


def configure(
    *, log_format: str = "auto", stream: TextIO | None = None, level: int = logging.INFO
) -> None:
    out = stream or sys.stdout
    as_json = log_format == "json" or (log_format == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.ExtraAdder(),
            *_shared_processors()[:-2],
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redact_processor,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries chatter at INFO about every request; keep their warnings and errors.
    for noisy in ("botocore", "aiobotocore", "aiohttp.access", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    sys.excepthook = _log_uncaught


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    structlog.get_logger("reconciler").critical("uncaught_exception", exc_info=(kind, value, tb))


def get_logger(name: str = "reconciler") -> Any:
    return structlog.get_logger(name)
