"""The kernel side of a headless run: the papermill engine, the kernel's transport, signals, the run
timeout, and the step lines fed to the terminal while cells run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: (event, cell index, cell count, label): "start" and "complete" of every cell, label what the cell
#: does (``cell_labels``); after a cell, a "step" event per step it finished, label the step as JSON
ProgressCallback = Callable[[str, int, int, str], None]


class _RunWatchdog:
    """Enforces the run timeout. In the main thread a timer sends this process SIGTERM when the run's
    time is up: the path an operator's SIGTERM takes (``_sigterm_as_interrupt``: KeyboardInterrupt
    inside papermill, the kernel shut down, the record written), told apart by ``fired``. In another
    thread (no signal handler can be installed there) each cell's timeout is capped at the time left
    instead (nbclient's ``timeout_func``), so the run still ends at its deadline."""

    def __init__(self, seconds: int, t0: float):
        self.seconds = seconds
        self.deadline = t0 + seconds
        self.fired = False
        self._stopped = False
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._main = threading.current_thread() is threading.main_thread()

    @property
    def message(self) -> str:
        return f"run timeout of {self.seconds} s exceeded"

    def exceeded(self) -> bool:
        return self.fired or time.monotonic() >= self.deadline - 0.5

    def engine_kwargs(self, cell_timeout: int) -> dict[str, Any]:
        if self._main:
            return {}

        def timeout_func(cell: Any) -> int:
            return max(1, min(cell_timeout, int(self.deadline - time.monotonic() + 0.999)))

        return {"timeout_func": timeout_func}

    #: after the first SIGTERM, again every this many seconds until the run has stopped: a SIGTERM that
    #: lands in a kernel's start or in papermill's clean-up can leave it waiting on a kernel that is
    #: going away; the next KeyboardInterrupt breaks that wait (the record is still written)
    REPEAT = 15.0

    def _fire(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self.fired = True
            os.kill(os.getpid(), signal.SIGTERM)
            self._timer = threading.Timer(self.REPEAT, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def __enter__(self) -> _RunWatchdog:
        if self._main:
            self._timer = threading.Timer(max(0.0, self.deadline - time.monotonic()), self._fire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:  # after this the timer cannot signal; one that already did raises here, still
            self._stopped = True  # inside _sigterm_as_interrupt, and is caught as the run timeout
        if self._timer is not None:
            self._timer.cancel()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM is handled like Ctrl-C (KeyboardInterrupt), so the run is archived as aborted."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def _signals_held() -> Iterator[list[int]]:
    """While the record is written, Ctrl-C and SIGTERM are noted, not obeyed."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return
    old = {s: signal.signal(s, lambda n, f: got.append(n)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield got
    finally:
        for s, h in old.items():
            signal.signal(s, h)


#: seconds a kernel has to exit after its shutdown request before SIGTERM (half) and SIGKILL (all)
KERNEL_SHUTDOWN_WAIT = 2.0

#: a Unix socket's path must fit in ``sun_path`` (108 bytes on Linux, 104 on macOS)
_MAX_SOCKET_PATH = 100


def _kernel_manager_class(kernel_dir: Path | None) -> type | None:
    """A kernel manager that talks to its kernel over Unix sockets in ``kernel_dir`` (the run's 0700
    staging folder) instead of TCP ports on localhost. jupyter_client picks a TCP port by binding port
    0 and releasing it before the kernel binds it, so two runs starting at once can pick the same port
    and one kernel dies with "Address already in use" (papermill#511, still open); a socket file in a
    folder of the run's own cannot collide, and no other local user can connect to it. ``None`` (keep
    TCP) where sockets are not available or the folder's path is too long for one."""
    if kernel_dir is None or os.name != "posix" or len(str(kernel_dir / "kernel-ipc-99")) > _MAX_SOCKET_PATH:
        return None
    from jupyter_client.manager import AsyncKernelManager

    connection_file = str(kernel_dir / "kernel.json")

    class RunKernelManager(AsyncKernelManager):
        def __init__(self, **kw: Any) -> None:
            kw.setdefault("transport", "ipc")
            kw.setdefault("connection_file", connection_file)
            # a kernel that does not exit within half of this after its shutdown request is sent
            # SIGTERM, then SIGKILL: 5 s by default, which made a Ctrl-C during kernel start take 6 s
            kw.setdefault("shutdown_wait_time", KERNEL_SHUTDOWN_WAIT)
            super().__init__(**kw)

    return RunKernelManager


def _register_engine() -> str:
    """A papermill engine that reports each cell's start and end to the ``opsbook_progress`` callback
    given to ``papermill.execute_notebook`` (per call: concurrent runs in threads keep theirs)."""
    from papermill.engines import NBClientEngine, papermill_engines

    class OpsbookEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
            progress: ProgressCallback | None = kwargs.pop("opsbook_progress", None)
            if progress is not None:
                total = len(nb_man.nb.cells)
                labels = cell_labels(nb_man.nb.cells)
                start, complete = nb_man.cell_start, nb_man.cell_complete

                def cell_start(cell: Any, cell_index: int | None = None, **kw: Any) -> Any:
                    progress("start", cell_index or 0, total, labels[cell_index or 0])
                    return start(cell, cell_index, **kw)

                def cell_complete(cell: Any, cell_index: int | None = None, **kw: Any) -> Any:
                    progress("complete", cell_index or 0, total, labels[cell_index or 0])
                    return complete(cell, cell_index, **kw)

                nb_man.cell_start, nb_man.cell_complete = cell_start, cell_complete
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register("opsbook", OpsbookEngine)
    return "opsbook"


def _heading(cell: Any) -> str:
    src = cell.get("source", "")
    return next((ln.lstrip("#").strip() for ln in src.splitlines() if ln.startswith("#")), "")


def cell_labels(cells: Any) -> list[str]:
    """What the progress display calls each cell: a markdown cell ``(markdown) <its heading>``; a code
    cell the heading of the markdown above it (the step it belongs to, as the runbook names it),
    else its first line of code; the parameter cells say so."""
    out: list[str] = []
    heading = ""
    for cell in cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.get("cell_type") == "markdown":
            heading = _heading(cell) or heading
            out.append(f"(markdown) {heading}")
        elif "injected-parameters" in tags:
            out.append("(parameters given to this run)")
        elif "parameters" in tags:
            out.append("(parameter defaults)")
        else:
            code = next((ln.strip() for ln in cell.get("source", "").splitlines()
                         if ln.strip() and not ln.strip().startswith("#")), "")
            out.append(heading or code)
    return out


class _StepFeed:
    """The step records the kernel has written so far (its events file), read after every cell so
    that the progress display can show each step's outcome as it happens; redacted again here with
    the run's own redactor (parameters, registered secrets) before anything is shown."""

    def __init__(self, events: Path, redact: Callable[[], Any]):
        self.events, self._redactor, self._offset = events, redact, 0

    def new_steps(self) -> list[dict[str, Any]]:
        try:
            with open(self.events, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1  # complete lines only: the kernel may be writing the next one
        self._offset += end
        steps = []
        for line in data[:end].decode("utf-8", "replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                ev = json.loads(line)
                if isinstance(ev, dict) and ev.get("event") == "step":
                    steps.append({k: ev.get(k) for k in ("kind", "title", "outcome", "summary", "seconds", "headline")})
        if steps:
            red = self._redactor()
            steps = [red.redact_obj(s) for s in steps]
        return steps


def _with_steps(progress: ProgressCallback, feed: _StepFeed) -> ProgressCallback:
    """``progress`` also gets a ``"step"`` event per finished step, its label the step as JSON (kind,
    title, outcome, summary, seconds, headline)."""

    def cb(event: str, index: int, total: int, label: str) -> None:
        progress(event, index, total, label)
        if event == "complete":
            for step in feed.new_steps():
                progress("step", index, total, json.dumps(step, default=str))

    return cb


class _HtmlWarmup(threading.Thread):
    """Import nbconvert and load its template while the kernel runs (it takes ~1 s on its own)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.exporter: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            import nbformat
            from nbconvert import HTMLExporter

            exp = HTMLExporter(template_name="lab")
            # one throw-away render compiles the templates and loads the CSS and lexers, so the
            # render of the real notebook later is only the render
            warm = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# w"),
                                                   nbformat.v4.new_code_cell("x = 1")])
            warm.metadata["language_info"] = {"name": "python"}
            exp.from_notebook_node(warm)
            self.exporter = exp
        except BaseException as exc:  # reported at render time
            self.error = exc
