"""Benchmark of opsbook.records.disk: ``Archive.verify()`` and ``Archive.history()`` over N records.

    python benchmarks/bench_archive.py [--records 10000] [--via-record] [--keep DIR]

The archive is synthesised in a temporary directory. By default the record folders and the ledger
lines are written directly with the archive's own format functions (``build_manifest``,
``chain_entry``, ``LedgerEntry.to_line``), so the bytes on disk are exactly what ``record()`` would
write, minus the read-only modes and the fsyncs; ``--via-record`` calls ``Archive.record()`` (with
``fsync=False``) for every record instead, which is slower to set up. Each record has three small
files: ``notebook.ipynb``, ``notebook.html`` and ``evidence/pods.json``, plus its ``manifest.json``.

The files were just written, so they are in the page cache: the figures are warm-cache figures.
The baseline is bare ``hashlib.sha256`` over the same files (every record file and manifest) in the
same process, so the ratio verify/baseline does not depend on the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lib"))  # run from a checkout without installing

from _timings import print_timings  # noqa: E402  (benchmarks/, the script's own folder)
from opsbook.records.disk import Archive  # noqa: E402
from opsbook.records.disk_files import iter_record_files  # noqa: E402
from opsbook.records.ledger import build_manifest, chain_entry  # noqa: E402

VERIFY_TARGET = 10.0
HISTORY_TARGET = 1.0
RUNBOOKS = ["initial-kubernetes-deployment", "mlflow-tracking-server", "centralized-logging",
            "deploy-new-model", "security-incident-response"]
STATUSES = ["succeeded", "succeeded", "succeeded", "failed", "aborted"]


def _files(i: int, run_id: str, kb: float) -> dict[str, bytes]:
    pad = "x" * int(kb * 1024)
    return {
        "notebook.ipynb": f'{{"cells": [], "metadata": {{"run": "{run_id}"}}, "pad": "{pad}"}}\n'.encode(),
        "notebook.html": f"<html><body><h1>{run_id}</h1><pre>{pad}{pad}</pre></body></html>\n".encode(),
        "evidence/pods.json": f'{{"ready": {i % 7}, "run": "{run_id}"}}\n'.encode(),
    }


def _manifest(i: int, run_id: str) -> dict:
    day = 1 + i % 28
    return {"run_id": run_id, "runbook_version": "1.0.0", "status": STATUSES[i % len(STATUSES)],
            "mode": "plan" if i % 3 else "apply", "target": "local", "operator": "bench",
            "started": f"2024-05-{day:02d}T10:00:00+00:00", "ended": f"2024-05-{day:02d}T10:05:00+00:00",
            "parameters": {"namespace": "ml", "replicas": 3}}


def make_signer(folder: Path):
    """An Ed25519 signing key (OpenSSH format, as ``ssh-keygen -t ed25519`` writes it) and the trusted
    signers that accept it."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
    from opsbook.signing import AllowedSigners, Signer

    key = folder / "bench_key"
    key.write_bytes(Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()))
    signer = Signer.load(key)
    return signer, AllowedSigners(keys={signer.public_raw: "bench"})


def synthesise_direct(root: Path, n: int, kb: float, signer=None) -> None:
    """Write N records and their ledger lines directly, with the archive's format functions."""
    root.mkdir(parents=True, exist_ok=True)
    prev = None
    with open(root / "ledger.jsonl", "wb") as ledger:
        for i in range(n):
            run_id = f"run-{i:06d}"
            runbook_id = RUNBOOKS[i % len(RUNBOOKS)]
            rec = root / runbook_id / run_id
            (rec / "evidence").mkdir(parents=True)
            digests = {}
            for rel, data in _files(i, run_id, kb).items():
                (rec / rel).write_bytes(data)
                digests[rel] = hashlib.sha256(data).hexdigest()
            manifest = _manifest(i, run_id)
            mbytes = build_manifest(manifest, run_id=run_id, runbook_id=runbook_id, files=digests)
            (rec / "manifest.json").write_bytes(mbytes)
            prev = chain_entry(prev=prev, run_id=run_id, runbook_id=runbook_id, manifest=manifest,
                               manifest_sha256=hashlib.sha256(mbytes).hexdigest(), signer=signer)
            ledger.write(prev.to_line())


