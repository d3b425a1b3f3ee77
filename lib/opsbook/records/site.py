"""The archive as a static HTML site, for people who do not run a CLI (a reviewer, an auditor, the
post-mortem meeting): ``opsbook site --out DIR``, and the same pages inside an evidence bundle.

Layout of ``DIR``::

    index.html                every run, newest first, with filters (plain JavaScript, no server)
    runs.js                   the runs as a JavaScript array (window.OPSBOOK_RUNS), loaded by index.html
                              with a <script src>: fetch() of a local JSON file fails on file://
    assets/site.css, site.js  the style sheet and the index's filter script
    runs/<run_id>.html        one page per run: header (status, headline, runbook, target, mode,
                              operator, plan <-> apply, timings, verify status), steps, plots, evidence,
                              parameters, the record's files
    runs/<run_id>/            that run's files, copied so that the site works anywhere it is moved:
                              notebook.html (the executed notebook), manifest.json, evidence/...,
                              plot-N.png (the image/png outputs of a deploy-new-model notebook)
    incidents/<id>.html       one page per incident: its runs and their steps in time order
    .opsbook-site             marker: this folder is a site opsbook wrote (a rebuild replaces it)

Every text that comes from a record (titles, summaries, parameters, ids) is escaped with
``html.escape``; the index's script builds its rows with ``textContent``; no page has an inline script
or an inline event handler, and each carries a Content-Security-Policy that forbids them, so a hostile
manifest cannot inject script. A file copied from a record whose name a browser would render as a page
(``.html``, ``.svg``...) is given a ``.txt`` suffix. Files are read from a record folder only when they
are regular files inside it (no symlink is followed out of a record).

The archive is verified once (``archive.verify()``, as ``opsbook verify`` does) and each problem is
shown on the page of the record it names; ``verify=False`` skips it (the pages say so). Inside an
evidence bundle (:func:`bundle_pages`) the pages link to the bundle's ``records/`` instead of copies,
and the bundle's own check is ``opsbook evidence --verify``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import json
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from opsbook.errors import UsageError
from opsbook.records.disk import (
    _ID_RE,
    MANIFEST_NAME,
    LedgerEntry,
    VerifyProblem,
    VerifyReport,
    unfinished_runs,
)

if TYPE_CHECKING:
    from opsbook.records.bundle import IncidentRun
    from opsbook.records.disk import Archive
    from opsbook.records.s3 import S3Archive

__all__ = ["SiteInfo", "SiteRun", "build", "bundle_pages", "collect", "extract_pngs"]

MARKER = ".opsbook-site"
#: runbooks whose executed notebook's image/png outputs are shown on the run page (the canary plots)
PLOT_RUNBOOKS = frozenset({"deploy-new-model"})
MAX_PLOTS = 12
#: a browser renders these as pages (scripts included): a record file with such a name is copied as .txt
_ACTIVE_SUFFIXES = frozenset({".html", ".htm", ".xhtml", ".shtml", ".svg", ".svgz", ".xml", ".xsl", ".xht",
                              ".mht", ".mhtml", ".js", ".mjs", ".pdf", ".swf"})
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_CTRL = re.compile(r"[\x00-\x1f\x7f]")
CSP = ("default-src 'none'; script-src 'self' file:; style-src 'self' file:; img-src 'self' file: data:; "
       "base-uri 'none'; form-action 'none'")
STATUS_WORDS = {"started": "started, never finished"}
OUTCOMES = ("ok", "changed", "planned", "skipped", "failed")


def h(value: Any) -> str:
    """Text from a record, escaped for HTML (quotes included: safe inside attribute values too)."""
    if isinstance(value, str):
        return html.escape(value, quote=True)
    return html.escape("" if value is None else str(value), quote=True)


@functools.lru_cache(maxsize=256)
def _cls_of(text: str) -> str:
    return re.sub(r"[^a-z]", "", text.lower())[:20] or "none"


def _cls(value: Any) -> str:
    """A CSS class suffix from a record value: letters only."""
    return _cls_of(str(value or "")[:100])


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, bool)):
        return str(value)
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _slug(value: str, prefix: str) -> str:
    """A file name stem for an id: the id itself when it is a plain name, else a hash of it."""
    if _SAFE_NAME.match(value) and not value.lower().endswith((".html", ".htm")):
        return value
    return f"{prefix}-{hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"


def _href(*parts: str) -> str:
    """A relative URL from path segments (each percent-encoded), escaped for an attribute."""
    return h("/".join(quote(p, safe="") if p not in ("..", ".") else p for p in parts))


def _safe_rel(rel: Any) -> str | None:
    """A record file's relative path if it is a plain relative posix path inside the record."""
    if not isinstance(rel, str) or not rel or _CTRL.search(rel) or "\\" in rel:
        return None
    p = PurePosixPath(rel)
    if p.is_absolute() or any(part in ("", ".", "..") for part in p.parts) or rel.endswith("/"):
        return None
    return p.as_posix()


def _copy_name(rel: str) -> str:
    """The name a record file is copied under: unchanged, or with ``.txt`` when a browser would run it."""
    return rel + ".txt" if PurePosixPath(rel).suffix.lower() in _ACTIVE_SUFFIXES else rel


