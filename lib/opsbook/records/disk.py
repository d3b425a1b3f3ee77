"""Tamper-evident run records: the archive under ``outputs/``, its ledger, ``verify`` and ``history``.

Layout of an archive root (the ``outputs/`` directory)::

    outputs/
      ledger.jsonl                 one line per record, hash-chained (see below)
      ledger.lock                  the file lock every writer holds while it appends
      .incoming/                   staging: a record is built here, then renamed into place
      <runbook_id>/<run_id>/       one record: the redacted files of one run, plus manifest.json
        manifest.json              the runner's manifest + "files" {posix path: sha256} + "record_format"
        notebook.ipynb, notebook.html, evidence/..., (whatever the runner handed over)

A record is written once and never rewritten: it is built in ``.incoming/<run_id>-<random>/``, every
file fsync'd, files made 0o444 and folders 0o555, then renamed into place and appended to the ledger,
both while holding ``ledger.lock``. If the process dies between the rename and the ledger append,
the record is on disk but not in the ledger; ``verify`` reports it as ``not_in_ledger``.

Ledger format (``ledger.jsonl``): one JSON object per line, keys sorted, separators ``,`` and ``:``
(no spaces), UTF-8, ``\\n``-terminated. Fields: ``seq`` (1-based, consecutive), ``run_id``,
``runbook_id``, ``runbook_version``, ``status``, ``mode``, ``target``, ``operator``, ``started``,
``ended`` (copied from the manifest, else ``null``), ``record`` (``runbook_id/run_id``),
``manifest_sha256`` (sha256 of the bytes of ``manifest.json``), ``prev`` (the previous entry's
``hash``, ``"0" * 64`` for the first) and ``hash``: the sha256 hex of the canonical JSON (same
encoding) of the entry without its ``hash`` and ``sig`` keys. Optional fields, present only when set:
``event`` (``"started"``: the write-ahead entry of an apply, written before its first cell; its
record's entry follows, or it never finished), ``plan`` (the plan run an apply consumed), ``claim``
(sha256 of the runner's one-time token for its kernel) and ``sig`` (the writer's SSHSIG signature of
``hash``, see :mod:`opsbook.signing`; not covered by ``hash``). Keep the chain head (``Archive.head()``, also
``VerifyReport.head``) somewhere the runner cannot rewrite and pass it back as ``expect_head``: a
ledger that lost its tail or was rewritten from scratch is then detected too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import filelock

from opsbook.errors import ArchiveError, ArchiveNotFound, ArchiveNotWritable, LedgerError, RecordExists

if TYPE_CHECKING:
    from opsbook.records.s3 import S3Archive

__all__ = [
    "GENESIS",
    "PROBLEM_KINDS",
    "RECORD_FORMAT",
    "Archive",
    "open_archive",
    "LedgerEntry",
    "RecordRef",
    "VerifyProblem",
    "VerifyReport",
    "build_manifest",
    "canonical_json",
    "chain_entry",
    "filter_history",
    "iter_record_files",
]

RECORD_FORMAT = 1
GENESIS = "0" * 64
MANIFEST_NAME = "manifest.json"
LEDGER_NAME = "ledger.jsonl"
LOCK_NAME = "ledger.lock"
INCOMING_NAME = ".incoming"
#: Files at the archive root that are ours (or the repo's) and not records.
ROOT_FILES = frozenset({LEDGER_NAME, LOCK_NAME, "README.md", ".gitignore", ".gitkeep"})
#: Manifest keys copied into the ledger entry (``null`` when the manifest has no such key).
LEDGER_MANIFEST_KEYS = ("runbook_version", "status", "mode", "target", "operator", "started", "ended")

PROBLEM_KINDS = frozenset({
    "modified",            # a file's sha256 differs from the manifest
    "missing_file",        # a file listed in the manifest is gone
    "unexpected_file",     # a file in a record folder that its manifest does not list
    "removed",             # a record folder the ledger lists is gone
    "manifest_modified",   # manifest.json's sha256 differs from the ledger entry
    "ledger_edited",       # a ledger entry's hash does not match its content
    "reordered",           # seq out of order, or prev does not chain (swapped, moved or deleted lines)
    "not_in_ledger",       # a record folder on disk that the ledger does not list
    "truncated",           # expect_head is neither the head nor anywhere in the chain
    "unparseable",         # a ledger line or a manifest that is not valid
    "unsigned",            # allowed_signers is configured and a ledger entry carries no signature
    "bad_signature",       # a ledger entry's signature is not by a trusted key, or does not match it
})

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
_LOCK_TIMEOUT = 120.0
#: Free space check_writable asks for on top of the record's reserve: the ledger line, the lock file
#: and the record's folders (a few blocks each).
_SPACE_MARGIN = 64 << 10
#: How long verify waits for ledger.lock (held by a writer for one rename and one append) to take its
#: snapshot; past that it reads without it and says so.
_SNAPSHOT_LOCK_TIMEOUT = 30.0
DEFAULT: Any = object()  # "the project's own": the signing key of $OPSBOOK_SIGNING_KEY, the repo's allowed_signers


def _signer(signer: Any) -> Any:
    if signer is not DEFAULT:
        return signer
    from opsbook.signing import Signer

    return Signer.from_env()


def _signers(signers: Any) -> Any:
    if signers is not DEFAULT:
        return signers
    from opsbook.signing import trusted

    return trusted()


# --------------------------------------------------------------------------------------------------
# canonical encoding and hashing


def canonical_json(obj: Any) -> bytes:
    """The one encoding the ledger is hashed and written with: sorted keys, compact, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 of a file: one read for small files, 1 MiB chunks for large ones."""
    with open(path, "rb", buffering=0) as f:
        data = f.read(_CHUNK)
        h = hashlib.sha256(data)
        if len(data) == _CHUNK:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, PurePath):
        return value.as_posix()
    if isinstance(value, set | frozenset | tuple):
        return sorted(value, key=str) if isinstance(value, set | frozenset) else list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _ledger_value(value: Any) -> str | int | float | bool | None:
    """A manifest value as it goes into a ledger field: scalars as they are, anything else as text."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default)


