"""BuildKit builds through the Docker CLI.

A BuildKit build needs a gRPC session beside the engine API (for the context, cache mounts,
secrets), and no Python client speaks it; the Docker CLI does. So a BuildKit build runs
`docker build` with DOCKER_BUILDKIT=1, the context tar on its stdin and plain progress on its
output. This module finds a CLI that can do that, runs it, and reads what it prints; docker.py
turns the outcome into a BuildResult or one of the project's errors.

A `docker` on PATH is not enough: from release 23 on, the CLI builds with BuildKit only
through the buildx plugin, and refuses DOCKER_BUILDKIT=1 without it. Older CLIs carry their
own BuildKit client. So PATH is searched in order for the first CLI that can.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from reconciler.adapters.values import BuildRequest
from reconciler.decisions.text import printable
from reconciler.errors import StalledError
from reconciler.logs import redact, redact_lines

# A single output line longer than this is cut: a RUN step printing a megabyte without a
# newline must not become a megabyte string in memory, a log record or a status page.
LINE_CAP = 4096
# Reads of the context file and of the CLI's output, each at most this much at a time.
CHUNK = 256 * 1024
# How long `docker --version` and `docker buildx version` may take before the CLI is skipped.
_PROBE_TIMEOUT = 15.0

_VERSION = re.compile(r"^Docker version (\d+)\.")
# A Dockerfile instruction's progress vertex, `[2/3] RUN ...` or `[build 2/3] RUN ...`; the
# others are BuildKit's own (`[internal] load ...`, `exporting to image`).
_STEP = re.compile(r"^\[(?:[^\]\s]+ )?\d+/\d+\] (\S+)")
# Vertices that fetch a base image: their failure can be a registry out of reach.
_PULL = re.compile(r"^\[internal\] load metadata for |^resolve image config for |^\[.*\] FROM ")
# The engine reading the context the CLI streams it: a failure there is the transfer's (the
# engine lost the CLI's session, seen under heavy load as "context not found"), never the
# commit's, whose context was checked before it was sent.
_CONTEXT_UPLOAD = re.compile(r"^\[internal\] load remote build context")
# The CLI's own words for "there is no engine to talk to" or "the engine went away".
ENGINE_UNREACHABLE = re.compile(
    r"cannot connect to the docker daemon|error during connect|failed to dial grpc"
    r"|is the docker daemon running|rpc error: code = unavailable|error reading from server"
    r"|permission denied while trying to connect"
    # An engine killed part way through a build: its stream ends with no result, so the CLI
    # has no image ID for the --iidfile.
    r"|server did not provide an image ID",
    re.IGNORECASE,
)
# The CLI refusing the command line itself: retrying the same command cannot help.
CLI_REFUSED = re.compile(
    r"unknown (shorthand )?flag|invalid argument .* for .* flag|buildx component is missing"
    r"|requires (exactly|at least) \d+ argument",
    re.IGNORECASE,
)
# Build-arg names the CLI reads from its own environment: their values go on the command line
# (`--build-arg NAME=value`) because putting them in its environment would reconfigure the
# CLI itself. Every other value travels in the environment, never in the argument list, where
# any local user can read it from /proc.
_CLI_OWN_ENV = re.compile(r"^(PATH|HOME|(DOCKER|BUILDKIT|BUILDX)_.*)$")
# Build secrets travel to the CLI in its environment under these names (`--secret
# id=KEY,env=NAME`): not in its argument list, which `ps` shows every local user, and not in
# a file. A build-arg named like one goes on the command line, so it can never replace one.
SECRET_ENV_PREFIX = "RECONCILER_BUILD_SECRET_"  # noqa: S105 - variable names, not a value
# A value over this size goes in a file instead: Linux caps one environment string at 128 KiB.
SECRET_ENV_MAX = 64 * 1024


@dataclass(frozen=True)
class DockerCli:
    """A docker CLI that can build with BuildKit."""

    path: str
    version: str


@dataclass(frozen=True)
class EngineTls:
    """Client certificates for a tcp:// engine started with --tlsverify: the CA that signed the
    engine's certificate, and the certificate and key this client proves itself with."""

    ca_file: str
    cert_file: str
    key_file: str

    def cli_flags(self) -> list[str]:
        """The CLI's global flags for the same check: `docker --tlsverify ...`."""
        return [
            "--tlsverify",
            f"--tlscacert={self.ca_file}",
            f"--tlscert={self.cert_file}",
            f"--tlskey={self.key_file}",
        ]


