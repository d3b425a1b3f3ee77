"""Writing a site: ``build`` (a folder, replaced as a whole, its record files copied in parallel
while the archive is verified) and ``bundle_pages`` (an incident's pages inside its evidence bundle,
linking to the bundle's own records)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from opsbook.errors import UsageError
from opsbook.records.ledger import MANIFEST_NAME, LedgerEntry
from opsbook.records.site.pages import Pages
from opsbook.records.site.runs import PLOT_RUNBOOKS, RecordFiles, SiteRun, collect, extract_pngs, wanted_files
from opsbook.records.site.text import as_dict, copy_name, h, rel_url, slug

if TYPE_CHECKING:
    from opsbook.records.archive import RunArchive

__all__ = ["MARKER", "BundleRun", "SiteInfo", "build", "bundle_pages"]

MARKER = ".opsbook-site"
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class BundleRun(Protocol):
    """A run of an evidence bundle, as ``bundle_pages`` reads it (``opsbook.records.bundle.IncidentRun``)."""

    @property
    def run_id(self) -> str: ...

    @property
    def record(self) -> str: ...

    @property
    def entry(self) -> LedgerEntry: ...

    @property
    def manifest(self) -> dict[str, Any]: ...


class _DirSink:
    """Files under ``root``. With ``pool``, each write is a job of that thread pool (a file system is
    faster with a few creations in flight); ``wait()`` waits for them and raises the first error."""

    def __init__(self, root: Path, pool: ThreadPoolExecutor | None = None):
        self.root = root
        self.pool = pool
        self._dirs: set[str] = set()
        self._lock = threading.Lock()  # written from the copying threads too
        self._jobs: list[Future[None]] = []
        self.count = 0

    def write(self, rel: str, data: bytes | str) -> None:
        if self.pool is None:
            self._write(rel, data)
            return
        job = self.pool.submit(self._write, rel, data)
        with self._lock:
            self._jobs.append(job)

    def wait(self) -> None:
        while True:
            with self._lock:
                jobs, self._jobs = self._jobs, []
            if not jobs:
                return
            for job in jobs:
                job.result()

    def _write(self, rel: str, data: bytes | str) -> None:
        parent = os.path.dirname(rel)
        if parent not in self._dirs:
            os.makedirs(os.path.join(self.root, parent), exist_ok=True)
            with self._lock:
                self._dirs.add(parent)
        view = memoryview(data.encode("utf-8") if isinstance(data, str) else data)
        fd = os.open(os.path.join(self.root, rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _CLOEXEC, 0o644)
        try:
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        with self._lock:
            self.count += 1


class _DictSink:
    def __init__(self, prefix: str):
        self.prefix = prefix
        self.files: dict[str, bytes] = {}

    def write(self, rel: str, data: bytes | str) -> None:
        self.files[self.prefix + rel] = data.encode("utf-8") if isinstance(data, str) else data


@dataclass
class SiteInfo:
    path: Path
    runs: int
    incidents: int
    pages: int
    files: int
    verified: bool | None  # None: not verified (verify=False)
    problems: int
    seconds: float


def _check_out(out: Path, archive: RunArchive) -> None:
    if isinstance(archive.root, Path):
        root = archive.root.resolve()
        target = out.resolve()
        if target == root or root in target.parents:
            raise UsageError(f"--out {out}: inside the archive {root}; a site there would be an unexpected file in "
                             "the archive. Choose a folder outside it")
        if target in root.parents:
            raise UsageError(f"--out {out}: the archive {root} is inside it; choose another folder")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise UsageError(f"--out {out}: not empty, and not a site opsbook wrote (no {MARKER}); choose a new or "
                         "empty folder")


def _fetch_files(runs: list[SiteRun], sink: _DirSink, pool: ThreadPoolExecutor | None) -> None:
    """Copy each run's linked files (and its manifest) into ``runs/<page>/``, and extract the canary
    plots of the runbooks in ``PLOT_RUNBOOKS``; disk and S3 alike, one job per run in ``pool``."""

    def one(run: SiteRun) -> None:
        if run.manifest is None or run.path is None:
            return
        base = f"runs/{run.page}/"
        href_base = rel_url(run.page) + "/"
        if run.raw is not None:  # the very bytes the page was drawn from (and the ledger hashed)
            sink._write(base + MANIFEST_NAME, run.raw)
            run.copied[MANIFEST_NAME] = href_base + MANIFEST_NAME
        with RecordFiles(run.path) as record:
            for rel in wanted_files(run):
                data = record.read(rel)
                if data is None:
                    continue
                name = rel if rel == "notebook.html" else copy_name(rel)  # the record's own rendering
                sink._write(base + name, data)
                run.copied[rel] = href_base + "/".join(quote(p, safe="") for p in name.split("/"))
            if run.entry.runbook_id in PLOT_RUNBOOKS and "notebook.ipynb" in as_dict(run.m.get("files")):
                for i, png in enumerate(extract_pngs(record.read("notebook.ipynb") or b""), 1):
                    sink._write(f"{base}plot-{i}.png", png)
                    run.plots.append(f"{href_base}plot-{i}.png")

    if pool is None:
        for r in runs:
            one(r)
        return
    for _ in pool.map(one, runs):
        pass


def build(archive: RunArchive, out: str | os.PathLike[str], *, verify: bool = True, workers: int = 8,
          generated: str | None = None, progress: Callable[[str], None] | None = None) -> SiteInfo:
    """Write the site of ``archive`` to the folder ``out`` (created; a site written there before is
    replaced as a whole; any other non-empty folder is refused with ``UsageError``).

    The site is written into a new sibling folder and renamed into place, so a reader never sees
    half a site. ``archive.verify()`` runs in a thread while the record files are copied."""
    t0 = time.perf_counter()
    out = Path(out)
    _check_out(out, archive)
    say = progress or (lambda _msg: None)
    generated = generated or _now()
    runs, entries, notes = collect(archive)
    parent = out.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{out.name}.building-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    pool = ThreadPoolExecutor(max_workers=max(1, workers)) if workers > 1 else None
    checker = ThreadPoolExecutor(max_workers=1)
    try:
        verifying = checker.submit(archive.verify) if verify else None
        if verify:
            say(f"verifying {len(runs)} record(s) while their files are copied…")
        sink = _DirSink(tmp, pool)
        sink.write(MARKER, f"a static site written by `opsbook site` on {generated}; `opsbook site --out "
                           "THIS_FOLDER` replaces it as a whole\n")
        _fetch_files(runs, sink, pool)
        report = verifying.result() if verifying is not None else None
        say(f"writing the pages of {len(runs)} run(s)…")
        pages = Pages(runs, entries, sink=sink, title="opsbook: runs", location=str(archive.location),
                       report=report, verify_note="not verified (the site was built with --no-verify)",
                       generated=generated, notes=notes, head=entries[-1].hash if entries else None)
        npages = pages.write_all()
        sink.wait()
        old = None
        if out.exists():
            old = parent / f".{out.name}.old-{os.getpid()}"
            os.rename(out, old)
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        checker.shutdown(wait=True, cancel_futures=True)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return SiteInfo(path=out, runs=len(runs), incidents=len(pages.incidents), pages=npages, files=sink.count,
                    verified=None if report is None else report.ok,
                    problems=0 if report is None else len(report.problems), seconds=time.perf_counter() - t0)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def bundle_pages(incident_id: str, runs: Sequence[BundleRun], files: Mapping[str, bytes], *,
                 prefix: str = "site/", generated: str | None = None) -> dict[str, bytes]:
    """The site pages of one incident, for its evidence bundle (``opsbook evidence``): an index of its
    runs, the incident's timeline and each run's page, under ``prefix``. The pages link to the
    bundle's own ``records/<runbook>/<run>/`` files (``files``: the bundle's files so far) rather than
    copies; only the canary plots are new files."""
    sink = _DictSink(prefix)
    site_runs: list[SiteRun] = []
    pages: set[str] = set()
    for r in runs:
        stem = slug(r.run_id, "run")
        name, i = stem, 1
        while name in pages:
            i += 1
            name = f"{stem}-{i}"
        pages.add(name)
        run = SiteRun(r.entry, f"records/{r.record}", r.manifest, name)
        base = f"records/{r.record}/"
        up = "../../" + "/".join(quote(p, safe="") for p in f"records/{r.record}".split("/")) + "/"
        if base + MANIFEST_NAME in files:
            run.copied[MANIFEST_NAME] = h(up + MANIFEST_NAME)
        for rel in wanted_files(run):
            if base + rel in files:
                run.copied[rel] = h(up + "/".join(quote(p, safe="") for p in rel.split("/")))
        if run.entry.runbook_id in PLOT_RUNBOOKS:
            for j, png in enumerate(extract_pngs(files.get(base + "notebook.ipynb") or b""), 1):
                sink.write(f"runs/{name}/plot-{j}.png", png)
                run.plots.append(f"{rel_url(name)}/plot-{j}.png")
        site_runs.append(run)
    entries = [r.entry for r in runs]
    p = Pages(site_runs, entries, sink=sink, title=f"opsbook: incident {incident_id}",
               location=f"evidence bundle of incident {incident_id}", report=None,
               verify_note="check this bundle with `opsbook evidence --verify FILE.tar.gz`",
               generated=generated or _now(), notes=[], head=entries[-1].hash if entries else None,
               bundle=True, postmortem="POSTMORTEM.md")
    p.write_all()
    return sink.files
