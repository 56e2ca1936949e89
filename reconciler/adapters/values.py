"""What a caller asks of a seam (ports.py) in one value: a build, a test container, a one-off
task.

Every engine (docker.py, its BuildKit command in buildkit.py, the pool in engines.py) and
every fake takes the same value, so a setting added to a build is added here once. They live
apart from ports.py because docker.py, which ports.py imports, takes them too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from reconciler.adapters.registry import RegistryAuth
from reconciler.decisions.model import TaskLaunch


@dataclass(frozen=True)
class BuildRequest:
    """One image to build, all but its context (the tar stream, which its caller opens,
    closes, and a retry reads again).

    `target` "" builds the Dockerfile's last stage. Images in `cache_from`, pulled with
    `cache_auth`, may serve as build cache (BuildKit only). `secrets` (id -> value) are
    mounted for `RUN --mount=type=secret,id=...` (BuildKit only); kept out of the repr, so
    no log of a request can show them.
    """

    dockerfile: str
    tag: str
    build_args: Mapping[str, str]
    target: str
    labels: Mapping[str, str]
    cache_from: Sequence[str] = ()
    cache_auth: RegistryAuth | None = None
    secrets: Mapping[str, bytes] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class TaskRunRequest:
    """One task of `task_definition` on `cluster`, running `command` in `container`, tagged
    `started_by` (how a later pass finds it) and launched as `launch` says."""

    cluster: str
    task_definition: str
    container: str
    command: Sequence[str]
    started_by: str
    launch: TaskLaunch
    client_token: str = ""  # the same token again: ECS answers with the task it started


@dataclass(frozen=True)
class ContainerRun:
    """`command` in a new container of `image`, with `env`, on `network`, killed after
    `timeout` seconds (the container's own limit, not a bound on the caller's wait).

    It may use `memory_mb` MiB (no swap beyond), `cpus` CPUs and `pids` processes, with no
    capabilities; `read_only` makes its root filesystem read-only with a tmpfs on /tmp. It
    runs as `user`, or as the image's user when that is "".
    """

    image: str
    command: Sequence[str]
    env: Mapping[str, str]
    network: str
    timeout: float
    memory_mb: int = 1024
    cpus: float = 1.0
    pids: int = 512
    read_only: bool = True
    user: str = ""
