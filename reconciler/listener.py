"""The HTTP listening socket of the daemon."""

from __future__ import annotations

from aiohttp import web

from reconciler.errors import ReconcilerError


async def listen(runner: web.AppRunner, *, host: str, port: int) -> tuple[str, int]:
    """Start serving `runner` on host:port; the address actually bound (port 0 picks one)."""
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        raise ReconcilerError(
            f"daemon.listen: cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from exc
    bound = runner.addresses[0] if runner.addresses else (host, port)
    return str(bound[0]), int(bound[1])
