"""POST a JSON document to a webhook, with retries and a hard deadline (stdlib ``urllib`` only).

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
import http.client
import json
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from opsbook.errors import Invalid

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


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None  # the 3xx is then raised as an HTTPError and reported, not followed


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


class Webhook:
    """A webhook sender. The seams (``sleep``, ``clock``, ``jitter``, ``opener``) are constructor
    arguments so that tests can drive time and transport without patching."""

    def __init__(self, *, timeout: float = 5.0, deadline: float = 20.0, max_attempts: int = 5,
                 backoff: float = 0.5, max_backoff: float = 8.0, user_agent: str = "opsbook-webhook/1",
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 jitter: Callable[[], float] = random.random, opener: Any = None):
        if timeout <= 0 or deadline <= 0 or max_attempts < 1:
            raise ValueError("timeout and deadline must be > 0, max_attempts >= 1")
        self.timeout, self.deadline, self.max_attempts = timeout, deadline, max_attempts
        self.backoff, self.max_backoff = backoff, max_backoff
        self.user_agent = user_agent
        self._sleep, self._clock, self._jitter = sleep, clock, jitter
        self._opener = opener or urllib.request.build_opener(_NoRedirect())

    def _delay(self, attempt: int) -> float:
        """Exponential backoff with jitter: half fixed, half random, so that concurrent senders spread."""
        base = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return base / 2 + self._jitter() * base / 2

    def post_json(self, url: str, payload: Any, *, _progress: _Progress | None = None) -> Delivery:
        """POST ``payload`` as JSON to ``url``; retry as the module docstring says. Never raises for a
        failed delivery (an invalid URL is a failed delivery too)."""
        progress = _progress or _Progress()
        t0 = self._clock()
        try:
            check_url(url)
        except Invalid as exc:
            return Delivery(False, 0, None, str(exc), 0.0)
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        reason = ""
        while True:
            remaining = self.deadline - (self._clock() - t0)
            if remaining <= 0:
                return self._done(False, progress, f"{reason}; gave up at the {self.deadline:g} s deadline", t0)
            progress.attempts += 1
            req = urllib.request.Request(url, data=body, method="POST", headers={
                "Content-Type": "application/json; charset=utf-8", "User-Agent": self.user_agent})
            wait: float | None = None
            try:
                with self._opener.open(req, timeout=min(self.timeout, remaining)) as resp:
                    progress.status = resp.status
                    resp.read(_MAX_BODY)
                return self._done(True, progress, "", t0)
            except urllib.error.HTTPError as exc:
                progress.status = exc.code
                detail = ""
                try:
                    detail = _snippet(exc.read(_MAX_BODY))
                except Exception:
                    pass
                reason = f"HTTP {exc.code}" + (f" ({detail})" if detail else "")
                if exc.code == 429:
                    wait = _retry_after(exc.headers.get("Retry-After") if exc.headers else None, time.time())
                    if wait is not None:
                        reason += f", Retry-After {wait:g} s"
                elif exc.code < 500:  # 3xx (not followed) and 4xx: the request is wrong, retrying cannot help
                    if 300 <= exc.code < 400:
                        reason += ": redirects are not followed; configure the final URL"
                    return self._done(False, progress, reason, t0)
            except (TimeoutError, urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                inner = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                if isinstance(inner, TimeoutError) or "timed out" in str(inner):
                    reason = f"no answer within {min(self.timeout, remaining):g} s"
                else:
                    text = _CONTROL.sub(" ", str(inner))[:120] or type(inner).__name__
                    reason = f"connection failed ({text})"
            if progress.attempts >= self.max_attempts:
                return self._done(False, progress, reason, t0)
            delay = wait if wait is not None else self._delay(progress.attempts)
            remaining = self.deadline - (self._clock() - t0)
            if delay >= remaining:
                return self._done(False, progress, f"{reason}; the next retry (in {delay:.1f} s) would pass the "
                                  f"{self.deadline:g} s deadline", t0)
            progress.last_reason = reason
            self._sleep(delay)

    def _done(self, ok: bool, progress: _Progress, reason: str, t0: float) -> Delivery:
        return Delivery(ok, progress.attempts, progress.status, reason.lstrip("; "),
                        round(self._clock() - t0, 3))

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
