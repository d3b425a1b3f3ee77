"""Issue 15 on the S3 archive (the real SeaweedFS of the ``s3`` fixture): ``verify`` while writers are
active never reports a record being written. Writers take no lock (their objects go up before their
ledger entry), so verify lists the ledger before the records, lists it again for the folders it did not
name, and calls a folder whose run claim is recent "being written" (info) rather than a problem.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from opsbook.records.ledger import canonical_json
from opsbook.records.s3 import S3Archive, _scan_source

from .test_archive import _manifest, _source
from .test_archive_snapshot import verify_while_writing
from .test_s3archive import RB, _client, _key


@pytest.fixture
def where(s3) -> str:
    return f"s3://{s3.bucket}/t/snapshot-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def archive(s3, where: str, tmp_path: Path):
    a = S3Archive(where, s3=_client(s3), fallback_dir=tmp_path / "fallback", workers=16, signer=None)
    yield a
    a.close()


def _kinds(report, kind: str) -> list:
    return [p for p in report.problems if p.kind == kind]


def _upload_without_ledger_entry(a: S3Archive, run_id: str, src: Path) -> None:
    """What a writer has done just before its ledger append: claim, files, manifest."""
    a._claim(RB, run_id, uuid.uuid4().hex, {}, resume=False)
    a._upload_files(RB, run_id, _scan_source(src), {}, resume=False)
    a._put_once(a._record_key(RB, run_id, "manifest.json"), b"{}\n", {}, resume=False)


def test_a_record_being_uploaded_is_info_not_a_problem(archive: S3Archive, tmp_path: Path) -> None:
    src = _source(tmp_path)
    archive.record(runbook_id=RB, run_id="done", source_dir=src, manifest=_manifest("done"))
    _upload_without_ledger_entry(archive, "inflight", src)
    report = archive.verify(signers=None)
    assert report.ok, report
    assert report.records == 1
    assert any("being written" in i and f"{RB}/inflight" in i for i in report.info), report.info


def test_a_record_with_an_old_claim_and_no_ledger_entry_is_not_in_ledger(s3, archive: S3Archive,
                                                                         tmp_path: Path) -> None:
    src = _source(tmp_path)
    archive.record(runbook_id=RB, run_id="done", source_dir=src, manifest=_manifest("done"))
    raw = s3.client()
    old = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="seconds")
    raw.put_object(Bucket=archive.bucket, Key=_key(archive, "runs/dead"),
                   Body=canonical_json({"run_id": "dead", "runbook_id": RB, "token": "x", "claimed": old}))
    raw.put_object(Bucket=archive.bucket, Key=_key(archive, f"records/{RB}/dead/notebook.ipynb"), Body=b"{}")
    raw.put_object(Bucket=archive.bucket, Key=_key(archive, f"records/{RB}/unclaimed/notebook.ipynb"), Body=b"{}")
    report = archive.verify(signers=None)
    assert sorted(p.record for p in _kinds(report, "not_in_ledger")) == ["dead", "unclaimed"], report


def test_verify_with_concurrent_writers_reports_no_record_being_written(s3, where: str, tmp_path: Path) -> None:
    src = _source(tmp_path)
    errors: list = []

    def writer(k: int) -> None:
        a = S3Archive(where, s3=_client(s3), workers=4, fallback_dir=tmp_path / f"fb{k}", signer=None)
        try:
            for i in range(15):
                a.record(runbook_id=RB, run_id=f"w{k}-{i:03d}", source_dir=src, manifest=_manifest(f"w{k}-{i:03d}"))
        except Exception as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)
        finally:
            a.close()

    writers = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    reader = S3Archive(where, s3=_client(s3), workers=8, signer=None)
    try:
        verify_while_writing(reader, writers, errors, seconds=180)
        final = reader.verify(signers=None)
        assert final.ok and final.records == 45, final
    finally:
        reader.close()