def _seconds(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if f == f and abs(f) < 1e12 else None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _duration(manifest: Mapping[str, Any], entry: LedgerEntry) -> str:
    secs = _seconds(manifest.get("duration_seconds"))
    if secs is None:
        a = _parse_time(manifest.get("started") or entry.started)
        b = _parse_time(manifest.get("ended") or entry.ended)
        secs = (b - a).total_seconds() if a and b else None
    if secs is None:
        return ""
    if secs < 120:
        return f"{secs:.1f} s"
    m, s = divmod(int(round(secs)), 60)
    return f"{m} min {s} s" if m < 120 else f"{m // 60} h {m % 60} min"


def headline_lines(manifest: Mapping[str, Any]) -> list[str]:
    """What the run found (``opsbook.cireport.run_headline``), robust to a manifest of any shape."""
    from opsbook.cireport import run_headline

    try:
        return [str(x) for x in run_headline(manifest)]
    except (TypeError, ValueError, AttributeError):
        return []


# ------------------------------------------------------------------------------------------ the runs


@dataclass
class SiteRun:
    """One run as the site shows it: its ledger entry, its manifest (``None``: unreadable, or a run
    that started and never finished), where its record is, and what verify said about it."""

    entry: LedgerEntry
    path: Any  # Path | S3Path | None: the record folder
    manifest: dict[str, Any] | None
    page: str  # file name stem of runs/<page>.html
    unfinished: bool = False
    note: str = ""
    problems: list[VerifyProblem] = field(default_factory=list)
    copied: dict[str, str] = field(default_factory=dict)  # record rel -> href from the run page
    plots: list[str] = field(default_factory=list)  # hrefs from the run page
    raw: bytes | None = field(default=None, repr=False)  # the bytes of its manifest.json
    _heads: list[str] | None = field(default=None, repr=False)

    @property
    def run_id(self) -> str:
        return self.entry.run_id

    @property
    def m(self) -> dict[str, Any]:
        return self.manifest or {}

    def get(self, key: str) -> Any:
        """A manifest field, else the ledger entry's copy of it."""
        value = self.m.get(key)
        if value is None and key in ("runbook_version", "status", "mode", "target", "operator", "started", "ended"):
            value = getattr(self.entry, key)
        return value

    @property
    def status(self) -> str:
        return "started" if self.unfinished else _text(self.get("status")) or "unknown"

    @property
    def started(self) -> str:
        return _text(self.get("started"))

    @property
    def incident(self) -> str:
        return _text(_dict(self.m.get("parameters")).get("incident_id"))

    @property
    def plan(self) -> str:
        """The plan run this run (an apply) carried out."""
        return _text(_dict(self.m.get("approval")).get("plan_run_id")) or (self.entry.plan or "")

    def sort_key(self) -> tuple[str, int]:
        return (self.started, self.entry.seq)

    def headlines(self) -> list[str]:
        """What the run found; for a failed run that marked nothing, its error."""
        if self._heads is None:
            self._heads = headline_lines(self.manifest) if self.manifest is not None else []
            error = _text(self.m.get("error")).strip()
            if not self._heads and error:
                self._heads = [error.splitlines()[0][:300]]
        return self._heads


def _parse_entries(archive: Archive | S3Archive) -> tuple[list[LedgerEntry], list[str]]:
    """Every ledger entry that parses, and a note for each line that does not (verify names them)."""
    out: list[LedgerEntry] = []
    bad: list[str] = []
    for n, raw in archive._ledger_lines():
        try:
            out.append(LedgerEntry.from_obj(json.loads(raw)))
        except ValueError as exc:
            bad.append(f"ledger entry {n} does not parse ({exc}); it is not shown")
    return out, bad


def collect(archive: Archive | S3Archive) -> tuple[list[SiteRun], list[LedgerEntry], list[str]]:
    """The runs of the archive (one per record in the ledger, plus each apply that started and never
    finished), every ledger entry, and notes about ledger lines that could not be read."""
    entries, notes = _parse_entries(archive)
    seen: set[str] = set()
    unique: list[LedgerEntry] = []
    for e in entries:
        if not e.is_start and e.record not in seen:
            seen.add(e.record)
            unique.append(e)
    plain = [e for e in unique if _ID_RE.match(e.run_id) and _ID_RE.match(e.runbook_id)]
    runs: list[SiteRun] = []
    pages: set[str] = set()

    def page_for(run_id: str) -> str:
        stem = _slug(run_id, "run")
        name, i = stem, 1
        while name in pages:
            i += 1
            name = f"{stem}-{i}"
        pages.add(name)
        return name

    read = {e.record: (path, data) for e, path, data in archive.read_manifests(plain)}
    for e in unique:
        path, data = read.get(e.record, (None, None))
        manifest, note = None, ""
        if e.record not in read:
            note = f"the ledger names an invalid record path {e.record!r}: nothing is read from it"
        elif data is None:
            note = f"the record's {MANIFEST_NAME} cannot be read (removed?)"
        else:
            try:
                doc = json.loads(data)
            except ValueError:
                doc = None
            if isinstance(doc, dict):
                manifest = doc
            else:
                note = f"the record's {MANIFEST_NAME} is not a JSON object"
        runs.append(SiteRun(e, path, manifest, page_for(e.run_id), note=note, raw=data))
    for e in unfinished_runs(entries):
        runs.append(SiteRun(e, None, None, page_for(e.run_id), unfinished=True,
                            note="this apply started and never finished: its process died or was killed before "
                                 "its record was written, so what it changed is not recorded"))
    return runs, entries, notes


def extract_pngs(notebook: bytes, limit: int = MAX_PLOTS) -> list[bytes]:
    """The ``image/png`` outputs of an executed notebook's code cells (the canary plots), in order."""
    if b"image/png" not in notebook:
        return []
    try:
        nb = json.loads(notebook)
    except ValueError:
        return []
    out: list[bytes] = []
    for cell in _list(_dict(nb).get("cells")):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        for o in _list(cell.get("outputs")):
            png = _dict(_dict(o).get("data")).get("image/png")
            if isinstance(png, list):
                png = "".join(x for x in png if isinstance(x, str))
            if not isinstance(png, str):
                continue
            try:
                raw = base64.b64decode(png)
            except ValueError:
                continue
            if raw.startswith(_PNG_MAGIC):
                out.append(raw)
                if len(out) >= limit:
                    return out
    return out


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _read_fd(fd: int) -> bytes | None:
    """The content of an open file if it is a regular file (one read for a small file)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return None
    chunks = []
    want = st.st_size + 1  # +1: one more read confirms the end
    while True:
        chunk = os.read(fd, max(want, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        want = 1 << 20
    return b"".join(chunks)


class _Record:
    """Reads the files of one record: on disk through a descriptor of the record folder, each path
    component opened without following a symlink (a record holds regular files only: a planted link
    is not followed out of it); in S3 through the archive's objects."""

    def __init__(self, path: Any):
        self.path = path
        self.fd: int | None = None
        if isinstance(path, Path):
            try:
                self.fd = os.open(path, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC)
            except OSError:
                self.fd = None

    def __enter__(self) -> _Record:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def read(self, rel: str) -> bytes | None:
        if self.path is None:
            return None
        if not isinstance(self.path, Path):
            return _read_s3(self.path, rel)
        if self.fd is None:
            return None
        parts = rel.split("/")
        opened: list[int] = []
        try:
            at = self.fd
            for part in parts[:-1]:
                at = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=at)
                opened.append(at)
            fd = os.open(parts[-1], os.O_RDONLY | _NOFOLLOW | _CLOEXEC, dir_fd=at)
        except (OSError, ValueError):
            return None
        finally:
            for d in opened:
                os.close(d)
        try:
            return _read_fd(fd)
        except OSError:
            return None
        finally:
            os.close(fd)


