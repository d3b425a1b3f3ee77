"""The one retry helper and the one wait helper of opsbook, on tenacity.

    version = retrying(lambda: kube.version(), attempts=4, deadline=30)      # Unreachable, TimedOut: again
    dep = wait_until(rolled_out, timeout=300, interval=0.5, what="deployment ns/api not rolled out")

Why they exist: every client maps its failures to :mod:`opsbook.errors`, and ``ClientError.temporary``
already says whether trying again can help (a refused connection, a 503, a timeout) or not (a 404, a
refused request, RBAC). Retrying on that flag, in one place, keeps the rule the same for every service
and keeps backoff, jitter and the overall deadline out of the callers. Waiting is the other half:
polling a condition until it holds, and when it does not, an error that says what was awaited and
how far it got, not just "timed out".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import tenacity

from opsbook.errors import ClientError, TimedOut

__all__ = ["Pending", "retrying", "wait_until"]

T = TypeVar("T")


class Pending:
    """A condition's answer "not yet", carrying the state it saw (``wait_until`` reports the last one
    when time runs out). It is false, so a condition may also simply return False or None."""

    __slots__ = ("state",)

    def __init__(self, state: str = ""):
        self.state = state

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"Pending({self.state!r})"


def _temporary(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and exc.temporary


class _Backoff:
    """Exponential backoff, half fixed and half random (concurrent callers spread out), unless the
    error says how long to wait (``retry_after``: a 429's ``Retry-After``)."""

    def __init__(self, backoff: float, max_backoff: float):
        self.fixed = tenacity.wait_exponential(multiplier=backoff / 2, max=max_backoff / 2)
        self.random = tenacity.wait_random_exponential(multiplier=backoff / 2, max=max_backoff / 2)

    def __call__(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        asked = getattr(exc, "retry_after", None)
        if asked is not None:
            return max(0.0, float(asked))
        return float(self.fixed(state) + self.random(state))


def retrying(call: Callable[[], T], *, attempts: int = 3, deadline: float | None = None,
             backoff: float = 0.5, max_backoff: float = 8.0, when: Callable[[BaseException], bool] | None = None,
             sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()``, tried again while it raises a *temporary* :class:`~opsbook.errors.ClientError` (or
    an error ``when`` accepts: a 409 Conflict to recompute and retry, as client-go's RetryOnConflict),
    at most ``attempts`` times and never sleeping past ``deadline`` seconds from the first try. Any
    other error is raised at once. When it gives up, the last error is raised with a note saying why (its
    attempts ran out, or the next retry would pass the deadline), so the message keeps the cause."""
    if attempts < 1:
        raise ValueError(f"attempts={attempts!r}: at least 1")
    stop: Any = tenacity.stop_after_attempt(attempts)
    if deadline is not None:
        stop = stop | tenacity.stop_before_delay(deadline)

    def give_up(state: tenacity.RetryCallState) -> Any:
        assert state.outcome is not None
        exc = state.outcome.exception()
        assert exc is not None
        if state.attempt_number >= attempts:
            exc.add_note(f"gave up after {attempts} attempt{'s' if attempts != 1 else ''}")
        else:
            exc.add_note(f"the next retry (in {state.upcoming_sleep:.1f} s) would pass the {deadline:g} s "
                         "deadline")
        raise exc

    retryer = tenacity.Retrying(retry=tenacity.retry_if_exception(when or _temporary), stop=stop,
                                wait=_Backoff(backoff, max_backoff), sleep=sleep, retry_error_callback=give_up)
    return retryer(call)


def wait_until(condition: Callable[[], T | Pending], *, timeout: float, interval: float = 0.5, what: str,
               sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``condition()`` every ``interval`` seconds until it returns something true, and return that.
    It is called at least once, and once more at the deadline; errors it raises go through at once.
    After ``timeout`` seconds: :class:`~opsbook.errors.TimedOut` "``what`` after ``timeout`` s: last
    state", where ``what`` says what did not happen ("deployment ns/api not rolled out") and the state
    is that of the last :class:`Pending` the condition returned."""

    def pause(state: tenacity.RetryCallState) -> float:
        return min(interval, max(0.0, timeout - (state.seconds_since_start or 0.0)))

    def timed_out(state: tenacity.RetryCallState) -> Any:
        last = state.outcome.result() if state.outcome is not None else None
        detail = last.state if isinstance(last, Pending) else ""
        raise TimedOut(f"{what} after {timeout:g} s" + (f": {detail}" if detail else ""))

    retryer = tenacity.Retrying(retry=tenacity.retry_if_not_result(bool),
                                stop=tenacity.stop_after_delay(timeout), wait=pause, sleep=sleep,
                                retry_error_callback=timed_out)
    return cast(T, retryer(condition))  # never a Pending: that is retried, or TimedOut