def _check_id(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ArchiveError(
            f"invalid {kind} {value!r}: use letters, digits, '.', '_' and '-' (not first), at most 200"
        )
    return value


# --------------------------------------------------------------------------------------------------
# public value types


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One line of ``ledger.jsonl``.

    The optional fields are written only when set (so older ledgers hash and parse as before):
    ``event`` ``"started"`` marks a write-ahead entry (an apply began; its record follows, or the run
    never finished), ``plan`` the plan run an apply consumed, ``claim`` the sha256 of the token the
    runner handed its kernel, and ``sig`` the writer's signature of ``hash`` (``opsbook.signing``),
    which is not part of what ``hash`` covers."""

    seq: int
    run_id: str
    runbook_id: str
    runbook_version: Any
    status: Any
    mode: Any
    target: Any
    operator: Any
    started: Any
    ended: Any
    record: str
    manifest_sha256: str
    prev: str
    hash: str
    event: str | None = None
    plan: str | None = None
    claim: str | None = None
    sig: str | None = None

    @property
    def is_start(self) -> bool:
        return self.event == STARTED

    def body(self) -> dict[str, Any]:
        """The entry without its ``hash`` and ``sig``: what the hash is computed over."""
        d = {k: v for k, v in asdict(self).items() if not (k in _OPTIONAL and v is None)}
        del d["hash"]
        d.pop("sig", None)
        return d

    def compute_hash(self) -> str:
        return _sha256_bytes(canonical_json(self.body()))

    def to_line(self) -> bytes:
        return canonical_json({k: v for k, v in asdict(self).items() if not (k in _OPTIONAL and v is None)}) + b"\n"

    @classmethod
    def from_obj(cls, obj: Any) -> LedgerEntry:
        """Build from a parsed ledger line; ``ValueError`` if a field is missing or of the wrong type."""
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        missing = [n for n in _ENTRY_FIELDS if n not in obj and n not in _OPTIONAL]
        if missing:
            raise ValueError(f"missing field(s): {', '.join(missing)}")
        seq = obj["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise ValueError(f"seq must be a positive integer, got {seq!r}")
        for name in ("run_id", "runbook_id", "record", "manifest_sha256", "prev", "hash"):
            if not isinstance(obj[name], str):
                raise ValueError(f"{name} must be a string")
        for name in _OPTIONAL:
            if obj.get(name) is not None and not isinstance(obj[name], str):
                raise ValueError(f"{name} must be a string")
        values: dict[str, Any] = {n: obj.get(n) for n in _ENTRY_FIELDS}
        return cls(**values)

    @property
    def started_at(self) -> datetime | None:
        return _parse_time(self.started)

    @property
    def ended_at(self) -> datetime | None:
        return _parse_time(self.ended)


STARTED = "started"
_OPTIONAL = frozenset({"event", "plan", "claim", "sig"})
_ENTRY_FIELDS = tuple(f.name for f in fields(LedgerEntry))


def chain_entry(*, prev: LedgerEntry | None | tuple[int, str], run_id: str, runbook_id: str,
                manifest: dict[str, Any], manifest_sha256: str, event: str | None = None,
                plan: str | None = None, claim: str | None = None, signer: Any = None) -> LedgerEntry:
    """The ledger entry that follows ``prev`` (an entry, ``(seq, hash)``, or ``None`` for the first).

    ``plan`` defaults to the manifest's ``approval.plan_run_id`` (the plan an apply consumed);
    ``signer`` (an ``opsbook.signing.Signer``) signs the entry's hash."""
    if prev is None:
        prev_seq, prev_hash = 0, GENESIS
    elif isinstance(prev, LedgerEntry):
        prev_seq, prev_hash = prev.seq, prev.hash
    else:
        prev_seq, prev_hash = prev
    values = {k: _ledger_value(manifest.get(k)) for k in LEDGER_MANIFEST_KEYS}
    if plan is None and isinstance(manifest.get("approval"), dict):
        consumed = manifest["approval"].get("plan_run_id")
        plan = consumed if isinstance(consumed, str) and consumed else None
    body: dict[str, Any] = dict(seq=prev_seq + 1, run_id=run_id, runbook_id=runbook_id, record=f"{runbook_id}/{run_id}",
                manifest_sha256=manifest_sha256, prev=prev_hash, **values)
    extra: dict[str, Any] = {k: v for k, v in (("event", event), ("plan", plan), ("claim", claim)) if v is not None}
    digest = _sha256_bytes(canonical_json({**body, **extra}))
    sig = signer.sign(digest) if signer is not None else None
    return LedgerEntry(**body, hash=digest, **extra, sig=sig)


def build_manifest(manifest: dict[str, Any], *, run_id: str, runbook_id: str,
                   files: dict[str, str]) -> bytes:
    """The bytes of ``manifest.json``: the runner's manifest, ``files`` and ``record_format``.

    ``run_id``/``runbook_id`` are added when absent and must agree when present. A ``files`` key
    given by the caller is replaced: the archive computes the hashes itself.
    """
    if not isinstance(manifest, dict):
        raise ArchiveError(f"manifest must be a dict, not {type(manifest).__name__}")
    doc = dict(manifest)
    for key, value in (("run_id", run_id), ("runbook_id", runbook_id)):
        if doc.setdefault(key, value) != value:
            raise ArchiveError(f"manifest {key} {doc[key]!r} does not match the record's {key} {value!r}")
    doc["files"] = dict(sorted(files.items()))
    doc["record_format"] = RECORD_FORMAT
    try:
        text = json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ArchiveError(f"manifest for run {run_id} is not JSON serialisable: {exc}") from exc
    return (text + "\n").encode("utf-8")


@dataclass(frozen=True, slots=True)
class RecordRef:
    """Where one archived record lives. ``entry`` is its ledger entry, ``None`` if it has none."""

    run_id: str
    runbook_id: str
    path: Path
    entry: LedgerEntry | None = None

    @property
    def record(self) -> str:
        return f"{self.runbook_id}/{self.run_id}"

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_NAME


@dataclass(frozen=True, slots=True)
class VerifyProblem:
    """One thing ``verify`` found wrong. ``kind`` is one of ``PROBLEM_KINDS``; ``record`` the run id
    (or ``ledger.jsonl:LINE`` for a ledger line without one); ``file`` the file inside the record."""

    kind: str
    record: str
    detail: str
    file: str | None = None

    def __str__(self) -> str:
        return f"{self.kind}: {self.record}: {self.detail}"


@dataclass(slots=True)
class VerifyReport:
    ok: bool
    head: str | None
    records: int
    problems: list[VerifyProblem] = field(default_factory=list)
    info: list[str] = field(default_factory=list)

    def kinds(self) -> set[str]:
        return {p.kind for p in self.problems}

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "head": self.head, "records": self.records,
                "problems": [asdict(p) for p in self.problems], "info": list(self.info)}

    def __str__(self) -> str:
        lines = [f"{'OK' if self.ok else 'FAILED'}: {self.records} record(s), "
                 f"{len(self.problems)} problem(s), head {self.head or '-'}"]
        lines += [f"  {p}" for p in self.problems]
        lines += [f"  info: {i}" for i in self.info]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# small filesystem helpers