def synthesise_via_record(root: Path, n: int, kb: float) -> None:
    archive = Archive(root, fsync=False)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            run_id = f"run-{i:06d}"
            src = Path(tmp) / run_id
            (src / "evidence").mkdir(parents=True)
            for rel, data in _files(i, run_id, kb).items():
                (src / rel).write_bytes(data)
            archive.record(runbook_id=RUNBOOKS[i % len(RUNBOOKS)], run_id=run_id, source_dir=src,
                           manifest=_manifest(i, run_id))


def baseline(paths: list[str]) -> float:
    t0 = time.perf_counter()
    for p in paths:
        with open(p, "rb") as f:
            hashlib.sha256(f.read()).hexdigest()
    return time.perf_counter() - t0


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--file-kb", type=float, default=2.0, help="padding per notebook file (KiB)")
    ap.add_argument("--via-record", action="store_true", help="synthesise with Archive.record()")
    ap.add_argument("--repeat", type=int, default=3, help="timed repetitions (best is reported)")
    ap.add_argument("--keep", type=Path, help="synthesise into this (new) directory and keep it")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-archive-") as tmp:
        root = args.keep or Path(tmp) / "outputs"
        signer, trusted = make_signer(Path(tmp))
        t0 = time.perf_counter()
        if args.via_record:
            synthesise_via_record(root, args.records, args.file_kb)
        else:
            synthesise_direct(root, args.records, args.file_kb, signer=signer)
        t_setup = time.perf_counter() - t0
        archive = Archive(root, signer=None)
        paths = list(iter_record_files(root))
        size = sum(os.path.getsize(p) for p in paths)

        t_verify, report = best_of(lambda: archive.verify(signers=None), args.repeat)
        assert report.ok and report.records == args.records, report  # type: ignore[union-attr]
        rows_signed: list[tuple[str, float, float | None]] = []
        if not args.via_record:
            t_signed, rep = best_of(lambda: archive.verify(signers=trusted), args.repeat)
            assert rep.ok, rep  # type: ignore[union-attr]
            rows_signed.append((f"verify() checking {args.records} signatures", t_signed, VERIFY_TARGET))
        one = f"run-{args.records // 2:06d}"
        t_only, rep = best_of(lambda: archive.verify(signers=None, only=one), args.repeat)
        assert rep.ok, rep  # type: ignore[union-attr]
        t_used, _ = best_of(lambda: archive.plan_used_by(one), args.repeat)
        t_hist, hist = best_of(archive.history, args.repeat)
        assert len(hist) == args.records  # type: ignore[arg-type]
        t_hist_f, _ = best_of(lambda: archive.history(runbook="deploy-new-model", status="failed"), args.repeat)
        t_base = min(baseline(paths) for _ in range(args.repeat))

    rows = [
        ("verify()", t_verify, VERIFY_TARGET),
        *rows_signed,
        ("verify(only=one run): what an approval hashes", t_only, None),
        ("plan_used_by(): a plan's consumption check", t_used, None),
        ("history()", t_hist, HISTORY_TARGET),
        ("history(runbook, status)", t_hist_f, HISTORY_TARGET),
        ("baseline: bare sha256 of the same files", t_base, None),
    ]
    title = (f"opsbook.records.disk, {args.records} records, {len(paths)} files, {size / 2**20:.1f} MiB "
             f"(setup {t_setup:.1f} s, {'record()' if args.via_record else 'direct'}; best of {args.repeat})")
    ratio = t_verify / t_base if t_base else float("nan")
    print_timings(title, rows, "verify / baseline ratio", ratio)
    return 0 if t_verify < VERIFY_TARGET and t_hist < HISTORY_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
