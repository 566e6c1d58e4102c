"""Human durations (`30s`, `10m`, `24h`, `1h30m`, `7d`) as used in settings and rule files."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, WithJsonSchema

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_WHOLE = re.compile(r"(?:\s*\d+(?:\.\d+)?\s*[smhdw])+\s*")


def parse_duration(value: object) -> timedelta:
    """Parse `90s`, `10m`, `1h30m`, `2d`, a number of seconds, or a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif text and _WHOLE.fullmatch(text):
            seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
        else:
            raise ValueError(
                f"not a duration: {value!r} (use a number and a unit: 30s, 10m, 24h, 7d, 1h30m)")
    else:
        raise ValueError(f"not a duration: {value!r}")
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return timedelta(seconds=seconds)


Duration = Annotated[
    timedelta, BeforeValidator(parse_duration),
    WithJsonSchema({"type": "string", "pattern": r"^\s*(\d+(\.\d+)?\s*[smhdw]\s*)+$",
                    "description": "A duration: 30s, 10m, 2h, 1d, 1h30m",
                    "examples": ["10m", "1h"]}),
]