def _fsync_dir(path: str | os.PathLike[str]) -> None:
    if os.name != "posix":  # pragma: no cover - directories cannot be fsync'd on Windows
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_writable(path: Path) -> None:
    """Undo the read-only modes of a staging tree so that it can be removed."""
    for dirpath, dirnames, filenames in os.walk(path):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(dirpath, name), 0o644, follow_symlinks=False)
        for name in dirnames:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(dirpath, name), 0o755)


def _remove_tree(path: Path) -> None:
    with contextlib.suppress(OSError):
        _make_writable(path)
    shutil.rmtree(path, ignore_errors=True)


def _read_last_line(path: Path) -> bytes | None:
    """The last line of a file (without its ``\\n``), reading backwards from the end; ``None`` if the
    file is absent or empty. Raises ``LedgerError`` if the file does not end with a newline."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return None
    with f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return None
        f.seek(end - 1)
        if f.read(1) != b"\n":
            raise LedgerError(f"{path} does not end with a newline: its last entry is incomplete "
                              "(a torn write?); run `opsbook verify` and repair the ledger by hand")
        block = 4096
        pos = end - 1  # position of the final newline
        buf = b""
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            buf = f.read(pos - start) + buf
            nl = buf.rfind(b"\n")
            if nl >= 0:
                return buf[nl + 1:]
            pos = start
            block *= 2
        return buf


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def filter_history(entries: Iterable[LedgerEntry], *, runbook: str | None = None, status: str | None = None,
                   since: datetime | None = None, limit: int | None = None) -> list[LedgerEntry]:
    """``history``'s filters over ledger entries in ledger order (shared by the disk and S3 archives)."""
    if limit is not None and limit <= 0:
        return []
    since_utc = None
    if since is not None:
        since_utc = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
    out: list[LedgerEntry] = []
    for e in entries:
        if runbook is not None and e.runbook_id != runbook:
            continue
        if status is not None and e.status != status:
            continue
        if since_utc is not None:
            t = _parse_time(e.started) or _parse_time(e.ended)
            if t is None or t < since_utc:
                continue
        out.append(e)
    return out[-limit:] if limit is not None else out


# --------------------------------------------------------------------------------------------------
# the archive


@dataclass(slots=True)
class _Line:
    lineno: int
    entry: LedgerEntry
    hash_ok: bool
    after_unparseable: bool


def parse_entry(raw: bytes) -> tuple[LedgerEntry, bool]:
    """One ledger entry (a line, or an S3 ledger object) and whether its hash matches its content;
    ``ValueError`` if it does not parse."""
    obj = json.loads(raw)
    entry = LedgerEntry.from_obj(obj)
    body = {k: v for k, v in obj.items() if k not in ("hash", "sig")}
    return entry, _sha256_bytes(canonical_json(body)) == entry.hash


def check_manifest(e: LedgerEntry, mbytes: bytes) -> tuple[list[VerifyProblem], dict[str, Any] | None]:
    """A record's manifest against its ledger entry: the problems, and the manifest (``None`` if it
    cannot be used to check the files: not JSON, or no ``files`` map of path to sha256)."""
    out: list[VerifyProblem] = []
    if _sha256_bytes(mbytes) != e.manifest_sha256:
        out.append(VerifyProblem("manifest_modified", e.run_id,
                                 f"{e.record}/{MANIFEST_NAME} differs from the one the ledger recorded",
                                 file=MANIFEST_NAME))
    try:
        doc = json.loads(mbytes)
        files = doc["files"]
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise ValueError("'files' is not a mapping of path to sha256")
    except (ValueError, KeyError, TypeError) as exc:
        out.append(VerifyProblem("unparseable", e.run_id, f"{e.record}/{MANIFEST_NAME}: {exc}", file=MANIFEST_NAME))
        return out, None
    return out, doc


def match_records(lines: list[_Line], stored: dict[str, Any], problems: list[VerifyProblem],
                  ) -> tuple[int, list[tuple[LedgerEntry, Any]]]:
    """Pair each record the ledger names (once) with its stored form, popped from ``stored`` (what is
    left there is not in the ledger). Returns the number of records named, and the pairs to check."""
    count = 0
    seen: set[str] = set()
    pairs: list[tuple[LedgerEntry, Any]] = []
    for x in lines:
        e = x.entry
        if e.is_start or e.record in seen:
            continue  # a write-ahead entry has no record folder of its own
        seen.add(e.record)
        count += 1
        parts = e.record.split("/")
        if len(parts) != 2 or not all(_ID_RE.match(p) for p in parts):
            problems.append(VerifyProblem("unparseable", e.run_id,
                                          f"ledger entry {x.lineno}: invalid record path {e.record!r}"))
            continue
        found = stored.pop(e.record, None)
        if found is None:
            problems.append(VerifyProblem("removed", e.run_id, f"record {e.record} (seq {e.seq}) is gone"))
            continue
        pairs.append((e, found))
    return count, pairs


def verify_signatures(lines: list[_Line], signers: Any, problems: list[VerifyProblem], info: list[str]) -> None:
    """Every entry signed by a key in ``signers`` (an ``opsbook.signing.AllowedSigners``), or, with no
    signers configured, say plainly what that leaves undetectable. Shared by the disk and S3 archives."""
    if signers is None:
        info.append("ledger signatures are not checked: the project has no allowed_signers file, so a "
                    "consistent rewrite of the ledger's tail (every later entry re-chained) cannot be detected "
                    "without --expect-head HASH (a head kept where the writers cannot change it); see docs/records.md, "
                    "'What verify proves, and against whom'")
        return
    who: dict[str, int] = {}
    for x in lines:
        e = x.entry
        try:
            principal = signers.check(e.hash, e.sig)
        except ValueError as exc:
            kind = "unsigned" if e.sig is None else "bad_signature"
            problems.append(VerifyProblem(kind, e.run_id, f"ledger seq {e.seq}: {exc}"))
            continue
        who[principal] = who.get(principal, 0) + 1
    if who:
        info.append("signed by trusted keys: " + ", ".join(f"{p} ({n})" for p, n in sorted(who.items())))