def _candidates(search_path: str | None) -> Iterator[str]:
    seen: set[str] = set()
    search = os.environ.get("PATH", "") if search_path is None else search_path
    for folder in search.split(os.pathsep):
        if not folder:
            continue
        candidate = Path(folder, "docker")
        if not candidate.is_file() or not os.access(candidate, os.X_OK):
            continue
        real = str(candidate.resolve())
        if real not in seen:
            seen.add(real)
            yield str(candidate)


async def _probe(argv: list[str]) -> tuple[int, str]:
    """Run a short CLI command; (exit code, output). A hung or missing CLI is (-1, "")."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "DOCKER_CLI_HINTS": "false"},
        )
    except OSError:
        return -1, ""
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT):
            out, _ = await proc.communicate()
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        if isinstance(exc, TimeoutError):
            return -1, ""
        raise
    return proc.returncode or 0, out.decode(errors="replace")


async def find_cli(search_path: str | None = None) -> DockerCli | None:
    """The first `docker` on PATH (or `search_path`) that builds with BuildKit, if any."""
    for candidate in _candidates(search_path):
        code, out = await _probe([candidate, "--version"])
        found = _VERSION.match(out.strip())
        if code != 0 or found is None:
            continue  # not a Docker CLI (a podman shim, a broken install)
        version = out.strip().split(",")[0].removeprefix("Docker version ")
        if int(found.group(1)) < 23:
            return DockerCli(path=candidate, version=version)
        code, _ = await _probe([candidate, "buildx", "version"])
        if code == 0:
            return DockerCli(path=candidate, version=version)
    return None


def fits_environment(value: bytes) -> bool:
    """Whether a secret can travel in the CLI's environment: UTF-8 text without NUL (the
    environment is C strings) and not too long for one environment string."""
    if len(value) > SECRET_ENV_MAX or b"\x00" in value:
        return False
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def write_secret_files(directory: str, secrets: Mapping[str, bytes]) -> dict[str, str]:
    """Key -> path of a 0600 file holding each secret the environment cannot carry, in
    `directory` (private to this process: the caller makes it and removes it after the
    build)."""
    files: dict[str, str] = {}
    for index, (key, value) in enumerate(sorted(secrets.items())):
        if fits_environment(value):
            continue
        path = str(Path(directory, f"secret-{index}"))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(value)
        files[key] = path
    return files


def _csv_field(field: str) -> str:
    """One field of a flag the CLI reads as CSV (`--secret id=...,src=...`)."""
    if "," in field or '"' in field:
        return '"' + field.replace('"', '""') + '"'
    return field


def secret_flags(
    secrets: Mapping[str, bytes], files: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """The `--secret` flags of the build and the environment they read: each secret in a
    variable of its own, or in its file of `files` (write_secret_files) when it has one."""
    argv: list[str] = []
    env: dict[str, str] = {}
    for index, (key, value) in enumerate(sorted(secrets.items())):
        if key in files:
            argv += ["--secret", f"id={key}," + _csv_field(f"src={files[key]}")]
        elif fits_environment(value):
            variable = f"{SECRET_ENV_PREFIX}{index}"
            env[variable] = value.decode("utf-8")
            argv += ["--secret", f"id={key},env={variable}"]
        else:
            raise ValueError(f"build secret {key} needs a file (write_secret_files)")
    return argv, env


def host_flag(url: str) -> str:
    """The engine URL as the CLI's -H wants it: aiodocker also takes http://, the CLI tcp://."""
    if url.startswith("http://"):
        return "tcp://" + url.removeprefix("http://")
    return url


