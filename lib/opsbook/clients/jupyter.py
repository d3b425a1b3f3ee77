"""A JupyterLab server as a process of ours: started, awaited until it answers, stopped (``opsbook lab``
and the browser tests). Which flags it gets is the engine's business (``opsbook.lab.command``)."""

from __future__ import annotations

import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import requests

from opsbook.clients.retry import Pending, wait_until
from opsbook.errors import OpsbookError, TimedOut

HOST = "127.0.0.1"


@dataclass
class Lab:
    process: subprocess.Popen[bytes]
    port: int
    token: str
    root: Path

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/lab?token={self.token}"

    def stop(self, grace: float = 15.0) -> int:
        """SIGTERM (a clean shutdown of the server and its kernels), then SIGKILL after ``grace``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def launch(argv: list[str], *, port: int, token: str, root: Path, env: dict[str, str], timeout: float,
           stdout: int | None = None, stderr: int | None = None) -> Lab:
    """Start ``argv`` (a JupyterLab server on ``HOST:port``) in its own session and wait until its
    status API answers. Raises OpsbookError if it exits first or does not answer within ``timeout``."""
    proc = subprocess.Popen(argv, env=env, cwd=str(root), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                            start_new_session=True)
    lab = Lab(process=proc, port=port, token=token, root=root)

    def answers() -> bool | Pending:
        if proc.poll() is not None:
            raise OpsbookError(f"JupyterLab exited with code {proc.returncode} before it answered "
                               f"(is port {port} free?)")
        try:
            reply = requests.get(f"{lab.base_url}/api/status", params={"token": token}, timeout=2)
        except requests.RequestException as exc:
            return Pending(type(exc).__name__)
        return reply.status_code == 200 or Pending(f"HTTP {reply.status_code}")

    try:
        wait_until(answers, timeout=timeout, interval=0.3, what="JupyterLab not answering")
    except TimedOut:
        lab.stop()
        raise OpsbookError(f"JupyterLab did not answer on {lab.base_url} within {timeout:.0f} s") from None
    except BaseException:
        lab.stop()
        raise
    return lab