def check_start(archive: Any, *, run_id: str, plan: str | None) -> None:
    """Before a ``started`` entry is appended: the run id has none yet, and the plan is unused."""
    from opsbook.errors import PlanConsumed

    entries = archive.entries()  # one read of the ledger for both checks (on S3, a listing and many GETs)
    if archive.start_entry(run_id, entries=entries) is not None:
        raise RecordExists(f"run {run_id} has already started (a write-ahead entry exists in {archive.root})")
    if plan:
        used = archive.plan_used_by(plan, other_than=run_id, entries=entries)
        if used is not None:
            raise PlanConsumed(f"plan {plan} was already carried out by apply run {used.run_id} (started "
                               f"{used.started}); a plan is consumed once: make a new plan run and approve that",
                               used_by=used.run_id)


def unfinished_runs(entries: Iterable[LedgerEntry]) -> list[LedgerEntry]:
    """Write-ahead ``started`` entries whose run has no record entry after them: started, never finished."""
    started: dict[str, LedgerEntry] = {}
    for e in entries:
        if e.is_start:
            started.setdefault(e.run_id, e)
        else:
            started.pop(e.run_id, None)
    return list(started.values())


def note_unfinished(entries: Iterable[LedgerEntry], info: list[str]) -> None:
    for e in unfinished_runs(entries):
        info.append(f"started, never finished: run {e.run_id} ({e.runbook_id}, {e.mode}"
                    + (f", consumed plan {e.plan}" if e.plan else "") + f", started {e.started}): its process "
                    "died or was killed before its record was written; the change it made is not recorded")


class LedgerReader:
    """What both archives read the same way once they can list their ledger's entries: entries,
    history, manifests. Subclasses provide ``root``, ``_ledger_lines()``, ``_where(n)`` and ``find()``."""

    root: Any

    def _ledger_lines(self) -> list[tuple[int, bytes]]:
        raise NotImplementedError

    def _where(self, n: int) -> str:
        raise NotImplementedError

    def find(self, run_id: str) -> Any:
        raise NotImplementedError

    def entries(self) -> list[LedgerEntry]:
        """Every ledger entry in order; ``LedgerError`` if one does not parse."""
        out: list[LedgerEntry] = []
        for n, raw in self._ledger_lines():
            try:
                out.append(LedgerEntry.from_obj(json.loads(raw)))
            except ValueError as exc:
                raise LedgerError(f"{self._where(n)} cannot be parsed ({exc}); run `opsbook verify`") from exc
        return out

    def history(self, *, runbook: str | None = None, status: str | None = None,
                since: datetime | None = None, limit: int | None = None) -> list[LedgerEntry]:
        """Ledger entries, oldest first (newest last), filtered; ``limit`` keeps the newest ``limit``.

        ``since`` compares with ``started`` (``ended`` when a run has no start); entries with neither
        are left out when ``since`` is given. Naive datetimes, given or stored, are taken as UTC.
        Reads only the ledger; ``LedgerError`` if an entry does not parse.
        """
        if limit is not None and limit <= 0:
            return []
        entries = self.entries()
        finished = {e.run_id for e in entries if not e.is_start}
        shown = [e for e in entries if not (e.is_start and e.run_id in finished)]  # unfinished runs stay
        return filter_history(shown, runbook=runbook, status=status, since=since, limit=limit)

    def plan_used_by(self, plan_run_id: str, *, other_than: str | None = None,
                     entries: list[LedgerEntry] | None = None) -> LedgerEntry | None:
        """The first ledger entry of a run (other than ``other_than``) that consumed ``plan_run_id``
        (in ``entries`` when the caller has read them already)."""
        return next((e for e in (self.entries() if entries is None else entries)
                     if e.plan == plan_run_id and e.run_id != other_than), None)

    def start_entry(self, run_id: str, *, entries: list[LedgerEntry] | None = None) -> LedgerEntry | None:
        """The write-ahead ``started`` entry of ``run_id``, if any."""
        return next((e for e in (self.entries() if entries is None else entries)
                     if e.run_id == run_id and e.is_start), None)

    def load_manifest(self, run_id: str) -> dict[str, Any]:
        ref = self.find(run_id)
        if ref is None:
            raise ArchiveError(f"no record of run {run_id} in {self.root}")
        try:
            doc = json.loads(ref.manifest_path.read_bytes())
        except FileNotFoundError as exc:
            raise ArchiveError(f"record {ref.record} has no {MANIFEST_NAME}") from exc
        except (OSError, ValueError) as exc:
            raise ArchiveError(f"cannot read the manifest of {ref.record}: {exc}") from exc
        if not isinstance(doc, dict):
            raise ArchiveError(f"the manifest of {ref.record} is not a JSON object")
        return doc


