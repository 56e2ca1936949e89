"""One answer to "is this address loopback?", for the HTTP layer, the registry and the sandbox."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback(host: str | None) -> bool:
    """True for `localhost` (and `*.localhost`), 127.0.0.0/8 and ::1, with or without a
    port, brackets or an IPv6 zone; False for anything else, including None and garbage."""
    if not host:
        return False
    try:
        # host:port and [v6]:port have a port to strip; a bare name or address has none.
        with_port = host.startswith("[") or host.count(":") == 1
        hostname = (urlsplit(f"//{host}").hostname or "") if with_port else host
    except ValueError:
        return False
    hostname = hostname.split("%", 1)[0]
    if hostname == "localhost" or hostname.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False
