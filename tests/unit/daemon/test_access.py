"""The admin token the daemon makes: once, 0600, its login link logged at the first start
only, and kept out of every log line after that."""

from __future__ import annotations

import stat
from pathlib import Path

from reconciler import logs
from reconciler.config import parse_config
from reconciler.daemon.access import admin_token_path, announce, open_access
from tests.support.config import config_text


def test_the_admin_token_is_made_once_and_never_logged_again(tmp_path: Path) -> None:
    config = parse_config(config_text(daemon={"state_dir": tmp_path / "state"}, apps=[]))
    _, made = open_access(config, listening=lambda: "127.0.0.1:8089", public_url=str)
    assert made is not None
    path = admin_token_path(config)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    announce(made, base="http://127.0.0.1:8089")
    assert logs.redact(f"a line with {made}") == "a line with ***"
    # At the next start the token is not made again, and is scrubbed all the same.
    logs._secrets.discard(made)
    _, again = open_access(config, listening=lambda: "127.0.0.1:8089", public_url=str)
    assert again is None
    assert path.read_text().strip() == made
    assert made not in logs.redact(f"a line with {made}")
