"""The Prometheus client: the HTTP API (``/api/v1``) through ``requests``.

    prom = Prometheus("http://127.0.0.1:9090", timeout=10)
    prom.healthy()                                        # GET /-/healthy -> True / False, never raises
    prom.query('up{job="proposer"}')                      # instant vector -> tidy rows
    frame = prom.query_range("sum by (track) (rate(model_requests_total[1m]))",
                             start=t0, end=t1, step=60)    # -> DataFrame: labels..., timestamp, value
    prom.alerts()                                         # GET /api/v1/alerts -> one row per alert

Tidy rows: one dict (one DataFrame row) per series and sample, with the series' labels as keys
(``__name__`` kept when Prometheus returns it), ``timestamp`` (float, Unix seconds) and ``value``
(float; Prometheus's ``"NaN"``/``"+Inf"`` become float NaN/inf). Times may be given as Unix seconds,
``datetime`` (naive = UTC) or ``pandas.Timestamp``; ``step`` as seconds or a Prometheus duration
(``"1m"``).

Errors are ours, with the original chained (a ``requests`` exception, or the ``HTTPError`` of the
error response) and Prometheus's own message kept verbatim::

    ClientError                  any other API error (errorType and HTTP status in the message)
    ├── Invalid                  ``bad_data`` (HTTP 400: PromQL syntax, bad time/step), ``execution`` (422)
    ├── NotFound                 HTTP 404 (not a Prometheus API at that URL?)
    ├── Forbidden                HTTP 401 / 403 (an authenticating proxy)
    ├── Unreachable              connection refused, DNS, ``unavailable`` (503), a 5xx without API body
    └── TimedOut                 no answer within ``timeout``, or Prometheus's ``timeout`` errorType

Each raised error carries ``error_type`` (Prometheus's errorType or ``None``) and ``status_code``.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Iterable, Mapping
from typing import Any

from opsbook.errors import ClientError, Forbidden, Invalid, NotFound, TimedOut, Unreachable

__all__ = ["Prometheus", "to_unix", "duration"]

TimeLike = float | int | str | _dt.datetime | Any  # Any: pandas.Timestamp


def to_unix(t: TimeLike) -> float:
    """Unix seconds from a number, an RFC 3339 string, a datetime (naive = UTC) or a pandas Timestamp."""
    if isinstance(t, bool):
        raise TypeError(f"not a time: {t!r}")
    if isinstance(t, (int, float)):
        return float(t)
    if hasattr(t, "to_pydatetime"):  # pandas.Timestamp
        t = t.to_pydatetime()
    if isinstance(t, str):
        t = _dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
    if isinstance(t, _dt.datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.UTC)
        return t.timestamp()
    raise TypeError(f"not a time: {t!r} ({type(t).__name__})")


def duration(seconds: float | str) -> str:
    """A Prometheus duration string: ``60`` -> ``"60s"``, ``0.5`` -> ``"500ms"``; strings pass through."""
    if isinstance(seconds, str):
        return seconds
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"duration must be positive, got {seconds!r}")
    ms = round(float(seconds) * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _value(v: Any) -> float:
    try:
        return float(v)  # "NaN", "+Inf", "-Inf" parse
    except (TypeError, ValueError):
        return math.nan


class Prometheus:
    """A Prometheus server's HTTP API at ``url``. ``session`` is the side-effect seam (a
    ``requests.Session`` or anything with its ``request`` method); ``timeout`` bounds every call (s)."""

    def __init__(self, url: str, *, timeout: float = 10.0, session: Any = None) -> None:
        if not url or "://" not in url:
            raise ValueError(f"Prometheus URL must be absolute (http://host:port), got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        if session is None:
            import requests

            session = requests.Session()
        self.session = session

    def __repr__(self) -> str:
        return f"Prometheus({self.url!r})"

    # -- transport ------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, params: Mapping[str, Any] | None = None) -> Any:
        import requests

        what = f"Prometheus {self.url}{path}"
        try:
            resp = self.session.request(method, f"{self.url}{path}", params=params, timeout=self.timeout)
        except requests.exceptions.Timeout as exc:  # before ConnectionError: ConnectTimeout is both
            raise _err(TimedOut, f"{what}: no answer within {self.timeout:g} s ({exc})") from exc
        except requests.exceptions.ConnectionError as exc:
            raise _err(Unreachable, f"{what}: cannot connect ({_short(exc)})") from exc
        except requests.exceptions.RequestException as exc:
            raise _err(ClientError, f"{what}: {_short(exc)}") from exc
        return resp

    def _api(self, path: str, params: Mapping[str, Any] | None = None, *, method: str = "GET") -> Any:
        """``data`` of a successful API answer; a typed error otherwise."""
        resp = self._request(method, f"/api/v1/{path}", params)
        try:
            body = resp.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("status") == "success":
            return body.get("data")
        error_type = body.get("errorType") if isinstance(body, dict) else None
        message = body.get("error") if isinstance(body, dict) else None
        if not message:
            message = (resp.text or "").strip()[:500] or resp.reason or "no error message"
        cls = _error_class(error_type, resp.status_code)
        text = (f"Prometheus {path}: {error_type + ': ' if error_type else ''}{message} "
                f"(HTTP {resp.status_code})")
        cause = _http_error(resp)
        exc = _err(cls, text, error_type=error_type, status_code=resp.status_code)
        raise exc from cause

    # -- API --------------------------------------------------------------------------------------------

    def healthy(self) -> bool:
        """``GET /-/healthy`` answers 200. Never raises: a server that cannot be reached is not healthy."""
        try:
            resp = self._request("GET", "/-/healthy")
        except ClientError:
            return False
        return resp.status_code == 200

    def ready(self) -> bool:
        """``GET /-/ready`` answers 200 (the TSDB is loaded and queries are served)."""
        try:
            resp = self._request("GET", "/-/ready")
        except ClientError:
            return False
        return resp.status_code == 200

    def query(self, promql: str, time: TimeLike | None = None) -> list[dict[str, Any]]:
        """Instant query (``/api/v1/query``) as tidy rows: labels, ``timestamp``, ``value``.

        A scalar or string result is one row without labels. Range vectors (``x[5m]``) give one row
        per sample."""
        params: dict[str, Any] = {"query": promql}
        if time is not None:
            params["time"] = to_unix(time)
        data = self._api("query", params)
        return _rows(data)

    def query_range(self, promql: str, start: TimeLike, end: TimeLike, step: float | str) -> Any:
        """Range query (``/api/v1/query_range``) as a ``pandas.DataFrame``: one column per label seen
        in the result, ``timestamp`` (float Unix seconds) and ``value``; one row per series and step
        where the series has a value (a missing step has no row)."""
        import pandas as pd

        t0, t1 = to_unix(start), to_unix(end)
        if t1 < t0:
            raise ValueError(f"query_range: end {t1} is before start {t0}")
        params = {"query": promql, "start": t0, "end": t1,
                  "step": step if isinstance(step, str) else float(step)}
        rows = _rows(self._api("query_range", params))
        labels = list(dict.fromkeys(k for r in rows for k in r if k not in ("timestamp", "value")))
        return pd.DataFrame(rows, columns=[*labels, "timestamp", "value"])

    def series(self, match: str | Iterable[str], start: TimeLike | None = None,
               end: TimeLike | None = None) -> list[dict[str, str]]:
        """Label sets of the series matching the selector(s) (``/api/v1/series``)."""
        params: dict[str, Any] = {"match[]": [match] if isinstance(match, str) else list(match)}
        if start is not None:
            params["start"] = to_unix(start)
        if end is not None:
            params["end"] = to_unix(end)
        return list(self._api("series", params) or [])

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (``/api/v1/alerts``), one row each: ``alertname``, ``state`` (pending /
        firing), ``severity`` (the label, if any), ``active_at``, ``value``, ``labels``, ``annotations``."""
        data = self._api("alerts") or {}
        out = []
        for a in data.get("alerts", []):
            labels = dict(a.get("labels") or {})
            out.append({
                "alertname": labels.get("alertname", ""),
                "state": a.get("state", ""),
                "severity": labels.get("severity", ""),
                "active_at": a.get("activeAt"),
                "value": _value(a.get("value")),
                "labels": labels,
                "annotations": dict(a.get("annotations") or {}),
            })
        return out

    def targets(self) -> list[dict[str, Any]]:
        """Active scrape targets (``/api/v1/targets``): job, instance, health, last error."""
        data = self._api("targets", {"state": "active"}) or {}
        return [{"job": t.get("labels", {}).get("job", ""), "instance": t.get("labels", {}).get("instance", ""),
                 "health": t.get("health", ""), "last_error": t.get("lastError", ""),
                 "scrape_url": t.get("scrapeUrl", "")} for t in data.get("activeTargets", [])]