class Archive(LedgerReader):
    """The run records under one ``outputs/`` directory.

    ``fsync=False`` skips the fsync calls (for benchmarks and tests that write thousands of
    records); the order of operations and the lock are unchanged.

    ``create=False`` opens an existing archive only (the read verbs: verify, history, incident,
    evidence): a folder that does not exist raises ``ArchiveNotFound`` (``origin`` says where the path
    came from) instead of being created.
    """

    def __init__(self, root: Path | str, *, fsync: bool = True, signer: Any = DEFAULT, create: bool = True,
                 origin: str = ""):
        self.root = Path(root).absolute()
        self.fsync = fsync
        self.signer = _signer(signer)
        if not create:
            if not self.root.is_dir():
                what = "not a folder" if self.root.exists() else "nothing has been recorded there yet"
                raise ArchiveNotFound(f"no archive at {self.root}{f' (from {origin})' if origin else ''}: {what}")
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArchiveNotWritable(f"cannot create the archive root {self.root}: {exc}") from exc

    def __repr__(self) -> str:
        return f"Archive({str(self.root)!r})"

    @property
    def ledger_path(self) -> Path:
        return self.root / LEDGER_NAME

    @property
    def location(self) -> str:
        """Where the archive is, as ``--outputs``/``OPSBOOK_OUTPUTS`` take it (an absolute folder)."""
        return str(self.root.resolve())

    def check_writable(self, reserve_bytes: int = 0) -> None:
        """Checked before a kernel starts: proof that this archive can take the run's record, so that
        a run (above all an apply, which changes things) never ends without one. A probe file is
        written, fsync'd and removed in ``.incoming/`` (a read-only folder or file system, EACCES,
        EROFS, a full disk fail here), the ledger must open for appending, and the file system must
        have ``reserve_bytes`` (what the record is expected to need) plus a small margin (ledger line,
        folders) free. Raises ``ArchiveNotWritable`` (a ``UsageError``: the CLI exits 2)."""
        where = f"the archive {self.root} cannot take a record, so nothing was run"
        probe = self.incoming_path / f".probe-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.incoming_path.mkdir(exist_ok=True)
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                data = b"opsbook write probe\n" * 205  # ~4 KiB: a block must be allocated, not just an inode
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(probe)
            if self.ledger_path.exists():
                os.close(os.open(self.ledger_path, os.O_WRONLY | os.O_APPEND))
            free = shutil.disk_usage(self.root).free
        except OSError as exc:
            raise ArchiveNotWritable(f"{where}: {exc.strerror or exc} ({exc.filename or self.root})") from exc
        need = max(0, int(reserve_bytes)) + _SPACE_MARGIN
        if free < need:
            raise ArchiveNotWritable(
                f"{where}: {free / 1024:,.0f} KiB free on its file system, {need / 1024:,.0f} KiB needed for the "
                f"record (reserve {max(0, int(reserve_bytes)) / 1024:,.0f} KiB + {_SPACE_MARGIN // 1024} KiB margin); "
                "free some space or use another --outputs")

    def record_path(self, runbook_id: str, run_id: str) -> Path:
        return self.root / runbook_id / run_id

    def read_manifests(self, entries: Iterable[LedgerEntry]) -> Iterator[tuple[LedgerEntry, Path, bytes | None]]:
        """(entry, record folder, bytes of its manifest.json or ``None`` if unreadable), in order."""
        for e in entries:
            path = self.record_path(e.runbook_id, e.run_id)
            try:
                data: bytes | None = (path / MANIFEST_NAME).read_bytes()
            except OSError:
                data = None
            yield e, path, data

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK_NAME

    @property
    def incoming_path(self) -> Path:
        return self.root / INCOMING_NAME

    # ---------------------------------------------------------------------------------- writing

    def record(self, *, runbook_id: str, run_id: str, source_dir: Path | str,
               manifest: dict[str, Any]) -> RecordRef:
        """Archive the (already redacted) files of one run under ``root/<runbook_id>/<run_id>/``.

        Raises ``RecordExists`` if a record with this run id is already archived (under any
        runbook), ``LedgerError`` if the ledger cannot be appended, ``ArchiveError`` otherwise.
        """
        _check_id("runbook id", runbook_id)
        _check_id("run id", run_id)
        source = Path(source_dir)
        if not source.is_dir():
            raise ArchiveError(f"source_dir {source} is not a directory")
        self._refuse_existing(run_id)

        incoming = self.incoming_path
        staging = incoming / f"{run_id}-{secrets.token_hex(6)}"
        try:
            incoming.mkdir(exist_ok=True)
            staging.mkdir()
        except OSError as exc:  # a read-only or full disk: an ArchiveError, never a bare traceback
            raise ArchiveError(f"cannot archive run {run_id}: {exc}") from exc
        renamed = False
        try:
            files = self._copy_tree(source, staging)
            manifest_bytes = build_manifest(manifest, run_id=run_id, runbook_id=runbook_id, files=files)
            self._write_file(staging / MANIFEST_NAME, manifest_bytes)
            self._seal(staging)
            manifest_sha = _sha256_bytes(manifest_bytes)
            final = self.root / runbook_id / run_id
            with self._lock():
                self._refuse_existing(run_id)
                tail = self._tail()  # before the rename: a bad ledger leaves nothing on disk
                new_runbook = not final.parent.exists()
                final.parent.mkdir(exist_ok=True)
                os.rename(staging, final)
                renamed = True
                if self.fsync:
                    _fsync_dir(final.parent)
                    _fsync_dir(incoming)
                    if new_runbook:
                        _fsync_dir(self.root)
                entry = chain_entry(prev=tail, run_id=run_id, runbook_id=runbook_id,
                                    manifest=manifest, manifest_sha256=manifest_sha, signer=self.signer)
                self._append(entry)
                os.chmod(final, 0o555)  # last: renaming a folder needs it writable (non-root)
        except OSError as exc:
            raise ArchiveError(f"cannot archive run {run_id}: {exc}") from exc
        finally:
            if not renamed:
                _remove_tree(staging)
        return RecordRef(run_id=run_id, runbook_id=runbook_id, path=final, entry=entry)

    def start_run(self, *, runbook_id: str, run_id: str, fields: dict[str, Any], plan: str | None = None,
                  claim: str | None = None) -> LedgerEntry:
        """Write ahead of an apply: append a ``started`` entry before its first cell runs, consuming
        ``plan`` (refused with ``PlanConsumed`` if another run already did) under the ledger lock, so
        two applies of one plan cannot both start. ``fields`` are the manifest fields a ledger entry
        copies (mode, target, operator, started...)."""
        _check_id("runbook id", runbook_id)
        _check_id("run id", run_id)
        try:
            with self._lock():
                self._refuse_existing(run_id)
                check_start(self, run_id=run_id, plan=plan)
                entry = chain_entry(prev=self._tail(), run_id=run_id, runbook_id=runbook_id,
                                    manifest={**fields, "status": STARTED}, event=STARTED, plan=plan, claim=claim,
                                    manifest_sha256=_sha256_bytes(canonical_json(fields)), signer=self.signer)
                self._append(entry)
        except OSError as exc:
            raise ArchiveError(f"cannot write the start of run {run_id} to {self.ledger_path}: {exc}") from exc
        return entry

    def _refuse_existing(self, run_id: str) -> None:
        for rb in self._runbook_dirs():
            if os.path.lexists(os.path.join(rb, run_id)):
                raise RecordExists(f"run {run_id} is already archived at {Path(rb) / run_id}")

    def _runbook_dirs(self) -> Iterator[str]:
        try:
            it = os.scandir(self.root)
        except FileNotFoundError:
            return
        with it:
            for e in it:
                if not e.name.startswith(".") and e.is_dir(follow_symlinks=False):
                    yield e.path

    def _copy_tree(self, source: Path, dest: Path) -> dict[str, str]:
        """Copy every regular file of ``source`` into ``dest`` (hashing as it copies)."""
        files: dict[str, str] = {}

        def walk(src: str, dst: str, rel: str) -> None:
            with os.scandir(src) as it:
                entries = sorted(it, key=lambda e: e.name)
            for e in entries:
                relpath = f"{rel}{e.name}"
                if e.is_symlink():
                    raise ArchiveError(f"{relpath} in {source} is a symlink; a record holds regular files only")
                if e.is_dir():
                    os.mkdir(os.path.join(dst, e.name))
                    walk(e.path, os.path.join(dst, e.name), relpath + "/")
                elif e.is_file():
                    if relpath == MANIFEST_NAME:
                        raise ArchiveError(f"{source} holds a {MANIFEST_NAME}: that name is reserved")
                    files[relpath] = self._copy_file(e.path, os.path.join(dst, e.name))
                else:
                    raise ArchiveError(f"{relpath} in {source} is not a regular file")

        walk(str(source), str(dest), "")
        return files

    def _copy_file(self, src: str, dst: str) -> str:
        h = hashlib.sha256()
        with open(src, "rb", buffering=0) as fin, open(dst, "xb", buffering=0) as fout:
            while chunk := fin.read(_CHUNK):
                h.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[fout.write(view):]
            if self.fsync:
                os.fsync(fout.fileno())
        return h.hexdigest()

    def _write_file(self, path: Path, data: bytes) -> None:
        with open(path, "xb") as f:
            f.write(data)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())

    def _seal(self, staging: Path) -> None:
        """Files 0o444, sub-folders 0o555 (the top folder is sealed after its rename, which needs it
        writable on Linux for non-root users), and every folder fsync'd."""
        for dirpath, _dirnames, filenames in os.walk(staging, topdown=False):
            for name in filenames:
                os.chmod(os.path.join(dirpath, name), 0o444)
            if self.fsync:
                _fsync_dir(dirpath)
            if dirpath != str(staging):
                os.chmod(dirpath, 0o555)

    def _lock(self) -> contextlib.AbstractContextManager[Any]:
        lock = filelock.FileLock(str(self.lock_path), timeout=_LOCK_TIMEOUT)
        try:
            return lock.acquire()  # the returned proxy releases on __exit__
        except filelock.Timeout as exc:
            raise LedgerError(f"could not lock {self.lock_path} within {_LOCK_TIMEOUT:.0f} s") from exc

    def _tail(self) -> tuple[int, str]:
        """(seq, hash) of the last ledger entry, ``(0, GENESIS)`` for an empty ledger."""
        line = _read_last_line(self.ledger_path)
        if line is None:
            return 0, GENESIS
        try:
            obj = json.loads(line)
            seq, h = obj["seq"], obj["hash"]
        except (ValueError, TypeError, KeyError) as exc:
            raise LedgerError(f"the last line of {self.ledger_path} cannot be parsed ({exc}); "
                              "run `opsbook verify`") from exc
        if not isinstance(seq, int) or not isinstance(h, str) or not _HEX64_RE.match(h):
            raise LedgerError(f"the last line of {self.ledger_path} has no valid seq/hash; run `opsbook verify`")
        return seq, h

    def _append(self, entry: LedgerEntry) -> None:
        path = self.ledger_path
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            data = entry.to_line()
            written = os.write(fd, data)
            if written != len(data):
                raise LedgerError(f"short write to {path}: {written} of {len(data)} bytes")
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if created and self.fsync:
            _fsync_dir(self.root)

    # ---------------------------------------------------------------------------------- reading

    def head(self) -> str | None:
        """The ``hash`` of the last ledger entry (the chain head), ``None`` for an empty ledger."""
        seq, h = self._tail()
        return None if seq == 0 else h

    def _ledger_lines(self) -> list[tuple[int, bytes]]:
        return self._read_ledger()[0]

    def _where(self, n: int) -> str:
        return f"{self.ledger_path}:{n}"

    def _read_ledger(self) -> tuple[list[tuple[int, bytes]], bool]:
        """The ledger's lines numbered from 1, and whether its last line lacks its newline (torn)."""
        try:
            data = self.ledger_path.read_bytes()
        except FileNotFoundError:
            return [], False
        lines = data.split(b"\n")
        torn = lines[-1] != b""
        if not torn:
            lines.pop()
        return list(enumerate(lines, start=1)), torn

    def find(self, run_id: str) -> RecordRef | None:
        """The record of ``run_id``: looked up in the ledger, else by scanning the runbook folders."""
        if not isinstance(run_id, str) or not _ID_RE.match(run_id):
            return None
        needle = canonical_json({"run_id": run_id})[1:-1]  # '"run_id":"..."' as it appears in a line
        for _lineno, raw in self._ledger_lines():
            if needle not in raw:
                continue
            try:
                entry = LedgerEntry.from_obj(json.loads(raw))
            except ValueError:
                continue
            if entry.run_id == run_id and not entry.is_start and _ID_RE.match(entry.runbook_id):
                return RecordRef(run_id=run_id, runbook_id=entry.runbook_id,
                                 path=self.root / entry.runbook_id / run_id, entry=entry)
        for rb in self._runbook_dirs():
            if os.path.isdir(os.path.join(rb, run_id)):
                return RecordRef(run_id=run_id, runbook_id=os.path.basename(rb), path=Path(rb) / run_id)
        return None

    # ---------------------------------------------------------------------------------- verify

    def verify(self, *, expect_head: str | None = None, deep: bool = True, signers: Any = DEFAULT,
               only: str | None = None) -> VerifyReport:
        """Recompute every hash of the ledger and of every record, and name what does not match.

        ``deep`` is accepted for the S3 archive's sake: on disk every file is always re-hashed.
        ``signers`` (default: the project's ``allowed_signers``; ``None``: signatures not checked).
        ``only`` (a run id): the whole ledger is checked, but only that run's record files are hashed
        (what an approval needs, at the cost of reading the ledger)."""
        problems: list[VerifyProblem] = []
        info: list[str] = []

        # One consistent snapshot: the ledger and the record folders are read while holding the lock
        # every writer holds from its rename to its ledger append, so a record being written is either
        # in both or in neither (never "not_in_ledger", never a torn last line). Records are immutable
        # once renamed, so they are hashed after the lock is released.
        with self._snapshot_lock(info):
            ledger = self._read_ledger()
            listing = self._list_records()
        lines = self._verify_ledger_lines(problems, ledger)
        head = lines[-1].entry.hash if lines else None
        self._verify_chain(lines, problems)
        self._verify_head(lines, head, expect_head, problems, info)
        verify_signatures(lines, _signers(signers), problems, info)
        note_unfinished((x.entry for x in lines), info)
        count = self._verify_records(lines, problems, info, listing, only=only)

        leftovers = self._incoming_leftovers()
        if leftovers:
            info.append(f"{len(leftovers)} leftover staging folder(s) in {INCOMING_NAME}/ from interrupted "
                        f"record() calls (ignored, safe to delete): {', '.join(leftovers[:5])}"
                        + (" ..." if len(leftovers) > 5 else ""))
        return VerifyReport(ok=not problems, head=head, records=count, problems=problems, info=info)

    def _verify_ledger_lines(self, problems: list[VerifyProblem],
                             snapshot: tuple[list[tuple[int, bytes]], bool] | None = None) -> list[_Line]:
        out: list[_Line] = []
        after_bad = False
        raw_lines, torn = snapshot if snapshot is not None else self._read_ledger()
        for lineno, raw in raw_lines:
            where = f"{LEDGER_NAME}:{lineno}"
            try:
                entry, hash_ok = parse_entry(raw)
            except ValueError as exc:
                why = "blank line" if not raw.strip() else str(exc)
                if torn and lineno == len(raw_lines):
                    why += " (the last line has no newline: a torn write?)"
                problems.append(VerifyProblem("unparseable", where, f"ledger line {lineno}: {why}"))
                after_bad = True
                continue
            if not hash_ok:
                problems.append(VerifyProblem(
                    "ledger_edited", entry.run_id,
                    f"ledger line {lineno} (seq {entry.seq}): the entry's hash does not match its content"))
            out.append(_Line(lineno, entry, hash_ok, after_bad))
            after_bad = False
        return out

    @staticmethod
    def _verify_chain(lines: list[_Line], problems: list[VerifyProblem]) -> None:
        """The chain checks, shared with ``opsbook.records.s3`` (there a "line" is a ledger object, in key order)."""
        breaks: list[tuple[_Line | None, _Line]] = []
        prev: _Line | None = None
        for cur in lines:
            exp_seq, exp_prev = (1, GENESIS) if prev is None else (prev.entry.seq + 1, prev.entry.hash)
            if cur.entry.seq != exp_seq or cur.entry.prev != exp_prev:
                breaks.append((prev, cur))
            prev = cur
        if not breaks:
            return

        # Lines moved or swapped: every entry present, and sorted by seq the chain is intact.
        by_seq = sorted(lines, key=lambda x: x.entry.seq)
        if [x.entry.seq for x in by_seq] == list(range(1, len(lines) + 1)) and all(
            x.entry.prev == (GENESIS if i == 0 else by_seq[i - 1].entry.hash) for i, x in enumerate(by_seq)
        ):
            for pos, cur in enumerate(lines):
                if cur.entry.seq != pos + 1:
                    problems.append(VerifyProblem(
                        "reordered", cur.entry.run_id,
                        f"seq {cur.entry.seq} is on ledger line {cur.lineno}, out of order; the entries "
                        "are intact and chain correctly when sorted by seq (lines were swapped or moved)"))
            return

        by_hash = {x.entry.hash: x for x in lines}
        for prev, cur in breaks:
            if cur.after_unparseable or not cur.hash_ok or (prev is not None and not prev.hash_ok):
                continue  # already explained by an unparseable line or an edited entry
            e = cur.entry
            exp_seq = 1 if prev is None else prev.entry.seq + 1
            after = "the start of the ledger" if prev is None else f"seq {prev.entry.seq} (line {prev.lineno})"
            target = by_hash.get(e.prev)
            if target is not None and target is not prev:
                kind = "reordered"
                detail = (f"seq {e.seq} (line {cur.lineno}) chains to seq {target.entry.seq} "
                          f"(line {target.lineno}) but follows {after}")
            elif e.seq > exp_seq and target is None:
                kind = "reordered"
                gap = f"seq {exp_seq}" if e.seq == exp_seq + 1 else f"seq {exp_seq}..{e.seq - 1}"
                detail = (f"{gap} missing before seq {e.seq} (line {cur.lineno}): entries were "
                          "removed from the ledger")
            elif e.seq == exp_seq and e.prev != (GENESIS if prev is None else prev.entry.hash):
                kind = "ledger_edited"
                detail = (f"seq {e.seq} (line {cur.lineno}) does not chain to {after}: one of the two "
                          "entries was rewritten and its hash recomputed")
            else:
                kind = "reordered"
                detail = f"seq {e.seq} (line {cur.lineno}) follows {after}; expected seq {exp_seq}"
            problems.append(VerifyProblem(kind, e.run_id, detail))

    @staticmethod
    def _verify_head(lines: list[_Line], head: str | None, expect_head: str | None,
                     problems: list[VerifyProblem], info: list[str], where: str = LEDGER_NAME) -> None:
        if expect_head is None:
            return
        expect_head = expect_head.strip().lower()
        if expect_head == head:
            info.append("the ledger head matches the expected head")
            return
        for pos, x in enumerate(lines):
            if x.entry.hash == expect_head:
                grown = len(lines) - pos - 1
                info.append(f"the expected head is seq {x.entry.seq} (line {x.lineno}); the ledger grew "
                            f"by {grown} entr{'y' if grown == 1 else 'ies'} since (not a problem)")
                return
        problems.append(VerifyProblem(
            "truncated", where,
            f"the expected head {expect_head} is not in the ledger (current head: {head or 'none'}): "
            "the ledger lost its tail or was rewritten"))

    @contextlib.contextmanager
    def _snapshot_lock(self, info: list[str]) -> Iterator[None]:
        """Hold ``ledger.lock`` (briefly) so that no record is between its rename and its ledger
        append. An archive where the lock cannot be taken (a read-only copy: no writer can be active
        either) is read without it; a lock held past the timeout is noted in ``info``."""
        lock = filelock.FileLock(str(self.lock_path), timeout=_SNAPSHOT_LOCK_TIMEOUT)
        try:
            lock.acquire()
        except filelock.Timeout:
            info.append(f"{LOCK_NAME} was held by a writer for more than {_SNAPSHOT_LOCK_TIMEOUT:.0f} s: the "
                        "ledger and the folders were read without it (a record being written may show as "
                        "not_in_ledger; verify again)")
            yield
            return
        except OSError:  # read-only archive (EROFS, EACCES): nobody can be writing to it
            yield
            return
        try:
            yield
        finally:
            lock.release()

    def _list_records(self) -> tuple[dict[str, str], list[VerifyProblem], list[str]]:
        """The record folders (``runbook/run`` -> path), stray files in runbook folders (problems) and
        unknown files at the root (info)."""
        on_disk: dict[str, str] = {}
        problems: list[VerifyProblem] = []
        info: list[str] = []
        try:
            top = sorted(os.scandir(self.root), key=lambda e: e.name)
        except FileNotFoundError:
            top = []
        for rb in top:
            if rb.name.startswith(".") and rb.name not in ROOT_FILES and rb.is_dir(follow_symlinks=False):
                continue  # .incoming/ and other hidden folders
            if not rb.is_dir(follow_symlinks=False):
                if rb.name not in ROOT_FILES:
                    info.append(f"unknown file at the archive root: {rb.name}")
                continue
            with os.scandir(rb.path) as it:
                for rec in it:
                    if rec.is_dir(follow_symlinks=False):
                        on_disk[f"{rb.name}/{rec.name}"] = rec.path
                    else:
                        problems.append(VerifyProblem(
                            "unexpected_file", f"{rb.name}/{rec.name}",
                            f"{rb.name}/{rec.name} is not a record folder", file=rec.name))
        return on_disk, problems, info

    def _verify_records(self, lines: list[_Line], problems: list[VerifyProblem], info: list[str],
                        listing: tuple[dict[str, str], list[VerifyProblem], list[str]] | None = None,
                        only: str | None = None) -> int:
        on_disk, stray, root_info = listing if listing is not None else self._list_records()
        on_disk = dict(on_disk)
        info.extend(root_info)
        problems.extend(stray)

        count, pairs = match_records(lines, on_disk, problems)
        for e, path in pairs:
            if only is None or e.run_id == only:
                problems.extend(_check_record(e, path))

        for rel in sorted(on_disk):
            run_id = rel.split("/", 1)[1]
            problems.append(VerifyProblem(
                "not_in_ledger", run_id,
                f"record folder {rel} is not in the ledger: added outside the archive, or the writer "
                "died between the rename and the ledger append"))
        return count

    def _incoming_leftovers(self) -> list[str]:
        try:
            with os.scandir(self.incoming_path) as it:
                return sorted(e.name for e in it)
        except FileNotFoundError:
            return []


