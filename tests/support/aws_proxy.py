"""A proxy between one daemon and the sandbox AWS that can hold or refuse its calls.

    async with AwsProxy.serving(aws.endpoint_url) as proxy:
        proxy.hold("UpdateService")      # kept until the client gives up, never forwarded
        proxy.refuse("DynamoDB_")        # answered 503 at once: the table is out of reach
    proxy.lose_answers("RunTask", times=3)  # forwarded, but a 503 comes back

It models the network between a build host and AWS: a request held here has not reached
AWS, so one the client abandons never lands. A held request is forwarded only if the test
lets it go (`release`), which a test that expects the client to give up never does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}


@dataclass
class AwsProxy:
    upstream: str
    url: str = ""
    held: list[str] = field(default_factory=list)  # actions held so far, in order
    abandoned: list[str] = field(default_factory=list)  # held ones whose client gave up
    on_abandon: Callable[[str], None] | None = None  # called as a client gives one up
    _holding: set[str] = field(default_factory=set)
    _refusing: set[str] = field(default_factory=set)
    _losing: dict[str, int] = field(default_factory=dict)  # action -> answers still to lose
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    @asynccontextmanager
    async def serving(cls, upstream: str) -> AsyncIterator[AwsProxy]:
        proxy = cls(upstream)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", proxy._handle)
        # A client that hangs up cancels its handler: a held request is then dropped.
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        proxy.url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            proxy._session = session
            try:
                yield proxy
            finally:
                proxy._released.set()
                await runner.cleanup()

    def hold(self, action: str) -> None:
        """Keep requests whose target starts with or ends in `action` from AWS."""
        self._holding.add(action)

    def refuse(self, action: str) -> None:
        """Answer requests whose target starts with or ends in `action` with a 503."""
        self._refusing.add(action)

    def lose_answers(self, action: str, *, times: int) -> None:
        """Forward the next `times` `action` requests, then answer each with a 503 instead of
        what AWS said: the request landed, its answer was lost on the way back."""
        self._losing[action] = times

    def heal(self) -> None:
        self._refusing.clear()

    def release(self) -> None:
        """Let every held request through."""
        self._holding.clear()
        self._released.set()

    def _matches(self, target: str, actions: set[str]) -> bool:
        action = target.rpartition(".")[2]
        return any(target.startswith(a) or action == a for a in actions)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        target = request.headers.get("X-Amz-Target", "")
        if self._matches(target, self._refusing):
            error = {"__type": "ServiceUnavailable", "message": "out of reach"}
            return web.Response(status=503, text=json.dumps(error))
        if self._matches(target, self._holding):
            action = target.rpartition(".")[2]
            self.held.append(action)
            try:
                await self._released.wait()
            except asyncio.CancelledError:
                self.abandoned.append(action)
                if self.on_abandon is not None:
                    self.on_abandon(action)
                raise
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as answer:
            payload = await answer.read()
            action = target.rpartition(".")[2]
            if self._losing.get(action, 0) > 0:
                self._losing[action] -= 1
                error = {"__type": "ServiceUnavailable", "message": "answer lost"}
                return web.Response(status=503, text=json.dumps(error))
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS}
            return web.Response(status=answer.status, body=payload, headers=kept)

    _session: aiohttp.ClientSession = field(init=False)