def _read_s3(path: Any, rel: str) -> bytes | None:
    from opsbook.errors import OpsbookError

    try:
        data: bytes = (path / rel).read_bytes()
        return data
    except (OSError, ValueError, OpsbookError):  # gone, or a store error: the page says it is not available
        return None


def _wanted_files(run: SiteRun) -> list[str]:
    """The record files a run page links to: the executed notebook's HTML and the evidence files."""
    files = _dict(run.m.get("files"))
    rels = ["notebook.html"] if "notebook.html" in files else []
    named = {f"evidence/{_text(_dict(e).get('name'))}" for e in _list(run.m.get("evidence"))}
    rels += sorted(r for r in files if isinstance(r, str) and (r.startswith("evidence/") or r in named))
    return [r for r in (_safe_rel(x) for x in rels) if r]


# ------------------------------------------------------------------------------------------ output


class _Sink:
    """Where the pages go: files under a folder (the site), or a dict of bytes (an evidence bundle)."""

    def write(self, rel: str, data: bytes | str) -> None:
        raise NotImplementedError


class _DirSink(_Sink):
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


class _DictSink(_Sink):
    def __init__(self, prefix: str):
        self.prefix = prefix
        self.files: dict[str, bytes] = {}

    def write(self, rel: str, data: bytes | str) -> None:
        self.files[self.prefix + rel] = data.encode("utf-8") if isinstance(data, str) else data


# ------------------------------------------------------------------------------------------ pages


def _head(title: str, up: str, *, extra: str = "") -> str:
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
            "<meta name=\"referrer\" content=\"no-referrer\">"
            f"<title>{h(title)}</title><link rel=\"stylesheet\" href=\"{up}assets/site.css\">{extra}</head>\n<body>\n")


def _foot(generated: str) -> str:
    return f"<footer>generated by <code>opsbook site</code> on {h(generated)}</footer>\n</body></html>\n"


def _badge(status: str) -> str:
    return f"<span class=\"badge st-{_cls(status)}\">{h(STATUS_WORDS.get(status, status))}</span>"


def _failed_cell(cell: Any) -> str:
    """Where a failed run stopped: the cell, the exception and the cell's source."""
    if cell is None:
        return ""
    if not isinstance(cell, dict):
        return f"<p>failed cell: {h(_text(cell))}</p>"
    where = f"cell {h(_text(cell.get('index')))}" + (f" (code cell {h(_text(cell.get('code_cell')))})"
                                                      if cell.get("code_cell") is not None else "")
    exc = ": ".join(h(_text(cell.get(k))) for k in ("ename", "evalue") if cell.get(k))
    src = _text(cell.get("source"))
    return (f"<p>failed in {where}" + (f": <b>{exc}</b>" if exc else "") + "</p>"
            + (f"<pre>{h(src)}</pre>" if src else ""))


def _facts(rows: Iterable[tuple[str, str]]) -> str:
    """A definition list; the values are HTML already (escaped by the caller)."""
    return "<dl class=\"facts\">" + "".join(f"<dt>{h(k)}</dt><dd>{v}</dd>" for k, v in rows if v) + "</dl>\n"


