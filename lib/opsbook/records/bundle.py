"""Incidents in the archive: the runs of one incident, evidence bundles, and the post-mortem draft.

Every run of the `security-incident-response` runbook (and of any runbook with an ``incident_id``
parameter) is linked to its incident by that parameter, kept in the record's manifest. This module
reads the archive only (no network):

    runs = incident_runs(archive, "INC-0042")                  # time order
    info = export(archive, "INC-0042", "INC-0042.tar.gz")     # the evidence bundle
    report = verify_bundle("INC-0042.tar.gz")                 # anywhere, without the archive

A bundle is a ``.tar.gz`` holding one folder ``<INCIDENT>-evidence/``::

    BUNDLE.json                 incident id, runs (record, ledger seq, manifest sha256), ledger head
    records/<runbook>/<run>/    each record as archived: manifest.json, notebook, HTML, evidence/...
    ledger.jsonl                the ledger lines from the incident's first run to its last, verbatim
                                (lines of other runs in between included: the chain must be unbroken)
    POSTMORTEM.md               the generated draft: timeline, actions, evidence index, sections to fill in
    site/                       the incident's pages (``opsbook.records.site``): open site/index.html in a browser;
                                they link to records/ (no copies); listed in SHA256SUMS like every file
    SHA256SUMS                  ``sha256  path`` of every other file (``sha256sum -c`` reads it)

:func:`verify_bundle` checks every file against ``SHA256SUMS``, every record file against its
manifest's ``files``, every manifest against its ledger entry's ``manifest_sha256``, each ledger line's
hash against its content and the chain (``seq`` consecutive, ``prev`` = the previous line's ``hash``).
It prints the segment's last hash: compare it with a chain head kept where the runner cannot write
(``opsbook verify`` prints it) to know the ledger lines themselves were not rewritten.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import tarfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from opsbook.errors import ArchiveError, BundleUnreadable, UsageError
from opsbook.records.ledger import GENESIS, MANIFEST_NAME, LedgerEntry, canonical_json

if TYPE_CHECKING:
    from opsbook.records.archive import RunArchive
    from opsbook.records.s3 import S3Path

__all__ = ["IncidentRun", "BundleInfo", "BundleReport", "incident_runs", "export", "verify_bundle", "postmortem",
           "BUNDLE_FORMAT"]

BUNDLE_FORMAT = 1
SUMS = "SHA256SUMS"
BUNDLE_JSON = "BUNDLE.json"
LEDGER = "ledger.jsonl"
POSTMORTEM = "POSTMORTEM.md"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class IncidentRun:
    run_id: str
    runbook_id: str
    path: Path | S3Path  # the record folder (an S3Path in an S3 archive: same read_bytes, /, is_file)
    entry: LedgerEntry
    manifest: dict[str, Any]

    @property
    def record(self) -> str:
        return f"{self.runbook_id}/{self.run_id}"

    @property
    def started(self) -> str:
        return str(self.manifest.get("started") or self.entry.started or "")


def incident_runs(archive: RunArchive, incident_id: str) -> list[IncidentRun]:
    """Every archived run whose parameter ``incident_id`` is ``incident_id``, in time order (start
    time, then ledger order). Only records listed in the ledger count (a bundle needs their entries)."""
    out = []
    seen: set[str] = set()
    unique = []
    for e in archive.entries():
        if not e.is_start and e.record not in seen:  # a write-ahead entry has no record of its own
            seen.add(e.record)
            unique.append(e)
    for e, path, data in archive.read_manifests(unique):
        try:
            manifest = json.loads(data) if data is not None else None
        except ValueError:
            continue
        if not isinstance(manifest, dict):
            continue
        if str((manifest.get("parameters") or {}).get("incident_id") or "") != incident_id:
            continue
        out.append(IncidentRun(e.run_id, e.runbook_id, path, e, manifest))
    return sorted(out, key=lambda r: (r.started, r.entry.seq))


# ------------------------------------------------------------------------------------------ post-mortem


def _cell(value: Any, limit: int = 160) -> str:
    text = " ".join(str("" if value is None else value).split())
    text = text[:limit] + ("…" if len(text) > limit else "")
    return text.replace("|", "\\|")


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    if not rows:
        return "_(none)_\n"
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _severity(runs: list[IncidentRun]) -> str:
    sev = ""
    for r in runs:
        for s in r.manifest.get("steps") or []:
            d = s.get("details") or {}
            if isinstance(d, dict) and d.get("severity"):
                sev = str(d["severity"])
        if not sev:
            given = (r.manifest.get("parameters") or {}).get("severity")
            if given and given != "auto":
                sev = str(given)
    return sev or "(not assessed)"


def postmortem(incident_id: str, runs: list[IncidentRun], *, generated: str | None = None) -> str:
    """The post-mortem draft (Markdown) drawn from the runs' manifests."""
    generated = generated or datetime.now(UTC).isoformat(timespec="seconds")
    params = [r.manifest.get("parameters") or {} for r in runs]
    responders = sorted({str(x) for p in params for x in (p.get("responders") or [])})
    accounts = sorted({str(x) for p in params for x in (p.get("compromised_accounts") or [])})
    summary = next((p.get("summary") for p in params if p.get("summary")), "")
    first = runs[0].started if runs else ""
    last = max((str(r.manifest.get("ended") or r.started) for r in runs), default="")
    lines = [f"# Post-mortem (draft): {incident_id}", "",
             f"_Generated by opsbook on {generated} from {len(runs)} archived run(s). The sections up to "
             "**Evidence index** are drawn from the run records; complete the others. Blameless: describe "
             "systems and decisions, not people._", "",
             "## Summary", "",
             _table(["field", "value"], [
                 ["incident", incident_id], ["severity", _severity(runs)],
                 ["what was suspected", summary or "_(to fill in)_"],
                 ["affected workloads", "; ".join(sorted({f"{p.get('namespace', '')} {p.get('selector', '')}".strip()
                                                          for p in params})) or "-"],
                 ["compromised accounts", ", ".join(accounts) or "-"],
                 ["responders", ", ".join(responders) or "-"],
                 ["first run started", first], ["last run ended", last], ["runs", len(runs)]]),
             "## Timeline", "",
             "Every run and every step it recorded, in time order (UTC).", ""]
    events: list[tuple[str, str, str]] = []
    for r in runs:
        m = r.manifest
        p = m.get("parameters") or {}
        approval = m.get("approval") or {}
        events.append((r.started, r.run_id, f"run started: mode {m.get('mode')}, target {m.get('target')}, "
                       f"operator {m.get('operator')}, phases {', '.join(p.get('phases') or []) or '-'}"
                       + (f", approving plan {approval.get('plan_run_id')}" if approval.get("plan_run_id") else "")))
        for s in m.get("steps") or []:
            if s.get("outcome") == "skipped":
                continue
            events.append((str(s.get("started") or r.started), r.run_id,
                           f"{s.get('kind')} **{s.get('title')}**: {s.get('outcome')}"
                           + (f" — {s.get('summary')}" if s.get("summary") else "")))
        events.append((str(m.get("ended") or ""), r.run_id, f"run ended: {m.get('status')}"
                       + (f" ({m.get('error')})" if m.get("error") else "")))
    events.sort(key=lambda e: e[0])
    lines.append(_table(["time", "run", "event"], [[t, rid, what] for t, rid, what in events]))
    lines += ["## Actions taken", "", "Changes applied (mode apply, outcome changed), with the plan run each apply "
              "executed.", ""]
    acts = []
    planned = []
    for r in runs:
        approval = (r.manifest.get("approval") or {}).get("plan_run_id") or "-"
        for s in r.manifest.get("steps") or []:
            if s.get("kind") == "change" and s.get("outcome") == "changed":
                acts.append([s.get("started"), r.run_id, s.get("title"), s.get("summary"), approval])
            elif s.get("kind") == "change" and s.get("outcome") == "planned":
                planned.append([s.get("started"), r.run_id, s.get("title"), s.get("summary")])
    lines.append(_table(["time", "run", "action", "result", "approved plan"], acts))
    lines += ["### Planned (not applied by these runs)", "", _table(["time", "run", "action", "plan"], planned)]
    lines += ["## Evidence index", "", "Files saved into the records before and during the response; the sha256 is "
              "the one in the record's manifest (checked by `opsbook evidence --verify`).", ""]
    ev = []
    for r in runs:
        files = r.manifest.get("files") or {}
        for e in r.manifest.get("evidence") or []:
            rel = f"evidence/{e.get('name')}"
            ev.append([r.run_id, f"records/{r.record}/{rel}", (files.get(rel) or "")[:16], e.get("description", "")])
    lines.append(_table(["run", "file", "sha256 (first 16)", "what"], ev))
    lines += ["## Runs", "", _table(["run", "runbook", "mode", "status", "operator", "started", "ledger seq"],
                                    [[r.run_id, r.runbook_id, r.manifest.get("mode"), r.manifest.get("status"),
                                      r.manifest.get("operator"), r.started, r.entry.seq] for r in runs])]
    lines += ["## Impact", "", "_(to fill in: who and what was affected, for how long, data exposed or lost)_", "",
              "## Root cause", "", "_(to fill in: how the attacker got in, why it was not prevented or detected "
              "sooner)_", "",
              "## Lessons learned", "", "### What went well", "", "- _(to fill in)_", "",
              "### What went wrong", "", "- _(to fill in)_", "", "### Where we got lucky", "", "- _(to fill in)_", "",
              "## Follow-up actions", "", "| action | owner | due | ticket |", "|---|---|---|---|",
              "| _(to fill in)_ | | | |", "",
              "## Verifying this bundle", "",
              "`opsbook evidence --verify FILE.tar.gz` checks every file, every record against its manifest and the "
              "ledger lines' hash chain; compare the ledger head it prints with the chain head kept at the time "
              "(`opsbook verify` prints it).", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ export


@dataclass
class BundleInfo:
    path: Path
    incident_id: str
    runs: list[str]
    files: int
    head: str


def _record_files(path: Path | S3Path) -> dict[str, bytes]:
    if not isinstance(path, Path):  # a record in an S3 archive
        return path.read_tree()
    out: dict[str, bytes] = {}
    for dirpath, _dirs, names in os.walk(path):
        for n in names:
            full = Path(dirpath) / n
            if full.is_symlink() or not full.is_file():
                continue
            out[full.relative_to(path).as_posix()] = full.read_bytes()
    return out


def _site_pages(incident_id: str, runs: list[IncidentRun], files: dict[str, bytes]) -> dict[str, bytes]:
    """The incident's site pages under ``site/`` (an index of its runs, its timeline, each run's page,
    the canary plots): ordinary bundle files, hashed into SHA256SUMS and so checked by verify_bundle."""
    from opsbook.records.site import bundle_pages

    return bundle_pages(incident_id, runs, files)


def export(archive: RunArchive, incident_id: str, out: str | os.PathLike[str]) -> BundleInfo:
    """Write the evidence bundle of ``incident_id`` to ``out`` (``.tar.gz``); ``UsageError`` if the
    archive has no run of that incident."""
    runs = incident_runs(archive, incident_id)
    if not runs:
        raise UsageError(f"no archived run has incident_id {incident_id!r} in {archive.root}")
    seqs = [r.entry.seq for r in runs]
    lo, hi = min(seqs), max(seqs)
    segment: list[bytes] = []
    entries: list[LedgerEntry] = []
    for _lineno, raw in archive.ledger_lines():
        e = LedgerEntry.from_obj(json.loads(raw))
        if lo <= e.seq <= hi:
            segment.append(raw.rstrip(b"\n") + b"\n")
            entries.append(e)
    files: dict[str, bytes] = {}
    for r in runs:
        for rel, data in _record_files(r.path).items():
            files[f"records/{r.record}/{rel}"] = data
    head = entries[-1].hash if entries else GENESIS
    files[LEDGER] = b"".join(segment)
    files[POSTMORTEM] = postmortem(incident_id, runs).encode()
    files.update(_site_pages(incident_id, runs, files))
    meta = {"format": BUNDLE_FORMAT, "incident_id": incident_id,
            "created": datetime.now(UTC).isoformat(timespec="seconds"), "created_on": socket.gethostname(),
            "runs": [{"run_id": r.run_id, "runbook_id": r.runbook_id, "record": f"records/{r.record}",
                      "seq": r.entry.seq, "manifest_sha256": r.entry.manifest_sha256, "started": r.started,
                      "status": r.manifest.get("status"), "mode": r.manifest.get("mode")} for r in runs],
            "ledger": {"first_seq": lo, "last_seq": hi, "head": head, "archive_head": archive.head()}}
    files[BUNDLE_JSON] = (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()
    files[SUMS] = "".join(f"{_sha(files[n])}  {n}\n" for n in sorted(files)).encode()
    top = f"{incident_id}-evidence"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    now = int(time.time())
    with tarfile.open(tmp, "w:gz") as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mtime, info.mode = len(files[name]), now, 0o444
            tar.addfile(info, io.BytesIO(files[name]))
    os.replace(tmp, out)
    return BundleInfo(out, incident_id, [r.run_id for r in runs], len(files), head)


# ------------------------------------------------------------------------------------------ verify


@dataclass
class BundleReport:
    ok: bool
    incident_id: str | None
    head: str | None
    runs: list[str] = field(default_factory=list)
    files: int = 0
    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{'OK' if self.ok else 'FAILED'}: bundle of incident {self.incident_id or '?'}, {len(self.runs)} "
                 f"run(s), {self.files} file(s), {len(self.problems)} problem(s); ledger head {self.head or '-'}"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


def _read_bundle(path: Path, problems: list[str]) -> dict[str, bytes]:
    """The bundle's files. A missing file or one that does not open as a tar archive is
    ``BundleUnreadable`` (invalid input, CLI exit 2); one that opens and breaks off while its members
    are read is a damaged bundle, ``ArchiveError`` (a verification failure, exit 1)."""
    if not path.exists():
        raise BundleUnreadable(f"no such bundle: {path}")
    if not path.is_file():
        raise BundleUnreadable(f"{path}: not a file (a bundle is the FILE.tar.gz `opsbook evidence` wrote)")
    try:
        tar = tarfile.open(path, "r:*")  # noqa: SIM115 (closed below, once it is known to open)
    except OSError as exc:
        raise BundleUnreadable(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except (tarfile.TarError, EOFError) as exc:
        raise BundleUnreadable(f"{path}: not a tar.gz bundle (it does not open as a tar archive)") from exc
    try:
        with tar:
            return _read_members(tar, problems)
    except (OSError, tarfile.TarError, EOFError) as exc:
        why = " ".join(str(exc).split()) or type(exc).__name__
        raise ArchiveError(f"{path}: a damaged tar archive ({why})") from exc


def _read_members(tar: tarfile.TarFile, problems: list[str]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    tops = set()
    members = tar.getmembers()
    for m in members:
        p = PurePosixPath(m.name)
        if m.isdir():
            continue
        if p.is_absolute() or ".." in p.parts or len(p.parts) < 2:
            problems.append(f"unsafe or stray member {m.name!r}")
            continue
        if not m.isfile():
            problems.append(f"{m.name}: not a regular file")
            continue
        tops.add(p.parts[0])
        f = tar.extractfile(m)
        files[PurePosixPath(*p.parts[1:]).as_posix()] = f.read() if f else b""
    if len(tops) > 1:
        problems.append(f"more than one top folder: {', '.join(sorted(tops))}")
    return files


def verify_bundle(path: str | os.PathLike[str]) -> BundleReport:
    """Check a bundle on its own (no archive needed); see the module docstring for what is checked."""
    problems: list[str] = []
    files = _read_bundle(Path(path), problems)
    # 1. every file against SHA256SUMS
    sums_raw = files.get(SUMS)
    if sums_raw is None:
        problems.append(f"{SUMS} is missing")
        listed: dict[str, str] = {}
    else:
        listed = {}
        for i, line in enumerate(sums_raw.decode("utf-8", "replace").splitlines(), 1):
            digest, sep, name = line.partition("  ")
            if not sep or len(digest) != 64:
                problems.append(f"{SUMS} line {i} does not parse")
                continue
            listed[name] = digest
    for name, digest in sorted(listed.items()):
        if name not in files:
            problems.append(f"missing: {name} (listed in {SUMS})")
        elif _sha(files[name]) != digest:
            problems.append(f"modified: {name} (sha256 differs from {SUMS})")
    for name in sorted(set(files) - set(listed) - {SUMS}):
        problems.append(f"unexpected: {name} is not listed in {SUMS}")
    # 2. the ledger segment: each line's hash, and the chain among the lines
    entries: dict[str, LedgerEntry] = {}
    head = None
    prev: LedgerEntry | None = None
    for i, raw in enumerate((files.get(LEDGER) or b"").splitlines(), 1):
        try:
            obj = json.loads(raw)
            e = LedgerEntry.from_obj(obj)
        except ValueError as exc:
            problems.append(f"{LEDGER} line {i} does not parse: {exc}")
            prev = None
            continue
        if _sha(canonical_json({k: v for k, v in obj.items() if k not in ("hash", "sig")})) != e.hash:
            problems.append(f"{LEDGER} line {i} (seq {e.seq}, run {e.run_id}): the hash does not match the content")
        if prev is not None and (e.seq != prev.seq + 1 or e.prev != prev.hash):
            problems.append(f"{LEDGER} line {i} (seq {e.seq}) does not chain to seq {prev.seq}")
        entries[e.run_id] = e
        prev = e
        head = e.hash
    if LEDGER not in files:
        problems.append(f"{LEDGER} is missing")
    # 3. BUNDLE.json, each record against its ledger entry and its manifest
    try:
        meta = json.loads(files.get(BUNDLE_JSON) or b"")
    except ValueError:
        meta = {}
        problems.append(f"{BUNDLE_JSON} is missing or does not parse")
    incident = meta.get("incident_id")
    if meta and (meta.get("ledger") or {}).get("head") != head:
        problems.append(f"{BUNDLE_JSON} names ledger head {(meta.get('ledger') or {}).get('head')}, the ledger lines "
                        f"end with {head}")
    runs = []
    covered: set[str] = set()
    for r in meta.get("runs") or []:
        rid, base = r.get("run_id"), str(r.get("record") or "")
        runs.append(rid)
        mname = f"{base}/{MANIFEST_NAME}"
        mbytes = files.get(mname)
        covered.add(mname)
        if mbytes is None:
            problems.append(f"missing: {mname}")
            continue
        entry = entries.get(rid)
        if entry is None:
            problems.append(f"run {rid}: no ledger entry in {LEDGER}")
        elif entry.manifest_sha256 != _sha(mbytes):
            problems.append(f"run {rid}: {mname} differs from the manifest its ledger entry recorded")
        try:
            manifest = json.loads(mbytes)
            mfiles = manifest["files"]
        except (ValueError, KeyError, TypeError):
            problems.append(f"run {rid}: {mname} does not parse")
            continue
        if incident and str((manifest.get("parameters") or {}).get("incident_id")) != incident:
            problems.append(f"run {rid}: its incident_id is not {incident}")
        for rel, digest in sorted(mfiles.items()):
            name = f"{base}/{rel}"
            covered.add(name)
            if name not in files:
                problems.append(f"run {rid}: {rel} is missing")
            elif _sha(files[name]) != digest:
                problems.append(f"run {rid}: {rel} does not match its manifest")
    for name in sorted(n for n in files if n.startswith("records/") and n not in covered):
        problems.append(f"unexpected: {name} is in no manifest")
    return BundleReport(ok=not problems, incident_id=incident, head=head, runs=runs, files=len(files),
                        problems=problems)
