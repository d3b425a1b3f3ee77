"""``opsbook lab``: JupyterLab on loopback, in this environment, with the runbooks open.

The server runs as a child process (``python -m jupyterlab`` of this interpreter, so its kernels are
this environment's ``python3`` kernel, which imports ``opsbook``), bound to 127.0.0.1, with the
runbook folder as its root and a random token. It is started in its own session so that Ctrl-C in
the terminal reaches only us: we then stop it with SIGTERM (JupyterLab shuts its kernels down) and,
if it is still there after a grace period, kill it.

``OPSBOOK_NOTEBOOKS`` and ``OPSBOOK_OUTPUTS`` are set for the server and so for its kernels:
a run started in JupyterLab finds the same catalogue and archives into the same folder as
``opsbook run`` would.

Opening a runbook does not dirty the checkout. JupyterLab rewrites a notebook's kernel display name
and ``language_info`` when its kernel starts, and saves (autosave, Ctrl-S) in nbformat's own layout;
the server's save hooks (:func:`pre_save_hook`, :func:`post_save_hook`) keep those two fields as the
file has them, and a save that changes nothing else leaves the file byte for byte as it was (and
with the modification time the server reported, so JupyterLab sees no conflict).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opsbook import catalog
from opsbook.clients.jupyter import HOST, Lab, free_port, launch
from opsbook.errors import UsageError


def command(*, port: int, token: str, root: Path, open_browser: bool) -> list[str]:
    argv = [
        sys.executable, "-m", "jupyterlab",
        f"--ServerApp.ip={HOST}", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={token}",
        f"--ServerApp.open_browser={open_browser}",
        # a closed network: no news feed, no update checks
        "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--ServerApp.log_level=WARN",
        # opening and saving a runbook without editing it leaves its file as it was (module docstring)
        f"--ContentsManager.pre_save_hook={__name__}.pre_save_hook",
        f"--ContentsManager.post_save_hook={__name__}.post_save_hook",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-root")
    return argv


def start(*, port: int | None = None, notebooks: str | None = None, outputs: str | None = None,
          open_browser: bool = False, env: dict[str, str] | None = None, timeout: float = 90.0,
          stdout: int | None = None, stderr: int | None = None) -> Lab:
    """Start JupyterLab and wait until it answers. Raises OpsbookError if it does not."""
    root = catalog.notebooks_dir(notebooks).resolve()
    if not root.is_dir():
        raise UsageError(f"no runbook folder at {root}")
    port = port or free_port()
    token = secrets.token_hex(24)
    full_env = {**os.environ, **(env or {}), catalog.ENV_NOTEBOOKS: str(root),
                catalog.ENV_OUTPUTS: _archive_location(outputs)}
    return launch(command(port=port, token=token, root=root, open_browser=open_browser), port=port, token=token,
                  root=root, env=full_env, timeout=timeout, stdout=stdout, stderr=stderr)


def serve(*, port: int | None = None, notebooks: str | None = None, outputs: str | None = None,
          open_browser: bool = False, approve: str | None = None, say: Callable[[str], None] = print) -> int:
    """``opsbook lab``: start, print the URL, wait; Ctrl-C (or SIGTERM) stops the server cleanly."""
    from opsbook.runenv import ENV_APPROVED_PLAN

    lab = start(port=port, notebooks=notebooks, outputs=outputs, open_browser=open_browser,
                env={ENV_APPROVED_PLAN: approve} if approve else None)
    say(f"JupyterLab is running on {lab.base_url} with the runbooks in {lab.root}")
    say(f"open: {lab.url}")
    say(f"records of interactive runs go to {_archive_location(outputs)}; press Ctrl-C to stop")

    def _term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, _term)
    try:
        while lab.process.poll() is None:
            time.sleep(0.5)
        say(f"JupyterLab exited with code {lab.process.returncode}")
        return 1 if lab.process.returncode else 0
    except KeyboardInterrupt:
        say("stopping JupyterLab (its kernels are shut down)...")
        lab.stop()
        say("stopped")
        return 0
    finally:
        signal.signal(signal.SIGTERM, old)


def _archive_location(outputs: str | None) -> str:
    """The archive as the kernels must see it: an absolute folder, or the ``s3://`` URL unchanged."""
    from opsbook.records.archive import open_archive

    return str(open_archive(outputs).location)


# -- saving without dirtying the checkout ---------------------------------------------------------------

#: the bytes of each notebook as it was before the save in progress (os path -> bytes)
_BEFORE_SAVE: dict[str, bytes] = {}


def _os_path(contents_manager: Any, path: str) -> str:
    get = getattr(contents_manager, "_get_os_path", None)
    return str(get(path)) if get is not None else os.path.join(str(contents_manager.root_dir), path.strip("/"))


def _same_kernel(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return bool(old.get("name")) and old.get("name") == new.get("name")


def pre_save_hook(*, model: dict[str, Any], path: str, contents_manager: Any, **kwargs: Any) -> None:
    """Before a notebook is saved: keep the kernel's display name and ``language_info`` as the file
    on disk has them (JupyterLab rewrites both when the kernel starts), for the same kernel; and note
    the file's bytes for :func:`post_save_hook`. Never raises (a save is never refused over this)."""
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    with contextlib.suppress(Exception):
        import nbformat

        os_path = _os_path(contents_manager, path)
        old_bytes = Path(os_path).read_bytes()
        _BEFORE_SAVE[os_path] = old_bytes
        old = nbformat.reads(old_bytes.decode("utf-8"), as_version=4).metadata
        new = model["content"].setdefault("metadata", {})
        old_ks, new_ks = old.get("kernelspec") or {}, new.get("kernelspec") or {}
        if _same_kernel(old_ks, new_ks):
            if "display_name" in old_ks:
                new_ks["display_name"] = old_ks["display_name"]
            if "language_info" in old:
                new["language_info"] = old["language_info"]
            else:
                new.pop("language_info", None)


def _comparable(raw: bytes) -> Any:
    """A notebook as content (key order and layout aside), without what JupyterLab rewrites."""
    import nbformat

    nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
    nb.metadata.pop("language_info", None)
    if isinstance(nb.metadata.get("kernelspec"), dict):
        nb.metadata["kernelspec"].pop("display_name", None)
    return nb


def post_save_hook(*, model: dict[str, Any], os_path: str, contents_manager: Any, **kwargs: Any) -> None:
    """After a notebook is saved: if it holds the same content as before the save (the same cells,
    sources, outputs and metadata, in whatever key order and layout), put the previous bytes back,
    with the modification time of the save (what the server told JupyterLab). Never raises."""
    old = _BEFORE_SAVE.pop(str(os_path), None)
    if old is None:
        return
    with contextlib.suppress(Exception):
        target = Path(os_path)
        new = target.read_bytes()
        if new == old or _comparable(new) != _comparable(old):
            return
        st = os.stat(target)
        tmp = target.with_name(f".{target.name}.opsbook-{os.getpid()}.tmp")
        try:
            tmp.write_bytes(old)
            os.chmod(tmp, st.st_mode & 0o7777)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
