"""The daemon's own container image, built from the Dockerfile and run on the real engine.

No image hub is reachable here, so the base image is made locally: Debian bookworm (minbase,
python3, python3-venv) by debootstrap from the machine's own Debian mirror, imported with
`docker import` and kept for later runs. Builds have no network either (the engine runs with
--bridge=none), so the build context carries a wheelhouse that `pip wheel` makes on the host,
which is the Dockerfile's offline path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler import __version__
from tests.support import services
from tests.support.config import app_table, config_text
from tests.support.net import free_port

ROOT = Path(__file__).parents[2]
PYTHON_BASE = "reconciler-test/python:bookworm"
SUITE = "bookworm"  # Python 3.11, which the project needs
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEBOOTSTRAP_TIMEOUT = 1200
BUILD_TIMEOUT = 900
RUN_TIMEOUT = 120
START_TIMEOUT = 60.0
# pytest-timeout counts fixture set-up: the first test pays for debootstrap, wheels and build.
SETUP_BOUND = DEBOOTSTRAP_TIMEOUT + 2 * BUILD_TIMEOUT + 300

WEB = app_table("web", "https://git.example.invalid/acme/web.git")
GOOD_CONFIG = config_text(daemon={"listen": "127.0.0.1:8088"}, apps=[WEB])


def run(
    args: list[str], *, timeout: float = RUN_TIMEOUT, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; on an unexpected failure, show the end of its output."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        pytest.fail(
            f"{' '.join(args[:4])} ... exited {done.returncode}:\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


def docker_command(*args: str) -> list[str]:
    return ["docker", "-H", f"unix://{services.DOCKER_SOCKET}", *args]


def docker(*args: str, timeout: float = RUN_TIMEOUT, check: bool = True) -> str:
    """The stripped stdout of a docker command."""
    return run(docker_command(*args), timeout=timeout, check=check).stdout.strip()


# --- what the Dockerfile promises, read without building -------------------------------


def test_the_default_base_image_is_python_3_11_slim() -> None:
    """Both stages build on BASE_IMAGE, whose default is the official python:3.11-slim."""
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.MULTILINE)
    stages = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert stages == ["${BASE_IMAGE}", "${BASE_IMAGE}"]


# --- a local base image ----------------------------------------------------------------


def debian_mirror() -> tuple[str, str | None]:
    """The mirror (and keyring, if named) this machine's apt uses for the Debian suite."""
    entries: list[dict[str, str]] = []
    apt = Path("/etc/apt")
    for path in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]:
        if path.is_file():
            for line in path.read_text().splitlines():
                one_line = re.match(r"^\s*deb\s+(?:\[([^]]*)\]\s+)?(\S+)\s+(\S+)", line)
                if one_line:
                    options, uri, suite = one_line.groups()
                    signed = re.search(r"signed-by=(\S+)", options or "")
                    entries.append(
                        {"Types": "deb", "URIs": uri, "Suites": suite}
                        | ({"Signed-By": signed.group(1)} if signed else {})
                    )
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                key, sep, value = line.partition(":")
                if sep and not line.startswith((" ", "#")):
                    fields[key.strip()] = value.strip()
            if fields.get("Enabled", "yes") != "no":
                entries.append(fields)
    for entry in entries:
        if "deb" in entry.get("Types", "").split() and SUITE in entry.get("Suites", "").split():
            keyring = entry.get("Signed-By")
            return entry["URIs"].split()[0], keyring if keyring and "/" in keyring else None
    return DEFAULT_MIRROR, None


def ensure_python_base() -> str:
    """A Debian bookworm image with python3 and python3-venv, made once and kept."""
    if run(docker_command("image", "inspect", PYTHON_BASE), check=False).returncode == 0:
        return PYTHON_BASE
    services.require(os.geteuid() == 0, "making the base image with debootstrap needs root")
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    services.require(Path(debootstrap).is_file(), "debootstrap is not installed")
    mirror, keyring = debian_mirror()
    with tempfile.TemporaryDirectory(prefix="reconciler-rootfs-") as scratch:
        rootfs = Path(scratch, "rootfs")
        try:
            run(
                [
                    debootstrap,
                    "--variant=minbase",
                    "--include=python3,python3-venv",
                    *([f"--keyring={keyring}"] if keyring else []),
                    SUITE,
                    str(rootfs),
                    mirror,
                ],
                timeout=DEBOOTSTRAP_TIMEOUT,
            )
        finally:
            _unmount_below(rootfs)  # a failed debootstrap may leave /proc and /sys mounted
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / cache).glob("*"):
                if item.is_file():
                    item.unlink()
        archive = Path(scratch, "rootfs.tar")
        run(["tar", "-C", str(rootfs), "-cf", str(archive), "."], timeout=RUN_TIMEOUT)
        docker("import", str(archive), PYTHON_BASE, timeout=RUN_TIMEOUT * 3)
    return PYTHON_BASE


def _unmount_below(rootfs: Path) -> None:
    for mount in ("dev/pts", "dev", "proc", "sys"):
        if (rootfs / mount).is_mount():
            subprocess.run(["umount", "-l", str(rootfs / mount)], timeout=60, check=False)


# --- the image under test --------------------------------------------------------------


@pytest.fixture(scope="module")
def build_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's files plus wheels/ with every dependency and the build requirements."""
    context = tmp_path_factory.mktemp("context")
    for name in ("pyproject.toml", "README.md", "LICENSE", "Dockerfile", ".dockerignore"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, context / name)
    for name in ("reconciler", "config"):
        shutil.copytree(
            ROOT / name, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.py[co]")
        )
    build_requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"][
        "requires"
    ]
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--disable-pip-version-check",
            "--wheel-dir",
            str(context / "wheels"),
            str(context),
            *build_requires,
        ],
        timeout=BUILD_TIMEOUT,
    )
    return context