def command(
    cli: DockerCli,
    request: BuildRequest,
    *,
    url: str | None,
    network: str,
    iidfile: str,
    environ: Mapping[str, str] | None = None,
    docker_config: str | None = None,
    tls: EngineTls | None = None,
    secret_files: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The argument list and environment of the build; build-arg and secret values are in
    the latter (secrets in `secret_files`, key -> path, are read from there instead).

    The image carries its build cache inline (BUILDKIT_INLINE_CACHE), so the request's
    `cache_from` images pushed by any host serve as cache here; `docker_config` is a directory
    whose config.json holds the credentials for pulling them (`request.cache_auth` is not read
    here). `tls` is for a tcp:// engine that checks clients.
    """
    env = dict(os.environ if environ is None else environ)
    if docker_config is not None:
        env["DOCKER_CONFIG"] = docker_config
    env.update(DOCKER_BUILDKIT="1", BUILDKIT_PROGRESS="plain", DOCKER_CLI_HINTS="false")
    argv = [cli.path]
    if url:
        # -H wins over a context; DOCKER_HOST beside it makes some CLI versions refuse to run.
        env.pop("DOCKER_HOST", None)
        env.pop("DOCKER_CONTEXT", None)
        argv += ["-H", host_flag(url)]
    if tls is not None:
        argv += tls.cli_flags()  # global flags: before the command, and they beat DOCKER_TLS_*
    argv += ["build", "--progress=plain", "-f", request.dockerfile, "-t", request.tag]
    argv += ["--iidfile", iidfile]
    for name, value in request.build_args.items():
        if _CLI_OWN_ENV.match(name) or name.startswith(SECRET_ENV_PREFIX):
            argv += ["--build-arg", f"{name}={value}"]
        else:
            # `--build-arg NAME` without a value makes the CLI take it from its environment.
            argv += ["--build-arg", name]
            env[name] = value
    for name, value in request.labels.items():
        argv += ["--label", f"{name}={value}"]
    if request.target:
        argv += ["--target", request.target]
    if network:
        argv += ["--network", network]
    flags, secret_env = secret_flags(request.secrets, secret_files or {})
    argv += flags
    env.update(secret_env)
    argv += ["--build-arg", "BUILDKIT_INLINE_CACHE=1"]
    for image in request.cache_from:
        argv += ["--cache-from", image]
    argv.append("-")  # the context is the tar on stdin
    return argv, env


CACHE_IMPORT = "importing cache manifest from "


class LineSplitter:
    """Bytes in, complete lines out, with no line longer than LINE_CAP characters.

    What is held between calls is at most one partial line of LINE_CAP bytes: the rest of an
    over-long line is dropped until its newline comes.
    """

    def __init__(self) -> None:
        self._pending = bytearray()
        self._dropping = False

    def feed(self, data: bytes) -> list[str]:
        lines: list[str] = []
        start = 0
        if self._pending or self._dropping:
            first = data.find(b"\n")
            if first < 0:
                self._hold(data)
                return lines
            self._hold(data[:first])
            lines.append(self._take())
            start = first + 1
        end = data.rfind(b"\n")
        if end >= start:
            lines += self._split(data[start : end + 1])
            start = end + 1
        self._hold(data[start:])
        return lines

    def close(self) -> list[str]:
        """The last line, when the output did not end with a newline."""
        if self._pending or self._dropping:
            return [self._take()]
        return []

    def _hold(self, data: bytes) -> None:
        room = LINE_CAP - len(self._pending)
        if len(data) > room:
            self._pending += data[: max(room, 0)]
            self._dropping = True
        else:
            self._pending += data

    def _take(self) -> str:
        line = _cut(shown(self._pending.decode(errors="replace")), self._dropping)
        self._pending.clear()
        self._dropping = False
        return line

    @staticmethod
    def _split(data: bytes) -> list[str]:
        """Complete lines, `data` ending with a newline."""
        # One decode and one split for the whole chunk: a command printing millions of short
        # lines must not cost Python work per byte. splitlines also ends a line at a lone \r.
        text = data.decode(errors="replace")
        lines = redact_lines([printable(line) for line in text.splitlines()])
        if len(data) > LINE_CAP:
            lines = [_cut(line, len(line) > LINE_CAP) for line in lines]
        return lines


def shown(line: str) -> str:
    """An output line as logs, status and pages may show it: without control characters, and
    with every registered secret (logs.register_secret, build secrets included) blanked."""
    return redact(printable(line))


def _cut(line: str, cut: bool) -> str:
    return line[:LINE_CAP] + " [line cut]" if cut else line


class PlainProgress:
    """What `--progress=plain` output says: the steps, which came from cache, what failed.

    Only the last `tail_lines` lines are kept; a failing step's error is kept apart from them,
    so output printed after it (the CLI's summary, a Dockerfile excerpt) cannot push it out.
    """

    def __init__(self, *, tail_lines: int, on_first_step: Callable[[], None] | None = None) -> None:
        self.tail: deque[str] = deque(maxlen=tail_lines)
        # Called when the first Dockerfile step other than FROM shows up, then forgotten.
        self._on_first_step = on_first_step
        self._names: dict[str, str] = {}
        self._cached: set[str] = set()
        # (step name, its error, the line that said so) for the first vertex that failed.
        self.failed: tuple[str, str, str] | None = None
        # The last line outside the per-vertex progress: the CLI's own closing error.
        self.final = ""

    def feed(self, line: str) -> None:
        line = line.rstrip()
        if not line:
            return
        if line.startswith("#"):
            vertex, _, text = line[1:].partition(" ")
            if not vertex.isdigit():
                self._outside(line)
                return
            self._vertex(vertex, text.strip(), line)
            return
        self._outside(line)

    def _vertex(self, vertex: str, text: str, line: str) -> None:
        if vertex not in self._names:
            self._names[vertex] = text
            step = _STEP.match(text)
            if step is not None and step.group(1).upper() != "FROM" and self._on_first_step:
                called, self._on_first_step = self._on_first_step, None
                called()
        elif text == "CACHED":
            self._cached.add(vertex)
        elif (
            text.startswith("ERROR:")
            and self.failed is None
            and not self._names[vertex].startswith(CACHE_IMPORT)
        ):
            # A cache image that cannot be read is an error of its own vertex only: BuildKit
            # builds on without the cache, so it is never the build's failure.
            self.failed = (self._names[vertex], text.removeprefix("ERROR:").strip(), line)
        if text.startswith("sha256:"):
            return  # the vertex digest (CLI 20.10): noise in a tail meant for people
        self.tail.append(line)

    def _outside(self, line: str) -> None:
        self.tail.append(line)
        if line.strip("-") and not line.startswith(" > "):
            self.final = line

    @property
    def steps(self) -> int:
        """The Dockerfile instructions seen (FROM included)."""
        return sum(1 for name in self._names.values() if _STEP.match(name))

    @property
    def cached_steps(self) -> int:
        """The Dockerfile instructions taken from the cache, FROM left out.

        A FROM of a base image the engine has is always reported CACHED, even on a first
        build; leaving it out keeps the number meaning what the classic builder's "Using
        cache" count means: build work that did not have to be done again.
        """
        count = 0
        for vertex in self._cached:
            step = _STEP.match(self._names[vertex])
            if step is not None and step.group(1).upper() != "FROM":
                count += 1
        return count

    @property
    def failed_is_pull(self) -> bool:
        return self.failed is not None and bool(_PULL.match(self.failed[0]))

    @property
    def failed_is_context_upload(self) -> bool:
        return self.failed is not None and bool(_CONTEXT_UPLOAD.match(self.failed[0]))

    def failure_tail(self) -> list[str]:
        """The tail for a BuildFailed: the last lines, always with the failing step's error."""
        lines = list(self.tail)
        if self.failed is not None and self.failed[2] not in lines:
            lines.append(self.failed[2])
        return lines


@dataclass(frozen=True)
class CliExit:
    """How the CLI ended: its exit code (negative: killed by that signal) and what it said;
    `timed_out` when it was stopped because the build ran past its timeout."""

    returncode: int
    progress: PlainProgress
    timed_out: bool = False


# After its timeout, how long the CLI has between SIGTERM and SIGKILL: time to cancel the
# build over its session and print what it stopped. Not every CLI does (some releases let a
# SIGTERM go unanswered); after the SIGKILL, the engine stops the build when the CLI's
# connection closes.
STOP_GRACE = 5.0


async def run(
    argv: list[str],
    *,
    env: Mapping[str, str],
    context: BinaryIO,
    progress: PlainProgress,
    time_limit: float | None = None,
) -> CliExit:
    """Run the build command with `context` streamed to its stdin, feeding `progress`.

    StalledError when the CLI cannot be started at all. Past `time_limit` seconds (None:
    none) the CLI and what it started are stopped (SIGTERM, then SIGKILL after STOP_GRACE)
    and the exit says `timed_out`. Cancelled, the CLI (and any plugin it started) is killed
    and reaped before this returns: its connection to the engine closing is what stops the
    build there.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env),
            # Its own process group: a Ctrl-C meant for the daemon is not a kill of the build,
            # and a kill of the build reaches the buildx plugin the CLI may have started.
            start_new_session=True,
        )
    except OSError as exc:
        # Removed or made unrunnable since it was found: a human has to put it back.
        raise StalledError(f"cannot run the docker CLI {argv[0]}: {exc}") from exc
    feeder = asyncio.create_task(_feed(proc, context))
    splitter = LineSplitter()
    timed_out = False
    try:
        try:
            async with asyncio.timeout(time_limit) as deadline:
                await _read(proc, splitter, progress)
                returncode = await proc.wait()
                await feeder
        except TimeoutError:
            if not deadline.expired():
                raise
            timed_out = True
            returncode = await _stop(proc, feeder, splitter, progress)
    except BaseException:
        feeder.cancel()
        _kill(proc)
        await proc.wait()
        await asyncio.wait([feeder])
        if not feeder.cancelled():
            feeder.exception()  # retrieved; the exception on its way out is the one to report
        raise
    return CliExit(returncode=returncode, progress=progress, timed_out=timed_out)


async def _read(
    proc: asyncio.subprocess.Process, splitter: LineSplitter, progress: PlainProgress
) -> None:
    """Feed the CLI's output to `progress` line by line until it closes its output."""
    assert proc.stdout is not None
    while chunk := await proc.stdout.read(CHUNK):
        for line in splitter.feed(chunk):
            progress.feed(line)
    for line in splitter.close():
        progress.feed(line)


async def _stop(
    proc: asyncio.subprocess.Process,
    feeder: asyncio.Task[None],
    splitter: LineSplitter,
    progress: PlainProgress,
) -> int:
    """Stop a build past its timeout: SIGTERM to the CLI's process group, its last words read
    for STOP_GRACE seconds, then SIGKILL. Its exit code, once it is reaped."""
    _signal(proc, signal.SIGTERM)
    feeder.cancel()  # the rest of the context is not wanted; stdin closes
    try:
        async with asyncio.timeout(STOP_GRACE):
            await _read(proc, splitter, progress)
            returncode = await proc.wait()
    except TimeoutError:
        # The whole group, even when the CLI has been reaped: what it started may still hold
        # its output open (and keeps the group in being while it does).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        returncode = await proc.wait()
    await asyncio.wait([feeder])
    if not feeder.cancelled():
        feeder.exception()  # the timeout is what the caller hears of
    return returncode


async def _feed(proc: asyncio.subprocess.Process, context: BinaryIO) -> None:
    """Copy the context to the CLI's stdin in chunks, then close it (the end of the tar)."""
    stdin = proc.stdin
    assert stdin is not None
    try:
        while chunk := await asyncio.to_thread(context.read, CHUNK):
            stdin.write(chunk)
            await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        return  # the CLI stopped reading (it failed early); its exit and output say why
    except asyncio.CancelledError:
        raise  # whoever cancelled the copy stops the CLI too
    except BaseException:
        # Without the rest of the context the CLI would wait on its stdin forever.
        _kill(proc)
        raise
    finally:
        with contextlib.suppress(OSError):
            stdin.close()


def _kill(proc: asyncio.subprocess.Process) -> None:
    _signal(proc, signal.SIGKILL)


def _signal(proc: asyncio.subprocess.Process, signum: signal.Signals) -> None:
    """`signum` to the CLI's process group, while the CLI has not been reaped."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)
