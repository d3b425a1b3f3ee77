"""`opsbook.records.bundle`: the runs of an incident, the evidence bundle, its verification on its own,
and the post-mortem draft; on an archive of records written with `Archive.record` (no notebook run)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from opsbook.cli import main
from opsbook.errors import ArchiveError, UsageError
from opsbook.records import bundle as ib
from opsbook.records.disk import Archive

RB = "security-incident-response"


def _record(archive: Archive, tmp: Path, run_id: str, incident: str, started: str, *, mode: str = "plan",
            steps: list | None = None, evidence: dict | None = None) -> None:
    src = tmp / f"src-{run_id}"
    (src / "evidence").mkdir(parents=True)
    (src / "notebook.ipynb").write_text(json.dumps({"cells": [], "run": run_id}))
    (src / "notebook.html").write_text(f"<html>{run_id}</html>")
    for name, text in (evidence or {}).items():
        p = src / "evidence" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    manifest = {"parameters": {"incident_id": incident, "responders": ["alice"], "phases": ["containment"],
                               "namespace": "ml", "selector": "app=web", "summary": "token leaked in a log"},
                "started": started, "ended": started.replace(":00Z", ":30Z"), "status": "succeeded", "mode": mode,
                "target": "staging", "operator": "alice",
                "approval": {"plan_run_id": "20260101T000000Z-plan00"} if mode == "apply" else None,
                "steps": steps or [], "evidence": [{"name": n, "description": f"about {n}"} for n in evidence or {}]}
    archive.record(runbook_id=RB, run_id=run_id, source_dir=src, manifest=manifest)


@pytest.fixture
def archive(tmp_path):
    a = Archive(tmp_path / "outputs", fsync=False)
    # ledger order differs from time order on purpose
    _record(a, tmp_path, "20260102T100000Z-bbbbbb", "INC-1", "2026-01-02T10:00:00Z", mode="apply",
            steps=[{"kind": "change", "title": "Quarantine the affected pods", "outcome": "changed",
                    "summary": "2 pod(s) quarantined", "started": "2026-01-02T10:00:10Z"},
                   {"kind": "step", "title": "Severity assessment", "outcome": "ok", "summary": "severity sev2",
                    "details": {"severity": "sev2"}, "started": "2026-01-02T10:00:05Z"}],
            evidence={"pods/web-0.json": '{"kind": "Pod"}', "logs/web-0/server.log": "GET /admin 403\n"})
    _record(a, tmp_path, "20260102T090000Z-cccccc", "INC-2", "2026-01-02T09:30:00Z")
    _record(a, tmp_path, "20260102T080000Z-aaaaaa", "INC-1", "2026-01-02T08:00:00Z",
            steps=[{"kind": "change", "title": "Quarantine the affected pods", "outcome": "planned",
                    "summary": "would quarantine 2 pod(s)", "started": "2026-01-02T08:00:10Z"}])
    return a


def test_incident_runs_are_in_time_order_and_only_that_incident(archive):
    runs = ib.incident_runs(archive, "INC-1")
    assert [r.run_id for r in runs] == ["20260102T080000Z-aaaaaa", "20260102T100000Z-bbbbbb"]
    assert [r.run_id for r in ib.incident_runs(archive, "INC-2")] == ["20260102T090000Z-cccccc"]
    assert ib.incident_runs(archive, "INC-3") == []


def test_bundle_exports_and_verifies(archive, tmp_path):
    out = tmp_path / "b" / "INC-1.tar.gz"
    info = ib.export(archive, "INC-1", out)
    assert out.exists() and info.runs == ["20260102T080000Z-aaaaaa", "20260102T100000Z-bbbbbb"]
    report = ib.verify_bundle(out)
    assert report.ok, report.problems
    assert report.incident_id == "INC-1" and report.head == info.head
    with tarfile.open(out) as tar:
        names = {m.name.split("/", 1)[1] for m in tar.getmembers()}
        ledger = tar.extractfile("INC-1-evidence/ledger.jsonl").read().decode().splitlines()
        sums = tar.extractfile("INC-1-evidence/SHA256SUMS").read().decode()
        pm = tar.extractfile("INC-1-evidence/POSTMORTEM.md").read().decode()
    assert {"BUNDLE.json", "SHA256SUMS", "POSTMORTEM.md", "ledger.jsonl"} <= names
    rec = f"records/{RB}/20260102T100000Z-bbbbbb"
    assert {f"{rec}/manifest.json", f"{rec}/evidence/pods/web-0.json", f"{rec}/evidence/logs/web-0/server.log"} <= names
    assert not any("cccccc" in n for n in names)  # the other incident's record is not exported
    assert len(ledger) == 3  # but its ledger line is, so that the chain is unbroken
    assert all(line.split("  ", 1)[1] in names for line in sums.splitlines())
    # the post-mortem draft, from the records
    assert "# Post-mortem (draft): INC-1" in pm and "| severity | sev2 |" in pm
    assert "token leaked in a log" in pm and "alice" in pm
    assert pm.index("would quarantine 2 pod(s)") < pm.index("2 pod(s) quarantined")  # timeline in time order
    actions = pm.split("## Actions taken")[1].split("### Planned")[0]
    assert "Quarantine the affected pods" in actions and "20260101T000000Z-plan00" in actions
    digest = hashlib.sha256(b"GET /admin 403\n").hexdigest()[:16]
    assert "evidence/logs/web-0/server.log" in pm and digest in pm
    for section in ("## Lessons learned", "## Follow-up actions", "## Root cause", "## Impact"):
        assert section in pm


def _rewrite(src: Path, dst: Path, change) -> None:
    with tarfile.open(src) as tin, tarfile.open(dst, "w:gz") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read()
            new = change(m.name, data)
            if new is None:
                continue
            m.size = len(new)
            tout.addfile(m, io.BytesIO(new))


def test_one_byte_changed_in_any_file_fails_verification(archive, tmp_path):
    out = tmp_path / "INC-1.tar.gz"
    ib.export(archive, "INC-1", out)
    with tarfile.open(out) as tar:
        names = [m.name for m in tar.getmembers()]
    assert len(names) >= 10
    for name in names:
        bad = tmp_path / "bad.tar.gz"

        def flip(n, data, name=name):
            if n != name:
                return data
            i = len(data) // 2
            return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]

        _rewrite(out, bad, flip)
        report = ib.verify_bundle(bad)
        assert not report.ok, name
        short = name.split("/", 1)[1]
        assert any(short in p or (short == "SHA256SUMS" and "SHA256SUMS" in p) for p in report.problems), \
            (name, report.problems)


def test_missing_and_extra_files_fail_verification(archive, tmp_path):
    out = tmp_path / "INC-1.tar.gz"
    ib.export(archive, "INC-1", out)
    bad = tmp_path / "bad.tar.gz"
    _rewrite(out, bad, lambda n, d: None if n.endswith("server.log") else d)
    assert any("server.log" in p for p in ib.verify_bundle(bad).problems)
    extra = tmp_path / "extra.tar.gz"
    with tarfile.open(out) as tin, tarfile.open(extra, "w:gz") as tout:
        for m in tin.getmembers():
            tout.addfile(m, io.BytesIO(tin.extractfile(m).read()))
        info = tarfile.TarInfo("INC-1-evidence/records/x/planted.txt")
        info.size = 3
        tout.addfile(info, io.BytesIO(b"bad"))
    report = ib.verify_bundle(extra)
    assert not report.ok and any("planted.txt" in p for p in report.problems)


def test_rewritten_manifest_or_ledger_with_recomputed_sums_is_still_caught(archive, tmp_path):
    """An attacker who edits a record and recomputes SHA256SUMS and the manifest's own hashes is caught by
    the ledger entry's manifest_sha256; one who then edits the ledger line breaks its hash / the chain."""
    out = tmp_path / "INC-1.tar.gz"
    ib.export(archive, "INC-1", out)
    with tarfile.open(out) as tar:
        files = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers()}
    rec = f"records/{RB}/20260102T100000Z-bbbbbb"
    files[f"{rec}/evidence/logs/web-0/server.log"] = b"nothing to see\n"
    man = json.loads(files[f"{rec}/manifest.json"])
    man["files"]["evidence/logs/web-0/server.log"] = hashlib.sha256(b"nothing to see\n").hexdigest()
    files[f"{rec}/manifest.json"] = json.dumps(man).encode()

    def pack(fs, path):
        fs = dict(fs)
        fs["SHA256SUMS"] = "".join(f"{hashlib.sha256(fs[n]).hexdigest()}  {n}\n" for n in sorted(fs)
                                   if n != "SHA256SUMS").encode()
        with tarfile.open(path, "w:gz") as tar:
            for n, d in fs.items():
                info = tarfile.TarInfo(f"INC-1-evidence/{n}")
                info.size = len(d)
                tar.addfile(info, io.BytesIO(d))

    pack(files, tmp_path / "a.tar.gz")
    report = ib.verify_bundle(tmp_path / "a.tar.gz")
    assert not report.ok and any("differs from the manifest its ledger entry recorded" in p for p in report.problems)

    lines = files["ledger.jsonl"].decode().splitlines()
    for i, line in enumerate(lines):
        e = json.loads(line)
        if e["run_id"] == "20260102T100000Z-bbbbbb":
            e["manifest_sha256"] = hashlib.sha256(files[f"{rec}/manifest.json"]).hexdigest()
            lines[i] = json.dumps(e, sort_keys=True, separators=(",", ":"))
    files["ledger.jsonl"] = ("\n".join(lines) + "\n").encode()
    pack(files, tmp_path / "b.tar.gz")
    report = ib.verify_bundle(tmp_path / "b.tar.gz")
    assert not report.ok and any("hash does not match" in p for p in report.problems)


