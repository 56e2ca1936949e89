"""The config the daemon runs now, and what /status says of it (its file, digest, last
error): one holder that every part of the daemon reads, and only a reload changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reconciler.config import AppConfig, Config
from reconciler.decisions.model import utcnow


@dataclass
class ConfigInForce:
    path: str | None
    sha256: str
    loaded_at: datetime = field(default_factory=utcnow)
    last_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "loaded_at": self.loaded_at.isoformat().replace("+00:00", "Z"),
            "last_error": self.last_error,
        }


class InForce:
    def __init__(self, config: Config, *, sha256: str = "", path: str | None = None) -> None:
        self._config = config
        self._record = ConfigInForce(path=path, sha256=sha256)

    @property
    def config(self) -> Config:
        return self._config

    @property
    def record(self) -> ConfigInForce:
        return self._record

    def app_names(self) -> list[str]:
        return [a.name for a in self._config.apps]

    def app(self, name: str) -> AppConfig | None:
        return self._config.app(name)

    def switch_to(self, config: Config) -> None:
        """The apps start, stop and restart on `config` from now on (a reload under way)."""
        self._config = config

    def applied(self, sha256: str) -> None:
        """The reload to the file of digest `sha256` is done."""
        self._record = ConfigInForce(path=self._record.path, sha256=sha256)

    def rejected(self, problems: list[str]) -> None:
        """An edit that could not be applied; the config in force stays."""
        self._record.last_error = "; ".join(problems)
