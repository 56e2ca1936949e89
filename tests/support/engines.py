"""Docker engines of a test's own, beside the shared one, and the certificates for TLS.

A `Dockerd` has its own data root, exec root, socket and containerd, so a test may start it
late, kill it part way through a build, or reach it over TCP with client certificates,
without touching the engine at /var/run/docker.sock that every other test uses:

    spare = Dockerd("spare", tls=certificates)
    spare.start()
    spare.load_image(BASE_IMAGE)   # its image store starts empty
    ... DockerEngine(url=spare.url) ... DockerEngine(url=spare.tcp_url, tls=...) ...
    spare.kill()
    spare.close()                  # stopped if need be, and every file of it removed

It runs as root (dockerd needs it) and listens on a Unix socket, plus 127.0.0.1 with `tls`.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support import services
from tests.support.net import free_port

START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


@dataclass(frozen=True)
class Certificates:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @property
    def client(self) -> tuple[Path, Path, Path]:
        """(CA, certificate, key), as `[build]` names them."""
        return self.ca, self.client_cert, self.client_key


def make_certificates(directory: Path) -> Certificates:
    """What `dockerd --tlsverify` and its clients need, valid for a day around now."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"test CA {directory.name}")])
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key(), issuer_key=ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    paths = Certificates(
        ca=directory / "ca.pem",
        server_cert=directory / "server-cert.pem",
        server_key=directory / "server-key.pem",
        client_cert=directory / "cert.pem",
        client_key=directory / "key.pem",
    )
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    leaves = [
        (paths.server_cert, paths.server_key, "127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH),
        (paths.client_cert, paths.client_key, "reconciler", ExtendedKeyUsageOID.CLIENT_AUTH),
    ]
    for cert_path, key_path, name, purpose in leaves:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            _builder(subject, ca_name, key.public_key(), issuer_key=ca_key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
        )
        if purpose == ExtendedKeyUsageOID.SERVER_AUTH:
            address = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
            builder = builder.add_extension(x509.SubjectAlternativeName([address]), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.touch(mode=0o600)
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return paths


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    *,
    issuer_key: ec.EllipticCurvePrivateKey,
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        # Strict verifiers (OpenSSL's X509_STRICT, Go) want the key identifiers.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


class Dockerd:
    """One dockerd of the test's own; `url` is its Unix socket, `tcp_url` its TLS port."""

    def __init__(self, name: str, *, tls: Certificates | None = None) -> None:
        binary = shutil.which("dockerd")
        services.require(binary is not None and os.geteuid() == 0, "dockerd as root is needed")
        assert binary is not None
        self._binary = binary
        self.name = name
        # Short, under /tmp: a Unix socket path (containerd's is under the exec root) may not
        # be longer than 107 bytes, and pytest's tmp_path can be.
        self.root = Path(tempfile.mkdtemp(prefix=f"rd-{name}-", dir="/tmp"))
        self.socket = self.root / "docker.sock"
        self.url = f"unix://{self.socket}"
        self._tls = tls
        self.tcp_url = f"tcp://127.0.0.1:{free_port()}" if tls is not None else ""
        self.log = self.root / "dockerd.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self._process is None, "already running"
        argv = [
            self._binary,
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.root / 'dockerd.pid'}",
            f"--host={self.url}",
            # As the shared engine runs: this host has no bridge and no iptables.
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            # Its own containerd is started under the exec root; should a system containerd be
            # running, its own namespace keeps its containers apart from the shared engine's.
            f"--containerd-namespace=test-{self.name}",
            f"--containerd-plugins-namespace=test-{self.name}-plugins",
        ]
        if self._tls is not None:
            argv += [
                f"--host={self.tcp_url}",
                "--tlsverify",
                f"--tlscacert={self._tls.ca}",
                f"--tlscert={self._tls.server_cert}",
                f"--tlskey={self._tls.server_key}",
            ]
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self.answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dockerd {self.name} did not start; see {self.log}")
            time.sleep(0.1)

    def answers(self) -> bool:
        return docker(self.url, "version", "--format", "{{.Server.Version}}").returncode == 0

    def has_image(self, image: str) -> bool:
        return has_image(self.url, image)

    def load_image(self, image: str) -> None:
        """Copy `image` from the shared engine: this one has no registry to pull it from."""
        with subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE) as save:
            load = subprocess.run(
                ["docker", "-H", self.url, "load"],
                stdin=save.stdout,
                capture_output=True,
                timeout=60,
                check=False,
            )
        if save.returncode != 0 or load.returncode != 0:
            raise RuntimeError(f"could not load {image} into {self.name}: {load.stderr!r}")

    def running_a_step(self) -> bool:
        """True while a build step runs: BuildKit inside dockerd runs each in a runc child."""
        if self._process is None:
            return False
        return any(_comm(pid) == "runc" for pid in _descendants(self._process.pid))

    def kill(self) -> None:
        """SIGKILL: the engine dies as a crashed or powered-off host's does."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, how: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(how)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
        # A dockerd that died mid-build leaves the build's overlay mounts behind.
        self._unmount()

    def _unmount(self) -> None:
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4]
            if point == str(self.root) or point.startswith(f"{self.root}/"):
                mounts.append(point)
        for point in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)

    def close(self) -> None:
        """Stop it (if it runs) and remove everything it wrote."""
        self.stop()
        self._unmount()
        shutil.rmtree(self.root, ignore_errors=True)


def docker(url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """The docker CLI against the engine at `url` (a Unix socket)."""
    return subprocess.run(
        ["docker", "-H", url, *args], capture_output=True, timeout=60, check=False
    )


def has_image(url: str, image: str) -> bool:
    return docker(url, "image", "inspect", image).returncode == 0


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except OSError:
            continue  # the process ended while we looked
        for task in tasks:
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue  # the thread ended while we looked
            found += children
            pending += children
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
