"""A proxy between one daemon and the sandbox AWS that can hold or refuse its calls.

    async with AwsProxy.serving(aws.endpoint_url) as proxy:
        proxy.hold("UpdateService")      # kept until the client gives up, never forwarded
        proxy.refuse("DynamoDB_")        # answered 503 at once: the table is out of reach

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
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS}
            return web.Response(status=answer.status, body=payload, headers=kept)

    _session: aiohttp.ClientSession = field(init=False)
