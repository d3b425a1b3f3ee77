"""Private working folders, and the sweep of the ones a killed process left behind.

A run is staged outside ``outputs/`` before it is redacted and archived: ``opsbook run`` in
``$TMPDIR/opsbook-<run_id>-XXXX/`` (the executed notebook as papermill autosaves it, the values the
kernel resolved in ``secrets.jsonl``), an interactive record in the same kind of folder, and the
evidence files of an interactive run in ``.opsbook/interactive/<run_id>/``. Each such folder is mode
0700, its files 0600, and it holds an ``owner.pid`` file naming the process that owns it: its pid,
its start time (from ``/proc/<pid>/stat``, so a recycled pid is not taken for the owner), the boot
and the host. The owner removes the folder when it is done; a process killed with ``SIGKILL`` cannot,
so :func:`sweep_stale_workdirs`, called when a run starts or an interactive run is recorded, removes
the folders whose owner is gone. A folder without an owner file is removed once it is older than
``max_age_seconds`` (for the staging folders, only those named like a run's). Symlinks are never
followed, and only folders of the current user are touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import tempfile
import time
from pathlib import Path

from opsbook.ids import RUN_ID

OWNER_FILE = "owner.pid"
PREFIX = "opsbook-"
DAY = 24 * 3600


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (field 22 of /proc/PID/stat),
    ``None`` if it cannot be read (no such process, or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()  # after "pid (comm) ": state is field 3
    return fields[19].decode() if len(fields) > 19 else None


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def owner_record() -> dict[str, object]:
    """What ``owner.pid`` holds for this process."""
    pid = os.getpid()
    return {"pid": pid, "start": _proc_start(pid), "boot": _boot_id(), "host": socket.gethostname()}


def write_owner(folder: Path) -> None:
    """Write (or replace) ``folder/owner.pid`` naming this process, mode 0600, never through a symlink."""
    data = (json.dumps(owner_record(), sort_keys=True) + "\n").encode()
    tmp = folder / f".{OWNER_FILE}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, folder / OWNER_FILE)


def make_workdir(prefix: str) -> Path:
    """A new private folder under the temporary directory (``tempfile.mkdtemp``: mode 0700) holding
    an owner file, so that it is swept if this process dies without removing it."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        write_owner(folder)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def claim_dir(folder: Path) -> Path:
    """Create ``folder`` (and missing parents) mode 0700, make it 0700 if it exists, and write its
    owner file if it has none. Refuses a symlink or a folder of another user."""
    folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise OSError(f"{folder} is not a folder of this user (a symlink, or someone else's)")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(folder, 0o700)
    if not os.path.lexists(folder / OWNER_FILE):
        write_owner(folder)
    return folder


def owner_alive(folder: Path) -> bool | None:
    """Whether the process named by ``folder/owner.pid`` still runs: ``None`` if there is no
    readable owner file, or the owner is on another host (its pids cannot be checked from here)."""
    try:
        fd = os.open(folder / OWNER_FILE, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            doc = json.loads(f.read(4096))
        pid = int(doc["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if doc.get("host") not in (None, socket.gethostname()):
        return None
    boot = _boot_id()
    if doc.get("boot") and boot and doc["boot"] != boot:
        return False  # the machine rebooted since: every process of then is gone
    if doc.get("start") is not None and Path("/proc/self/stat").exists():
        return _proc_start(pid) == doc["start"]  # None (no such pid) or another process's start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _newest_mtime(folder: Path) -> float:
    """The newest modification time in the folder's tree (not following symlinks)."""
    newest = os.lstat(folder).st_mtime
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
    return newest


def _stale(folder: Path, *, max_age_seconds: float, ownerless_ok: bool) -> bool:
    try:
        st = os.lstat(folder)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():  # a symlink, a file, someone else's
        return False
    alive = owner_alive(folder)
    if alive is not None:
        return not alive
    return ownerless_ok and time.time() - _newest_mtime(folder) > max_age_seconds


def interactive_root(project_root: Path | None = None) -> Path:
    """Where interactive runs keep their evidence until they are recorded: ``.opsbook/interactive``."""
    if project_root is None:
        from opsbook.catalog import project_root as find_root

        project_root = find_root()
    return project_root / ".opsbook" / "interactive"


def sweep_stale_workdirs(max_age_seconds: float = DAY, *, project_root: Path | None = None) -> list[Path]:
    """Remove the working folders left by processes that are gone: ``opsbook-*`` staging folders in
    the temporary directory, and ``.opsbook/interactive/<run_id>/`` evidence folders of the project.
    A folder whose owner file names a dead process is removed at once; one without an owner file once
    nothing in it changed for ``max_age_seconds`` (staging folders only if named like a run's,
    ``opsbook-<run_id>-…``). Never raises; returns what it removed."""
    removed: list[Path] = []
    candidates: list[tuple[Path, bool]] = []
    with contextlib.suppress(OSError), os.scandir(tempfile.gettempdir()) as it:
        for e in it:
            if e.name.startswith(PREFIX):
                run_id = e.name[len(PREFIX):].rsplit("-", 1)[0]
                candidates.append((Path(e.path), bool(RUN_ID.match(run_id))))
    with contextlib.suppress(Exception), os.scandir(interactive_root(project_root)) as it:
        candidates += [(Path(e.path), True) for e in it]
    for folder, ownerless_ok in candidates:
        try:
            if _stale(folder, max_age_seconds=max_age_seconds, ownerless_ok=ownerless_ok):
                shutil.rmtree(folder)  # refuses a symlink; never follows one inside
                removed.append(folder)
        except OSError:
            continue
    return removed
