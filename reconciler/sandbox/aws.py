"""moto's server on loopback, with rolling-update progression, task lifecycles, fault
injection, counts, and DynamoDB requests served one at a time.

The daemon talks to AWS through aiobotocore over HTTP, so moto's in-process mock cannot
stand in for AWS: this runs moto's WSGI application in a werkzeug server thread (as moto's
`ThreadedMotoServer` does) behind a small middleware that counts requests, answers with
injected faults, and marks the request as served by this sandbox for `RolloutController` and
`TaskController`.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from moto.moto_api._internal.models import moto_api_backend
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

from reconciler.aio.loopback import is_loopback
from reconciler.sandbox import items
from reconciler.sandbox.faults import LOGGED_ACTIONS, CallCounter, FaultInjector
from reconciler.sandbox.rollout import RolloutController
from reconciler.sandbox.tasks import TaskController

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

_log = logging.getLogger(__name__)
_FORM = "application/x-www-form-urlencoded"


class _QuietHandler(MotoRequestHandler):
    """One log line per request drowns the daemon's own output; keep them at debug level."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        _log.debug("%s %s -> %s", self.command, self.path, code)


def request_action(environ: WSGIEnvironment) -> str:
    """The API action of a request, or "" when it is not an AWS API call."""
    target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
    if target:
        return target.rpartition(".")[2]
    actions = parse_qs(str(environ.get("QUERY_STRING", ""))).get("Action")
    if actions:
        return actions[0]
    scheduler = _scheduler_action(environ)
    if scheduler:
        return scheduler
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length and str(environ.get("CONTENT_TYPE", "")).startswith(_FORM):
        # Query-protocol calls (EC2) carry Action in a form body: read it, then hand moto a
        # fresh stream with the same bytes.
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        actions = parse_qs(body.decode("utf-8", "replace")).get("Action")
        if actions:
            return actions[0]
    return ""


_SCHEDULER_ACTIONS = {
    "GET": "GetSchedule",
    "PUT": "UpdateSchedule",
    "POST": "CreateSchedule",
    "DELETE": "DeleteSchedule",
}


def _scheduler_action(environ: WSGIEnvironment) -> str:
    """EventBridge Scheduler speaks REST (`PUT /schedules/<name>` is UpdateSchedule): its
    action is the method on a schedule, told apart by the signing scope."""
    signed = str(environ.get("HTTP_AUTHORIZATION", ""))
    path = str(environ.get("PATH_INFO", ""))
    if "/scheduler/aws4_request" not in signed or not path.startswith("/schedules/"):
        return ""
    return _SCHEDULER_ACTIONS.get(str(environ.get("REQUEST_METHOD", "")), "")


_APP_ID = re.compile(r"\bapp/(\S+)")


def _params(environ: WSGIEnvironment) -> dict[str, Any]:
    """A JSON-protocol request's parameters, and under "_caller" the app id its client sent
    (AWS_SDK_UA_APP_ID), which tells apart daemons sharing the sandbox; moto is handed a
    fresh stream of the same bytes."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    try:
        params = json.loads(body or b"{}")
    except ValueError:
        params = {}
    params = params if isinstance(params, dict) else {}
    caller = _APP_ID.search(str(environ.get("HTTP_USER_AGENT", "")))
    params["_caller"] = caller.group(1) if caller else ""
    return params


class _Middleware:
    """Counts every request, answers armed faults itself, and hands the rest to moto."""

    def __init__(
        self,
        app: WSGIApplication,
        rollouts: RolloutController,
        tasks: TaskController,
        faults: FaultInjector,
        calls: CallCounter,
    ) -> None:
        self._app = app
        self._rollouts = rollouts
        self._tasks = tasks
        self._faults = faults
        self._calls = calls
        self._dynamodb = threading.Lock()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        action = request_action(environ)
        params = _params(environ) if action in LOGGED_ACTIONS else None
        self._calls.record(action, params)
        fault = self._faults.take(action, params)
        if fault is not None:
            # JSON for the JSON protocols and Scheduler's REST-JSON, XML for query calls.
            query = not environ.get("HTTP_X_AMZ_TARGET") and not _scheduler_action(environ)
            status, headers, body = fault.response(query=query)
            start_response(status, headers)
            return [body]
        if str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_"):
            # moto's threaded server does not make a conditional write atomic (two racing
            # writers can both pass the condition); DynamoDB does, and leases rely on it.
            with self._dynamodb:
                return self._app(environ, start_response)
        with self._rollouts.serving(), self._tasks.serving():
            # moto builds the whole response inside this call, so the context covers its work.
            return self._app(environ, start_response)


def _require_loopback(host: str) -> None:
    # moto has no authentication: anyone who can reach it can change "AWS".
    if not is_loopback(host):
        raise ValueError(f"the sandbox listens on loopback only, not on {host!r}")


class SandboxAws:
    """moto server on loopback with rollout progression, one-off task lifecycles, fault injection
    and per-action call counts.

    moto's backends are process-wide: two sandboxes in one process serve the same AWS state.
    """

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, region: str = "us-east-1"
    ) -> None:
        _require_loopback(host)
        self.region = region
        self.rollouts = RolloutController()
        # One lock for both: their wrappers change the same moto task tables.
        self.tasks = TaskController(self.rollouts.lock)
        self.faults = FaultInjector()
        self.calls = CallCounter()
        self._host = host
        self._port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        """http://host:port of the running server (the port is chosen at start when 0)."""
        if self._server is None:
            raise RuntimeError("the sandbox is not started")
        host, port = self._server.server_address[:2]
        host = str(host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the sandbox is already running")
        self.rollouts.install()
        self.tasks.install()
        items.install()
        app = _Middleware(
            DomainDispatcherApplication(create_backend_app),
            self.rollouts,
            self.tasks,
            self.faults,
            self.calls,
        )
        # Bound here rather than in the thread, so a busy port fails start() itself.
        server = make_server(
            self._host, self._port, app, threaded=True, request_handler=_QuietHandler
        )
        thread = threading.Thread(target=server.serve_forever, name="sandbox-aws", daemon=True)
        thread.start()
        self._server, self._thread = server, thread
        _log.info("sandbox AWS listening on %s", self.endpoint_url)

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join()

    def reset(self) -> None:
        """Empty every moto backend and forget scenarios, faults and counts."""
        with self.rollouts.lock:
            moto_api_backend.reset()
            self.rollouts.reset()
            self.tasks.reset()
        self.faults.clear()
        self.calls.reset()

    def __enter__(self) -> SandboxAws:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


__all__ = ["SandboxAws", "request_action"]