def _walk_record(path: str) -> dict[str, os.DirEntry[str]]:
    """Every non-directory below a record folder by relative posix path (``manifest.json`` excluded)."""
    found: dict[str, os.DirEntry[str]] = {}
    stack = [(path, "")]
    while stack:
        d, rel = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append((e.path, f"{rel}{e.name}/"))
                else:
                    found[f"{rel}{e.name}"] = e
    found.pop(MANIFEST_NAME, None)
    return found


def _check_record(e: LedgerEntry, path: str) -> list[VerifyProblem]:
    rid = e.run_id
    try:
        with open(os.path.join(path, MANIFEST_NAME), "rb") as f:
            mbytes = f.read()
    except FileNotFoundError:
        return [VerifyProblem("missing_file", rid, f"{e.record}/{MANIFEST_NAME} is gone", file=MANIFEST_NAME)]
    out, doc = check_manifest(e, mbytes)
    if doc is None:
        return out
    found = _walk_record(path)
    for rel, digest in doc["files"].items():
        de = found.pop(rel, None)
        if de is None:
            out.append(VerifyProblem("missing_file", rid, f"{rel} is gone from {e.record}", file=rel))
        elif de.is_symlink() or not de.is_file(follow_symlinks=False):
            out.append(VerifyProblem("modified", rid, f"{rel} in {e.record} was replaced by a non-regular file",
                                     file=rel))
        else:
            actual = _sha256_file(de.path)
            if actual != digest:
                out.append(VerifyProblem("modified", rid,
                                         f"{rel} in {e.record}: sha256 {actual[:12]}… != manifest {digest[:12]}…",
                                         file=rel))
    for rel in sorted(found):
        out.append(VerifyProblem("unexpected_file", rid, f"{rel} in {e.record} is not in its manifest", file=rel))
    return out


