"""`opsbook.records.s3` against a real S3 API (the `s3` fixture: SeaweedFS): records written once,
concurrent ledger appends (threads and processes), every verify problem kind after tampering with the
raw boto3 client, history, evidence and approval over S3, Object Lock retention, S3 down, refused
credentials, the local fallback, and the real `opsbook` CLI end to end with `--outputs s3://...`.

Every test works under its own prefix of the fixture's bucket.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from opsbook import runner
from opsbook.clients.s3 import S3
from opsbook.errors import (
    ArchiveError,
    ClientError,
    Forbidden,
    LedgerError,
    RecordExists,
    Unreachable,
    UsageError,
)
from opsbook.records import bundle as incident_bundle
from opsbook.records.archive import open_archive
from opsbook.records.ledger import GENESIS, LedgerEntry, canonical_json
from opsbook.records.s3 import RecordNotUploaded, Retention, S3Archive, S3Path, S3RecordRef, parse_s3_url

from ..conftest import FIXTURE_NOTEBOOKS, FIXTURE_SECRET, OPSBOOK
from .test_archive import _manifest, _source

RB = "deploy-new-model"
ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------ helpers


def _client(s3, **kw) -> S3:
    return S3(endpoint_url=s3.endpoint_url, access_key=kw.get("access_key", s3.access_key),
              secret_key=kw.get("secret_key", s3.secret_key), max_pool_connections=40)


def _kinds(report, kind: str) -> list:
    return [p for p in report.problems if p.kind == kind]


@pytest.fixture
def url(s3, request) -> str:
    name = re.sub(r"[^A-Za-z0-9-]+", "-", request.node.name).strip("-")[:60]
    return f"s3://{s3.bucket}/t/{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def archive(s3, url, tmp_path) -> S3Archive:
    a = S3Archive(url, s3=_client(s3), fallback_dir=tmp_path / "fallback", workers=16)
    yield a
    a.close()


@pytest.fixture
def raw(s3):
    """The raw boto3 client: what an attacker (or a careless admin) with the bucket's keys can do."""
    return s3.client()


@pytest.fixture
def filled(archive: S3Archive, tmp_path: Path) -> S3Archive:
    src = _source(tmp_path)
    for i in range(4):
        archive.record(runbook_id=RB, run_id=f"run-{i}", source_dir=src, manifest=_manifest(f"run-{i}"))
    return archive


def _key(a: S3Archive, rel: str) -> str:
    return f"{a.prefix}/{rel}"


def _ledger_key(a: S3Archive, seq: int) -> str:
    return _key(a, f"ledger/{seq:012d}.json")


def _get(raw, a: S3Archive, rel: str) -> bytes:
    return raw.get_object(Bucket=a.bucket, Key=_key(a, rel))["Body"].read()


def _put(raw, a: S3Archive, rel: str, body: bytes) -> None:
    raw.put_object(Bucket=a.bucket, Key=_key(a, rel), Body=body)


def _delete(raw, a: S3Archive, rel: str) -> None:
    raw.delete_object(Bucket=a.bucket, Key=_key(a, rel))


def _keys(s3, a: S3Archive, rel: str = "") -> list[str]:
    return [k[len(a.prefix) + 1:] for k in s3.list_keys(_key(a, rel), bucket=a.bucket)]


def _dead_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there once the socket is closed


# ------------------------------------------------------------------------------------------ basics


class TestUrlAndOptions:
    def test_parse_url(self) -> None:
        assert parse_s3_url("s3://opsbook/team/a/") == ("opsbook", "team/a")
        assert parse_s3_url("s3://opsbook") == ("opsbook", "")
        for bad in ("s3://", "s3://UPPER/x", "s3://ok-bucket/a/../b", "/tmp/x"):
            with pytest.raises(UsageError):
                parse_s3_url(bad)

    def test_retention_parse(self) -> None:
        assert Retention.parse("governance:365") == Retention("GOVERNANCE", 365)
        assert str(Retention.parse("COMPLIANCE:7")) == "COMPLIANCE:7"
        for bad in ("GOVERNANCE", "LEGAL:3", "GOVERNANCE:0", "GOVERNANCE:x", "COMPLIANCE:99999"):
            with pytest.raises(UsageError):
                Retention.parse(bad)

    def test_open_archive_picks_s3_from_argument_and_env(self, s3, monkeypatch, tmp_path) -> None:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint_url)
        a = open_archive(f"s3://{s3.bucket}/x/y")
        assert isinstance(a, S3Archive) and a.root == f"s3://{s3.bucket}/x/y"
        assert a.s3.endpoint_url == s3.endpoint_url
        monkeypatch.setenv("OPSBOOK_OUTPUTS", f"s3://{s3.bucket}/from-env")
        assert open_archive().root == f"s3://{s3.bucket}/from-env"
        monkeypatch.setenv("OPSBOOK_S3_RETENTION", "COMPLIANCE:30")
        assert open_archive().retention == Retention("COMPLIANCE", 30)
        with pytest.raises(UsageError, match="S3 archive"):
            open_archive(str(tmp_path / "disk"), retention="GOVERNANCE:1")


