"""POST a JSON document to a webhook, with retries and a hard deadline (``requests``, retried by
:func:`opsbook.clients.retry.retrying`).

    hook = Webhook(timeout=5, deadline=20)
    result = hook.post_json("https://hooks.slack.com/services/...", {"text": "hi"})
    result.delivered, result.attempts, result.status, result.reason

Why these rules: a notification is a courtesy that must never hold up or fail the run it reports
on, and a webhook URL is a credential (Slack's path *is* the token). So:

* each attempt has its own timeout (``timeout``), and all attempts together an overall ``deadline``;
  ``post_all`` enforces the deadline from outside as well (each delivery runs in a daemon thread),
  so a receiver that drip-feeds bytes cannot keep the CLI waiting;
* retried: connection errors and timeouts, HTTP 429 (honouring ``Retry-After``, seconds or an
  HTTP date) and 5xx, with exponential backoff plus jitter; not retried: any other 4xx (the request
  itself is wrong: retrying cannot help) and 3xx (redirects are not followed: a POST must not be
  silently turned into a GET or sent to another host);
* nothing raises for a failed delivery: the :class:`Delivery` says what happened, and its
  ``reason`` never contains the URL (only :func:`masked` forms of it are ever shown);
* ``https`` only, except ``http`` to a loopback host (a receiver on the same machine, tests).
"""

from __future__ import annotations

import email.utils
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from opsbook.clients.retry import retrying
from opsbook.errors import ClientError, Invalid, TimedOut, Unreachable

__all__ = ["Delivery", "Webhook", "check_url", "masked"]

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_MAX_BODY = 64 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class Delivery:
    """The outcome of one webhook delivery."""

    delivered: bool
    attempts: int
    status: int | None = None  # the last HTTP status received, if any
    reason: str = ""  # why it was not delivered ("" when delivered); never holds the URL
    seconds: float = 0.0


def check_url(url: str) -> None:
    """Raise :class:`~opsbook.errors.Invalid` unless ``url`` is an https URL (or http to loopback).
    The message shows the URL masked."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        raise Invalid("webhook URL does not parse") from None
    if parts.scheme not in ("https", "http") or not host:
        raise Invalid(f"webhook URL {masked(url)}: expected https://HOST/PATH")
    if parts.scheme == "http" and host not in _LOOPBACK:
        raise Invalid(f"webhook URL {masked(url)}: plain http is allowed only to a loopback host; "
                      "use https (the payload and the URL's token would travel in clear)")


def masked(url: str) -> str:
    """``https://hooks.slack.com/…``: scheme and host only, since the path and query of a webhook URL
    are its secret."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparseable URL)"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme or '?'}://{host}{port}/…"


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.fromtimestamp(now, UTC)).total_seconds())


def _snippet(body: bytes) -> str:
    text = _CONTROL.sub(" ", body[:200].decode("utf-8", "replace")).strip()
    return text[:100]


class _Progress:
    """Shared between a delivery thread and ``post_all``, so a deadline report knows the attempts."""

    def __init__(self) -> None:
        self.attempts = 0
        self.status: int | None = None
        self.last_reason = ""


class _Throttled(Unreachable):
    """A 429: temporary, and the receiver may say how long to wait (:func:`retrying` honours it)."""

    def __init__(self, message: str, retry_after: float | None):
        super().__init__(message)
        self.retry_after = retry_after


