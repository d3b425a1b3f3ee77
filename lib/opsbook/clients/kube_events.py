"""Kubernetes Events read the way ``kubectl`` reads them, whichever recorder wrote them.

A cluster holds Events of two shapes (see ``opsbook.testing.kubeapi.events``): the kubelet's and the
controllers' (core/v1 recorder: ``eventTime`` null, ``firstTimestamp``/``lastTimestamp``/``count``) and
the scheduler's or any events.k8s.io/v1 client's (``eventTime`` set, timestamps null, no count, and a
``series`` {count, lastObservedTime} once it repeats). Each can be read through either API, with the
fields renamed (``involvedObject``/``regarding``, ``message``/``note``, ``deprecatedLastTimestamp``...).
:func:`event_summary` takes any of these and answers with one row: when it was last seen, how many
times, about what, from whom. It follows kubectl's own printer: a series' last observation and count
first, then lastTimestamp and count, then the first time (firstTimestamp or eventTime) seen once.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any

__all__ = ["event_instant", "event_summary", "format_instant", "sort_key"]

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


def _first(e: Mapping[str, Any], *keys: str) -> Any:
    for k in keys:
        v = e.get(k)
        if v not in (None, "", 0, {}):
            return v
    return None


def event_instant(text: Any) -> _dt.datetime | None:
    """An API timestamp (``...Z`` in seconds, or a MicroTime ``....123456Z``) as an aware datetime."""
    if not text:
        return None
    try:
        t = _dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=_dt.UTC)


def format_instant(t: _dt.datetime | None) -> str:
    """The instant as the API's seconds format (``2026-01-02T03:04:05Z``): one format in a table, whatever
    precision the event had."""
    return t.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t else ""


def event_summary(e: Mapping[str, Any]) -> dict[str, Any]:
    """One Event (core/v1 or events.k8s.io/v1 shape) as: ``first_seen``, ``last_seen`` (datetimes or
    None), ``count``, ``type``, ``reason``, ``object`` (Kind/name), ``message`` and ``source`` (the
    reporting component)."""
    series = e.get("series") or {}
    first = event_instant(_first(e, "firstTimestamp", "deprecatedFirstTimestamp")) or event_instant(e.get("eventTime"))
    last = event_instant(series.get("lastObservedTime")) if series else None
    last = last or event_instant(_first(e, "lastTimestamp", "deprecatedLastTimestamp")) or first
    if last is None:  # an event with no time of its own: when it was stored
        last = first = event_instant((e.get("metadata") or {}).get("creationTimestamp"))
    count = series.get("count") if series else _first(e, "count", "deprecatedCount")
    about = e.get("involvedObject") or e.get("regarding") or {}
    source = e.get("source") or e.get("deprecatedSource") or {}
    return {"first_seen": first, "last_seen": last, "count": int(count or 1), "type": e.get("type") or "",
            "reason": e.get("reason") or "", "object": f"{about.get('kind', '')}/{about.get('name', '')}",
            "message": _first(e, "message", "note") or "",
            "source": _first(e, "reportingComponent", "reportingController") or source.get("component") or ""}


def sort_key(summary: Mapping[str, Any]) -> _dt.datetime:
    """Oldest first; an event without any time first of all."""
    return summary.get("last_seen") or _EPOCH
