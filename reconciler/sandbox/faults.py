"""Injected AWS errors and per-action request counts for the sandbox's HTTP front.

Both are keyed by the API action: the part after the dot in `X-Amz-Target` for the JSON
protocols ECS and ECR speak ("DescribeServices"), or the `Action` parameter of query-protocol
calls (EC2). Werkzeug serves each request on its own thread, so both classes lock.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from xml.sax.saxutils import escape

ANY_ACTION = "*"


@dataclass(frozen=True)
class Fault:
    """One AWS JSON-protocol error response."""

    status: int
    code: str
    message: str

    def response(self, *, query: bool = False) -> tuple[str, list[tuple[str, str]], bytes]:
        """Status line, headers and body as botocore expects an AWS error to look: JSON for
        the JSON protocols, an XML ErrorResponse for query-protocol calls (STS, EC2)."""
        request_id = str(uuid.uuid4())
        if query:
            body = (
                "<ErrorResponse><Error><Type>Sender</Type>"
                f"<Code>{escape(self.code)}</Code><Message>{escape(self.message)}</Message>"
                f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
            ).encode()
            content_type = "text/xml"
        else:
            body = json.dumps({"__type": self.code, "message": self.message}).encode()
            content_type = "application/x-amz-json-1.1"
        headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("x-amzn-ErrorType", self.code),
            ("x-amzn-RequestId", request_id),
        ]
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Error"
        return f"{self.status} {phrase}", headers, body


@dataclass
class _Armed:
    action: str
    remaining: int
    fault: Fault
    where: dict[str, str]

    def matches(self, action: str, params: Mapping[str, Any] | None) -> bool:
        if self.action not in (action, ANY_ACTION):
            return False
        return all(str((params or {}).get(key)) == value for key, value in self.where.items())


class FaultInjector:
    """Makes the next N requests for an action fail with a chosen AWS error.

    JSON-protocol actions (ECS, ECR) get a JSON error, query-protocol ones (STS) an XML one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: list[_Armed] = []

    def inject(
        self,
        action: str,
        *,
        times: int = 1,
        status: int = 400,
        code: str = "ThrottlingException",
        message: str = "Rate exceeded",
        where: Mapping[str, str] | None = None,
    ) -> None:
        """Fail the next `times` requests for `action` ("*": any action) with this error;
        with `where`, only those whose parameters have these values (for the actions whose
        parameters are logged, e.g. {"service": "worker"} for UpdateService).

        Injections for the same action queue up: the earlier one is used up first.
        """
        if where and action not in LOGGED_ACTIONS:
            raise ValueError(f"the parameters of {action} are not read: no `where` for it")
        if times < 1:
            raise ValueError("times must be at least 1")
        if not 400 <= status <= 599:
            raise ValueError("an injected fault needs an error status (4xx or 5xx)")
        with self._lock:
            self._armed.append(
                _Armed(action, times, Fault(status, code, message), dict(where or {}))
            )

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    def take(self, action: str, params: Mapping[str, Any] | None = None) -> Fault | None:
        """The fault for this request, if one is armed for its action (using one up)."""
        if not action:
            return None  # not an AWS API call (moto's own endpoints, health probes)
        with self._lock:
            for armed in self._armed:
                if armed.matches(action, params):
                    armed.remaining -= 1
                    if armed.remaining == 0:
                        self._armed.remove(armed)
                    return armed.fault
        return None


# Writes whose parameters are kept, so a test can tell which service got which revision
# from whom (UpdateService per service and task definition, across daemons), and in which
# order a release moved services and schedules.
LOGGED_ACTIONS = frozenset(
    {"UpdateService", "RegisterTaskDefinition", "RunTask", "PutTargets", "UpdateSchedule"}
)


class CallCounter:
    """Requests seen per action, faulted ones included; the parameters of LOGGED_ACTIONS."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._log: list[tuple[str, dict[str, Any]]] = []

    def record(self, action: str, params: dict[str, Any] | None = None) -> None:
        if action:
            with self._lock:
                self._counts[action] += 1
                if params is not None:
                    self._log.append((action, params))

    def logged(self, action: str) -> list[dict[str, Any]]:
        """The parameters of every `action` request seen (a LOGGED_ACTIONS one), in order."""
        with self._lock:
            return [params for name, params in self._log if name == action]

    def sequence(self) -> list[tuple[str, dict[str, Any]]]:
        """Every logged request (action, parameters), in the order seen."""
        with self._lock:
            return list(self._log)

    def count(self, action: str) -> int:
        with self._lock:
            return self._counts[action]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._log.clear()
