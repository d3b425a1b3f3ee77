"""Start-up time of the test services, reported at the end of the pytest session.

Every session fixture that starts a service calls :func:`record_startup` with the wall-clock seconds
it took until the service answered; :func:`pytest_terminal_summary` (registered by the opsbook
plugin) prints one line at the end of the session::

    service start-up: postgres 1.2 s, s3 0.9 s, mlflow_server 6.3 s, ... total 14.1 s
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["record_startup", "startup_times", "format_startup_summary", "pytest_terminal_summary"]

_lock = threading.Lock()
_startups: dict[str, float] = {}


def record_startup(name: str, seconds: float) -> None:
    """Record that service ``name`` took ``seconds`` to become ready (a second call replaces it)."""
    with _lock:
        _startups[name] = float(seconds)


def startup_times() -> dict[str, float]:
    """A copy of the recorded start-up times, in the order the services started."""
    with _lock:
        return dict(_startups)


def format_startup_summary(times: dict[str, float] | None = None) -> str:
    """``"service start-up: postgres 1.2 s, s3 0.9 s, total 2.1 s"``, or ``""`` if nothing started."""
    times = startup_times() if times is None else times
    if not times:
        return ""
    parts = [f"{name} {seconds:.1f} s" for name, seconds in times.items()]
    return f"service start-up: {', '.join(parts)}, total {sum(times.values()):.1f} s"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    line = format_startup_summary()
    if line:
        terminalreporter.write_line(line)
