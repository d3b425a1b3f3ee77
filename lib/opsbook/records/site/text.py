"""Text from a record, made safe and readable for a page: escaping, CSS class suffixes, file names
and URLs from ids, durations. Every value that reaches a page goes through :func:`h`; the rest never
raise on a manifest of the wrong shape (a page is drawn even from a damaged record)."""

from __future__ import annotations

import functools
import hashlib
import html
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from opsbook.records.ledger import LedgerEntry

#: a browser renders these as pages (scripts included): a record file with such a name is copied as .txt
_ACTIVE_SUFFIXES = frozenset({".html", ".htm", ".xhtml", ".shtml", ".svg", ".svgz", ".xml", ".xsl", ".xht",
                              ".mht", ".mhtml", ".js", ".mjs", ".pdf", ".swf"})
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_CTRL = re.compile(r"[\x00-\x1f\x7f]")


def h(value: Any) -> str:
    """Text from a record, escaped for HTML (quotes included: safe inside attribute values too)."""
    if isinstance(value, str):
        return html.escape(value, quote=True)
    return html.escape("" if value is None else str(value), quote=True)


@functools.lru_cache(maxsize=256)
def _cls_of(text: str) -> str:
    return re.sub(r"[^a-z]", "", text.lower())[:20] or "none"


def css_class(value: Any) -> str:
    """A CSS class suffix from a record value: letters only."""
    return _cls_of(str(value or "")[:100])


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, bool)):
        return str(value)
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def slug(value: str, prefix: str) -> str:
    """A file name stem for an id: the id itself when it is a plain name, else a hash of it."""
    if _SAFE_NAME.match(value) and not value.lower().endswith((".html", ".htm")):
        return value
    return f"{prefix}-{hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"


def rel_url(*parts: str) -> str:
    """A relative URL from path segments (each percent-encoded), escaped for an attribute."""
    return h("/".join(quote(p, safe="") if p not in ("..", ".") else p for p in parts))


def safe_rel(rel: Any) -> str | None:
    """A record file's relative path if it is a plain relative posix path inside the record."""
    if not isinstance(rel, str) or not rel or _CTRL.search(rel) or "\\" in rel:
        return None
    p = PurePosixPath(rel)
    if p.is_absolute() or any(part in ("", ".", "..") for part in p.parts) or rel.endswith("/"):
        return None
    return p.as_posix()


def copy_name(rel: str) -> str:
    """The name a record file is copied under: unchanged, or with ``.txt`` when a browser would run it."""
    return rel + ".txt" if PurePosixPath(rel).suffix.lower() in _ACTIVE_SUFFIXES else rel


def as_seconds(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if f == f and abs(f) < 1e12 else None


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def duration(manifest: Mapping[str, Any], entry: LedgerEntry) -> str:
    secs = as_seconds(manifest.get("duration_seconds"))
    if secs is None:
        a = parse_time(manifest.get("started") or entry.started)
        b = parse_time(manifest.get("ended") or entry.ended)
        secs = (b - a).total_seconds() if a and b else None
    if secs is None:
        return ""
    if secs < 120:
        return f"{secs:.1f} s"
    m, s = divmod(int(round(secs)), 60)
    return f"{m} min {s} s" if m < 120 else f"{m // 60} h {m % 60} min"


def headline_lines(manifest: Mapping[str, Any]) -> list[str]:
    """What the run found (``opsbook.cireport.run_headline``), robust to a manifest of any shape."""
    from opsbook.cireport import run_headline

    try:
        return [str(x) for x in run_headline(manifest)]
    except (TypeError, ValueError, AttributeError):
        return []

