"""opsbook.records.disk: records, ledger, verify (every tamper kind), history, concurrent writers.

Records are read-only (files 0o444, folders 0o555): the tamper tests make them writable first, as an
attacker with root would.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from opsbook.errors import ArchiveError, LedgerError, RecordExists
from opsbook.records.disk import Archive
from opsbook.records.ledger import GENESIS, LedgerEntry, canonical_json

RUNBOOK = "deploy-new-model"


def _source(tmp_path: Path, name: str = "src", *, evidence: bool = True, tag: str = "") -> Path:
    """A record's files as the runner leaves them; ``tag`` makes their content differ between records."""
    src = tmp_path / name
    src.mkdir(parents=True)
    (src / "notebook.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "tag": tag}))
    (src / "notebook.html").write_text(f"<html><body>run {tag}</body></html>")
    if evidence:
        (src / "evidence").mkdir()
        (src / "evidence" / "pods.json").write_text('{"ready": 3}')
    return src


def _manifest(run_id: str, *, status: str = "succeeded", started: str = "2024-05-01T10:00:00+00:00",
              **extra: object) -> dict:
    return {"run_id": run_id, "runbook_version": "1.2.0", "status": status, "mode": "plan",
            "target": "local", "operator": "alice", "started": started,
            "ended": started.replace("10:00", "10:05"), **extra}


def _writable(path: Path) -> None:
    for dirpath, _dirs, files in os.walk(path):
        os.chmod(dirpath, 0o755)
        for f in files:
            os.chmod(os.path.join(dirpath, f), 0o644)


@pytest.fixture
def archive(tmp_path: Path) -> Archive:
    return Archive(tmp_path / "outputs", fsync=False)


@pytest.fixture
def filled(tmp_path: Path, archive: Archive) -> Archive:
    src = _source(tmp_path)
    for i in range(4):
        archive.record(runbook_id=RUNBOOK, run_id=f"run-{i}", source_dir=src, manifest=_manifest(f"run-{i}"))
    return archive


def _lines(a: Archive) -> list[str]:
    return a.ledger_path.read_text().splitlines(keepends=True)


def _problems(report, kind: str) -> list:
    return [p for p in report.problems if p.kind == kind]


# ------------------------------------------------------------------------------------------ record


class TestRecord:
    def test_record_then_verify_ok(self, tmp_path: Path) -> None:
        a = Archive(tmp_path / "outputs")  # the real, fsync'd path
        ref = a.record(runbook_id=RUNBOOK, run_id="r1", source_dir=_source(tmp_path), manifest=_manifest("r1"))
        assert ref.path == tmp_path / "outputs" / RUNBOOK / "r1"
        assert ref.entry is not None and ref.entry.seq == 1 and ref.entry.prev == GENESIS
        report = a.verify()
        assert report.ok, report
        assert report.records == 1
        assert report.head == a.head() == ref.entry.hash

    def test_manifest_lists_every_file_with_its_hash(self, tmp_path: Path, archive: Archive) -> None:
        src = _source(tmp_path)
        archive.record(runbook_id=RUNBOOK, run_id="r1", source_dir=src, manifest=_manifest("r1"))
        m = archive.load_manifest("r1")
        assert m["record_format"] == 1
        assert m["status"] == "succeeded" and m["runbook_id"] == RUNBOOK
        assert set(m["files"]) == {"notebook.ipynb", "notebook.html", "evidence/pods.json"}
        assert m["files"]["evidence/pods.json"] == hashlib.sha256(b'{"ready": 3}').hexdigest()

    def test_record_is_read_only_and_staging_is_empty(self, tmp_path: Path, archive: Archive) -> None:
        ref = archive.record(runbook_id=RUNBOOK, run_id="r1", source_dir=_source(tmp_path),
                             manifest=_manifest("r1"))
        assert stat.S_IMODE(ref.path.stat().st_mode) == 0o555
        assert stat.S_IMODE((ref.path / "evidence").stat().st_mode) == 0o555
        for f in ("notebook.ipynb", "manifest.json", "evidence/pods.json"):
            assert stat.S_IMODE((ref.path / f).stat().st_mode) == 0o444
        assert list(archive.incoming_path.iterdir()) == []

    def test_ledger_line_format(self, tmp_path: Path, archive: Archive) -> None:
        archive.record(runbook_id=RUNBOOK, run_id="r1", source_dir=_source(tmp_path), manifest=_manifest("r1"))
        line = archive.ledger_path.read_bytes()
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        obj = json.loads(line)
        assert list(obj) == sorted(obj)
        assert line == canonical_json(obj) + b"\n"
        assert set(obj) == {"seq", "run_id", "runbook_id", "runbook_version", "status", "mode", "target",
                            "operator", "started", "ended", "record", "manifest_sha256", "prev", "hash"}
        body = {k: v for k, v in obj.items() if k != "hash"}
        assert obj["hash"] == hashlib.sha256(canonical_json(body)).hexdigest()
        assert obj["record"] == f"{RUNBOOK}/r1" and obj["operator"] == "alice"
        man = (archive.root / RUNBOOK / "r1" / "manifest.json").read_bytes()
        assert obj["manifest_sha256"] == hashlib.sha256(man).hexdigest()

    def test_missing_manifest_fields_are_null(self, tmp_path: Path, archive: Archive) -> None:
        ref = archive.record(runbook_id=RUNBOOK, run_id="r1", source_dir=_source(tmp_path), manifest={})
        assert ref.entry is not None
        assert ref.entry.status is None and ref.entry.started is None and ref.entry.runbook_version is None

    def test_duplicate_run_id_is_refused(self, tmp_path: Path, archive: Archive) -> None:
        src = _source(tmp_path)
        archive.record(runbook_id=RUNBOOK, run_id="r1", source_dir=src, manifest=_manifest("r1"))
        with pytest.raises(RecordExists):
            archive.record(runbook_id=RUNBOOK, run_id="r1", source_dir=src, manifest=_manifest("r1"))
        with pytest.raises(RecordExists):  # run ids are unique across runbooks
            archive.record(runbook_id="centralized-logging", run_id="r1", source_dir=src, manifest={})
        assert len(_lines(archive)) == 1
        assert archive.verify().ok

    def test_bad_input_leaves_nothing(self, tmp_path: Path, archive: Archive) -> None:
        src = _source(tmp_path)
        (src / "link").symlink_to(src / "notebook.ipynb")
        with pytest.raises(ArchiveError, match="symlink"):
            archive.record(runbook_id=RUNBOOK, run_id="r1", source_dir=src, manifest={})
        (src / "link").unlink()
        with pytest.raises(ArchiveError, match="does not match"):
            archive.record(runbook_id=RUNBOOK, run_id="r1", source_dir=src, manifest={"run_id": "other"})
        with pytest.raises(ArchiveError, match="invalid run id"):
            archive.record(runbook_id=RUNBOOK, run_id="../evil", source_dir=src, manifest={})
        with pytest.raises(ArchiveError, match="not JSON"):
            archive.record(runbook_id=RUNBOOK, run_id="r1", source_dir=src, manifest={"x": object()})
        (src / "manifest.json").write_text("{}")
        with pytest.raises(ArchiveError, match="reserved"):
            archive.record(runbook_id=RUNBOOK, run_id="r1", source_dir=src, manifest={})
        assert not (archive.root / RUNBOOK / "r1").exists()
        assert list(archive.incoming_path.iterdir()) == []
        assert archive.head() is None

    def test_corrupt_ledger_tail_refuses_to_append(self, tmp_path: Path, archive: Archive) -> None:
        src = _source(tmp_path)
        archive.record(runbook_id=RUNBOOK, run_id="r1", source_dir=src, manifest={})
        with archive.ledger_path.open("ab") as f:
            f.write(b'{"seq": 2, "trunc')  # a torn write
        with pytest.raises(LedgerError):
            archive.record(runbook_id=RUNBOOK, run_id="r2", source_dir=src, manifest={})
        assert not (archive.root / RUNBOOK / "r2").exists()
        report = archive.verify()
        assert [p.kind for p in report.problems] == ["unparseable"]

    def test_datetimes_in_the_manifest(self, tmp_path: Path, archive: Archive) -> None:
        t = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
        ref = archive.record(runbook_id=RUNBOOK, run_id="r1", source_dir=_source(tmp_path),
                             manifest={"started": t, "status": "failed"})
        assert ref.entry is not None and ref.entry.started == t.isoformat()
        assert archive.load_manifest("r1")["started"] == t.isoformat()


class TestFind:
    def test_find_and_load(self, filled: Archive) -> None:
        ref = filled.find("run-2")
        assert ref is not None and ref.entry is not None and ref.entry.seq == 3
        assert ref.manifest_path.is_file()
        assert filled.find("nope") is None
        with pytest.raises(ArchiveError):
            filled.load_manifest("nope")

    def test_find_falls_back_to_a_scan(self, filled: Archive) -> None:
        lines = _lines(filled)
        filled.ledger_path.write_text("".join(lines[:-1]))  # run-3 no longer in the ledger
        ref = filled.find("run-3")
        assert ref is not None and ref.entry is None and ref.runbook_id == RUNBOOK
        assert filled.load_manifest("run-3")["run_id"] == "run-3"

    def test_empty_archive(self, archive: Archive) -> None:
        assert archive.head() is None
        assert archive.history() == []
        report = archive.verify()
        assert report.ok and report.records == 0 and report.head is None


# ------------------------------------------------------------------------------------------ verify


class TestVerifyTamper:
    def test_flipped_byte_in_notebook_is_modified(self, filled: Archive) -> None:
        nb = filled.root / RUNBOOK / "run-1" / "notebook.ipynb"
        _writable(nb.parent)
        data = bytearray(nb.read_bytes())
        data[5] ^= 0x01
        nb.write_bytes(bytes(data))
        report = filled.verify()
        assert not report.ok
        [p] = report.problems
        assert p.kind == "modified" and p.record == "run-1" and p.file == "notebook.ipynb"
        assert "notebook.ipynb" in p.detail

    def test_modified_evidence_file_in_a_subfolder(self, filled: Archive) -> None:
        ev = filled.root / RUNBOOK / "run-0" / "evidence" / "pods.json"
        _writable(ev.parent.parent)
        ev.write_text('{"ready": 0}')
        [p] = filled.verify().problems
        assert (p.kind, p.record, p.file) == ("modified", "run-0", "evidence/pods.json")

    def test_deleted_record_folder_is_removed(self, filled: Archive) -> None:
        rec = filled.root / RUNBOOK / "run-2"
        _writable(rec)
        shutil.rmtree(rec)
        [p] = filled.verify().problems
        assert (p.kind, p.record) == ("removed", "run-2")

    def test_edited_status_is_ledger_edited(self, filled: Archive) -> None:
        lines = _lines(filled)
        assert '"status":"succeeded"' in lines[1]
        lines[1] = lines[1].replace('"status":"succeeded"', '"status":"failed"')
        filled.ledger_path.write_text("".join(lines))
        report = filled.verify()
        assert [(p.kind, p.record) for p in report.problems] == [("ledger_edited", "run-1")]

    def test_edited_entry_with_recomputed_hash_breaks_the_chain(self, filled: Archive) -> None:
        lines = _lines(filled)
        obj = json.loads(lines[1])
        obj["status"] = "failed"
        entry = LedgerEntry.from_obj(obj)
        obj["hash"] = entry.compute_hash()
        lines[1] = canonical_json(obj).decode() + "\n"
        filled.ledger_path.write_text("".join(lines))
        report = filled.verify()
        assert report.kinds() == {"ledger_edited"}
        assert "recomputed" in report.problems[0].detail

    def test_swapped_lines_are_reordered(self, filled: Archive) -> None:
        lines = _lines(filled)
        lines[1], lines[2] = lines[2], lines[1]
        filled.ledger_path.write_text("".join(lines))
        report = filled.verify()
        assert report.kinds() == {"reordered"}
        assert sorted(p.record for p in report.problems) == ["run-1", "run-2"]
        assert "swapped" in report.problems[0].detail

    def test_deleted_middle_line(self, filled: Archive) -> None:
        lines = _lines(filled)
        del lines[1]
        filled.ledger_path.write_text("".join(lines))
        report = filled.verify()
        assert report.kinds() == {"reordered", "not_in_ledger"}
        [r] = _problems(report, "reordered")
        assert "missing" in r.detail and "seq 2" in r.detail
        assert [p.record for p in _problems(report, "not_in_ledger")] == ["run-1"]

    def test_truncated_tail_with_expect_head(self, filled: Archive) -> None:
        old_head = filled.head()
        lines = _lines(filled)
        filled.ledger_path.write_text("".join(lines[:-1]))
        assert filled.verify(expect_head=None).kinds() == {"not_in_ledger"}
        report = filled.verify(expect_head=old_head)
        assert report.kinds() == {"truncated", "not_in_ledger"}
        assert report.head != old_head

    def test_rewritten_ledger_with_expect_head(self, tmp_path: Path, filled: Archive) -> None:
        old_head = filled.head()
        _writable(filled.root / RUNBOOK)
        shutil.rmtree(filled.root / RUNBOOK)
        filled.ledger_path.unlink()
        filled.record(runbook_id=RUNBOOK, run_id="fresh", source_dir=_source(tmp_path, "src2"), manifest={})
        assert filled.verify().ok  # a consistent new archive ...
        assert filled.verify(expect_head=old_head).kinds() == {"truncated"}  # ... but not the one we knew

    def test_grown_ledger_is_info_not_a_problem(self, tmp_path: Path, filled: Archive) -> None:
        earlier = filled.head()
        filled.record(runbook_id=RUNBOOK, run_id="later", source_dir=_source(tmp_path, "src2"), manifest={})
        report = filled.verify(expect_head=earlier)
        assert report.ok, report
        assert any("grew by 1 entry" in i for i in report.info)
        assert filled.verify(expect_head=filled.head()).ok

    def test_folder_copied_in_by_hand_is_not_in_ledger(self, filled: Archive) -> None:
        src = filled.root / RUNBOOK / "run-0"
        dst = filled.root / RUNBOOK / "run-forged"
        shutil.copytree(src, dst)
        [p] = filled.verify().problems
        assert (p.kind, p.record) == ("not_in_ledger", "run-forged")

    def test_extra_file_is_unexpected(self, filled: Archive) -> None:
        rec = filled.root / RUNBOOK / "run-3"
        _writable(rec)
        (rec / "evidence" / "extra.txt").write_text("planted")
        [p] = filled.verify().problems
        assert (p.kind, p.record, p.file) == ("unexpected_file", "run-3", "evidence/extra.txt")

    def test_deleted_file_is_missing(self, filled: Archive) -> None:
        rec = filled.root / RUNBOOK / "run-3"
        _writable(rec)
        (rec / "notebook.html").unlink()
        [p] = filled.verify().problems
        assert (p.kind, p.record, p.file) == ("missing_file", "run-3", "notebook.html")

    def test_manifest_rewritten_to_match_a_modified_file(self, filled: Archive) -> None:
        rec = filled.root / RUNBOOK / "run-0"
        _writable(rec)
        (rec / "notebook.html").write_text("<html>forged</html>")
        m = json.loads((rec / "manifest.json").read_text())
        m["files"]["notebook.html"] = hashlib.sha256(b"<html>forged</html>").hexdigest()
        (rec / "manifest.json").write_text(json.dumps(m))
        [p] = filled.verify().problems
        assert (p.kind, p.record) == ("manifest_modified", "run-0")

    def test_garbage_ledger_line_is_unparseable(self, filled: Archive) -> None:
        lines = _lines(filled)
        lines[2] = "this is not json\n"
        filled.ledger_path.write_text("".join(lines))
        report = filled.verify()
        assert [p.kind for p in report.problems if p.kind != "not_in_ledger"] == ["unparseable"]
        assert _problems(report, "unparseable")[0].record == "ledger.jsonl:3"
        assert [p.record for p in _problems(report, "not_in_ledger")] == ["run-2"]
        with pytest.raises(LedgerError):
            filled.history()

    def test_incoming_leftovers_are_info(self, filled: Archive) -> None:
        (filled.incoming_path / "run-9-abcdef").mkdir()
        report = filled.verify()
        assert report.ok
        assert any(".incoming" in i for i in report.info)

    def test_report_renders(self, filled: Archive) -> None:
        rec = filled.root / RUNBOOK / "run-3"
        _writable(rec)
        (rec / "x").write_text("x")
        report = filled.verify()
        text = str(report)
        assert text.startswith("FAILED") and "unexpected_file" in text
        assert report.to_dict()["problems"][0]["record"] == "run-3"


# ------------------------------------------------------------------------------------------ history


class TestHistory:
    @pytest.fixture
    def mixed(self, tmp_path: Path, archive: Archive) -> Archive:
        src = _source(tmp_path)
        rows = [("a1", RUNBOOK, "succeeded", "2024-05-01T10:00:00+00:00"),
                ("a2", "centralized-logging", "failed", "2024-05-02T10:00:00+00:00"),
                ("a3", RUNBOOK, "failed", "2024-05-03T10:00:00+00:00"),
                ("a4", RUNBOOK, "aborted", "2024-05-04T10:00:00Z"),
                ("a5", "centralized-logging", "succeeded", "2024-05-05T10:00:00+02:00")]
        for run_id, rb, status, started in rows:
            archive.record(runbook_id=rb, run_id=run_id, source_dir=src,
                           manifest=_manifest(run_id, status=status, started=started))
        return archive

    def test_all_newest_last(self, mixed: Archive) -> None:
        assert [e.run_id for e in mixed.history()] == ["a1", "a2", "a3", "a4", "a5"]

    def test_filters(self, mixed: Archive) -> None:
        assert [e.run_id for e in mixed.history(runbook=RUNBOOK)] == ["a1", "a3", "a4"]
        assert [e.run_id for e in mixed.history(status="failed")] == ["a2", "a3"]
        assert [e.run_id for e in mixed.history(runbook=RUNBOOK, status="failed")] == ["a3"]
        since = datetime(2024, 5, 3, tzinfo=UTC)
        assert [e.run_id for e in mixed.history(since=since)] == ["a3", "a4", "a5"]
        assert [e.run_id for e in mixed.history(since=datetime(2024, 5, 3))] == ["a3", "a4", "a5"]  # naive=UTC
        assert [e.run_id for e in mixed.history(limit=2)] == ["a4", "a5"]
        assert mixed.history(limit=0) == []
        assert [e.run_id for e in mixed.history(runbook=RUNBOOK, limit=1)] == ["a4"]

    def test_entries_are_ledger_entries(self, mixed: Archive) -> None:
        e = mixed.history()[-1]
        assert isinstance(e, LedgerEntry)
        assert e.started_at == datetime(2024, 5, 5, 8, 0, tzinfo=UTC)
        with pytest.raises(AttributeError):
            e.status = "x"  # type: ignore[misc]


# ------------------------------------------------------------------------------------------ concurrency


def _writer(root: str, src: str, run_id: str, start: object) -> None:
    start.wait(60)  # type: ignore[attr-defined]
    Archive(root).record(runbook_id=RUNBOOK if run_id[-1] in "02468" else "centralized-logging",
                         run_id=run_id, source_dir=Path(src), manifest=_manifest(run_id))


def test_concurrent_writers_keep_the_chain(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    src = _source(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(str(root), str(src), f"c{i:02d}", start)) for i in range(20)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 20

    a = Archive(root)
    entries = a.history()
    assert [e.seq for e in entries] == list(range(1, 21))
    assert sorted(e.run_id for e in entries) == [f"c{i:02d}" for i in range(20)]
    prev = GENESIS
    for e in entries:
        assert e.prev == prev and e.hash == e.compute_hash()
        prev = e.hash
    report = a.verify()
    assert report.ok, report
    assert report.records == 20 and report.head == entries[-1].hash