class _Pages:
    """Renders the pages of a set of runs into a sink."""

    def __init__(self, runs: list[SiteRun], entries: list[LedgerEntry], *, sink: _Sink, title: str,
                 location: str, report: VerifyReport | None, verify_note: str, generated: str,
                 notes: list[str], head: str | None, bundle: bool = False, postmortem: str | None = None):
        self.runs = sorted(runs, key=SiteRun.sort_key, reverse=True)  # newest first
        self.sink = sink
        self.title = title
        self.location = location
        self.report = report
        self.verify_note = verify_note
        self.generated = generated
        self.notes = notes
        self.head = head
        self.bundle = bundle
        self.postmortem = postmortem
        self.by_run: dict[str, SiteRun] = {}
        for r in self.runs:
            self.by_run.setdefault(r.run_id, r)
        # plan -> the runs that carried it out (a started entry counts: it consumed the plan)
        self.used_by: dict[str, list[str]] = {}
        for e in entries:
            if e.plan and e.run_id not in self.used_by.get(e.plan, []):
                self.used_by.setdefault(e.plan, []).append(e.run_id)
        for r in self.runs:
            if r.plan and r.run_id not in self.used_by.get(r.plan, []):
                self.used_by.setdefault(r.plan, []).append(r.run_id)
        self.archive_problems: list[VerifyProblem] = []
        if report is not None:
            for p in report.problems:
                run = self.by_run.get(p.record)
                if run is not None and not run.unfinished:
                    run.problems.append(p)
                else:
                    self.archive_problems.append(p)
        self.incidents: dict[str, list[SiteRun]] = {}
        for r in sorted(self.runs, key=SiteRun.sort_key):  # time order
            if r.incident and not r.unfinished:
                self.incidents.setdefault(r.incident, []).append(r)
        self.incident_page = {i: _slug(i, "incident") for i in self.incidents}

    # -- links --
    def run_link(self, run_id: str, up: str, *, label: str | None = None) -> str:
        run = self.by_run.get(run_id)
        text = h(label if label is not None else run_id)
        if run is None:
            return f"<code>{text}</code> <span class=\"muted\">(not in this {'bundle' if self.bundle else 'archive'})</span>"
        return f"<a href=\"{up}runs/{_href(run.page)}.html\"><code>{text}</code></a>"

    def incident_link(self, incident: str, up: str) -> str:
        page = self.incident_page.get(incident)
        if page is None:
            return h(incident)
        return f"<a href=\"{up}incidents/{_href(page)}.html\">{h(incident)}</a>"

    def verify_cell(self, run: SiteRun) -> tuple[str, str]:
        """(class, HTML) of a run's verify status."""
        if run.unfinished:
            return "none", "no record to verify (the run never finished)"
        if self.report is None:
            return "none", h(self.verify_note)
        if run.problems:
            items = "".join(f"<li><b>{h(p.kind)}</b>: {h(p.detail)}</li>" for p in run.problems)
            return "bad", f"<b>FAILED</b>: {len(run.problems)} problem(s)<ul>{items}</ul>"
        elsewhere = (len(self.report.problems) if self.report is not None else 0) - len(run.problems)
        more = (f" <span class=\"muted\">(the archive has {elsewhere} problem(s) elsewhere: see "
                "<a href=\"../index.html#verify\">the index</a>)</span>") if elsewhere else ""
        return "ok", ("<b>OK</b>: its files match its manifest and its manifest matches its ledger entry, "
                      "in a ledger whose chain verifies" + more)

    # -- run pages --
    def run_page(self, run: SiteRun) -> str:
        m = run.m
        up = "../"
        status = run.status
        rb_title = _text(m.get("runbook_title"))
        heads = run.headlines()
        parts = [_head(f"{status} · {run.entry.runbook_id} · {run.run_id}", up)]
        nav = [f"<a href=\"{up}index.html\">all runs</a>"]
        if run.incident and not run.unfinished:
            nav.append(f"incident {self.incident_link(run.incident, up)}")
        parts.append(f"<nav>{' · '.join(nav)}</nav>\n")
        parts.append(f"<header class=\"run st-{_cls(status)}\">\n<h1>{_badge(status)} "
                     f"{h(rb_title or run.entry.runbook_id)}</h1>\n")
        if heads:
            parts.append("<ul class=\"headline\">" + "".join(f"<li>{h(x)}</li>" for x in heads) + "</ul>\n")
        if run.note:
            parts.append(f"<p class=\"note\">{h(run.note)}</p>\n")
        vcls, vhtml = self.verify_cell(run)
        approval = _dict(m.get("approval"))
        plan_html = ""
        if run.plan:
            extra = "; ".join(f"{h(k)} {h(_text(v))}" for k, v in approval.items() if k != "plan_run_id")
            plan_html = f"carries out plan {self.run_link(run.plan, up)}" + (f" <span class=\"muted\">({extra})"
                                                                           "</span>" if extra else "")
        users = [u for u in self.used_by.get(run.run_id, []) if u != run.run_id]
        if users:
            used = ", ".join(self.run_link(u, up) + f" ({h(STATUS_WORDS.get(self.by_run[u].status, self.by_run[u].status))})"
                             if u in self.by_run else self.run_link(u, up) for u in users)
            plan_html += ("<br>" if plan_html else "") + f"carried out by apply {used}"
        elif _text(run.get("mode")) == "plan" and status == "succeeded":
            plan_html += ("<br>" if plan_html else "") + "<span class=\"muted\">not carried out by any apply in this " \
                         f"{'bundle' if self.bundle else 'archive'}</span>"
        version = _text(run.get("runbook_version"))
        parts.append(_facts([
            ("run id", f"<code>{h(run.run_id)}</code>"),
            ("runbook", f"<code>{h(run.entry.runbook_id)}</code>" + (f" v{h(version)}" if version else "")),
            ("mode", h(_text(run.get("mode")))),
            ("target", h(_text(run.get("target")))),
            ("operator", h(_text(run.get("operator"))) + (f" <span class=\"muted\">on {h(_text(m.get('host')))}"
                                                          "</span>" if m.get("host") else "")),
            ("plan / approval", plan_html),
            ("incident", self.incident_link(run.incident, up) if run.incident else ""),
            ("started", h(run.started)),
            ("ended", h(_text(run.get("ended")))),
            ("duration", h(_duration(m, run.entry))),
            ("record", f"<code>{h(run.path)}</code>" if run.path is not None else ""),
            ("ledger", f"seq {h(run.entry.seq)}, manifest sha256 <code>{h(run.entry.manifest_sha256)}</code>"),
            ("verify", f"<span class=\"v-{vcls}\">{vhtml}</span>"),
        ]))
        parts.append("</header>\n")
        if m.get("error") or m.get("failed_cell") is not None:
            parts.append("<section class=\"error\"><h2>Error</h2>"
                         + (f"<pre>{h(_text(m.get('error')))}</pre>" if m.get("error") else "")
                         + _failed_cell(m.get("failed_cell")) + "</section>\n")
        links = []
        nb = run.copied.get("notebook.html")
        if nb:
            links.append(f"<a href=\"{nb}\">the executed notebook (HTML)</a>")
        elif run.manifest is not None:
            links.append("<span class=\"muted\">the executed notebook's HTML is not available</span>")
        mf = run.copied.get(MANIFEST_NAME)
        if mf:
            links.append(f"<a href=\"{mf}\">manifest.json</a>")
        if links:
            parts.append("<p class=\"links\">" + " · ".join(links) + "</p>\n")
        steps = [s for s in _list(m.get("steps")) if isinstance(s, dict)]
        if steps:
            counts: dict[str, int] = {}
            for s in steps:
                counts[_text(s.get("outcome"))] = counts.get(_text(s.get("outcome")), 0) + 1
            summary = ", ".join(f"{n} {h(k)}" for k, n in counts.items())
            rows = []
            for s in steps:
                secs = _seconds(s.get("seconds"))
                outcome = _text(s.get("outcome"))
                rows.append(f"<tr class=\"oc-{_cls(outcome)}\"><td><span class=\"oc\">{h(outcome)}</span></td>"
                            f"<td>{h(_text(s.get('kind')))}</td><td>{h(_text(s.get('title')))}</td>"
                            f"<td class=\"num\">{'' if secs is None else f'{secs:.1f}'}</td>"
                            f"<td class=\"summary\">{h(_text(s.get('summary')))}</td></tr>")
            parts.append(f"<section id=\"steps\"><h2>Steps <small>({len(steps)}: {summary})</small></h2>"
                         "<table class=\"steps\"><thead><tr><th>outcome</th><th>kind</th><th>step</th>"
                         "<th class=\"num\">seconds</th><th>summary</th></tr></thead><tbody>"
                         + "".join(rows) + "</tbody></table></section>\n")
        if run.plots:
            figs = "".join(f"<figure><img src=\"{src}\" alt=\"figure {i} of the executed notebook\">"
                           f"<figcaption>figure {i} of the executed notebook</figcaption></figure>"
                           for i, src in enumerate(run.plots, 1))
            parts.append(f"<section id=\"plots\"><h2>Canary plots</h2>{figs}</section>\n")
        files = _dict(m.get("files"))
        evidence = [e for e in _list(m.get("evidence")) if isinstance(e, dict)]
        ev_rels = [r for r in _wanted_files(run) if r.startswith("evidence/")]
        if ev_rels or evidence:
            described = {f"evidence/{_text(e.get('name'))}": _text(e.get("description")) for e in evidence}
            rows = []
            for rel in sorted(set(ev_rels) | set(described)):
                href = run.copied.get(rel)
                name = h(rel[len("evidence/"):]) if rel.startswith("evidence/") else h(rel)
                cell = f"<a href=\"{href}\">{name}</a>" if href else f"{name} <span class=\"muted\">(not available)</span>"
                rows.append(f"<tr><td>{cell}</td><td>{h(described.get(rel, ''))}</td>"
                            f"<td><code>{h(_text(files.get(rel))[:16])}</code></td></tr>")
            parts.append("<section id=\"evidence\"><h2>Evidence</h2><table><thead><tr><th>file</th><th>what</th>"
                         "<th>sha256 (first 16)</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
                         "</section>\n")
        params = _dict(m.get("parameters"))
        if params:
            rows = [f"<tr><th>{h(k)}</th><td><code>{h(_text(v))}</code></td></tr>" for k, v in sorted(params.items())]
            parts.append("<section id=\"parameters\"><h2>Parameters</h2><p class=\"muted\">Secrets appear as "
                         "references only.</p><table class=\"params\"><tbody>" + "".join(rows) + "</tbody></table>"
                         "</section>\n")
        if files:
            rows = [f"<tr><td><code>{h(k)}</code></td><td><code>{h(_text(v))}</code></td></tr>"
                    for k, v in sorted(files.items())]
            parts.append("<section id=\"files\"><h2>Record files</h2><p class=\"muted\">The sha256 of every file of "
                         "the record, as its manifest lists them (<code>opsbook verify</code> recomputes them)."
                         "</p><table><thead><tr><th>file</th><th>sha256</th></tr></thead><tbody>" + "".join(rows)
                         + "</tbody></table></section>\n")
        parts.append(_foot(self.generated))
        return "".join(parts)

    # -- incident pages --
    def incident_page_html(self, incident: str, runs: list[SiteRun]) -> str:
        up = "../"
        params = [_dict(r.m.get("parameters")) for r in runs]
        responders = sorted({_text(x) for p in params for x in _list(p.get("responders"))})
        summary = next((_text(p.get("summary")) for p in params if p.get("summary")), "")
        last = max((_text(r.get("ended")) or r.started for r in runs), default="")
        parts = [_head(f"incident {incident}", up),
                 f"<nav><a href=\"{up}index.html\">all runs</a></nav>\n",
                 f"<header><h1>Incident {h(incident)}</h1>\n"]
        statuses: dict[str, int] = {}
        for r in runs:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        parts.append(_facts([
            ("summary", h(summary)),
            ("responders", h(", ".join(responders))),
            ("runs", f"{len(runs)} ({h(', '.join(f'{n} {k}' for k, n in statuses.items()))})"),
            ("first run started", h(runs[0].started if runs else "")),
            ("last run ended", h(last)),
            ("post-mortem draft", "<a href=\"../../POSTMORTEM.md\">POSTMORTEM.md</a>" if self.postmortem else ""),
        ]))
        parts.append("</header>\n")
        rows = []
        for r in runs:
            p = _dict(r.m.get("parameters"))
            phases = ", ".join(_text(x) for x in _list(p.get("phases")))
            plan = f"<br><span class=\"muted\">plan</span> {self.run_link(r.plan, up)}" if r.plan else ""
            rows.append(f"<tr><td><code>{h(r.started)}</code></td><td>{self.run_link(r.run_id, up)}{plan}</td>"
                        f"<td>{h(r.entry.runbook_id)}</td><td>{h(_text(r.get('mode')))}</td><td>{_badge(r.status)}</td>"
                        f"<td>{h(_text(r.get('operator')))}</td><td>{h(phases)}</td>"
                        f"<td class=\"summary\">{h('; '.join(r.headlines()))}</td></tr>")
        parts.append("<section id=\"runs\"><h2>Runs, in time order</h2><table><thead><tr><th>started</th>"
                     "<th>run</th><th>runbook</th><th>mode</th><th>status</th><th>operator</th><th>phases</th>"
                     "<th>headline</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></section>\n")
        events: list[tuple[str, int, str]] = []
        for r in runs:
            link = self.run_link(r.run_id, up)
            events.append((r.started, 0, f"<td>{link}</td><td>run started</td><td>mode {h(_text(r.get('mode')))}, "
                           f"target {h(_text(r.get('target')))}, operator {h(_text(r.get('operator')))}</td>"))
            for s in _list(r.m.get("steps")):
                if not isinstance(s, dict) or s.get("outcome") == "skipped":
                    continue
                outcome = _text(s.get("outcome"))
                events.append((_text(s.get("started")) or r.started, 1,
                               f"<td>{link}</td><td><span class=\"oc oc-{_cls(outcome)}\">{h(outcome)}</span> "
                               f"{h(_text(s.get('kind')))}</td><td><b>{h(_text(s.get('title')))}</b>"
                               + (f": {h(_text(s.get('summary')))}" if s.get("summary") else "") + "</td>"))
            events.append((_text(r.get("ended")) or r.started, 2, f"<td>{link}</td><td>run ended</td>"
                           f"<td>{_badge(r.status)}" + (f" {h(_text(r.m.get('error')))}" if r.m.get("error") else "")
                           + "</td>"))
        events.sort(key=lambda x: (x[0], x[1]))
        parts.append("<section id=\"timeline\"><h2>Timeline</h2><p class=\"muted\">Every run and every step it "
                     "recorded (skipped steps left out), in time order (UTC).</p><table class=\"timeline\"><thead>"
                     "<tr><th>time</th><th>run</th><th>event</th><th>what</th></tr></thead><tbody>"
                     + "".join(f"<tr><td><code>{h(t)}</code></td>{cells}</tr>" for t, _o, cells in events)
                     + "</tbody></table></section>\n")
        parts.append(_foot(self.generated))
        return "".join(parts)

    # -- the index --
    def index_rows(self) -> list[dict[str, Any]]:
        out = []
        for r in self.runs:
            heads = r.headlines()
            v = "" if self.report is None or r.unfinished else ("problem" if r.problems else "ok")
            out.append({"id": r.run_id, "page": f"runs/{r.page}.html", "runbook": r.entry.runbook_id,
                        "status": r.status, "mode": _text(r.get("mode")), "target": _text(r.get("target")),
                        "operator": _text(r.get("operator")), "started": r.started,
                        "incident": r.incident if not r.unfinished else "",
                        "incident_page": (f"incidents/{self.incident_page[r.incident]}.html"
                                          if r.incident in self.incident_page and not r.unfinished else ""),
                        "headline": "; ".join(heads) or r.note, "verify": v, "seq": r.entry.seq})
        return out

    def index_page(self, rows: list[dict[str, Any]]) -> str:
        def options(key: str, label: str) -> str:
            values = sorted({str(r[key]) for r in rows if r[key]})
            opts = "".join(f"<option value=\"{h(v)}\">{h(STATUS_WORDS.get(v, v) if key == 'status' else v)}</option>"
                           for v in values)
            return (f"<label>{h(label)}<select name=\"{key}\"><option value=\"\">(all)</option>{opts}</select>"
                    "</label>")

        parts = [_head(self.title, "", extra="<script src=\"runs.js\"></script>"),
                 f"<header><h1>{h(self.title)}</h1>\n"]
        statuses: dict[str, int] = {}
        for r in self.runs:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        if self.report is None:
            vhtml = f"<span class=\"v-none\">{h(self.verify_note)}</span>"
        elif self.report.ok:
            vhtml = f"<span class=\"v-ok\"><b>OK</b>: {self.report.records} record(s) and the ledger chain</span>"
        else:
            vhtml = (f"<span class=\"v-bad\"><b>FAILED</b>: {len(self.report.problems)} problem(s); each is shown on "
                     "the page of the run it names</span>")
        parts.append(_facts([
            ("archive", f"<code>{h(self.location)}</code>"),
            ("runs", f"{len(self.runs)} ({h(', '.join(f'{n} {STATUS_WORDS.get(k, k)}' for k, n in statuses.items()))})"),
            ("chain head", f"<code>{h(self.head or '(empty ledger)')}</code> <span class=\"muted\">compare it with "
                           "the head kept where the runner cannot write</span>"),
            ("verify", vhtml),
        ]))
        parts.append("</header>\n")
        if self.notes or self.archive_problems:
            items = [f"<li>{h(n)}</li>" for n in self.notes]
            items += [f"<li><b>{h(p.kind)}</b> {h(p.record)}: {h(p.detail)}</li>" for p in self.archive_problems[:200]]
            if len(self.archive_problems) > 200:
                items.append(f"<li>… and {len(self.archive_problems) - 200} more (run <code>opsbook verify</code>)</li>")
            parts.append(f"<section id=\"verify\" class=\"error\"><h2>Archive problems</h2><ul>{''.join(items)}</ul>"
                         "</section>\n")
        if self.incidents:
            items = []
            for inc, runs in sorted(self.incidents.items(), key=lambda kv: kv[1][0].sort_key(), reverse=True):
                items.append(f"<li>{self.incident_link(inc, '')} <span class=\"muted\">{len(runs)} run(s), from "
                             f"{h(runs[0].started)}</span></li>")
            parts.append(f"<section id=\"incidents\"><h2>Incidents</h2><ul class=\"incidents\">{''.join(items)}</ul>"
                         "</section>\n")
        parts.append(
            "<section id=\"all\"><h2>Runs <small id=\"count\"></small></h2>\n"
            "<form id=\"filters\" autocomplete=\"off\">"
            + options("runbook", "runbook") + options("status", "status") + options("mode", "mode")
            + options("target", "target") + options("operator", "operator") + options("incident", "incident")
            + ("<label>verify<select name=\"verify\"><option value=\"\">(all)</option><option value=\"ok\">ok"
               "</option><option value=\"problem\">problem</option></select></label>" if self.report is not None
               else "")
            + "<label>from<input type=\"date\" name=\"from\"></label><label>to<input type=\"date\" name=\"to\">"
              "</label><label>search<input type=\"search\" name=\"q\" placeholder=\"run id, headline…\"></label>"
              "<button type=\"reset\" id=\"reset\">clear</button></form>\n"
              "<noscript><p class=\"note\">The list of runs and its filters need JavaScript. Every run has its page "
              "in <code>runs/</code>, named after its run id.</p></noscript>\n"
              "<table id=\"runs\"><thead><tr><th>started</th><th>run</th><th>runbook</th><th>status</th>"
              "<th>mode</th><th>target</th><th>operator</th><th>incident</th><th>headline</th><th>verify</th>"
              "</tr></thead><tbody id=\"runs-body\"></tbody></table>\n"
              "<p><button type=\"button\" id=\"more\" hidden>show all</button></p></section>\n"
              "<script src=\"assets/site.js\"></script>\n")
        parts.append(_foot(self.generated))
        return "".join(parts)

    def write_all(self) -> int:
        """Every page and asset; returns the number of pages."""
        rows = self.index_rows()
        data = json.dumps(rows, ensure_ascii=True, separators=(",", ":")).replace("</", "<\\/")
        self.sink.write("runs.js", "// the runs of this site, newest first (read by assets/site.js)\n"
                                   f"window.OPSBOOK_RUNS = {data};\n")
        self.sink.write("assets/site.css", SITE_CSS)
        self.sink.write("assets/site.js", SITE_JS)
        self.sink.write("index.html", self.index_page(rows))
        for r in self.runs:
            self.sink.write(f"runs/{r.page}.html", self.run_page(r))
        for inc, runs in self.incidents.items():
            self.sink.write(f"incidents/{self.incident_page[inc]}.html", self.incident_page_html(inc, runs))
        return 1 + len(self.runs) + len(self.incidents)


