"""Issue 15 on the disk archive: ``check_writable`` proves the archive can take a record (write probe,
free space), a read-only archive raises opsbook errors (never a bare ``OSError``), and ``verify`` reads
a consistent snapshot, so that a record being written by a concurrent writer is never reported.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from opsbook.errors import ArchiveError, ArchiveNotWritable, UsageError
from opsbook.records.disk import Archive

from .test_archive import RUNBOOK, _manifest, _source


@pytest.fixture
def read_only_fs(tmp_path: Path):
    """A tmpfs at tmp_path/ro holding an archive with one record, then remounted read-only."""
    d = tmp_path / "ro"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        Archive(d / "outputs", fsync=False, signer=None).record(
            runbook_id=RUNBOOK, run_id="r1", source_dir=_source(tmp_path), manifest=_manifest("r1"))
        subprocess.run(["mount", "-o", "remount,ro", str(d)], check=True, capture_output=True)
        yield d
    finally:
        if subprocess.run(["umount", str(d)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(d)], capture_output=True)


# ------------------------------------------------------------------------------------------ check_writable


def test_check_writable_passes_and_leaves_nothing_behind(tmp_path: Path) -> None:
    a = Archive(tmp_path / "outputs", signer=None)
    a.check_writable(1 << 20)
    assert list(a.incoming_path.iterdir()) == []


def test_a_probe_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    a = Archive(tmp_path / "outputs", signer=None)
    a.incoming_path.write_text("not a folder")  # the probe fails with a real OSError (EEXIST/ENOTDIR)
    with pytest.raises(ArchiveNotWritable, match="cannot take a record") as info:
        a.check_writable()
    assert isinstance(info.value, UsageError) and isinstance(info.value, ArchiveError)  # CLI exit 2
    assert isinstance(info.value.__cause__, OSError)


def test_too_little_free_space_for_the_reserve_is_refused(tmp_path: Path) -> None:
    a = Archive(tmp_path / "outputs", signer=None)
    free = shutil.disk_usage(a.root).free
    with pytest.raises(ArchiveNotWritable, match="needed for the record"):
        a.check_writable(free + (1 << 30))
    a.check_writable(0)


def test_an_archive_root_that_cannot_be_created_is_not_writable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArchiveNotWritable, match="cannot create the archive root"):
        Archive(tmp_path / "file" / "outputs", signer=None)


def test_read_only_archive(read_only_fs: Path, tmp_path: Path) -> None:
    a = Archive(read_only_fs / "outputs", fsync=False, signer=None)  # exists: opening it is fine
    with pytest.raises(ArchiveNotWritable, match="Read-only file system"):
        a.check_writable()
    with pytest.raises(ArchiveError) as info:  # record() itself: an ArchiveError, not a bare OSError
        a.record(runbook_id=RUNBOOK, run_id="r2", source_dir=_source(tmp_path, "src2"), manifest=_manifest("r2"))
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.EROFS
    report = a.verify(signers=None)  # the ledger lock cannot be taken there; nobody can be writing either
    assert report.ok and report.records == 1, report
    with pytest.raises(ArchiveNotWritable):
        Archive(read_only_fs / "other", signer=None)


# ------------------------------------------------------------------------------------------ verify snapshot


def test_verify_waits_for_a_record_between_its_rename_and_its_ledger_append(tmp_path: Path) -> None:
    """Deterministic: the writer is paused after renaming its record into place, before its ledger
    append (both under ledger.lock). verify must not report it as not_in_ledger."""
    root = tmp_path / "outputs"
    reader = Archive(root, fsync=False, signer=None)
    reader.record(runbook_id=RUNBOOK, run_id="r0", source_dir=_source(tmp_path), manifest=_manifest("r0"))
    writer = Archive(root, fsync=False, signer=None)
    renamed, go = threading.Event(), threading.Event()
    append = writer._append

    def paused_append(entry):  # noqa: ANN001, ANN202
        renamed.set()
        go.wait(30)
        return append(entry)

    writer._append = paused_append  # type: ignore[method-assign]
    t = threading.Thread(target=writer.record, kwargs=dict(runbook_id=RUNBOOK, run_id="r1", manifest=_manifest("r1"),
                                                           source_dir=_source(tmp_path, "src1")))
    t.start()
    assert renamed.wait(30) and (root / RUNBOOK / "r1").is_dir()
    threading.Timer(0.5, go.set).start()
    t0 = time.monotonic()
    report = reader.verify(signers=None)
    waited = time.monotonic() - t0
    t.join(30)
    assert report.ok, report
    assert report.records == 2 and waited >= 0.3  # it waited for the writer, then saw both records


def _writer(root: Path, src: Path, prefix: str, n: int, errors: list) -> None:
    a = Archive(root, fsync=False, signer=None)
    try:
        for i in range(n):
            a.record(runbook_id=RUNBOOK if i % 2 else "centralized-logging", run_id=f"{prefix}-{i:03d}",
                     source_dir=src, manifest=_manifest(f"{prefix}-{i:03d}"))
    except Exception as exc:  # noqa: BLE001 - asserted below
        errors.append(exc)


def test_verify_with_concurrent_writers_reports_no_record_being_written(tmp_path: Path) -> None:
    """Real concurrent writers (threads, each its own Archive and lock file handle) while verify runs
    again and again: no verify may report a problem."""
    root = tmp_path / "outputs"
    src = _source(tmp_path)
    errors: list = []
    writers = [threading.Thread(target=_writer, args=(root, src, f"w{k}", 60, errors)) for k in range(3)]
    reader = Archive(root, fsync=False, signer=None)
    verify_while_writing(reader, writers, errors, seconds=90)
    final = reader.verify(signers=None)
    assert final.ok and final.records == 180, final


def verify_while_writing(reader, writers: list, errors: list, *, seconds: float) -> None:
    """Start ``writers`` and verify ``reader`` over and over until they end: no verify may report a
    problem, and at least three must overlap the writers (shared with the S3 snapshot test; on a loaded
    machine the writers may finish after four or five)."""
    for w in writers:
        w.start()
    bad, runs = [], 0
    deadline = time.monotonic() + seconds
    while any(w.is_alive() for w in writers) and time.monotonic() < deadline:
        bad += reader.verify(signers=None).problems
        runs += 1
    for w in writers:
        w.join(60)
    assert not errors, errors
    assert runs >= 3, f"only {runs} verify runs overlapped the writers"
    assert not bad, bad[:5]
