"""What every service fixture shares: free loopback ports, a service process in its own process
group (stopped by PID, also at interpreter exit or on SIGTERM), and failing the test with the tail of
the service's log when it cannot start."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest

from opsbook.clients.retry import Pending, wait_until
from opsbook.errors import TimedOut

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def venv_bin() -> Path:
    """The ``bin`` directory of the running virtualenv (where ``make setup`` puts helm, kubectl, weed)."""
    return Path(sys.prefix) / "bin"


def _tail(path: Path | None, lines: int = 40) -> str:
    if path is None:
        return "(no log)"
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def fail_service(name: str, why: str, log: Path | None) -> NoReturn:
    pytest.fail(
        f"service {name!r} could not start: {why}\n---- tail of {log} ----\n{_tail(log)}", pytrace=False
    )


# Safety net: everything started and not yet stopped, stopped at interpreter exit or on SIGTERM.
_cleanups: dict[int, Callable[[], None]] = {}
_cleanups_lock = threading.Lock()
_safety_net_installed = False


def _run_cleanups() -> None:
    with _cleanups_lock:
        pending = list(_cleanups.items())
        _cleanups.clear()
    for _, fn in reversed(pending):
        with contextlib.suppress(Exception):
            fn()


def _on_sigterm(signum: int, frame: Any) -> None:
    _run_cleanups()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def register_cleanup(fn: Callable[[], None]) -> int:
    global _safety_net_installed
    with _cleanups_lock:
        if not _safety_net_installed:
            atexit.register(_run_cleanups)
            if threading.current_thread() is threading.main_thread():
                with contextlib.suppress(ValueError, OSError):
                    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                        signal.signal(signal.SIGTERM, _on_sigterm)
            _safety_net_installed = True
        key = id(fn)
        _cleanups[key] = fn
        return key


def unregister_cleanup(key: int) -> None:
    with _cleanups_lock:
        _cleanups.pop(key, None)


def _kill_group(pid: int, grace: float) -> None:
    """SIGTERM the process group led by ``pid``, SIGKILL it after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)

    def gone() -> bool:
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return True
        # reap our own child so that it does not linger as a zombie
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False

    try:
        wait_until(gone, timeout=grace, interval=0.05, what=f"process group {pid} still there after SIGTERM")
    except TimedOut:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


class _Process:
    """A service process in its own session (so its whole group can be stopped by PID)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        grace: float = 5.0,
    ) -> None:
        self.name, self.argv, self.log, self.env, self.cwd, self.grace = name, argv, log, env, cwd, grace
        self.popen: subprocess.Popen[bytes] | None = None
        self._key: int | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            try:
                self.popen = subprocess.Popen(
                    self.argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,
                )
            except OSError as exc:
                fail_service(self.name, f"cannot run {self.argv[0]}: {exc}", self.log)
        self._key = register_cleanup(self.stop)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def exited(self) -> int | None:
        return self.popen.poll() if self.popen else None

    def stop(self) -> None:
        if self.popen is None:
            return
        popen, self.popen = self.popen, None
        if self._key is not None:
            unregister_cleanup(self._key)
            self._key = None
        _kill_group(popen.pid, self.grace)
        with contextlib.suppress(Exception):
            popen.wait(timeout=5)

    def wait_ready(self, probe: Callable[[], Any], timeout: float) -> Any:
        """Poll ``probe`` until it returns a true value; fail with the log if the process dies or times out."""
        last: BaseException | None = None

        def ready() -> Any:
            nonlocal last
            code = self.exited()
            if code is not None:  # waiting longer cannot help
                self.stop()
                fail_service(self.name, f"{Path(self.argv[0]).name} exited with code {code}", self.log)
            try:
                return probe()
            except Exception as exc:  # noqa: BLE001 - the probe fails until the service is up
                last = exc
                return Pending(f"last probe error: {exc!r}")

        try:
            return wait_until(ready, timeout=timeout, interval=0.1, what=f"service {self.name!r} not ready")
        except TimedOut:
            pass
        self.stop()
        fail_service(self.name, f"not ready after {timeout:.0f} s (last probe error: {last!r})", self.log)


def http_ok(url: str, timeout: float = 1.0) -> bool:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
        return 200 <= resp.status < 300

