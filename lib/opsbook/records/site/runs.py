"""The runs a site shows (:class:`SiteRun`, :func:`collect`) and the files it reads from their records:
on disk without following a symlink out of a record, in S3 through the archive's objects."""

from __future__ import annotations

import base64
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsbook.records.ledger import ID_RE, MANIFEST_NAME, LedgerEntry, VerifyProblem, unfinished_runs
from opsbook.records.site.text import as_dict, as_list, as_text, headline_lines, safe_rel, slug

if TYPE_CHECKING:
    from opsbook.records.archive import RunArchive

__all__ = ["MAX_PLOTS", "PLOT_RUNBOOKS", "RecordFiles", "SiteRun", "collect", "extract_pngs", "wanted_files"]

#: runbooks whose executed notebook's image/png outputs are shown on the run page (the canary plots)
PLOT_RUNBOOKS = frozenset({"deploy-new-model"})
MAX_PLOTS = 12
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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
        return "started" if self.unfinished else as_text(self.get("status")) or "unknown"

    @property
    def started(self) -> str:
        return as_text(self.get("started"))

    @property
    def incident(self) -> str:
        return as_text(as_dict(self.m.get("parameters")).get("incident_id"))

    @property
    def plan(self) -> str:
        """The plan run this run (an apply) carried out."""
        return as_text(as_dict(self.m.get("approval")).get("plan_run_id")) or (self.entry.plan or "")

    def sort_key(self) -> tuple[str, int]:
        return (self.started, self.entry.seq)

    def headlines(self) -> list[str]:
        """What the run found; for a failed run that marked nothing, its error."""
        if self._heads is None:
            self._heads = headline_lines(self.manifest) if self.manifest is not None else []
            error = as_text(self.m.get("error")).strip()
            if not self._heads and error:
                self._heads = [error.splitlines()[0][:300]]
        return self._heads


def _parse_entries(archive: RunArchive) -> tuple[list[LedgerEntry], list[str]]:
    """Every ledger entry that parses, and a note for each line that does not (verify names them)."""
    out: list[LedgerEntry] = []
    bad: list[str] = []
    for n, raw in archive.ledger_lines():
        try:
            out.append(LedgerEntry.from_obj(json.loads(raw)))
        except ValueError as exc:
            bad.append(f"ledger entry {n} does not parse ({exc}); it is not shown")
    return out, bad


def collect(archive: RunArchive) -> tuple[list[SiteRun], list[LedgerEntry], list[str]]:
    """The runs of the archive (one per record in the ledger, plus each apply that started and never
    finished), every ledger entry, and notes about ledger lines that could not be read."""
    entries, notes = _parse_entries(archive)
    seen: set[str] = set()
    unique: list[LedgerEntry] = []
    for e in entries:
        if not e.is_start and e.record not in seen:
            seen.add(e.record)
            unique.append(e)
    plain = [e for e in unique if ID_RE.match(e.run_id) and ID_RE.match(e.runbook_id)]
    runs: list[SiteRun] = []
    pages: set[str] = set()

    def page_for(run_id: str) -> str:
        stem = slug(run_id, "run")
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
    for cell in as_list(as_dict(nb).get("cells")):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        for o in as_list(cell.get("outputs")):
            png = as_dict(as_dict(o).get("data")).get("image/png")
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


class RecordFiles:
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

    def __enter__(self) -> RecordFiles:
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


def wanted_files(run: SiteRun) -> list[str]:
    """The record files a run page links to: the executed notebook's HTML and the evidence files."""
    files = as_dict(run.m.get("files"))
    rels = ["notebook.html"] if "notebook.html" in files else []
    named = {f"evidence/{as_text(as_dict(e).get('name'))}" for e in as_list(run.m.get("evidence"))}
    rels += sorted(r for r in files if isinstance(r, str) and (r.startswith("evidence/") or r in named))
    return [r for r in (safe_rel(x) for x in rels) if r]