# -- helpers ------------------------------------------------------------------------------------------


def _rows(data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, dict):
        return []
    kind, result = data.get("resultType"), data.get("result")
    if kind in ("scalar", "string"):
        ts, v = result  # type: ignore[misc]
        return [{"timestamp": float(ts), "value": _value(v)}]
    rows: list[dict[str, Any]] = []
    for series in result or []:
        labels = dict(series.get("metric") or {})
        if "value" in series:
            ts, v = series["value"]
            rows.append({**labels, "timestamp": float(ts), "value": _value(v)})
        for ts, v in series.get("values") or []:
            rows.append({**labels, "timestamp": float(ts), "value": _value(v)})
    return rows


def _error_class(error_type: str | None, status: int) -> type[ClientError]:
    if error_type == "bad_data" or status == 400:
        return Invalid
    if error_type == "execution" or status == 422:
        return Invalid
    if error_type == "timeout":
        return TimedOut
    if error_type == "unavailable" or status == 503:
        return Unreachable
    if status == 404 or error_type == "not_found":
        return NotFound
    if status in (401, 403):
        return Forbidden
    if error_type is None and status >= 500:
        return Unreachable  # a proxy's 502/504, a dying server: temporary
    return ClientError


def _err(cls: type[ClientError], text: str, *, error_type: str | None = None,
         status_code: int | None = None) -> ClientError:
    exc = cls(text)
    exc.error_type = error_type  # type: ignore[attr-defined]
    exc.status_code = status_code  # type: ignore[attr-defined]
    return exc


def _http_error(resp: Any) -> BaseException | None:
    import requests

    try:
        resp.raise_for_status()
    except requests.exceptions.HTTPError as exc:
        return exc
    return None


def _short(exc: BaseException) -> str:
    text = str(exc)
    # urllib3's "Max retries exceeded ... (Caused by NewConnectionError(...: [Errno 111] Connection refused'))"
    if "Connection refused" in text:
        return "connection refused"
    return text if len(text) <= 300 else text[:297] + "..."
