"""Values the server stamps on objects: timestamps in the API's two formats (seconds for metadata,
microseconds for events and leases), and the random suffix of a generated name."""

from __future__ import annotations

import datetime as _dt
import random
import time

# the alphabet of Kubernetes' random suffixes: no vowels (no words) and no look-alikes (0/o, 1/l)
ALNUM = "bcdfghjklmnpqrstvwxz2456789"


def now_iso(t: float | None = None) -> str:
    t = time.time() if t is None else t
    return _dt.datetime.fromtimestamp(int(t), _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_iso(t: float | None = None) -> str:
    t = time.time() if t is None else t
    return _dt.datetime.fromtimestamp(t, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(s: str) -> float:
    s = s.rstrip("Z")
    fmt = "%Y-%m-%dT%H:%M:%S.%f" if "." in s else "%Y-%m-%dT%H:%M:%S"
    return _dt.datetime.strptime(s, fmt).replace(tzinfo=_dt.UTC).timestamp()


def rand_suffix(n: int = 5) -> str:
    return "".join(random.choice(ALNUM) for _ in range(n))
