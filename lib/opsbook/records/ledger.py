"""The ledger every archive keeps, whatever holds its bytes (a folder, an S3 bucket): its entries, their
hash chain, the manifest they pin, and the checks ``verify`` makes of them. The disk and S3 backends
differ only in where an entry and a record live; everything here is shared, so that a record written
to one verifies exactly as a record written to the other.

An entry is one JSON object, keys sorted, separators ``,`` and ``:`` (no spaces), UTF-8,
``\\n``-terminated (a line of ``ledger.jsonl`` on disk, one object per entry in S3). Fields: ``seq``
(1-based, consecutive), ``run_id``, ``runbook_id``, ``runbook_version``, ``status``, ``mode``,
``target``, ``operator``, ``started``, ``ended`` (copied from the manifest, else ``null``), ``record``
(``runbook_id/run_id``), ``manifest_sha256`` (sha256 of the bytes of ``manifest.json``), ``prev`` (the
previous entry's ``hash``, ``"0" * 64`` for the first) and ``hash``: the sha256 hex of the canonical
JSON (same encoding) of the entry without its ``hash`` and ``sig`` keys. Optional fields, present only
when set: ``event`` (``"started"``: the write-ahead entry of an apply, written before its first cell;
its record's entry follows, or it never finished), ``plan`` (the plan run an apply consumed),
``claim`` (sha256 of the runner's one-time token for its kernel) and ``sig`` (the writer's SSHSIG
signature of ``hash``, see :mod:`opsbook.signing`; not covered by ``hash``). Keep the chain head
(``head()``, also ``VerifyReport.head``) somewhere the runner cannot rewrite and pass it back as
``expect_head``: a ledger that lost its tail or was rewritten from scratch is then detected too.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime
from pathlib import PurePath
from typing import Any

from opsbook.errors import ArchiveError

__all__ = [
    "DEFAULT", "GENESIS", "MANIFEST_NAME", "PROBLEM_KINDS", "RECORD_FORMAT", "STARTED",
    "LedgerEntry", "LedgerLine", "VerifyProblem", "VerifyReport",
    "build_manifest", "canonical_json", "chain_entry", "check_id", "check_manifest", "match_records",
    "note_unfinished", "parse_entry", "parse_time", "resolve_signer", "resolve_signers", "sha256_bytes",
    "unfinished_runs", "verify_chain", "verify_head", "verify_signatures",
]

RECORD_FORMAT = 1
GENESIS = "0" * 64
MANIFEST_NAME = "manifest.json"
STARTED = "started"
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

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
DEFAULT: Any = object()  # "the project's own": the signing key of $OPSBOOK_SIGNING_KEY, the repo's allowed_signers


# --------------------------------------------------------------------------------------------------
# signing hooks: resolved lazily, so that an archive opened with signer=None never reads a key


def resolve_signer(signer: Any) -> Any:
    if signer is not DEFAULT:
        return signer
    from opsbook.signing import Signer

    return Signer.from_env()


def resolve_signers(signers: Any) -> Any:
    if signers is not DEFAULT:
        return signers
    from opsbook.signing import trusted

    return trusted()


# --------------------------------------------------------------------------------------------------
# canonical encoding and hashing


def canonical_json(obj: Any) -> bytes:
    """The one encoding the ledger is hashed and written with: sorted keys, compact, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_default(value: Any) -> Any:
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
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=json_default)


def check_id(kind: str, value: str) -> str:
    if not isinstance(value, str) or not ID_RE.match(value):
        raise ArchiveError(
            f"invalid {kind} {value!r}: use letters, digits, '.', '_' and '-' (not first), at most 200"
        )
    return value


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


# --------------------------------------------------------------------------------------------------
# entries and the chain


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One entry of the ledger.

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
        return sha256_bytes(canonical_json(self.body()))

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
        return parse_time(self.started)

    @property
    def ended_at(self) -> datetime | None:
        return parse_time(self.ended)


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
    digest = sha256_bytes(canonical_json({**body, **extra}))
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
        text = json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False, default=json_default)
    except (TypeError, ValueError) as exc:
        raise ArchiveError(f"manifest for run {run_id} is not JSON serialisable: {exc}") from exc
    return (text + "\n").encode("utf-8")


def parse_entry(raw: bytes) -> tuple[LedgerEntry, bool]:
    """One ledger entry (a line, or an S3 ledger object) and whether its hash matches its content;
    ``ValueError`` if it does not parse."""
    obj = json.loads(raw)
    entry = LedgerEntry.from_obj(obj)
    body = {k: v for k, v in obj.items() if k not in ("hash", "sig")}
    return entry, sha256_bytes(canonical_json(body)) == entry.hash


# --------------------------------------------------------------------------------------------------
# verify: what it reports, and the checks every backend makes alike


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


@dataclass(slots=True)
class LedgerLine:
    """A parsed entry where verify found it (a line number on disk, the key's seq in S3)."""

    lineno: int
    entry: LedgerEntry
    hash_ok: bool
    after_unparseable: bool


def check_manifest(e: LedgerEntry, mbytes: bytes) -> tuple[list[VerifyProblem], dict[str, Any] | None]:
    """A record's manifest against its ledger entry: the problems, and the manifest (``None`` if it
    cannot be used to check the files: not JSON, or no ``files`` map of path to sha256)."""
    out: list[VerifyProblem] = []
    if sha256_bytes(mbytes) != e.manifest_sha256:
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


def match_records(lines: list[LedgerLine], stored: dict[str, Any], problems: list[VerifyProblem],
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
        if len(parts) != 2 or not all(ID_RE.match(p) for p in parts):
            problems.append(VerifyProblem("unparseable", e.run_id,
                                          f"ledger entry {x.lineno}: invalid record path {e.record!r}"))
            continue
        found = stored.pop(e.record, None)
        if found is None:
            problems.append(VerifyProblem("removed", e.run_id, f"record {e.record} (seq {e.seq}) is gone"))
            continue
        pairs.append((e, found))
    return count, pairs


def verify_chain(lines: list[LedgerLine], problems: list[VerifyProblem]) -> None:
    """The chain checks (on S3 a "line" is a ledger object, in key order)."""
    breaks: list[tuple[LedgerLine | None, LedgerLine]] = []
    prev: LedgerLine | None = None
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


def verify_head(lines: list[LedgerLine], head: str | None, expect_head: str | None,
                problems: list[VerifyProblem], info: list[str], where: str) -> None:
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


def verify_signatures(lines: list[LedgerLine], signers: Any, problems: list[VerifyProblem], info: list[str]) -> None:
    """Every entry signed by a key in ``signers`` (an ``opsbook.signing.AllowedSigners``), or, with no
    signers configured, say plainly what that leaves undetectable."""
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
