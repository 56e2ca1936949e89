"""Put tags into the local registry without Docker: one tiny image, pushed by the OCI API.

"The tag is already in the registry" is the starting point of most scenarios. A `docker push`
per tag would cost a second each; a manifest PUT costs a millisecond. The image is real (a
gzip layer with one file and its config), so the daemon's HEAD of the manifest finds exactly
what a pushed image would show.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer() -> tuple[bytes, str]:
    """A gzip tar with one file, byte for byte the same every time; and its diff id."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        content = b"benchmark image\n"
        info = tarfile.TarInfo("bench.txt")
        info.size = len(content)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(content))
    uncompressed = raw.getvalue()
    return gzip.compress(uncompressed, mtime=0), _digest(uncompressed)


@dataclass
class Registry:
    """The registry at `host` (plain HTTP, loopback)."""

    host: str = "127.0.0.1:5000"
    _with_blobs: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        layer, diff_id = _layer()
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            },
            sort_keys=True,
        ).encode()
        self._blobs = {_digest(config): config, _digest(layer): layer}
        self._manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                "config": {
                    "mediaType": CONFIG_TYPE,
                    "size": len(config),
                    "digest": _digest(config),
                },
                "layers": [{"mediaType": LAYER_TYPE, "size": len(layer), "digest": _digest(layer)}],
            }
        ).encode()

    @property
    def base(self) -> str:
        return f"http://{self.host}"

    def up(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/v2/", timeout=5) as answer:  # noqa: S310
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def push_tag(self, repository: str, tag: str) -> None:
        """Make `<host>/<repository>:<tag>` exist (blobs uploaded once per repository)."""
        if repository not in self._with_blobs:
            for digest, blob in self._blobs.items():
                if not self._exists(f"/v2/{repository}/blobs/{digest}"):
                    self._upload(repository, digest, blob)
            self._with_blobs.add(repository)
        self._request(
            "PUT",
            f"/v2/{repository}/manifests/{tag}",
            data=self._manifest,
            headers={"Content-Type": MANIFEST_TYPE},
        )

    def _exists(self, path: str) -> bool:
        try:
            self._request("HEAD", path)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise
        return True

    def _upload(self, repository: str, digest: str, blob: bytes) -> None:
        with self._open("POST", f"/v2/{repository}/blobs/uploads/") as answer:
            location = answer.headers["Location"]
        if location.startswith("/"):
            location = self.base + location
        separator = "&" if "?" in location else "?"
        request = urllib.request.Request(  # noqa: S310 (loopback registry)
            f"{location}{separator}digest={digest}",
            data=blob,
            method="PUT",
            headers={"Content-Type": "application/octet-stream"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            answer.read()

    def _request(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        with self._open(method, path, data=data, headers=headers) as answer:
            answer.read()

    def _open(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> urllib.request._UrlopenRet:
        request = urllib.request.Request(  # noqa: S310 (loopback registry)
            self.base + path, data=data, method=method, headers=headers or {}
        )
        return urllib.request.urlopen(request, timeout=30)  # noqa: S310