# ------------------------------------------------------------------------------------------ the site


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


def _check_out(out: Path, archive: Archive | S3Archive) -> None:
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
        href_base = _href(run.page) + "/"
        if run.raw is not None:  # the very bytes the page was drawn from (and the ledger hashed)
            sink._write(base + MANIFEST_NAME, run.raw)
            run.copied[MANIFEST_NAME] = href_base + MANIFEST_NAME
        with _Record(run.path) as record:
            for rel in _wanted_files(run):
                data = record.read(rel)
                if data is None:
                    continue
                name = rel if rel == "notebook.html" else _copy_name(rel)  # the record's own rendering
                sink._write(base + name, data)
                run.copied[rel] = href_base + "/".join(quote(p, safe="") for p in name.split("/"))
            if run.entry.runbook_id in PLOT_RUNBOOKS and "notebook.ipynb" in _dict(run.m.get("files")):
                for i, png in enumerate(extract_pngs(record.read("notebook.ipynb") or b""), 1):
                    sink._write(f"{base}plot-{i}.png", png)
                    run.plots.append(f"{href_base}plot-{i}.png")

    if pool is None:
        for r in runs:
            one(r)
        return
    for _ in pool.map(one, runs):
        pass


def build(archive: Archive | S3Archive, out: str | os.PathLike[str], *, verify: bool = True, workers: int = 8,
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
        pages = _Pages(runs, entries, sink=sink, title="opsbook: runs", location=str(archive.location),
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


def bundle_pages(incident_id: str, runs: list[IncidentRun], files: Mapping[str, bytes], *,
                 prefix: str = "site/", generated: str | None = None) -> dict[str, bytes]:
    """The site pages of one incident, for its evidence bundle (``opsbook evidence``): an index of its
    runs, the incident's timeline and each run's page, under ``prefix``. The pages link to the
    bundle's own ``records/<runbook>/<run>/`` files (``files``: the bundle's files so far) rather than
    copies; only the canary plots are new files."""
    sink = _DictSink(prefix)
    site_runs: list[SiteRun] = []
    pages: set[str] = set()
    for r in runs:
        stem = _slug(r.run_id, "run")
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
        for rel in _wanted_files(run):
            if base + rel in files:
                run.copied[rel] = h(up + "/".join(quote(p, safe="") for p in rel.split("/")))
        if run.entry.runbook_id in PLOT_RUNBOOKS:
            for j, png in enumerate(extract_pngs(files.get(base + "notebook.ipynb") or b""), 1):
                sink.write(f"runs/{name}/plot-{j}.png", png)
                run.plots.append(f"{_href(name)}/plot-{j}.png")
        site_runs.append(run)
    entries = [r.entry for r in runs]
    p = _Pages(site_runs, entries, sink=sink, title=f"opsbook: incident {incident_id}",
               location=f"evidence bundle of incident {incident_id}", report=None,
               verify_note="check this bundle with `opsbook evidence --verify FILE.tar.gz`",
               generated=generated or _now(), notes=[], head=entries[-1].hash if entries else None,
               bundle=True, postmortem="POSTMORTEM.md")
    p.write_all()
    return sink.files


# ------------------------------------------------------------------------------------------ assets

SITE_CSS = """\
:root { --fg: #1b1f24; --muted: #57606a; --line: #d0d7de; --bg: #ffffff; --head: #f6f8fa;
  --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; --plan: #0969da; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg);
  background: var(--bg); margin: 0 auto; padding: 1rem 1.5rem 3rem; max-width: 1400px; }
code, pre, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; }
pre { white-space: pre-wrap; word-break: break-word; background: var(--head); padding: .5rem; border-radius: 4px; }
a { color: var(--plan); }
h1 { font-size: 1.5rem; margin: .4rem 0; } h2 { font-size: 1.15rem; margin: 1.4rem 0 .5rem; }
h2 small, .muted { color: var(--muted); font-weight: normal; }
nav { margin-bottom: .5rem; }
header { border-bottom: 1px solid var(--line); padding-bottom: .6rem; }
header.run { border-left: 6px solid var(--line); padding-left: .8rem; }
header.st-succeeded { border-left-color: var(--ok); } header.st-failed { border-left-color: var(--bad); }
header.st-aborted, header.st-started { border-left-color: var(--warn); }
.headline { font-size: 1.1rem; font-weight: 600; margin: .3rem 0 .6rem; padding-left: 1.2rem; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: .4rem 0; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; overflow-wrap: anywhere; }
dl.facts ul { margin: .2rem 0; }
.badge { display: inline-block; padding: .05rem .5rem; border-radius: 1rem; font-size: .8rem; font-weight: 600;
  color: #fff; background: var(--muted); vertical-align: middle; white-space: nowrap; }
.badge.st-succeeded { background: var(--ok); } .badge.st-failed { background: var(--bad); }
.badge.st-aborted, .badge.st-started { background: var(--warn); }
.v-ok { color: var(--ok); } .v-bad { color: var(--bad); } .v-none { color: var(--muted); }
table { border-collapse: collapse; width: 100%; margin: .3rem 0 1rem; }
th, td { border-bottom: 1px solid var(--line); padding: .3rem .5rem; text-align: left; vertical-align: top; }
thead th { background: var(--head); position: sticky; top: 0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.summary { overflow-wrap: anywhere; }
table.params th { width: 1%; white-space: nowrap; font-weight: normal; color: var(--muted); }
.oc { font-weight: 600; } .oc-ok .oc, .oc.oc-ok { color: var(--ok); } .oc-failed .oc, .oc.oc-failed { color: var(--bad); }
.oc-changed .oc, .oc.oc-changed { color: var(--warn); } .oc-planned .oc, .oc.oc-planned { color: var(--plan); }
.oc-skipped, .oc.oc-skipped { color: var(--muted); }
section.error { border: 1px solid var(--bad); border-radius: 4px; padding: 0 .8rem; }
.note { background: #fff8c5; padding: .4rem .6rem; border-radius: 4px; }
figure { margin: .5rem 0 1rem; } figure img { max-width: 100%; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: .85rem; }
form#filters { display: flex; flex-wrap: wrap; gap: .4rem .8rem; align-items: end; margin: .4rem 0 .6rem; }
form#filters label { display: flex; flex-direction: column; font-size: .8rem; color: var(--muted); }
form#filters select, form#filters input { font: inherit; padding: .15rem .3rem; max-width: 16rem; }
#runs tr.st-failed td:nth-child(4) { color: var(--bad); font-weight: 600; }
#runs tr.st-succeeded td:nth-child(4) { color: var(--ok); }
#runs tr.st-aborted td:nth-child(4), #runs tr.st-started td:nth-child(4) { color: var(--warn); font-weight: 600; }
#runs td.v-bad { font-weight: 600; }
table.timeline td:nth-child(-n+2), #runs td:nth-child(-n+2) { white-space: nowrap; }
footer { margin-top: 2rem; color: var(--muted); font-size: .8rem; }
"""

SITE_JS = """\
/* opsbook site: the run index and its filters. Plain JavaScript, no library and no network: the runs come
   from runs.js (window.OPSBOOK_RUNS, loaded with a <script src>), so the page works from file://.
   Rows are built with textContent: nothing from a record is ever parsed as HTML.
   The filters can be given in the URL: index.html?status=failed or index.html#runbook=X&from=2026-01-01
   (keys: runbook status mode target operator incident verify from to q); the page keeps them in #... */
(function () {
  "use strict";
  var RUNS = window.OPSBOOK_RUNS || [];
  var KEYS = ["runbook", "status", "mode", "target", "operator", "incident", "verify", "from", "to", "q"];
  var STEP = 1000;
  var form = document.getElementById("filters");
  var body = document.getElementById("runs-body");
  var count = document.getElementById("count");
  var more = document.getElementById("more");
  var limit = STEP;

  function fromUrl() {
    var out = {};
    [window.location.search, window.location.hash].forEach(function (part) {
      var s = (part || "").replace(/^[?#]/, "");
      if (!s) { return; }
      var p = new URLSearchParams(s);
      KEYS.forEach(function (k) { if (p.has(k)) { out[k] = p.get(k); } });
    });
    return out;
  }

  function setField(k, v) {
    var el = form.elements[k];
    if (!el) { return; }
    if (el.tagName === "SELECT" && v) {
      var known = Array.prototype.some.call(el.options, function (o) { return o.value === v; });
      if (!known) {
        var o = document.createElement("option");
        o.value = v;
        o.textContent = v;
        el.appendChild(o);
      }
    }
    el.value = v;
  }

  function state() {
    var f = {};
    KEYS.forEach(function (k) { var el = form.elements[k]; f[k] = el ? String(el.value).trim() : ""; });
    return f;
  }

  function matches(r, f) {
    if (f.runbook && r.runbook !== f.runbook) { return false; }
    if (f.status && r.status !== f.status) { return false; }
    if (f.mode && r.mode !== f.mode) { return false; }
    if (f.target && r.target !== f.target) { return false; }
    if (f.operator && r.operator !== f.operator) { return false; }
    if (f.incident && r.incident !== f.incident) { return false; }
    if (f.verify && r.verify !== f.verify) { return false; }
    var day = String(r.started || "").slice(0, 10);
    if (f.from && (!day || day < f.from)) { return false; }
    if (f.to && (!day || day > f.to)) { return false; }
    if (f.q) {
      var hay = [r.id, r.runbook, r.headline, r.incident, r.operator, r.target].join(" ").toLowerCase();
      if (hay.indexOf(f.q.toLowerCase()) < 0) { return false; }
    }
    return true;
  }

  function td(tr, text, cls) {
    var c = document.createElement("td");
    c.textContent = text == null ? "" : String(text);
    if (cls) { c.className = cls; }
    tr.appendChild(c);
    return c;
  }

  function link(tr, text, href) {
    var c = document.createElement("td");
    if (href) {
      var a = document.createElement("a");
      a.setAttribute("href", href);
      a.textContent = text;
      c.appendChild(a);
    } else {
      c.textContent = text || "";
    }
    tr.appendChild(c);
  }

  function render() {
    var f = state();
    var shown = 0, total = 0;
    var frag = document.createDocumentFragment();
    for (var i = 0; i < RUNS.length; i++) {
      var r = RUNS[i];
      if (!matches(r, f)) { continue; }
      total++;
      if (shown >= limit) { continue; }
      shown++;
      var tr = document.createElement("tr");
      tr.className = "st-" + String(r.status).replace(/[^a-z]/g, "");
      tr.setAttribute("data-run", r.id);
      td(tr, r.started);
      var c = document.createElement("td");
      var a = document.createElement("a");
      a.setAttribute("href", r.page);
      var code = document.createElement("code");
      code.textContent = r.id;
      a.appendChild(code);
      c.appendChild(a);
      tr.appendChild(c);
      td(tr, r.runbook);
      td(tr, r.status === "started" ? "started, never finished" : r.status);
      td(tr, r.mode);
      td(tr, r.target);
      td(tr, r.operator);
      link(tr, r.incident, r.incident_page);
      td(tr, r.headline, "summary");
      td(tr, r.verify === "problem" ? "PROBLEM" : r.verify, r.verify === "problem" ? "v-bad" : "v-ok");
      frag.appendChild(tr);
    }
    body.textContent = "";
    body.appendChild(frag);
    count.textContent = "(" + total + " of " + RUNS.length + (shown < total ? ", first " + shown + " shown" : "") + ")";
    more.hidden = shown >= total;
    more.textContent = "show all " + total;
  }

  function save() {
    var f = state(), p = new URLSearchParams();
    KEYS.forEach(function (k) { if (f[k]) { p.set(k, f[k]); } });
    var q = p.toString();
    try {
      window.history.replaceState(null, "", window.location.pathname + (q ? "#" + q : ""));
    } catch (e) {
      window.location.replace("#" + q);
    }
  }

  function apply() {
    var u = fromUrl();
    KEYS.forEach(function (k) { setField(k, u[k] || ""); });
    limit = STEP;
    render();
  }

  form.addEventListener("input", function () { limit = STEP; render(); save(); });
  form.addEventListener("change", function () { limit = STEP; render(); save(); });
  form.addEventListener("submit", function (ev) { ev.preventDefault(); });
  form.addEventListener("reset", function () {
    window.setTimeout(function () { limit = STEP; render(); save(); }, 0);
  });
  more.addEventListener("click", function () { limit = Infinity; render(); });
  window.addEventListener("hashchange", apply);
  apply();
  document.body.setAttribute("data-rendered", String(RUNS.length));
})();
"""