@pytest.fixture(scope="module")
def image(docker_engine: str, build_context: Path) -> Iterator[str]:
    base = ensure_python_base()
    tag = f"reconciler-test/reconciler:{uuid.uuid4().hex[:12]}"
    docker(
        "build",
        "--quiet",
        "--build-arg",
        f"BASE_IMAGE={base}",
        "--tag",
        tag,
        str(build_context),
        timeout=BUILD_TIMEOUT,
    )
    yield tag
    docker("image", "rm", "--force", tag, check=False)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A directory to mount at /etc/reconciler, readable by the image's non-root user."""
    path = tmp_path / "etc"
    path.mkdir()
    path.chmod(0o755)
    return path


def write_config(directory: Path, name: str, text: str) -> None:
    (directory / name).write_text(text)
    (directory / name).chmod(0o644)


@pytest.mark.slow
@pytest.mark.timeout(SETUP_BOUND)
def test_version_and_a_non_root_user(image: str) -> None:
    """The entry point is the console script, and the daemon does not run as root."""
    assert docker("run", "--rm", image, "--version") == f"reconciler {__version__}"
    assert docker("image", "inspect", "--format", "{{.Config.User}}", image) == "10001:10001"
    ids = docker("run", "--rm", "--entrypoint", "id", image).split()
    assert ids[0] == "uid=10001(reconciler)"
    probe = 'echo "$HOME"; touch /var/lib/reconciler/probe && echo writable'
    home_and_state = docker("run", "--rm", "--entrypoint", "sh", image, "-c", probe).split()
    assert home_and_state == ["/var/lib/reconciler", "writable"]  # the state volume


@pytest.mark.slow
@pytest.mark.timeout(SETUP_BOUND)
def test_validate_on_a_mounted_config(image: str, config_dir: Path) -> None:
    """`validate` reads /etc/reconciler/reconciler.toml by default: exit 0 when valid, and
    exit 2 naming the app and key of each problem."""
    write_config(config_dir, "reconciler.toml", GOOD_CONFIG)
    invalid = config_text(
        daemon={"listen": "127.0.0.1:8088"}, apps=[{**WEB, "rollout_timeout": "soon", "bogus": 1}]
    )
    write_config(config_dir, "bad.toml", invalid)
    mount = ["--volume", f"{config_dir}:/etc/reconciler:ro"]

    good = run(docker_command("run", "--rm", *mount, image, "validate"), check=False)
    assert good.returncode == 0, good.stderr
    assert "1 app(s): web" in good.stdout

    bad = run(
        docker_command(
            "run", "--rm", *mount, image, "validate", "--config", "/etc/reconciler/bad.toml"
        ),
        check=False,
    )
    assert bad.returncode == 2
    problems = bad.stderr.splitlines()
    assert any("apps[web].rollout_timeout" in line for line in problems), bad.stderr
    assert any("apps[web].bogus" in line for line in problems), bad.stderr


@pytest.mark.slow
@pytest.mark.timeout(SETUP_BOUND)
def test_run_serves_health_and_stops_cleanly_on_docker_stop(image: str, config_dir: Path) -> None:
    """With the Docker socket and the host network, `run` serves /healthz on loopback,
    can reach the engine as its non-root user, logs JSON lines, and exits 0 on docker stop."""
    port = free_port()
    write_config(config_dir, "reconciler.toml", config_text(daemon={"listen": f"127.0.0.1:{port}"}))
    socket_gid = str(services.DOCKER_SOCKET.stat().st_gid)
    name = f"reconciler-test-{uuid.uuid4().hex[:12]}"
    docker(
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        "host",
        "--volume",
        f"{services.DOCKER_SOCKET}:/var/run/docker.sock",
        "--group-add",
        socket_gid,
        "--volume",
        f"{config_dir}:/etc/reconciler:ro",
        # With the host network the image's 0.0.0.0 defaults would listen on every interface.
        "--env",
        f"RECONCILER_DAEMON__LISTEN=127.0.0.1:{port}",
        "--env",
        f"RECONCILER_DAEMON__ADMIN_LISTEN=127.0.0.1:{free_port()}",
        image,
    )
    try:
        assert _healthz(name, port) == 200
        ping = docker(
            "exec",
            name,
            "python",
            "-c",
            "import socket; s = socket.socket(socket.AF_UNIX); "
            "s.connect('/var/run/docker.sock'); "
            "s.sendall(b'GET /_ping HTTP/1.0\\r\\nHost: docker\\r\\n\\r\\n'); "
            "print(s.recv(4096).decode().splitlines()[0])",
        )
        assert " 200 " in ping  # the engine answers the daemon's user

        docker("stop", "--time", "20", name, timeout=60)
        state = json.loads(docker("inspect", "--format", "{{json .State}}", name))
        assert state["Running"] is False
        assert state["ExitCode"] == 0
        assert state["OOMKilled"] is False

        lines = [line for line in docker("logs", name).splitlines() if line.strip()]
        events = [json.loads(line)["event"] for line in lines]
        assert "listening" in events
        assert events[-1] == "stopped"
    finally:
        docker("rm", "--force", "--volumes", name, check=False)


def _healthz(container: str, port: int) -> int:
    """The status /healthz answers once the daemon listens; fails if the container exits."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, OSError):
            pass
        if docker("inspect", "--format", "{{.State.Running}}", container) != "true":
            logs = run(docker_command("logs", container), check=False)
            pytest.fail(f"the container exited:\n{logs.stdout[-3000:]}\n{logs.stderr[-3000:]}")
        time.sleep(0.25)
    pytest.fail(f"nothing answered on 127.0.0.1:{port} within {START_TIMEOUT:g} s")
