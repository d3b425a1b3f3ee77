"""Benchmark of opsbook.records.site: ``opsbook site`` (``site.build``) over an archive of N records.

    python benchmarks/bench_site.py [--records 10000] [--keep DIR]

The archive is synthesised in a temporary directory the way ``bench_archive.py`` does it: record
folders and ledger lines written directly with the archive's own format functions (``build_manifest``,
``chain_entry``), so the bytes are what ``Archive.record()`` writes, minus the fsyncs. Each record
looks like a real one, only smaller: a manifest with 12 steps (summaries, one headline on a canary
run), parameters (an ``incident_id`` on every tenth run, in 50 incidents), ``notebook.ipynb``,
``notebook.html`` (~4 KiB), an evidence file on every third run; each ``deploy-new-model`` record's
notebook has a canary plot (a PNG output) that the site extracts; every fifth run is an apply that
carried out the plan before it.

The synthetic archive is flushed to disk (``os.sync()``) before anything is timed: its writeback is not
the site's cost (a real archive was written long before its site). The site is built twice: with verify (what ``opsbook site`` does) and without (``--no-verify``). The
baseline is ``archive.verify()`` on the same archive in the same process (it re-hashes every file), so
the ratio site/verify does not depend on the machine. Budget: 10,000 records in under 30 s.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lib"))  # run from a checkout without installing

from _timings import print_timings  # noqa: E402  (benchmarks/, the script's own folder)
from opsbook.records import site  # noqa: E402
from opsbook.records.disk import Archive  # noqa: E402
from opsbook.records.ledger import build_manifest, chain_entry  # noqa: E402

BUDGET = 30.0
RUNBOOKS = ["initial-kubernetes-deployment", "mlflow-tracking-server", "centralized-logging",
            "deploy-new-model", "security-incident-response"]
STATUSES = ["succeeded", "succeeded", "succeeded", "failed", "aborted"]
OUTCOMES = ["ok", "ok", "planned", "skipped", "ok", "changed"]


def _png(w: int = 64, h: int = 32) -> bytes:
    """A small valid PNG (a grey gradient), so that the plot extraction decodes real image bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))

    rows = b"".join(b"\x00" + bytes((x * 4) % 256 for x in range(w)) for _ in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", w.to_bytes(4, "big") + h.to_bytes(4, "big") + b"\x08\x00\x00\x00\x00")
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


PNG_B64 = base64.b64encode(_png()).decode()


def _files(i: int, run_id: str, runbook: str, html_kb: float = 0) -> dict[str, bytes]:
    cells = [{"cell_type": "markdown", "metadata": {}, "source": f"# {runbook}\n\nrun {run_id}"}]
    for k in range(6):
        cells.append({"cell_type": "code", "metadata": {}, "execution_count": k + 1, "source": f"run.step_{k}()",
                      "outputs": [{"output_type": "stream", "name": "stdout", "text": f"step {k}: ok\n" * 4}]})
    if runbook == "deploy-new-model":
        cells.append({"cell_type": "code", "metadata": {}, "execution_count": 7, "source": "run.plot()",
                      "outputs": [{"output_type": "display_data", "metadata": {},
                                   "data": {"image/png": PNG_B64, "text/plain": "<Figure>"}}]})
    nb = json.dumps({"cells": cells, "metadata": {"opsbook": {"id": runbook}}, "nbformat": 4, "nbformat_minor": 5})
    body = "".join(f"<div class=\"cell\"><pre>step {k}: ok {run_id}</pre></div>\n" for k in range(60))
    body += f"<!-- {'x' * int(html_kb * 1024)} -->" if html_kb else ""
    files = {"notebook.ipynb": nb.encode(),
             "notebook.html": f"<!doctype html><html><body><h1>{run_id}</h1>{body}</body></html>\n".encode()}
    if i % 3 == 0:
        files["evidence/pods.json"] = json.dumps({"run": run_id, "ready": i % 7}).encode() + b"\n"
    return files


def _manifest(i: int, run_id: str, runbook: str, plan: str | None) -> dict:
    day, minute = 1 + (i // 400) % 28, i % 60
    started = f"2026-05-{day:02d}T{(i // 60) % 24:02d}:{minute:02d}:00Z"
    ended = f"2026-05-{day:02d}T{(i // 60) % 24:02d}:{minute:02d}:42Z"
    status = STATUSES[i % len(STATUSES)]
    steps = []
    for k in range(12):
        outcome = "failed" if status == "failed" and k == 11 else OUTCOMES[(i + k) % len(OUTCOMES)]
        steps.append({"kind": ["step", "preflight", "change", "check"][k % 4], "title": f"Step {k} of {runbook}",
                      "outcome": outcome, "seconds": round(0.1 * k, 1), "started": started,
                      "summary": f"step {k} of run {run_id}: {outcome}, nothing unusual",
                      "headline": "PROMOTE: no metric regressed" if runbook == "deploy-new-model" and k == 7 else ""})
    params = {"mode": "apply" if plan else "plan", "target": "local", "namespace": "ml-platform", "replicas": 3}
    if i % 10 == 0:
        params["incident_id"] = f"INC-{(i // 10) % 50:04d}"
        params["phases"] = ["identification", "containment"]
    m = {"run_id": run_id, "runbook_id": runbook, "runbook_version": "1.0.0", "runbook_title": runbook.title(),
         "status": status, "mode": params["mode"], "target": "local", "operator": f"op{i % 7}", "host": "bench",
         "started": started, "ended": ended, "duration_seconds": 42.0, "parameters": params, "steps": steps,
         "evidence": [{"name": "pods.json", "description": "pods"}] if i % 3 == 0 else [],
         "error": "step 11 failed" if status == "failed" else None}
    if plan:
        m["approval"] = {"plan_run_id": plan, "approver": "alice", "approved_at": started}
    return m


def synthesise(root: Path, n: int, html_kb: float = 0) -> None:
    root.mkdir(parents=True, exist_ok=True)
    prev = None
    last_plan: dict[str, str] = {}
    with open(root / "ledger.jsonl", "wb") as ledger:
        for i in range(n):
            run_id = f"20260501T000000Z-{i:06x}"
            runbook = RUNBOOKS[i % len(RUNBOOKS)]
            plan = last_plan.pop(runbook, None) if i % 5 == 4 else None
            rec = root / runbook / run_id
            rec.mkdir(parents=True)
            digests = {}
            for rel, data in _files(i, run_id, runbook, html_kb).items():
                (rec / rel).parent.mkdir(exist_ok=True)
                (rec / rel).write_bytes(data)
                digests[rel] = hashlib.sha256(data).hexdigest()
            manifest = _manifest(i, run_id, runbook, plan)
            if not plan:
                last_plan[runbook] = run_id
            mbytes = build_manifest(manifest, run_id=run_id, runbook_id=runbook, files=digests)
            (rec / "manifest.json").write_bytes(mbytes)
            prev = chain_entry(prev=prev, run_id=run_id, runbook_id=runbook, manifest=manifest,
                               manifest_sha256=hashlib.sha256(mbytes).hexdigest())
            ledger.write(prev.to_line())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--keep", type=Path, help="synthesise into this (new) folder and keep it, with the site in "
                    "DIR/site")
    ap.add_argument("--html-kb", type=float, default=0, help="pad each notebook.html by this many KiB (a real "
                    "one is 300-600 KiB; the copies then dominate)")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of one build (without verify)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-site-") as tmp:
        base = args.keep or Path(tmp)
        root = base / "outputs"
        t0 = time.perf_counter()
        synthesise(root, args.records, args.html_kb)
        os.sync()  # the synthetic archive's own writeback is not the site's cost (a real archive is old)
        t_setup = time.perf_counter() - t0
        archive = Archive(root, signer=None, create=False)

        t0 = time.perf_counter()
        report = archive.verify(signers=None)
        t_verify = time.perf_counter() - t0
        assert report.ok and report.records == args.records, report

        out = base / "site"
        t0 = time.perf_counter()
        info = site.build(archive, out)
        t_site = time.perf_counter() - t0
        assert info.runs == args.records and info.verified, info
        pages = len(list((out / "runs").glob("*.html")))
        plots = len(list((out / "runs").glob("*/plot-*.png")))
        assert pages == args.records, pages

        out = base / "site-no-verify"  # a new folder: deleting the first would slow the file system down for a
        t0 = time.perf_counter()       # while (ext4 with discard), which is not what is measured here
        if args.profile:
            import cProfile
            import pstats

            with cProfile.Profile() as prof:
                site.build(archive, out, verify=False)
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        else:
            site.build(archive, out, verify=False)
        t_nover = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())

    ratio = t_site / t_verify if t_verify else float("nan")
    title = (f"opsbook.records.site, {args.records} records (setup {t_setup:.1f} s): {pages} run pages, "
             f"{info.incidents} incident pages, {plots} plots, {info.files} files, {size / 2**20:.1f} MiB")
    rows = [("site.build() (opsbook site: verify + pages + copies)", t_site, BUDGET),
            ("site.build(verify=False) (--no-verify)", t_nover, None),
            ("baseline: archive.verify() on the same archive", t_verify, None)]
    print_timings(title, rows, "site / verify ratio", ratio)
    return 0 if t_site < BUDGET else 1


if __name__ == "__main__":
    sys.exit(main())