def _connection_text(exc: BaseException, url: str) -> str:
    """Why a connection failed, without the URL: the innermost OS error (``[Errno 111] Connection
    refused``) rather than requests' wrapper, whose text names the URL and so its token."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    found: BaseException | None = None
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and type(cur).__module__ == "builtins":
            found = cur
        inner = getattr(cur, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((a for a in getattr(cur, "args", ()) if isinstance(a, BaseException)), None)
        cur = inner or cur.__cause__ or cur.__context__
    text = str(found if found is not None else exc)
    path = urlsplit(url).path
    if path and path != "/":
        text = text.replace(path, "/…")
    return _CONTROL.sub(" ", text.replace(url, masked(url)))[:120] or type(exc).__name__


class Webhook:
    """A webhook sender. ``sleep`` and ``session`` (a ``requests.Session``) are constructor arguments
    so that tests can drive time and transport without patching."""

    def __init__(self, *, timeout: float = 5.0, deadline: float = 20.0, max_attempts: int = 5,
                 backoff: float = 0.5, max_backoff: float = 8.0, user_agent: str = "opsbook-webhook/1",
                 sleep: Callable[[float], None] = time.sleep, session: Any = None):
        if timeout <= 0 or deadline <= 0 or max_attempts < 1:
            raise ValueError("timeout and deadline must be > 0, max_attempts >= 1")
        self.timeout, self.deadline, self.max_attempts = timeout, deadline, max_attempts
        self.backoff, self.max_backoff = backoff, max_backoff
        self.user_agent = user_agent
        self._sleep = sleep
        self._session = session

    def post_json(self, url: str, payload: Any, *, _progress: _Progress | None = None) -> Delivery:
        """POST ``payload`` as JSON to ``url``; retry as the module docstring says. Never raises for a
        failed delivery (an invalid URL is a failed delivery too)."""
        import requests

        progress = _progress or _Progress()
        t0 = time.monotonic()
        try:
            check_url(url)
        except Invalid as exc:
            return Delivery(False, 0, None, str(exc), 0.0)
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": self.user_agent}
        session = self._session or requests.Session()

        def attempt() -> None:
            remaining = self.deadline - (time.monotonic() - t0)
            if remaining <= 0:
                raise ClientError(f"{progress.last_reason}; gave up at the {self.deadline:g} s deadline")
            progress.attempts += 1
            limit = min(self.timeout, remaining)
            try:
                resp = session.post(url, data=body, headers=headers, timeout=limit, allow_redirects=False,
                                    stream=True)
            except requests.Timeout:  # before ConnectionError: ConnectTimeout is both
                progress.last_reason = f"no answer within {limit:g} s"
                raise TimedOut(progress.last_reason) from None
            except requests.RequestException as exc:
                if "timed out" in str(exc):
                    progress.last_reason = f"no answer within {limit:g} s"
                    raise TimedOut(progress.last_reason) from None
                progress.last_reason = f"connection failed ({_connection_text(exc, url)})"
                raise Unreachable(progress.last_reason) from None
            with resp:
                progress.status = code = resp.status_code
                try:
                    reply = resp.raw.read(_MAX_BODY, decode_content=True) or b""
                except Exception as exc:
                    if not 200 <= code < 300:
                        reply = b""  # the status says it all
                    elif "timed out" in str(exc):
                        progress.last_reason = f"no answer within {limit:g} s"
                        raise TimedOut(progress.last_reason) from None
                    else:
                        progress.last_reason = f"connection failed ({_connection_text(exc, url)})"
                        raise Unreachable(progress.last_reason) from None
            if 200 <= code < 300:
                return
            detail = _snippet(reply)
            reason = progress.last_reason = f"HTTP {code}" + (f" ({detail})" if detail else "")
            if code == 429:
                wait = _retry_after(resp.headers.get("Retry-After"), time.time())
                if wait is not None:
                    reason = progress.last_reason = reason + f", Retry-After {wait:g} s"
                raise _Throttled(reason, wait)
            if code >= 500:
                raise Unreachable(reason)
            if 300 <= code < 400:  # 3xx (not followed) and 4xx: the request is wrong, retrying cannot help
                reason += ": redirects are not followed; configure the final URL"
            raise Invalid(reason)

        try:
            retrying(attempt, attempts=self.max_attempts, deadline=self.deadline, backoff=self.backoff,
                     max_backoff=self.max_backoff, sleep=self._sleep)
        except ClientError as exc:
            why = "; ".join([str(exc), *getattr(exc, "__notes__", ())])
            return self._done(False, progress, why, t0)
        finally:
            if session is not self._session:
                session.close()
        return self._done(True, progress, "", t0)

    def _done(self, ok: bool, progress: _Progress, reason: str, t0: float) -> Delivery:
        return Delivery(ok, progress.attempts, progress.status, reason.lstrip("; "),
                        round(time.monotonic() - t0, 3))

    def post_all(self, items: Sequence[tuple[str, Any]], *, grace: float = 1.0) -> list[Delivery]:
        """Deliver each ``(url, payload)`` concurrently; return within ``deadline + grace`` seconds
        whatever the receivers do. A delivery still running then is reported as failed and left to
        its daemon thread (it cannot hold up the process's exit)."""
        results: list[Delivery | None] = [None] * len(items)
        progresses = [_Progress() for _ in items]
        threads = []
        for i, (url, payload) in enumerate(items):
            def work(i: int = i, url: str = url, payload: Any = payload) -> None:
                try:
                    results[i] = self.post_json(url, payload, _progress=progresses[i])
                except Exception as exc:  # a bug must not escape into the run's exit code
                    results[i] = Delivery(False, progresses[i].attempts, progresses[i].status,
                                          f"internal error: {type(exc).__name__}")
            t = threading.Thread(target=work, name=f"webhook-{i}", daemon=True)
            t.start()
            threads.append(t)
        end = time.monotonic() + self.deadline + grace
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))
        out: list[Delivery] = []
        for res, prog in zip(results, progresses, strict=True):
            if res is None:
                why = prog.last_reason or "no answer"
                res = Delivery(False, prog.attempts, prog.status,
                               f"{why}; still unanswered at the {self.deadline:g} s deadline, abandoned",
                               round(self.deadline + grace, 3))
            out.append(res)
        return out
