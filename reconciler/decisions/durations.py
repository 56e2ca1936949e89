"""Durations as operators write them: `30`, `"30s"`, `"10m"`, `"1h"`, `"1h30m"`."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """Seconds as a float; raises ValueError with a message fit for a config error line."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r} (use seconds or '30s', '10m', '1h')")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_text(value.strip().lower())
    else:
        raise ValueError(f"invalid duration {value!r} (use seconds or '30s', '10m', '1h')")
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"duration must be positive, got {value!r}")
    return seconds


def _parse_text(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    position, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(text) or not text:
        raise ValueError(f"invalid duration {text!r} (use seconds or '30s', '10m', '1h')")
    return total
