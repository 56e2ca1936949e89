"""The registry adapter: asks the registry an image is pushed to whether a tag already
exists, adds tags to it, and copies images between repositories and registries, all through
the OCI distribution API that ECR, the CNCF registry and Docker Hub serve.

One idea per module, each importing only those above it in this list:
- auth: credentials, Basic headers, Bearer challenges and the tokens they lead to.
- transport: the HTTP session, one request with its retry on a challenge, and which of the
  project's errors an answer is.
- manifests: the kinds of manifest that can be copied byte for byte, their checks, and one
  manifest's GET, HEAD and PUT.
- blobs: whether a repository has a blob, mounting it within a registry, and streaming it
  between registries checked against its digest.
- tags: whether a tag exists, and a new tag for an image that is there.
- copy: a whole image from one repository or registry to another (promotion).
- client: `Registry`, the one object the rest of the reconciler holds, composing them.

May import what every adapter may (decisions, aio, config and the foundation); it needs only
aio and errors. The rest of the reconciler imports the names below from here, not from the
modules.
"""

from __future__ import annotations

from reconciler.adapters.registry.auth import (
    RegistryAuth,
    basic_authorization,
    parse_bearer_challenge,
)
from reconciler.adapters.registry.client import Registry
from reconciler.adapters.registry.manifests import MANIFEST_MEDIA_TYPES
from reconciler.adapters.registry.transport import (
    TRANSPORT_ERRORS,
    registry_errors,
    registry_url,
)

__all__ = [
    "MANIFEST_MEDIA_TYPES",
    "TRANSPORT_ERRORS",
    "Registry",
    "RegistryAuth",
    "basic_authorization",
    "parse_bearer_challenge",
    "registry_errors",
    "registry_url",
]