def test_export_of_an_unknown_incident_and_verify_of_garbage(archive, tmp_path):
    with pytest.raises(UsageError, match="INC-404"):
        ib.export(archive, "INC-404", tmp_path / "x.tar.gz")
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tar at all")
    with pytest.raises(ArchiveError):
        ib.verify_bundle(junk)


def test_cli_verbs_delegate_and_exit_codes(archive, tmp_path, capsys):
    root = str(archive.root)
    assert main(["incident", "INC-1", "--json", "--outputs", root]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["run_id"] for x in lines] == ["20260102T080000Z-aaaaaa", "20260102T100000Z-bbbbbb"]
    assert main(["incident", "INC-9", "--outputs", root]) == 2  # no run of it: say so (exit 2)
    out = tmp_path / "c.tar.gz"
    assert main(["evidence", "INC-1", "--out", str(out), "--outputs", root]) == 0
    assert main(["evidence", "--verify", str(out)]) == 0
    assert main(["evidence", "INC-1"]) == 2  # --out missing
    assert main(["evidence", "INC-404", "--out", str(out), "--outputs", root]) == 2
    capsys.readouterr()
    bad = tmp_path / "bad.tar.gz"
    _rewrite(out, bad, lambda n, d: d.replace(b"alice", b"mallory") if n.endswith("BUNDLE.json") or
             n.endswith("POSTMORTEM.md") else d)
    assert main(["evidence", "--verify", str(bad)]) == 1
    assert "POSTMORTEM.md" in capsys.readouterr().out


def test_bundle_of_signed_applies_written_ahead_verifies(tmp_path):
    """An apply's write-ahead `started` entry precedes its record; signed lines carry a `sig` that is not
    part of their hash. The bundle pairs each run with its record's entry and verifies."""
    import subprocess

    from opsbook.signing import Signer

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    a = Archive(tmp_path / "outputs", fsync=False, signer=Signer.load(tmp_path / "k"))
    a.start_run(runbook_id=RB, run_id="20260103T100000Z-dddddd", plan="20260101T000000Z-plan00",
                fields={"mode": "apply", "started": "2026-01-03T10:00:00Z"})
    _record(a, tmp_path, "20260103T100000Z-dddddd", "INC-9", "2026-01-03T10:00:00Z", mode="apply")
    (run,) = ib.incident_runs(a, "INC-9")
    assert run.entry.event is None and run.entry.sig and run.entry.plan == "20260101T000000Z-plan00"
    report = ib.verify_bundle(ib.export(a, "INC-9", tmp_path / "INC-9.tar.gz").path)
    assert report.ok, report.problems
