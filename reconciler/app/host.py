"""The machine this daemon runs on, named in the wall-clock stamps it keeps in app state.

A stamp (when a migration or a rollout began) is compared with the wall clock only on the
machine that took it: two daemons' wall clocks may be minutes apart, so a daemon that takes
an app over counts from when it took it, never from another host's stamp.
"""

from __future__ import annotations

import socket
from functools import cache


@cache
def this_host() -> str:
    return socket.gethostname()
