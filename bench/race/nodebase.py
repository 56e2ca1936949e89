"""A Node.js base image made on this machine: no image hub is reachable here.

The root filesystem is the host's own `node` and the `npm` beside it, the shared libraries
`node` links (as `ldd` lists them), busybox for the shell and the small tools npm scripts
call, and the host's CA bundle (npm's registry is reached through the host's TLS setup). It
is imported once with `docker import` and pushed to the local registry under the node
version; later runs, and a new build host, pull it from there.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

NODE = Path("/usr/bin/node")
NPM = Path("/usr/lib/node_modules/npm")
BUSYBOX = Path("/bin/busybox")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json,"
    "application/vnd.oci.image.manifest.v1+json"
)
# Applets npm and its scripts (`sh -c mocha`) may call; busybox provides each.
APPLETS = (
    "sh", "env", "ls", "cat", "cp", "mv", "rm", "mkdir", "ln", "chmod", "echo", "true",
    "false", "sleep", "grep", "sed", "test", "tr", "uname", "id", "which", "head", "tail",
)  # fmt: skip
NPMRC = (
    "cafile=/etc/ssl/certs/ca-certificates.crt\nfund=false\naudit=false\nupdate-notifier=false\n"
)


def node_version() -> str:
    return (
        subprocess.run([str(NODE), "--version"], capture_output=True, text=True, check=True)
        .stdout.strip()
        .removeprefix("v")
    )


def image_name(registry: str) -> str:
    return f"{registry}/reconciler-bench/node:{node_version()}"


def in_registry(image: str) -> bool:
    host, _, rest = image.partition("/")
    repository, _, tag = rest.rpartition(":")
    request = urllib.request.Request(
        f"http://{host}/v2/{repository}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": MANIFEST_TYPES},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 (http://)
            return bool(answer.status == 200)
    except urllib.error.HTTPError:
        return False


def ensure_node_image(registry: str) -> str:
    """The base image's name in `registry`, made and pushed first if it is not there."""
    image = image_name(registry)
    if in_registry(image):
        return image
    with tempfile.TemporaryDirectory(prefix="reconciler-node-") as scratch:
        root = Path(scratch, "rootfs")
        make_rootfs(root)
        tar = rootfs_tar(root)
    changes = ["ENV PATH=/usr/local/bin:/usr/bin:/bin", "ENV HOME=/root", "WORKDIR /"]
    argv = ["docker", "import", *(f"--change={c}" for c in changes), "-", image]
    subprocess.run(argv, input=tar, capture_output=True, check=True)
    subprocess.run(["docker", "push", image], capture_output=True, check=True)
    return image


def _libraries(binary: Path) -> list[Path]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    return [Path(p) for p in re.findall(r"(/\S+)\s+\(0x", out)]


def _copy(source: Path, root: Path) -> None:
    """`source` at the same path under `root`, its content (not a link to it)."""
    target = root / source.relative_to("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source.resolve(), target)


def make_rootfs(root: Path) -> None:
    for path in (NODE, *_libraries(NODE), BUSYBOX, CA_BUNDLE):
        _copy(path, root)
    shutil.copytree(NPM, root / "usr/lib/node_modules/npm", symlinks=True)
    bin_dir, usr_bin = root / "bin", root / "usr/bin"
    for applet in APPLETS:
        (bin_dir / applet).symlink_to("busybox")
    (usr_bin / "env").symlink_to("/bin/busybox")
    (usr_bin / "npm").symlink_to("../lib/node_modules/npm/bin/npm-cli.js")
    (usr_bin / "npx").symlink_to("../lib/node_modules/npm/bin/npx-cli.js")
    etc = root / "etc"
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (etc / "nsswitch.conf").write_text("hosts: files dns\n")
    (root / "usr/etc").mkdir(parents=True)
    (root / "usr/etc/npmrc").write_text(NPMRC)  # npm's global config: $PREFIX/etc/npmrc
    for directory, mode in (("tmp", 0o1777), ("root", 0o700), ("app", 0o755)):
        (root / directory).mkdir(exist_ok=True)
        (root / directory).chmod(mode)


def rootfs_tar(root: Path) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:

        def owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            return info

        tar.add(root, arcname=".", filter=owned_by_root)
    return out.getvalue()
