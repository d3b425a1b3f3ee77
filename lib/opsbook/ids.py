"""Run ids: sortable by time, unique across hosts: ``20261128T110723Z-3f9a1c``."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

RUN_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")


def new_run_id(now: datetime | None = None) -> str:
    t = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{t}-{secrets.token_hex(3)}"


def utcnow() -> str:
    """An ISO 8601 UTC timestamp with seconds, as records store them."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
