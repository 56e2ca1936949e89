"""Loopback ports for tests: servers of a test's own, and addresses nothing answers on."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port on `host` that nothing listens on right now (bound, then released).

    Another process may take it before the caller binds it; callers that start a server on it
    retry, and callers that want a closed port only need it to stay free for a moment.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
