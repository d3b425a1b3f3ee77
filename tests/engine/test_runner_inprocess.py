"""Runner behaviour that needs to reach inside the process (a broken finalisation step)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from opsbook import runner
from opsbook.records.disk import Archive

from ..conftest import FIXTURE_NOTEBOOKS, FIXTURE_SECRET


def test_a_record_is_kept_even_if_building_it_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("OPSBOOK_FIXTURE_SECRET", FIXTURE_SECRET)

    def broken(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(runner, "_finalize", broken)
    archive = Archive(tmp_path / "out")
    prep = runner.prepare("trivial", {}, notebooks=FIXTURE_NOTEBOOKS)
    outcome = runner.execute(prep, archive=archive)
    assert outcome.status == "failed" and outcome.exit_code == 1
    m = json.loads((outcome.record_dir / "manifest.json").read_text())
    assert "record incomplete: RuntimeError: disk on fire" in m["error"]
    assert m["files"] == {}  # the unredacted notebook is not archived
    assert archive.verify().ok


def test_progress_callback_sees_every_cell(tmp_path, monkeypatch):
    monkeypatch.setenv("OPSBOOK_FIXTURE_SECRET", FIXTURE_SECRET)
    events = []
    prep = runner.prepare("trivial", {"replicas": 4}, notebooks=FIXTURE_NOTEBOOKS)
    outcome = runner.execute(prep, archive=Archive(tmp_path / "out"),
                             progress=lambda ev, i, n, label: events.append((ev, i, n)))
    assert outcome.status == "succeeded"
    n = events[0][2]
    assert [e for e in events if e[0] == "start"] == [("start", i, n) for i in range(n)]
    assert len([e for e in events if e[0] == "complete"]) == n


def test_prepare_rejects_before_anything_runs(tmp_path):
    from opsbook.errors import ParameterError

    with pytest.raises(ParameterError):
        runner.prepare("trivial", {"replicas": "x"}, text_values={"replicas"}, notebooks=FIXTURE_NOTEBOOKS)
    assert not (tmp_path / "out").exists()


def test_the_kernel_listens_on_unix_sockets_in_the_runs_private_folder(tmp_path, monkeypatch):
    """Concurrent runs cannot collide on a TCP port (jupyter_client releases the port it picked before
    the kernel binds it: papermill#511): the kernel's sockets are files in the run's 0700 folder."""
    import glob
    import stat
    import tempfile

    monkeypatch.setenv("OPSBOOK_FIXTURE_SECRET", FIXTURE_SECRET)
    seen: list[dict] = []
    run_id = runner.new_run_id()

    def look(ev, i, n, label):
        if ev == "complete" and not seen:
            (conn,) = glob.glob(f"{tempfile.gettempdir()}/opsbook-{run_id}-*/kernel.json")
            info = json.loads(Path(conn).read_text())
            folder = conn.rsplit("/", 1)[0]
            info["folder_mode"] = stat.S_IMODE(os.stat(folder).st_mode)
            info["sockets"] = [p for p in glob.glob(f"{folder}/kernel-ipc-*")
                               if stat.S_ISSOCK(os.stat(p).st_mode)]
            info["folder"] = folder
            seen.append(info)

    prep = runner.prepare("trivial", {}, notebooks=FIXTURE_NOTEBOOKS)
    outcome = runner.execute(prep, archive=Archive(tmp_path / "out"), run_id=run_id, progress=look)
    assert outcome.status == "succeeded", outcome.error
    (info,) = seen
    assert info["transport"] == "ipc" and info["ip"] == f"{info['folder']}/kernel-ipc"
    assert info["folder_mode"] & 0o777 == 0o700
    assert len(info["sockets"]) == 5  # shell, iopub, stdin, control, heartbeat
    assert not glob.glob(f"{info['folder']}*")  # cleaned up with the run's folder


def test_a_folder_too_long_for_a_unix_socket_keeps_tcp(tmp_path):
    assert runner._kernel_manager_class(tmp_path / ("x" * 120)) is None
    assert runner._kernel_manager_class(None) is None
    cls = runner._kernel_manager_class(tmp_path)
    km = cls(kernel_name="python3")
    assert km.transport == "ipc" and km.connection_file == str(tmp_path / "kernel.json")