class TestRecord:
    def test_round_trip(self, s3, archive: S3Archive, tmp_path: Path) -> None:
        src = _source(tmp_path)
        ref = archive.record(runbook_id=RB, run_id="r1", source_dir=src, manifest=_manifest("r1"))
        assert isinstance(ref, S3RecordRef) and str(ref.path) == f"{archive.root}/records/{RB}/r1"
        assert ref.entry is not None and ref.entry.seq == 1 and ref.entry.prev == GENESIS
        assert sorted(_keys(s3, archive)) == sorted([
            "ledger/000000000001.json", "ledger/HEAD", "runs/r1", f"records/{RB}/r1/manifest.json",
            f"records/{RB}/r1/notebook.ipynb", f"records/{RB}/r1/notebook.html",
            f"records/{RB}/r1/evidence/pods.json"])
        # the ledger object is exactly the line the on-disk ledger would hold
        line = s3.client().get_object(Bucket=archive.bucket, Key=_ledger_key(archive, 1))["Body"].read()
        assert line == ref.entry.to_line() and line == canonical_json(json.loads(line)) + b"\n"
        m = archive.load_manifest("r1")
        pods = b'{"ready": 3}'
        assert m["files"]["evidence/pods.json"] == hashlib.sha256(pods).hexdigest()
        assert m["s3_objects"]["evidence/pods.json"] == {"etag": hashlib.md5(pods).hexdigest(), "size": len(pods)}
        assert m["runbook_id"] == RB and m["record_format"] == 1
        mbytes = (ref.path / "manifest.json").read_bytes()
        assert hashlib.sha256(mbytes).hexdigest() == ref.entry.manifest_sha256
        found = archive.find("r1")
        assert found is not None and found.path == ref.path and found.record == f"{RB}/r1"
        assert archive.find("nope") is None and archive.find("../x") is None
        assert (ref.path / "evidence/pods.json").read_bytes() == pods
        assert (ref.path / "evidence/pods.json").is_file() and not (ref.path / "evidence/x").is_file()
        with pytest.raises(FileNotFoundError):
            (ref.path / "absent.txt").read_bytes()
        assert set(ref.path.read_tree()) == {"manifest.json", "notebook.ipynb", "notebook.html", "evidence/pods.json"}
        for deep in (False, True):
            report = archive.verify(deep=deep)
            assert report.ok, report
            assert report.records == 1 and report.head == archive.head() == ref.entry.hash
        assert [e.run_id for e in archive.entries()] == ["r1"]

    def test_chain_links_records(self, filled: S3Archive) -> None:
        es = filled.entries()
        assert [e.seq for e in es] == [1, 2, 3, 4]
        assert es[0].prev == GENESIS and all(b.prev == a.hash for a, b in zip(es, es[1:], strict=False))
        assert all(e.compute_hash() == e.hash for e in es)
        assert filled.head() == es[-1].hash

    def test_existing_run_id_is_refused_and_nothing_written(self, s3, filled: S3Archive, tmp_path: Path) -> None:
        before = sorted(_keys(s3, filled))
        for rb in (RB, "other-runbook"):  # under any runbook, as on disk
            with pytest.raises(RecordExists, match="run-1"):
                filled.record(runbook_id=rb, run_id="run-1", source_dir=_source(tmp_path, f"s-{rb}", tag="new"),
                              manifest=_manifest("run-1"))
        assert sorted(_keys(s3, filled)) == before
        assert not (tmp_path / "fallback").exists()  # a refused id is not a failed upload
        assert filled.verify().ok

    def test_existing_object_at_a_record_key_is_never_overwritten(self, s3, raw, archive: S3Archive,
                                                                  tmp_path: Path) -> None:
        _put(raw, archive, f"records/{RB}/r9/notebook.html", b"planted before the run")
        with pytest.raises(RecordNotUploaded, match="already exists") as exc:
            archive.record(runbook_id=RB, run_id="r9", source_dir=_source(tmp_path), manifest=_manifest("r9"))
        assert isinstance(exc.value.__cause__, RecordExists)
        assert _get(raw, archive, f"records/{RB}/r9/notebook.html") == b"planted before the run"
        assert archive.entries() == []  # not chained
        kept = exc.value.fallback
        assert kept is not None and (kept / "files" / "notebook.html").read_text() == "<html><body>run </body></html>"
        assert json.loads((kept / "pending.json").read_text())["run_id"] == "r9"
        archive.append_timeout = 0  # its claim is past the in-flight window (else: "being written", info)
        report = archive.verify()
        assert report.kinds() == {"not_in_ledger"}

    def test_invalid_input_is_refused_before_anything_is_written(self, s3, archive: S3Archive, tmp_path) -> None:
        src = _source(tmp_path)
        with pytest.raises(ArchiveError, match="invalid run id"):
            archive.record(runbook_id=RB, run_id="../x", source_dir=src, manifest={})
        (src / "manifest.json").write_text("{}")
        with pytest.raises(ArchiveError, match="reserved"):
            archive.record(runbook_id=RB, run_id="r1", source_dir=src, manifest={})
        (src / "manifest.json").unlink()
        with pytest.raises(ArchiveError, match="does not match"):
            archive.record(runbook_id=RB, run_id="r1", source_dir=src, manifest={"run_id": "other"})
        assert _keys(s3, archive) == []

    def test_history_filters(self, archive: S3Archive, tmp_path: Path) -> None:
        src = _source(tmp_path)
        plan = [("a", RB, "succeeded", "2024-05-01T10:00:00+00:00"), ("b", RB, "failed", "2024-05-03T10:00:00+00:00"),
                ("c", "other", "failed", "2024-05-05T10:00:00+00:00"), ("d", RB, "aborted", "2024-05-07T10:00:00Z")]
        for run_id, rb, status, started in plan:
            archive.record(runbook_id=rb, run_id=run_id, source_dir=src,
                           manifest=_manifest(run_id, status=status, started=started))
        ids = lambda es: [e.run_id for e in es]  # noqa: E731
        assert ids(archive.history()) == ["a", "b", "c", "d"]
        assert ids(archive.history(runbook=RB)) == ["a", "b", "d"]
        assert ids(archive.history(status="failed")) == ["b", "c"]
        assert ids(archive.history(since=datetime(2024, 5, 4, tzinfo=UTC))) == ["c", "d"]
        assert ids(archive.history(limit=2)) == ["c", "d"] and archive.history(limit=0) == []
        assert ids(archive.history(runbook=RB, status="failed", since=datetime(2024, 5, 2))) == ["b"]