def iter_record_files(root: Path | str) -> Iterable[str]:
    """Every file below the record folders of an archive (for benchmarks: the baseline's input)."""
    root = str(root)
    for rb in os.scandir(root):
        if rb.name.startswith(".") or not rb.is_dir(follow_symlinks=False):
            continue
        for rec in os.scandir(rb.path):
            if rec.is_dir(follow_symlinks=False):
                yield os.path.join(rec.path, MANIFEST_NAME)
                yield from (de.path for de in _walk_record(rec.path).values())



def open_archive(location: str | os.PathLike[str] | None = None, *,
                 retention: str | None = None, create: bool = True) -> Archive | S3Archive:
    """The archive at ``location`` (``--outputs``), else ``$OPSBOOK_OUTPUTS``, else ``outputs/``.

    ``create=False`` (the read verbs) never creates a folder: one that does not exist raises
    ``ArchiveNotFound`` naming the path and whether it came from --outputs, $OPSBOOK_OUTPUTS or the
    default (the same for all three). An S3 archive is not created either way (a missing bucket is an
    error when it is used).

    ``s3://BUCKET/PREFIX`` opens an :class:`opsbook.records.s3.S3Archive` (endpoint from
    ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``, credentials from boto3's default chain);
    ``retention`` (``MODE:DAYS``, ``--retention``) is for S3 only (Object Lock).
    """
    from opsbook import catalog
    from opsbook.errors import UsageError

    raw = location if location else os.environ.get(catalog.ENV_OUTPUTS)
    if isinstance(raw, str) and raw.strip().lower().startswith("s3://"):
        from opsbook.records.s3 import S3Archive

        return S3Archive(raw.strip(), retention=retention)
    if retention:
        raise UsageError(f"--retention {retention}: Object Lock retention applies to an S3 archive "
                         "(--outputs s3://BUCKET/PREFIX) only")
    origin = ("--outputs" if location else f"${catalog.ENV_OUTPUTS}" if os.environ.get(catalog.ENV_OUTPUTS)
              else "the default outputs/ of the project")
    return Archive(catalog.outputs_dir(location), create=create, origin=origin)
