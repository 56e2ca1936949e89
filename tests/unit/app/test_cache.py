"""Per-app values: read once, the same object after, and write failures said once."""

from __future__ import annotations

from structlog.testing import capture_logs

from reconciler.app.cache import PerAppCache


def _cache(reads: list[str]) -> PerAppCache[list[str]]:
    def read(app: str) -> list[str]:
        reads.append(app)
        return [app]

    return PerAppCache(read, logger="reconciler.test", subject="thing")


def test_a_value_is_read_once_and_is_the_same_object_until_forgotten() -> None:
    reads: list[str] = []
    cache = _cache(reads)
    first = cache.get("web")
    first.append("changed")
    assert cache.get("web") is first
    assert reads == ["web"]
    cache.forget("web")
    assert cache.get("web") == ["web"]
    assert reads == ["web", "web"]


def test_a_value_put_is_not_read() -> None:
    reads: list[str] = []
    cache = _cache(reads)
    assert cache.put("web", ["given"]) == ["given"]
    assert cache.get("web") == ["given"]
    assert reads == []


def test_a_failing_write_is_kept_and_logged_once_per_reason_until_one_goes() -> None:
    cache = _cache([])
    with capture_logs() as logs:
        assert cache.write_failed("web", "disk full") is False
        assert cache.write_failed("web", "disk full") is False
        assert cache.write_failed("web", "read-only") is False
        assert cache.write_error("web") == "read-only"
        assert dict(cache.write_errors) == {"web": "read-only"}
        assert cache.written("web") is True
        assert cache.written("web") is True
    assert cache.write_error("web") is None
    assert [(e["event"], e.get("error")) for e in logs] == [
        ("thing_write_failed", "disk full"),
        ("thing_write_failed", "read-only"),
        ("thing_write_recovered", None),
    ]


def test_forgetting_an_app_forgets_its_write_error() -> None:
    cache = _cache([])
    cache.write_failed("web", "disk full")
    cache.forget("web")
    assert cache.write_error("web") is None