# ------------------------------------------------------------------------------------------ concurrency


class TestConcurrentAppends:
    def test_twenty_threads_no_lost_append(self, s3, url: str, tmp_path: Path) -> None:
        src = _source(tmp_path)
        barrier = threading.Barrier(20)
        results: dict[int, object] = {}

        def writer(i: int) -> None:
            a = S3Archive(url, s3=_client(s3), workers=4, fallback_dir=tmp_path / "fb")  # own client, own pool
            barrier.wait()
            try:
                ref = a.record(runbook_id=RB, run_id=f"t-{i:02d}", source_dir=src, manifest=_manifest(f"t-{i:02d}"))
                results[i] = (ref.entry.seq, a.last_append.attempts)
            except Exception as exc:  # noqa: BLE001 - reported below
                results[i] = exc
            finally:
                a.close()

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
        errors = {i: r for i, r in results.items() if isinstance(r, Exception)}
        assert not errors, errors
        seqs = sorted(r[0] for r in results.values())  # type: ignore[index]
        assert seqs == list(range(1, 21))
        a = S3Archive(url, s3=_client(s3))
        assert sorted(e.run_id for e in a.entries()) == [f"t-{i:02d}" for i in range(20)]
        report = a.verify()
        assert report.ok, report
        assert report.records == 20
        # they did collide: more PUT attempts than entries (otherwise this test proved nothing)
        assert sum(r[1] for r in results.values()) > 20  # type: ignore[index]

    def test_twenty_processes_no_lost_append(self, s3, url: str, tmp_path: Path) -> None:
        src = _source(tmp_path)
        script = (
            "import json, os, sys, time\n"
            "from opsbook.clients.s3 import S3\n"
            "from opsbook.records.s3 import S3Archive\n"
            "url, endpoint, n, start, src = sys.argv[1:6]\n"
            "a = S3Archive(url, s3=S3(endpoint_url=endpoint, access_key=os.environ['AWS_ACCESS_KEY_ID'], "
            "secret_key=os.environ['AWS_SECRET_ACCESS_KEY']), workers=4)\n"
            "a.s3.bucket_exists(a.bucket)\n"  # warm up the client before the start line
            "time.sleep(max(0.0, float(start) - time.time()))\n"
            "ref = a.record(runbook_id='deploy-new-model', run_id=f'p-{n}', source_dir=src,\n"
            "               manifest={'status': 'succeeded', 'operator': f'proc-{n}'})\n"
            "print(json.dumps({'seq': ref.entry.seq, 'attempts': a.last_append.attempts}))\n"
        )
        env = {**os.environ, **s3.env()}
        start = time.time() + 8  # every process imported and waiting before the first PUT
        procs = [subprocess.Popen([sys.executable, "-c", script, url, s3.endpoint_url, f"{i:02d}", str(start),
                                   str(src)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for i in range(20)]
        outs = [p.communicate(timeout=240) for p in procs]
        for p, (_out, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err[-2000:]
        results = [json.loads(out) for out, _ in outs]
        assert sorted(r["seq"] for r in results) == list(range(1, 21))
        a = S3Archive(url, s3=_client(s3))
        assert sorted(e.run_id for e in a.entries()) == [f"p-{i:02d}" for i in range(20)]
        report = a.verify()
        assert report.ok and report.records == 20, report

    def test_a_stale_or_forged_head_hint_is_not_trusted(self, raw, filled: S3Archive, tmp_path: Path) -> None:
        src = _source(tmp_path, "more")
        for seq in (1, 99):  # behind the tail, and past the end of the ledger
            _put(raw, filled, "ledger/HEAD", json.dumps({"seq": seq, "hash": "0" * 64}).encode())
            n = len(filled.entries())
            ref = filled.record(runbook_id=RB, run_id=f"h-{seq}", source_dir=src, manifest=_manifest(f"h-{seq}"))
            assert ref.entry.seq == n + 1
        _put(raw, filled, "ledger/HEAD", b"not json")
        filled.record(runbook_id=RB, run_id="h-x", source_dir=src, manifest=_manifest("h-x"))
        assert [e.seq for e in filled.entries()] == list(range(1, 8))
        assert filled.verify().ok

    def test_append_gives_up_after_its_timeout(self, s3, raw, filled: S3Archive, tmp_path: Path,
                                               monkeypatch) -> None:
        """A writer that keeps losing gives up (bounded), with LedgerError, and keeps the record."""
        a = S3Archive(filled.root, s3=_client(s3), fallback_dir=tmp_path / "fb", append_timeout=0.3)
        real = a._tail
        monkeypatch.setattr(a, "_tail", lambda: (real()[0] - 1, GENESIS))  # always one behind: always 412
        with pytest.raises(RecordNotUploaded, match="could not append") as exc:
            a.record(runbook_id=RB, run_id="late", source_dir=_source(tmp_path, "l"), manifest=_manifest("late"))
        assert isinstance(exc.value.__cause__, LedgerError)
        assert exc.value.fallback is not None and (exc.value.fallback / "pending.json").is_file()
        assert [e.seq for e in filled.entries()] == [1, 2, 3, 4]


# ------------------------------------------------------------------------------------------ verify


class TestVerifyDetects:
    def test_modified_file(self, raw, filled: S3Archive) -> None:
        _put(raw, filled, f"records/{RB}/run-1/notebook.html", b"<html><body>run X</body></html>")  # same size
        for deep in (False, True):
            report = filled.verify(deep=deep)
            (p,) = _kinds(report, "modified")
            assert p.record == "run-1" and p.file == "notebook.html" and not report.ok
            assert ("sha256" if deep else "ETag") in p.detail

    def test_missing_file(self, raw, filled: S3Archive) -> None:
        _delete(raw, filled, f"records/{RB}/run-2/evidence/pods.json")
        (p,) = filled.verify().problems
        assert (p.kind, p.record, p.file) == ("missing_file", "run-2", "evidence/pods.json")

    def test_unexpected_file(self, raw, filled: S3Archive) -> None:
        _put(raw, filled, f"records/{RB}/run-0/evidence/extra.txt", b"x")
        _put(raw, filled, f"records/{RB}/stray.txt", b"x")
        report = filled.verify()
        assert report.kinds() == {"unexpected_file"}
        assert {p.file for p in report.problems} == {"evidence/extra.txt", f"{RB}/stray.txt"}

    def test_removed_record(self, s3, raw, filled: S3Archive) -> None:
        for rel in _keys(s3, filled, f"records/{RB}/run-3/"):
            _delete(raw, filled, rel)
        (p,) = filled.verify().problems
        assert (p.kind, p.record) == ("removed", "run-3")

    def test_manifest_modified(self, raw, filled: S3Archive) -> None:
        rel = f"records/{RB}/run-0/manifest.json"
        doc = json.loads(_get(raw, filled, rel))
        doc["status"] = "failed"
        _put(raw, filled, rel, json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n")
        (p,) = filled.verify().problems
        assert (p.kind, p.record, p.file) == ("manifest_modified", "run-0", "manifest.json")

    def test_file_and_manifest_rewritten_together_is_still_caught(self, raw, filled: S3Archive) -> None:
        """An attacker who replaces a file and updates its sha256 and ETag in the manifest."""
        new = b"<html>forged</html>"
        _put(raw, filled, f"records/{RB}/run-1/notebook.html", new)
        rel = f"records/{RB}/run-1/manifest.json"
        doc = json.loads(_get(raw, filled, rel))
        doc["files"]["notebook.html"] = hashlib.sha256(new).hexdigest()
        doc["s3_objects"]["notebook.html"] = {"etag": hashlib.md5(new).hexdigest(), "size": len(new)}
        _put(raw, filled, rel, json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n")
        assert filled.verify().kinds() == {"manifest_modified"}

    def test_ledger_entry_edited_without_rehash(self, raw, filled: S3Archive) -> None:
        obj = json.loads(_get(raw, filled, "ledger/000000000002.json"))
        obj["operator"] = "mallory"
        _put(raw, filled, "ledger/000000000002.json", canonical_json(obj) + b"\n")
        (p,) = filled.verify().problems
        assert (p.kind, p.record) == ("ledger_edited", "run-1")

    def test_ledger_entry_edited_and_rehashed(self, raw, filled: S3Archive) -> None:
        obj = json.loads(_get(raw, filled, "ledger/000000000002.json"))
        obj["status"] = "failed"
        body = {k: v for k, v in obj.items() if k != "hash"}
        obj["hash"] = hashlib.sha256(canonical_json(body)).hexdigest()
        _put(raw, filled, "ledger/000000000002.json", canonical_json(obj) + b"\n")
        assert "ledger_edited" in filled.verify().kinds()

    def test_reordered_entries(self, raw, filled: S3Archive) -> None:
        two, three = _get(raw, filled, "ledger/000000000002.json"), _get(raw, filled, "ledger/000000000003.json")
        _put(raw, filled, "ledger/000000000002.json", three)
        _put(raw, filled, "ledger/000000000003.json", two)
        report = filled.verify()
        assert report.kinds() == {"reordered"} and {p.record for p in report.problems} == {"run-1", "run-2"}

    def test_entry_deleted_from_the_middle(self, raw, filled: S3Archive) -> None:
        _delete(raw, filled, "ledger/000000000002.json")
        filled.append_timeout = 0  # the records' claims are past the in-flight window (else "being written")
        report = filled.verify()
        assert "reordered" in report.kinds() and "not_in_ledger" in report.kinds()
        assert any("missing" in p.detail for p in _kinds(report, "reordered"))

    def test_not_in_ledger(self, raw, filled: S3Archive) -> None:
        _put(raw, filled, f"records/{RB}/sneaky/notebook.ipynb", b"{}")
        (p,) = filled.verify().problems
        assert (p.kind, p.record) == ("not_in_ledger", "sneaky") and "no manifest.json" in p.detail

    def test_truncated_with_expect_head(self, raw, filled: S3Archive) -> None:
        old_head = filled.head()
        _delete(raw, filled, "ledger/000000000004.json")
        _delete(raw, filled, "ledger/HEAD")
        filled.append_timeout = 0  # run-3's claim is past the in-flight window (else "being written", info)
        assert filled.verify().kinds() == {"not_in_ledger"}  # run-3's record is now unchained
        report = filled.verify(expect_head=old_head)
        assert "truncated" in report.kinds() and report.head != old_head
        # an older head that is still in the chain is fine: the ledger grew since
        grown = filled.verify(expect_head=filled.entries()[1].hash)
        assert "truncated" not in grown.kinds() and any("grew" in i for i in grown.info)

    def test_unparseable_ledger_entry_and_manifest(self, raw, filled: S3Archive) -> None:
        _put(raw, filled, "ledger/000000000002.json", b"{not json\n")
        _put(raw, filled, f"records/{RB}/run-3/manifest.json", b"[]")
        report = filled.verify()
        assert {p.record for p in _kinds(report, "unparseable")} >= {"ledger/000000000002.json", "run-3"}
        with pytest.raises(LedgerError, match="000000000002"):
            filled.entries()

    def test_broken_tail_blocks_appends_with_a_clear_error(self, raw, filled: S3Archive, tmp_path) -> None:
        _put(raw, filled, "ledger/000000000004.json", b"garbage\n")
        with pytest.raises(RecordNotUploaded, match="cannot be parsed"):
            filled.record(runbook_id=RB, run_id="after", source_dir=_source(tmp_path, "a"),
                          manifest=_manifest("after"))

    def test_check_approval_refuses_a_tampered_plan_over_s3(self, raw, archive: S3Archive, tmp_path,
                                                            monkeypatch) -> None:
        from opsbook.errors import ApprovalError, PlanConsumed

        monkeypatch.setenv("OPSBOOK_FIXTURE_SECRET", FIXTURE_SECRET)
        prep = runner.prepare("highrisk", {}, notebooks=FIXTURE_NOTEBOOKS, archive=archive)
        plan = runner.execute(prep, archive=archive)  # a real plan run, recorded in S3
        assert plan.status == "succeeded"
        apply = {**prep.params, "mode": "apply"}
        approval = runner.check_approval(archive, prep.runbook, apply, plan.run_id, approver="bob")
        assert approval["plan_run_id"] == plan.run_id and approval["approver"] == "bob"
        with pytest.raises(ApprovalError, match="no such plan record"):
            runner.check_approval(archive, prep.runbook, apply, "plan-404", approver="bob")
        # consumed once: the write-ahead entry of the first apply, then nobody else's
        archive.start_run(runbook_id="highrisk", run_id="apply-1", plan=plan.run_id, fields={"mode": "apply"})
        assert runner.check_approval(archive, prep.runbook, apply, plan.run_id, approver="bob", run_id="apply-1")
        with pytest.raises(PlanConsumed, match="already carried out by apply run apply-1"):
            runner.check_approval(archive, prep.runbook, apply, plan.run_id, approver="bob")
        with pytest.raises(PlanConsumed, match="apply-1"):
            archive.start_run(runbook_id="highrisk", run_id="apply-2", plan=plan.run_id, fields={"mode": "apply"})
        report = archive.verify()
        assert report.ok and any("started, never finished: run apply-1" in i for i in report.info)
        assert [e.run_id for e in archive.history(status="started")] == ["apply-1"]
        _put(raw, archive, f"records/highrisk/{plan.run_id}/notebook.html", b"tampered")
        with pytest.raises(ApprovalError, match="does not verify"):
            runner.check_approval(archive, prep.runbook, apply, plan.run_id, approver="bob", run_id="apply-1")

    def test_signed_entries_over_s3(self, s3, url, tmp_path) -> None:
        import subprocess as sp

        from opsbook import signing

        sp.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
        key = signing.Signer.load(tmp_path / "k")
        (tmp_path / "allowed").write_text(f"ci {key.public_line()}\n")
        trusted = signing.AllowedSigners.load(tmp_path / "allowed")
        signed = S3Archive(url, s3=_client(s3), signer=key)
        signed.record(runbook_id=RB, run_id="s1", source_dir=_source(tmp_path, "a"), manifest=_manifest("s1"))
        signed.start_run(runbook_id=RB, run_id="s2", fields={"mode": "apply"})
        assert signed.verify(signers=trusted).ok
        S3Archive(url, s3=_client(s3), signer=None).record(runbook_id=RB, run_id="u3", source_dir=_source(tmp_path, "b"),
                                                           manifest=_manifest("u3"))
        report = signed.verify(signers=trusted)
        assert [(p.kind, p.record) for p in report.problems] == [("unsigned", "u3")]


class TestPacks:
    """Every pack_size-th append writes a pack; verify reads entries and manifests from it only where
    the pack holds the object's exact bytes (MD5 = listed ETag)."""

    @pytest.fixture
    def packed(self, archive: S3Archive, tmp_path: Path) -> S3Archive:
        archive.pack_size = 3
        src = _source(tmp_path)
        for i in range(7):
            archive.record(runbook_id=RB, run_id=f"run-{i}", source_dir=src, manifest=_manifest(f"run-{i}"))
        return archive

    def test_packs_are_written_and_used(self, s3, packed: S3Archive) -> None:
        assert _keys(s3, packed, "packs/") == ["packs/000000000003.json", "packs/000000000006.json"]
        report = packed.verify()
        assert report.ok, report
        assert any(i.startswith("12 of 14 ledger entries and manifests were read from packs") for i in report.info)
        assert [e.seq for e in packed.entries()] == list(range(1, 8))

    def test_tampering_behind_a_pack_is_still_detected(self, raw, packed: S3Archive) -> None:
        obj = json.loads(_get(raw, packed, "ledger/000000000002.json"))
        obj["operator"] = "mallory"
        _put(raw, packed, "ledger/000000000002.json", canonical_json(obj) + b"\n")
        rel = f"records/{RB}/run-4/manifest.json"
        _put(raw, packed, rel, _get(raw, packed, rel).replace(b'"alice"', b'"mallory"'))
        report = packed.verify()
        assert report.kinds() == {"ledger_edited", "manifest_modified"}
        assert {p.record for p in report.problems} == {"run-1", "run-4"}
        assert any(i.startswith("10 of 14") for i in report.info)
        assert [e.operator for e in packed.entries()][1] == "mallory"  # entries() reads the object, not the pack

    def test_a_forged_pack_is_not_believed(self, raw, packed: S3Archive) -> None:
        """Tamper with an entry AND put the tampered line into the pack: the pack's line then matches the
        object, so verify checks the tampered bytes and the chain catches them."""
        obj = json.loads(_get(raw, packed, "ledger/000000000002.json"))
        obj["status"] = "failed"
        bad = canonical_json(obj)
        _put(raw, packed, "ledger/000000000002.json", bad + b"\n")
        pack = json.loads(_get(raw, packed, "packs/000000000003.json"))
        pack["lines"][1] = bad.decode()
        _put(raw, packed, "packs/000000000003.json", canonical_json(pack))
        assert packed.verify().kinds() == {"ledger_edited"}
        _put(raw, packed, "packs/000000000006.json", b"garbage")  # an unreadable pack is ignored
        assert packed.verify().kinds() == {"ledger_edited"}

    def test_deep_ignores_packs(self, packed: S3Archive) -> None:
        report = packed.verify(deep=True)
        assert report.ok and not any("packs" in i for i in report.info)


# ------------------------------------------------------------------------------------------ evidence


def test_incident_evidence_bundle_from_s3(archive: S3Archive, tmp_path: Path) -> None:
    for run_id, inc, started in (("i-b", "INC-7", "2026-01-02T10:00:00Z"), ("i-x", "INC-8", "2026-01-02T09:00:00Z"),
                                 ("i-a", "INC-7", "2026-01-02T08:00:00Z")):
        src = _source(tmp_path, f"src-{run_id}")
        (src / "evidence" / "pods.json").write_text(json.dumps({"run": run_id}))
        archive.record(runbook_id="security-incident-response", run_id=run_id, source_dir=src,
                       manifest={"parameters": {"incident_id": inc}, "started": started, "status": "succeeded",
                                 "mode": "plan", "evidence": [{"name": "pods.json", "description": "pods"}]})
    runs = incident_bundle.incident_runs(archive, "INC-7")
    assert [r.run_id for r in runs] == ["i-a", "i-b"] and isinstance(runs[0].path, S3Path)
    info = incident_bundle.export(archive, "INC-7", tmp_path / "INC-7.tar.gz")
    assert info.runs == ["i-a", "i-b"]
    report = incident_bundle.verify_bundle(tmp_path / "INC-7.tar.gz")
    assert report.ok, report
    assert report.head == archive.head()  # the segment ends at the archive's head (i-a is the last entry)


# ------------------------------------------------------------------------------------------ failures


class TestFailures:
    def test_s3_down_is_a_clear_client_error(self, s3, tmp_path: Path) -> None:
        dead = S3Archive(f"s3://{s3.bucket}/x", s3=S3(endpoint_url=_dead_endpoint(), access_key="a", secret_key="b",
                                                      connect_timeout=1), fallback_dir=tmp_path / "fb")
        t0 = time.monotonic()
        for call in (dead.history, dead.verify, dead.head, dead.check_writable):
            with pytest.raises(Unreachable, match="cannot connect"):
                call()
        assert time.monotonic() - t0 < 30

    def test_upload_failure_keeps_the_record_locally_and_it_can_be_uploaded_later(
            self, s3, archive: S3Archive, tmp_path: Path) -> None:
        dead = S3Archive(archive.root, s3=S3(endpoint_url=_dead_endpoint(), access_key=s3.access_key,
                                             secret_key=s3.secret_key, connect_timeout=1),
                         fallback_dir=tmp_path / "fb")
        with pytest.raises(RecordNotUploaded, match=r"kept in .*fb") as exc:
            dead.record(runbook_id=RB, run_id="offline", source_dir=_source(tmp_path), manifest=_manifest("offline"))
        kept = exc.value.fallback
        assert isinstance(exc.value.__cause__, Unreachable)
        assert sorted(p.relative_to(kept).as_posix() for p in kept.rglob("*") if p.is_file()) == [
            "files/evidence/pods.json", "files/notebook.html", "files/notebook.ipynb", "pending.json"]
        ref = archive.upload_pending(kept)
        assert ref.entry is not None and ref.entry.run_id == "offline" and not kept.exists()
        assert archive.verify(deep=True).ok

    def test_upload_pending_resumes_a_half_written_record(self, s3, raw, archive: S3Archive, tmp_path) -> None:
        """The store goes away after the claim and some files: the retry recognises its own objects
        (the claim's token, the files' MD5) and finishes the record; a forged token gets nothing."""

        class FailsOnThirdPut(S3):  # fault injection in the client, not in the archive under test
            calls = 0

            def put_if_absent(self, *a, **k):  # type: ignore[override]
                type(self).calls += 1
                if type(self).calls == 3:
                    raise Unreachable("injected: the store went away")
                return super().put_if_absent(*a, **k)

        flaky = S3Archive(archive.root, s3=FailsOnThirdPut(endpoint_url=s3.endpoint_url, access_key=s3.access_key,
                                                           secret_key=s3.secret_key),
                          fallback_dir=tmp_path / "fb", workers=1)
        with pytest.raises(RecordNotUploaded, match="injected") as exc:
            flaky.record(runbook_id=RB, run_id="half", source_dir=_source(tmp_path), manifest=_manifest("half"))
        written = _keys(s3, archive)
        assert "runs/half" in written and any(k.startswith(f"records/{RB}/half/") for k in written)
        assert archive.entries() == []
        with pytest.raises(RecordExists):  # a plain record() of the same id is refused: the id is claimed
            archive.record(runbook_id=RB, run_id="half", source_dir=_source(tmp_path, "again"),
                           manifest=_manifest("half"))
        kept = exc.value.fallback
        forged = tmp_path / "forged"
        import shutil

        shutil.copytree(kept, forged)
        ref = archive.upload_pending(kept)
        assert ref.entry is not None and [e.run_id for e in archive.entries()] == ["half"]
        assert archive.verify(deep=True).ok
        pending = json.loads((forged / "pending.json").read_text())
        (forged / "pending.json").write_text(json.dumps({**pending, "token": "0" * 32}))
        with pytest.raises(RecordExists):
            archive.upload_pending(forged)

    def test_wrong_credentials_are_forbidden_without_the_secret(self, s3, url: str) -> None:
        secret = "wrong-secret-Zq8vXk2LmN0pQrS"
        bad = S3Archive(url, s3=S3(endpoint_url=s3.endpoint_url, access_key=s3.access_key, secret_key=secret))
        with pytest.raises(Forbidden, match="rejected the credentials") as exc:
            bad.history()
        assert secret not in str(exc.value) and s3.secret_key not in str(exc.value)
        with pytest.raises(Forbidden):
            bad.check_writable()

    def test_runner_keeps_the_record_locally_when_s3_fails(self, s3, tmp_path: Path, monkeypatch) -> None:
        monkeypatch.setenv("OPSBOOK_FIXTURE_SECRET", FIXTURE_SECRET)
        dead = S3Archive(f"s3://{s3.bucket}/runner", s3=S3(endpoint_url=_dead_endpoint(), access_key="a",
                                                            secret_key="b", connect_timeout=1),
                         fallback_dir=tmp_path / "fb")
        prep = runner.prepare("trivial", {}, notebooks=FIXTURE_NOTEBOOKS)  # no archive: not checked up front
        with pytest.raises(RecordNotUploaded) as exc:
            runner.execute(prep, archive=dead)
        kept = exc.value.fallback
        pending = json.loads((kept / "pending.json").read_text())
        assert pending["manifest"]["status"] == "succeeded" and pending["runbook_id"] == "trivial"
        assert (kept / "files" / "notebook.ipynb").is_file() and (kept / "files" / "notebook.html").is_file()
        assert str(kept) in str(exc.value)


# ------------------------------------------------------------------------------------------ Object Lock


@pytest.fixture(scope="module")
def locked_bucket(s3) -> str:
    """A second bucket, created with Object Lock enabled (which also turns versioning on)."""
    name = f"opsbook-locked-{uuid.uuid4().hex[:8]}"
    s3.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


class TestObjectLock:
    """SeaweedFS 4.x supports Object Lock: a bucket created with ObjectLockEnabledForBucket=True."""

    def test_every_record_object_gets_the_retention(self, s3, locked_bucket: str, tmp_path: Path) -> None:
        a = S3Archive(f"s3://{locked_bucket}/locked", s3=_client(s3), retention="GOVERNANCE:2")
        a.check_writable()
        t0 = datetime.now(UTC)
        a.record(runbook_id=RB, run_id="L1", source_dir=_source(tmp_path), manifest=_manifest("L1"))
        client = s3.client()
        keys = s3.list_keys("locked/", bucket=locked_bucket)
        locked = [k for k in keys if not k.endswith("/HEAD")]
        assert len(locked) == 6  # 3 files + manifest + claim + ledger entry
        for key in locked:
            h = client.head_object(Bucket=locked_bucket, Key=key)
            assert h["ObjectLockMode"] == "GOVERNANCE", key
            until = h["ObjectLockRetainUntilDate"]
            assert t0 + timedelta(days=2) - timedelta(minutes=5) <= until <= datetime.now(UTC) + timedelta(days=2, minutes=5)
        # the store enforces it: the locked version cannot be deleted
        key = f"locked/records/{RB}/L1/notebook.html"
        version = client.head_object(Bucket=locked_bucket, Key=key)["VersionId"]
        from botocore.exceptions import ClientError as BotoError

        with pytest.raises(BotoError) as exc:
            client.delete_object(Bucket=locked_bucket, Key=key, VersionId=version)
        assert exc.value.response["Error"]["Code"] == "AccessDenied"
        assert a.verify(deep=True).ok

    def test_retention_on_a_bucket_without_object_lock_fails_before_anything(self, s3, url: str, tmp_path) -> None:
        a = S3Archive(url, s3=_client(s3), retention="GOVERNANCE:1")
        with pytest.raises(UsageError, match="has no Object Lock"):
            a.check_writable()
        with pytest.raises(UsageError, match="has no Object Lock"):
            a.record(runbook_id=RB, run_id="r1", source_dir=_source(tmp_path), manifest=_manifest("r1"))
        assert s3.list_keys(url.split("/", 3)[3] + "/") == []


# ------------------------------------------------------------------------------------------ the CLI


@pytest.fixture
def s3cli(s3):
    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        full = {**os.environ, "OPSBOOK_FIXTURE_SECRET": FIXTURE_SECRET, "OPSBOOK_OPERATOR": "alice", **s3.env(),
                **(env or {})}
        full.pop("OPSBOOK_S3_RETENTION", None)
        argv = [*OPSBOOK, *args]
        if args and args[0] == "run":
            argv += ["--notebooks", str(FIXTURE_NOTEBOOKS)]
        return subprocess.run(argv, capture_output=True, text=True, env=full, timeout=timeout, cwd=str(ROOT))

    return run


class TestCli:
    def test_run_verify_history_over_s3(self, s3, s3cli, url: str) -> None:
        r = s3cli("run", "passing", "-p", "replicas", "3", "--outputs", url)
        assert r.returncode == 0, r.stderr
        run_id = re.search(r"succeeded run (\S+)", r.stdout).group(1)
        assert f"record: {url}/records/passing/{run_id}" in r.stdout
        r = s3cli("run", "failing", "--outputs", url)  # a failed run is archived too
        assert r.returncode == 1
        r = s3cli("verify", "--outputs", url)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "OK: 2 record(s)" in r.stdout and re.search(r"chain head: [0-9a-f]{64}", r.stdout)
        assert s3cli("verify", "--deep", "--outputs", url).returncode == 0
        r = s3cli("history", "--json", "--outputs", url)
        assert r.returncode == 0, r.stderr
        rows = [json.loads(line) for line in r.stdout.splitlines()]
        assert [(x["runbook_id"], x["status"]) for x in rows] == [("passing", "succeeded"), ("failing", "failed")]
        a = S3Archive(url, s3=_client(s3))
        m = a.load_manifest(rows[1]["run_id"])
        assert m["status"] == "failed" and "boom in cell 3" in m["error"]
        assert FIXTURE_SECRET not in json.dumps(a.load_manifest(run_id))
        r = s3cli("history", "--status", "failed", "--json", env={"OPSBOOK_OUTPUTS": url})  # from the env
        assert [json.loads(x)["runbook_id"] for x in r.stdout.splitlines()] == ["failing"]
        # tamper, and verify says so
        s3.client().put_object(Bucket=a.bucket, Key=f"{a.prefix}/records/passing/{run_id}/notebook.html", Body=b"x")
        r = s3cli("verify", "--outputs", url)
        assert r.returncode == 1 and "modified" in r.stdout and "FAILED" in r.stdout

    def test_approve_a_plan_kept_in_s3(self, s3cli, url: str) -> None:
        r = s3cli("run", "highrisk", "-p", "replicas", "4", "--outputs", url)
        assert r.returncode == 0, r.stderr
        plan = re.search(r"succeeded run (\S+)", r.stdout).group(1)
        r = s3cli("run", "highrisk", "--mode", "apply", "--approve", plan, "-p", "replicas", "5", "--outputs", url)
        assert r.returncode == 2 and "parameters differ" in r.stderr
        r = s3cli("run", "highrisk", "--mode", "apply", "--approve", plan, "-p", "replicas", "4", "--outputs", url)
        assert r.returncode == 0, r.stderr

    def test_s3_down_exits_non_zero_with_one_line_before_the_run(self, s3cli, url: str) -> None:
        env = {"AWS_ENDPOINT_URL_S3": _dead_endpoint()}
        for args in (("history",), ("verify",), ("run", "passing")):
            r = s3cli(*args, "--outputs", url, env=env)
            assert r.returncode == 1, (args, r.stderr)
            assert len(r.stderr.strip().splitlines()) == 1 and "cannot connect" in r.stderr, r.stderr
            assert "Traceback" not in r.stderr and "run " not in r.stdout

    def test_upload_verb_uploads_kept_records(self, s3, s3cli, url: str, tmp_path: Path) -> None:
        dead = S3Archive(url, s3=S3(endpoint_url=_dead_endpoint(), access_key=s3.access_key,
                                    secret_key=s3.secret_key, connect_timeout=1), fallback_dir=tmp_path / "fb")
        with pytest.raises(RecordNotUploaded, match=r"opsbook upload .*fb") as exc:
            dead.record(runbook_id=RB, run_id="kept-1", source_dir=_source(tmp_path), manifest=_manifest("kept-1"))
        kept = exc.value.fallback
        (tmp_path / "fb" / "junk").mkdir()  # not a kept record: ignored by the default scan
        r = s3cli("upload", env={"OPSBOOK_S3_FALLBACK": str(tmp_path / "fb")})
        assert r.returncode == 0, r.stderr
        assert f"-> {url}/records/{RB}/kept-1" in r.stdout and not kept.exists()
        assert S3Archive(url, s3=_client(s3)).verify(deep=True).ok
        r = s3cli("upload", env={"OPSBOOK_S3_FALLBACK": str(tmp_path / "fb")})
        assert r.returncode == 0 and "nothing to upload" in r.stdout
        r = s3cli("upload", str(tmp_path / "fb" / "junk"))
        assert r.returncode == 1 and "not a kept record" in r.stderr

    def test_wrong_credentials_one_line_without_the_secret(self, s3cli, url: str) -> None:
        secret = "not-the-secret-Wq1Er2Ty3"
        r = s3cli("history", "--outputs", url, env={"AWS_SECRET_ACCESS_KEY": secret})
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
        assert "rejected the credentials" in r.stderr and secret not in r.stderr + r.stdout

    def test_retention_refused_before_the_run(self, s3, s3cli, url: str, tmp_path: Path) -> None:
        r = s3cli("run", "passing", "--retention", "GOVERNANCE:30", "--outputs", url)
        assert r.returncode == 2 and "has no Object Lock" in r.stderr and "succeeded" not in r.stdout
        assert s3.list_keys(url.split("/", 3)[3] + "/") == []
        r = s3cli("run", "passing", "--retention", "GOVERNANCE:30", "--outputs", str(tmp_path / "disk"))
        assert r.returncode == 2 and "S3 archive" in r.stderr
        r = s3cli("run", "passing", "--retention", "FOREVER", "--outputs", url)
        assert r.returncode == 2 and "MODE:DAYS" in r.stderr


def test_entries_parse_like_the_disk_ledger(filled: S3Archive) -> None:
    """The same LedgerEntry hashing as on disk: each object re-hashes to its hash and links by prev."""
    lines = filled.ledger_lines()
    assert [seq for seq, _ in lines] == [1, 2, 3, 4]
    for _seq, raw_line in lines:
        e = LedgerEntry.from_obj(json.loads(raw_line))
        assert e.to_line() == raw_line + b"\n" and e.compute_hash() == e.hash


def test_client_errors_are_opsbook_errors() -> None:
    assert issubclass(Unreachable, ClientError) and issubclass(RecordNotUploaded, ArchiveError)
