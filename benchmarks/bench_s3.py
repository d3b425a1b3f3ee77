"""Benchmark of opsbook.records.s3 against a real S3 API (SeaweedFS, started here as the ``s3`` fixture is).

    python benchmarks/bench_s3.py [--records 10000] [--workers 32] [--deep] [--appenders 20] [--real-runs 0]

(a) ``S3Archive.verify()`` over N records (target < 30 s for 10,000), and the ratio to the on-disk
    ``Archive.verify()`` of the same N records (same files, same manifests bar ``s3_objects``) in this
    process. The S3 archive is populated directly, with the archive's own format functions and its
    client (``put_if_absent`` for every object, the manifest holding the ETags the store returned, the
    ledger entries chained with ``chain_entry``), in a thread pool: the bytes in the bucket are what
    ``record()`` writes, minus the ``runs/<run_id>`` claims, which ``verify`` never reads. Only
    ``verify`` is timed. ``--deep`` also times ``verify(deep=True)`` (downloads and re-hashes every file).
(b) ``--appenders`` processes that each call ``S3Archive.record()`` at the same instant against one
    ledger (what ``opsbook run`` does at its end): records found, chain valid, lost appends, appends/s.
    ``--real-runs N`` also starts N real ``opsbook run trivial --outputs s3://...`` processes at once.

SeaweedFS runs on this machine, so the figures include its CPU use next to ours.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "lib"))  # run from a checkout without installing
sys.path.insert(0, str(HERE))

from bench_archive import RUNBOOKS, _files, _manifest, synthesise_direct  # noqa: E402
from opsbook.clients.s3 import S3  # noqa: E402
from opsbook.records.disk import Archive  # noqa: E402
from opsbook.records.ledger import build_manifest, chain_entry  # noqa: E402
from opsbook.records.s3 import STORE_KEY, S3Archive  # noqa: E402
from opsbook.records.s3_layout import pack_body  # noqa: E402

VERIFY_TARGET = 30.0


def populate(archive: S3Archive, n: int, kb: float, workers: int) -> None:
    """Write N records as ``record()`` would (files, then the manifest with their ETags), then chain
    and write their ledger entries, and a pack every ``archive.pack_size`` entries (as the appender of
    every pack_size-th entry does)."""
    s3, bucket = archive.s3, archive.bucket

    def one(i: int) -> tuple[int, str, str, dict, bytes]:
        run_id = f"run-{i:06d}"
        rb = RUNBOOKS[i % len(RUNBOOKS)]
        files = _files(i, run_id, kb)
        etags = {rel: s3.put_if_absent(bucket, archive._record_key(rb, run_id, rel), data)
                 for rel, data in files.items()}
        manifest = _manifest(i, run_id)
        doc = {**manifest, STORE_KEY: {rel: {"etag": etags[rel], "size": len(d)} for rel, d in files.items()}}
        mbytes = build_manifest(doc, run_id=run_id, runbook_id=rb,
                                files={rel: hashlib.sha256(d).hexdigest() for rel, d in files.items()})
        s3.put_if_absent(bucket, archive._record_key(rb, run_id, "manifest.json"), mbytes,
                         content_type="application/json")
        return i, run_id, rb, manifest, mbytes

    with ThreadPoolExecutor(workers) as pool:
        done = sorted(pool.map(one, range(n)))
        prev = None
        entries = []
        for _i, run_id, rb, manifest, mbytes in done:
            prev = chain_entry(prev=prev, run_id=run_id, runbook_id=rb, manifest=manifest,
                               manifest_sha256=hashlib.sha256(mbytes).hexdigest())
            entries.append(prev)
        list(pool.map(lambda e: s3.put_if_absent(bucket, archive._ledger_key(e.seq), e.to_line(),
                                                 content_type="application/json"), entries))
        size = archive.pack_size
        for last in range(size, len(entries) + 1, size):
            chunk = range(last - size, last)
            body = pack_body(last - size + 1, last, [entries[j].to_line() for j in chunk],
                             {entries[j].record: done[j][4] for j in chunk})
            s3.put_if_absent(bucket, archive._pack_key(last), body, content_type="application/json")
    if entries:
        archive._write_hint(entries[-1])


def _client(svc, workers: int) -> S3:
    return S3(endpoint_url=svc.endpoint_url, access_key=svc.access_key, secret_key=svc.secret_key,
              max_pool_connections=workers + 4)


def bench_verify(svc, args: argparse.Namespace) -> dict:
    url = f"s3://{svc.bucket}/bench-verify"
    archive = S3Archive(url, s3=_client(svc, args.workers), workers=args.workers)
    t0 = time.perf_counter()
    populate(archive, args.records, args.file_kb, args.workers)
    t_setup = time.perf_counter() - t0
    out: dict = {"records": args.records, "setup_s": round(t_setup, 1)}

    t0 = time.perf_counter()
    report = archive.verify()
    out["verify_s"] = time.perf_counter() - t0
    assert report.ok and report.records == args.records, str(report)[:2000]
    if args.deep:
        t0 = time.perf_counter()
        report = archive.verify(deep=True)
        out["verify_deep_s"] = time.perf_counter() - t0
        assert report.ok and report.records == args.records, str(report)[:2000]
    t0 = time.perf_counter()
    hist = archive.history()
    out["history_s"] = time.perf_counter() - t0
    assert len(hist) == args.records
    archive.close()

    with tempfile.TemporaryDirectory(prefix="bench-s3-disk-") as tmp:
        synthesise_direct(Path(tmp) / "outputs", args.records, args.file_kb)
        disk = Archive(Path(tmp) / "outputs")
        t0 = time.perf_counter()
        report = disk.verify()
        out["disk_verify_s"] = time.perf_counter() - t0
        assert report.ok and report.records == args.records
    return out


WORKER = """
import json, os, sys, time
sys.path.insert(0, sys.argv[6])
from opsbook.clients.s3 import S3
from opsbook.records.s3 import S3Archive
url, endpoint, n, start, src = sys.argv[1:6]
a = S3Archive(url, s3=S3(endpoint_url=endpoint, access_key=os.environ["AWS_ACCESS_KEY_ID"],
                         secret_key=os.environ["AWS_SECRET_ACCESS_KEY"]), workers=4)
