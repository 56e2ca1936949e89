"""Who may use the admin listener, as the config says: the identities, the session key, the
trusted proxies and allowed hosts, and the audit log, all kept in state_dir.

Without `[auth].tokens_file` the daemon makes one admin token at its first start,
`<state_dir>/admin.token` (mode 0600), and logs a login link with it once; whoever can read
that file is the admin, as with Jupyter. The deprecated `daemon.api_token_file` still works,
as one more admin token (logged once as deprecated).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import structlog

from reconciler import logs
from reconciler.adapters.audit import AuditLog, AuditTrail
from reconciler.adapters.tokens import SingleToken, Tokens, make_admin_token
from reconciler.api.auth import Gate, IdentitySource, Sessions, Sources
from reconciler.api.guard import Access
from reconciler.cluster.audit import SharedAudit
from reconciler.cluster.table import LeaseTable
from reconciler.config import Config

log = structlog.get_logger("reconciler.auth")

ADMIN_TOKEN = "admin.token"  # noqa: S105 - a file name, not a token
SESSION_KEY = "session.key"
AUDIT_LOG = "audit.jsonl"


def admin_token_path(config: Config) -> Path:
    return config.daemon.state_dir / ADMIN_TOKEN


def identities_of(config: Config) -> tuple[IdentitySource, str | None]:
    """The identities the config names, and a new admin token when one was made just now."""
    sources: list[IdentitySource] = []
    made: str | None = None
    if config.auth.tokens_file is not None:
        sources.append(Tokens(config.auth.tokens_file))
    else:
        made = make_admin_token(admin_token_path(config))
        if made is None:
            # Made at an earlier start: kept out of every log line from now on. A new one is
            # registered once its login link has been logged (announce).
            with contextlib.suppress(OSError):
                logs.register_secret(admin_token_path(config).read_text().strip())
        sources.append(SingleToken(admin_token_path(config), name="admin"))
    if config.daemon.api_token_file is not None:
        log.warning(
            "api_token_file_deprecated",
            path=str(config.daemon.api_token_file),
            instead="[auth].tokens_file with `reconciler token add`",
        )
        sources.append(SingleToken(config.daemon.api_token_file, name="api-token"))
    return Sources(sources), made


def open_access(
    config: Config,
    *,
    listening: Callable[[], str],
    public_url: Callable[[], str],
    table: LeaseTable | None = None,
    host_id: str = "",
) -> tuple[Access, str | None]:
    """The admin listener's access, and the admin token when it was made just now. With the
    cluster's `table`, audit lines go there too (under `host_id`)."""
    config.daemon.state_dir.mkdir(parents=True, exist_ok=True)
    identities, made = identities_of(config)
    gate = Gate.of(
        identities=identities,
        sessions=Sessions.with_key_in(config.daemon.state_dir / SESSION_KEY),
        trusted_proxies=config.auth.trusted_proxies,
        allowed_hosts=config.auth.allowed_hosts,
    )
    local = AuditLog(config.daemon.state_dir / AUDIT_LOG)
    audit: AuditTrail = local
    if table is not None:
        audit = SharedAudit(local, table, host_id=host_id, keep=config.cluster.audit_keep)
    return Access(gate=gate, audit=audit, listening=listening, public_url=public_url), made


def announce(token: str, *, base: str) -> None:
    """Log the login link of a new admin token once, then keep the token out of every log."""
    log.warning(
        "admin_token_created",
        login=f"{base}/login?token={token}",
        note="shown once; the token is in state_dir/admin.token (mode 0600)",
    )
    logs.register_secret(token)
