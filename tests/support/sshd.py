"""A real OpenSSH server on loopback, serving bare git repositories read-only.

    with serve_git_over_ssh(tmp_path / "sshd", repos=tmp_path / "repos") as server:
        GitSource(url=server.url(repo.remote), branch="main", ssh_key_file=server.client_key)

sshd runs as a child process with its own config (`-f`), a host key made for this run, and
an authorized_keys holding one ed25519 client key made for this run. The key may run nothing
but `git-upload-pack` of a repository under `repos` (a forced command checks the request),
so a test server never hands out a shell, even when the tests run as root. Everything it
logs goes to `server.log`, which the error message names when it does not come up.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support import services
from tests.support.net import free_port

SSHD = Path("/usr/sbin/sshd")
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
COMMAND_TIMEOUT = 30.0

# Run by sshd for every connection with the client key, in place of what the client asked.
_GATE = """#!{python} -I
import os, re, sys
asked = os.environ.get("SSH_ORIGINAL_COMMAND", "")
match = re.fullmatch(r"git-upload-pack '(/[^']+)'", asked)
path = os.path.realpath(match.group(1)) if match else ""
if not path.startswith({root!r} + os.sep):
    print("this key may only fetch repositories under {root}", file=sys.stderr)
    sys.exit(1)
os.execvp("git-upload-pack", ["git-upload-pack", "--strict", path])
"""


@dataclass(frozen=True)
class SshServer:
    host: str
    port: int
    user: str
    repos: Path
    client_key: Path  # private key the server accepts; "<key>.pub" beside it
    host_key_line: str  # "ssh-ed25519 AAAA...", the server's public host key
    log: Path

    def url(self, repo: Path) -> str:
        """The ssh:// URL of the bare repository at `repo` (under `repos`)."""
        return f"ssh://{self.user}@{self.host}:{self.port}{repo}"

    def known_hosts_line(self) -> str:
        """The server's line for a known_hosts file (host and non-default port)."""
        return f"[{self.host}]:{self.port} {self.host_key_line}"


def generate_key(path: Path, *, comment: str = "reconciler-test") -> Path:
    """A new passphrase-less ed25519 key pair at `path` and `path.pub`."""
    services.require(shutil.which("ssh-keygen") is not None, "ssh-keygen is not installed")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=COMMAND_TIMEOUT,
    )
    return path


@contextmanager
def serve_git_over_ssh(workdir: Path, *, repos: Path) -> Iterator[SshServer]:
    """Start sshd on 127.0.0.1 at a free port; stop it on exit."""
    services.require(SSHD.is_file(), f"{SSHD} is missing (apt-get install openssh-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    repos.mkdir(parents=True, exist_ok=True)
    root = str(repos.resolve())
    user = pwd.getpwuid(os.getuid()).pw_name

    host_key = generate_key(workdir / "ssh_host_ed25519_key", comment="reconciler-test-host")
    client_key = generate_key(workdir / "client_ed25519", comment="reconciler-test-client")
    gate = workdir / "git-gate"
    gate.write_text(_GATE.format(python=sys.executable, root=root))
    gate.chmod(0o755)
    public = client_key.with_name(client_key.name + ".pub").read_text().strip()
    authorized = workdir / "authorized_keys"
    authorized.write_text(f'restrict,command="{gate}" {public}\n')
    authorized.chmod(0o600)
    if os.geteuid() == 0:
        # sshd refuses to start without its privilege separation directory.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    log = workdir / "sshd.log"
    last_error = ""
    for _ in range(3):  # the free port may be taken between finding it and sshd binding it
        port = free_port()
        config = workdir / "sshd_config"
        config.write_text(_config(workdir=workdir, port=port, user=user, host_key=host_key))
        with log.open("ab") as log_file:
            process = subprocess.Popen(
                [str(SSHD), "-D", "-f", str(config), "-E", str(log)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            if _wait_for_banner(process, port):
                yield SshServer(
                    host="127.0.0.1",
                    port=port,
                    user=user,
                    repos=repos,
                    client_key=client_key,
                    host_key_line=" ".join(
                        host_key.with_name(host_key.name + ".pub").read_text().split()[:2]
                    ),
                    log=log,
                )
                return
            last_error = log.read_text(errors="replace")[-2000:]
        finally:
            _stop(process)
    raise RuntimeError(f"sshd did not start; its log ({log}) ends with:\n{last_error}")


def _config(*, workdir: Path, port: int, user: str, host_key: Path) -> str:
    return f"""\
ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
PidFile {workdir / "sshd.pid"}
AuthorizedKeysFile {workdir / "authorized_keys"}
AllowUsers {user}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding no
X11Forwarding no
PermitTTY no
MaxAuthTries 30
LoginGraceTime 20
LogLevel VERBOSE
"""


def _wait_for_banner(process: subprocess.Popen[bytes], port: int) -> bool:
    """Whether sshd answers with an SSH banner on `port` before it exits or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
                if conn.recv(64).startswith(b"SSH-2.0-"):
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)