a.s3.bucket_exists(a.bucket)
time.sleep(max(0.0, float(start) - time.time()))
t0 = time.time()
ref = a.record(runbook_id="deploy-new-model", run_id=f"app-{n}", source_dir=src,
               manifest={"status": "succeeded", "mode": "plan", "operator": f"proc-{n}"})
print(json.dumps({"seq": ref.entry.seq, "attempts": a.last_append.attempts, "t0": t0, "t1": time.time()}))
"""


def bench_appenders(svc, args: argparse.Namespace) -> dict:
    url = f"s3://{svc.bucket}/bench-append"
    env = {**os.environ, **svc.env()}
    with tempfile.TemporaryDirectory(prefix="bench-s3-src-") as tmp:
        src = Path(tmp)
        for rel, data in _files(0, "appender", args.file_kb).items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(data)
        start = time.time() + 4 + 0.4 * args.appenders  # every process imported and waiting
        procs = [subprocess.Popen([sys.executable, "-c", WORKER, url, svc.endpoint_url, f"{i:02d}", str(start),
                                   str(src), str(ROOT / "lib")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env) for i in range(args.appenders)]
        outs = [p.communicate(timeout=600) for p in procs]
    failed = [err[-500:] for p, (_o, err) in zip(procs, outs, strict=True) if p.returncode != 0]
    results = [json.loads(o) for p, (o, _e) in zip(procs, outs, strict=True) if p.returncode == 0]
    archive = S3Archive(url, s3=_client(svc, 8))
    entries = archive.entries()
    report = archive.verify()
    span = max(r["t1"] for r in results) - min(r["t0"] for r in results) if results else float("nan")
    out = {"appenders": args.appenders, "failed_processes": len(failed), "records_found": len(entries),
           "chain_valid": report.ok, "lost_appends": args.appenders - len(entries),
           "put_attempts": sum(r["attempts"] for r in results), "seconds": round(span, 3),
           "appends_per_s": round(len(results) / span, 1) if results else 0.0}
    if failed:
        out["errors"] = failed[:3]
    if args.real_runs:
        out["real_runs"] = bench_real_runs(svc, args.real_runs)
    return out


def bench_real_runs(svc, n: int) -> dict:
    url = f"s3://{svc.bucket}/bench-real-runs"
    env = {**os.environ, **svc.env()}
    argv = [sys.executable, "-m", "opsbook", "run", "trivial", "--quiet", "--notebooks",
            str(ROOT / "tests" / "fixtures" / "notebooks"), "--outputs", url]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(n)]
    codes = [p.wait(timeout=900) for p in procs]
    wall = time.perf_counter() - t0
    archive = S3Archive(url, s3=_client(svc, 8))
    report = archive.verify()
    return {"runs": n, "exit_0": codes.count(0), "records_found": report.records, "chain_valid": report.ok,
            "lost_appends": n - report.records, "wall_s": round(wall, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--file-kb", type=float, default=2.0, help="padding per notebook file (KiB)")
    ap.add_argument("--workers", type=int, default=32, help="threads for populate and verify")
    ap.add_argument("--deep", action="store_true", help="also time verify(deep=True)")
    ap.add_argument("--appenders", type=int, default=20, help="concurrent appender processes (0: skip)")
    ap.add_argument("--real-runs", type=int, default=0, help="also N concurrent real `opsbook run` processes")
    args = ap.parse_args(argv)

    from opsbook.testing.services import s3_service

    with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp, s3_service(Path(tmp)) as svc:
        results: dict = {}
        if args.records:
            results["verify"] = bench_verify(svc, args)
        if args.appenders:
            results["appenders"] = bench_appenders(svc, args)

    ok = True
    if "verify" in results:
        v = results["verify"]
        ok &= v["verify_s"] < VERIFY_TARGET
        print(f"(a) {v['records']} records in S3 (populated in {v['setup_s']} s, {args.workers} workers)")
        print(f"    verify()            {v['verify_s']:7.2f} s   target < {VERIFY_TARGET:g} s: "
              f"{'PASS' if v['verify_s'] < VERIFY_TARGET else 'MISS'}")
        if "verify_deep_s" in v:
            print(f"    verify(deep=True)   {v['verify_deep_s']:7.2f} s")
        print(f"    history()           {v['history_s']:7.2f} s")
        print(f"    on-disk verify()    {v['disk_verify_s']:7.2f} s   ratio S3/disk {v['verify_s'] / v['disk_verify_s']:.1f}x")
    if "appenders" in results:
        a = results["appenders"]
        ok &= a["lost_appends"] == 0 and a["chain_valid"] and not a["failed_processes"]
        print(f"(b) {a['appenders']} concurrent appender processes: {a['records_found']} records found, chain "
              f"{'valid' if a['chain_valid'] else 'INVALID'}, {a['lost_appends']} lost appends, "
              f"{a['put_attempts']} ledger PUT attempts, {a['appends_per_s']} appends/s ({a['seconds']} s)")
        if a.get("errors"):
            print("    errors:", *a["errors"], sep="\n      ")
        if "real_runs" in a:
            r = a["real_runs"]
            ok &= r["lost_appends"] == 0 and r["chain_valid"]
            print(f"    {r['runs']} real `opsbook run` processes: {r['exit_0']} exit 0, {r['records_found']} records, "
                  f"chain {'valid' if r['chain_valid'] else 'INVALID'}, {r['lost_appends']} lost, {r['wall_s']} s wall")
    print(json.dumps(results, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
