"""Standard 5-field cron schedules (as CronJobs use them): `*`, `*/n`, `a-b`, `a-b/n`, lists, month and
weekday names, and the `@hourly` / `@daily` / `@midnight` / `@weekly` / `@monthly` / `@yearly` /
`@annually` macros. `timeZone` is honoured when the zone database knows it."""

from __future__ import annotations

import datetime as _dt

MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
          "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
NAMES = {3: {m: i + 1 for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep",
                                             "oct", "nov", "dec"])},
         4: {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}}
RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 6)]
MAX_SCAN_MINUTES = 366 * 24 * 60


class CronError(ValueError):
    pass


def _value(text: str, field: int) -> int:
    t = text.lower()
    if t in NAMES.get(field, {}):
        return NAMES[field][t]
    if not t.isdigit():
        raise CronError(f"bad value {text!r}")
    v = int(t)
    if field == 4 and v == 7:
        v = 0
    return v


def _field(text: str, field: int) -> set[int]:
    lo, hi = RANGES[field]
    out: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, s = part.split("/", 1)
            if not s.isdigit() or int(s) == 0:
                raise CronError(f"bad step in {text!r}")
            step = int(s)
        if part in ("*", "?"):
            a, b = lo, hi
        elif "-" in part:
            x, y = part.split("-", 1)
            a, b = _value(x, field), _value(y, field)
        else:
            a = _value(part, field)
            b = hi if step > 1 else a
        if a < lo or b > hi or a > b:
            raise CronError(f"value out of range in {text!r}")
        out.update(range(a, b + 1, step))
    return out


def parse(schedule: str) -> tuple[list[set[int]], bool, bool]:
    s = MACROS.get(schedule.strip(), schedule.strip())
    parts = s.split()
    if parts and parts[0].startswith("TZ=") or parts and parts[0].startswith("CRON_TZ="):
        raise CronError("TZ or CRON_TZ in the schedule is not supported, use spec.timeZone")
    if len(parts) != 5:
        raise CronError(f"expected exactly 5 fields, found {len(parts)}: {schedule}")
    fields = [_field(p, i) for i, p in enumerate(parts)]
    return fields, parts[2] in ("*", "?"), parts[4] in ("*", "?")


def _matches(t: _dt.datetime, spec: tuple[list[set[int]], bool, bool]) -> bool:
    f, dom_star, dow_star = spec
    if t.minute not in f[0] or t.hour not in f[1] or t.month not in f[3]:
        return False
    dom, dow = t.day in f[2], (t.isoweekday() % 7) in f[4]
    if dom_star or dow_star:
        return dom and dow
    return dom or dow  # both restricted: either matches, like cron


def last_due(schedule: str, after: float, now: float, tz: str | None = None) -> float | None:
    """The latest scheduled time in (after, now], or None."""
    spec = parse(schedule)
    zone: _dt.tzinfo = _dt.UTC
    if tz:
        try:
            from zoneinfo import ZoneInfo

            zone = ZoneInfo(tz)
        except Exception as e:
            raise CronError(f"unknown time zone {tz}") from e
    t = _dt.datetime.fromtimestamp(now, zone).replace(second=0, microsecond=0)
    for _ in range(MAX_SCAN_MINUTES):
        ts = t.timestamp()
        if ts <= after:
            return None
        if _matches(t, spec):
            return ts
        t = _dt.datetime.fromtimestamp(ts - 60, zone)
    return None
