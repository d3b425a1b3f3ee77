"""The run archive in an S3-compatible object store: ``--outputs s3://BUCKET/PREFIX``.

The same records, manifests and ledger as the on-disk archive (:mod:`opsbook.records.disk`): the same
``build_manifest``, ``chain_entry`` and ``canonical_json``, the same ``LedgerEntry`` hash chain, the same
``verify`` problem kinds. Only where the bytes live differs. Layout under ``s3://BUCKET/PREFIX/``::

    ledger/000000000001.json     one object per ledger entry, key = its zero-padded seq; the body is
                                 exactly the line ``ledger.jsonl`` would hold (canonical JSON + "\\n")
    ledger/HEAD                  a hint: {"seq": N, "hash": H} of a recent tail. Never trusted (below)
    runs/<run_id>                the claim of a run id: {"run_id", "runbook_id", "token", "claimed"}
    records/<runbook_id>/<run_id>/manifest.json, notebook.ipynb, notebook.html, evidence/...
    packs/000000000100.json      a copy of ledger entries 1-100 and their manifests (read-ahead, below)

**Written once.** Every object but ``ledger/HEAD`` is created with a conditional PUT
(``If-None-Match: *``): the store refuses it (412) if the key exists, so nothing is ever overwritten,
not even by two writers racing. A record is written in this order: the run-id claim (a 412 there
means the run id is taken: ``RecordExists``), every file, ``manifest.json`` (it holds, per file, the
sha256 *and* the ETag and size the store returned for that PUT, under ``"s3_objects"``), then the
ledger entry. A writer that dies before the ledger entry leaves a record that ``verify`` reports as
``not_in_ledger``, as on disk. With Object Lock retention (``--retention MODE:DAYS`` or
``OPSBOOK_S3_RETENTION``) each of these objects is created under that retention.

**Ledger appends: a conditional PUT of the next sequence number, not a lock object.** A writer
finds the tail (seq N and its hash), builds entry N+1 chained to it, and PUTs
``ledger/<N+1>`` with ``If-None-Match: *``. If another writer got there first the store answers 412:
the writer re-reads the tail and retries with jittered exponential backoff, for at most
``append_timeout`` seconds. The store's atomic create is the only arbiter, so the chain cannot fork
and no append is lost. A lock object with an expiry would need every writer's clock to agree with the
store's, would leave a stale lock behind a writer that crashed (everyone waits for the expiry), and a
writer paused past the expiry (GC, a suspended laptop, a slow network) would still believe it holds
the lock while another writer appends: a forked chain. The conditional PUT has none of these: nothing
to clean up, no clock involved, and a crashed writer blocks nobody.

``ledger/HEAD`` only says where to start looking: the tail is found by listing ``ledger/`` from the
hint's key on (from the start if the hint points past the end) and reading the last entry. A stale or
forged hint costs a retry, never a wrong chain: the conditional PUT still decides.

**verify.** Default: one listing of the archive (keys, sizes, ETags; 1000 keys a page, the ledger
and each runbook listed in parallel), then every ledger entry and every manifest is downloaded (a
thread pool) and checked exactly as on disk: each entry's hash, the chain, each manifest's sha256
against its ledger entry. Record files are *not* downloaded: the listed ETag and size of each must
equal the ones the store returned when the file was written, which the (ledger-verified) manifest
holds. This proves that every object is the one that was written, unless the store's listing lies or
someone crafted a replacement with the same MD5 (the ETag of a single-part PUT is the MD5 of the
content; MD5 collisions can be made on purpose). ``verify(deep=True)`` (``opsbook verify --deep``)
downloads every file and re-hashes it with sha256: that proves every byte, as the on-disk verify does.

**Packs (read-ahead for verify).** Reading 10,000 ledger entries and 10,000 manifests one GET at a
time costs minutes of client CPU (botocore spends ~1-4 ms per request). So the writer of every
``PACK_SIZE``-th entry also writes ``packs/<last seq>.json`` (write-once, best effort): those entries'
lines and their manifests' bytes. A pack is never trusted: ``verify`` uses a line or a manifest from a
pack only if its MD5 equals the ETag the listing shows for the real object, i.e. the pack holds the
object's exact bytes; anything else (no pack, a forged pack, a rewritten object) is downloaded. To
pass off tampered bytes through a pack, an attacker would need a second MD5 preimage of the honest
object, which is not practical. ``deep`` ignores packs and downloads every object.

**Failed uploads.** If the store fails while a record is uploaded (unreachable, credentials refused,
an object already at a record key...), the record is copied to a local folder
(``$OPSBOOK_S3_FALLBACK``, else ``~/.local/state/opsbook/unuploaded/``) and ``RecordNotUploaded`` says
where; :meth:`S3Archive.upload_pending` uploads it later (it resumes: its own claim and the files it
already wrote are recognised by the claim's token and their MD5).

Everything that talks to S3 goes through :class:`opsbook.clients.s3.S3` (errors: ``ClientError`` and
its subclasses; the secret key never appears in a message).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from opsbook.clients.s3 import LOCK_MODES, S3, ObjectInfo
from opsbook.errors import (
    ArchiveError,
    ClientError,
    Conflict,
    LedgerError,
    NotFound,
    RecordExists,
    RecordNotUploaded,
    UsageError,
)
from opsbook.records.disk import (
    _HEX64_RE,
    _ID_RE,
    DEFAULT,
    GENESIS,
    MANIFEST_NAME,
    STARTED,
    Archive,
    LedgerEntry,
    LedgerReader,
    VerifyProblem,
    VerifyReport,
    _check_id,
    _json_default,
    _Line,
    _sha256_bytes,
    _signer,
    _signers,
    build_manifest,
    canonical_json,
    chain_entry,
    check_manifest,
    check_start,
    match_records,
    note_unfinished,
    parse_entry,
    verify_signatures,
)

__all__ = ["S3Archive", "S3Path", "S3RecordRef", "Retention", "RecordNotUploaded", "parse_s3_url",
           "ENV_RETENTION", "ENV_FALLBACK", "STORE_KEY"]

ENV_RETENTION = "OPSBOOK_S3_RETENTION"
ENV_FALLBACK = "OPSBOOK_S3_FALLBACK"
#: The manifest key holding, per file, the ETag and size the store returned for its PUT.
STORE_KEY = "s3_objects"
LEDGER_DIR, RUNS_DIR, RECORDS_DIR, PACKS_DIR, HINT_NAME = "ledger", "runs", "records", "packs", "HEAD"
#: Every PACK_SIZE-th append also writes a pack of the last PACK_SIZE entries and their manifests.
PACK_SIZE = 100
PACK_FORMAT = 1
PENDING_NAME = "pending.json"
_SEQ_DIGITS = 12
_LEDGER_KEY_RE = re.compile(r"^(\d{12})\.json$")
_PACK_KEY_RE = re.compile(r"^(\d{12})\.json$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_MAX_DAYS = 36500
#: verify: a record without a ledger entry whose run claim is younger than this many times
#: ``append_timeout`` is "being written" (the append's own limit, plus half again for the uploads
#: before it and clock skew between writer and verifier: 180 s by default).
_IN_FLIGHT_FACTOR = 1.5


# --------------------------------------------------------------------------------------------------
# small value types


def default_fallback_dir() -> Path:
    """Where records that could not be uploaded are kept: ``$OPSBOOK_S3_FALLBACK``, else
    ``$XDG_STATE_HOME/opsbook/unuploaded`` (``~/.local/state/opsbook/unuploaded``)."""
    env = os.environ.get(ENV_FALLBACK, "").strip()
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(env) if env else Path(state) / "opsbook" / "unuploaded"


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET/PRE/FIX/`` -> ``("BUCKET", "PRE/FIX")``; ``UsageError`` if it is not one."""
    text = str(url).strip()
    if not text.lower().startswith("s3://"):
        raise UsageError(f"{url!r} is not an s3://BUCKET/PREFIX URL")
    bucket, _, prefix = text[5:].partition("/")
    if not _BUCKET_RE.match(bucket):
        raise UsageError(f"{url!r}: {bucket!r} is not a valid bucket name (3-63 of a-z, 0-9, '.', '-')")
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise UsageError(f"{url!r}: the prefix may not contain '.' or '..' segments")
    return bucket, "/".join(parts)


@dataclass(frozen=True, slots=True)
class Retention:
    """Object Lock retention for every object of a record: ``GOVERNANCE:365``, ``COMPLIANCE:2555``."""

    mode: str
    days: int

    @classmethod
    def parse(cls, text: str) -> Retention:
        mode, sep, days = str(text).strip().partition(":")
        mode = mode.strip().upper()
        if not sep or mode not in LOCK_MODES or not days.strip().isdigit():
            raise UsageError(f"retention {text!r}: expected MODE:DAYS with MODE GOVERNANCE or COMPLIANCE, "
                             "e.g. GOVERNANCE:365")
        n = int(days)
        if not 1 <= n <= _MAX_DAYS:
            raise UsageError(f"retention {text!r}: DAYS must be between 1 and {_MAX_DAYS}")
        return cls(mode, n)

    def until(self, now: datetime | None = None) -> datetime:
        return (now or datetime.now(UTC)) + timedelta(days=self.days)

    def __str__(self) -> str:
        return f"{self.mode}:{self.days}"


class S3Path:
    """An object (or a folder of objects) of an :class:`S3Archive`, with the few ``Path`` methods the
    archive's readers use (``/``, ``read_bytes``, ``read_text``, ``is_file``, ``exists``), so that code
    written for a record folder on disk reads a record in S3 too. ``str()`` is its ``s3://`` URL."""

    __slots__ = ("_archive", "key")

    def __init__(self, archive: S3Archive, key: str):
        self._archive = archive
        self.key = key.strip("/")

    def __truediv__(self, rel: str | PurePosixPath) -> S3Path:
        parts = PurePosixPath(str(rel)).parts
        if not parts or any(p in ("..", "/") for p in parts):
            raise ValueError(f"{rel!r}: expected a relative path inside {self}")
        return S3Path(self._archive, f"{self.key}/{'/'.join(parts)}")

    def __str__(self) -> str:
        return f"s3://{self._archive.bucket}/{self.key}"

    def __repr__(self) -> str:
        return f"S3Path({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, S3Path) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    def read_bytes(self) -> bytes:
        """The object's content; ``FileNotFoundError`` if there is no such object (as ``Path``)."""
        try:
            return self._archive.s3.get(self._archive.bucket, self.key)
        except NotFound as exc:
            raise FileNotFoundError(f"{self} does not exist") from exc

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def is_file(self) -> bool:
        return self._archive.s3.head(self._archive.bucket, self.key) is not None

    def is_dir(self) -> bool:
        return next(iter(self._archive.s3.iter_objects(self._archive.bucket, self.key + "/")), None) is not None

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def read_tree(self) -> dict[str, bytes]:
        """Every object below this folder by relative posix path (the record's files, manifest included)."""
        base = self.key + "/"
        keys = [o.key for o in self._archive.s3.iter_objects(self._archive.bucket, base)]
        datas = self._archive._fetch(keys)
        return {k[len(base):]: d for k, d in zip(keys, datas, strict=True) if d is not None}


@dataclass(frozen=True, slots=True)
class S3RecordRef:
    """Where one archived record lives in S3. ``entry`` is ``None``: finding it would mean reading the
    whole ledger (one GET per entry); ``verify`` and ``history`` read it."""

    run_id: str
    runbook_id: str
    path: S3Path
    entry: LedgerEntry | None = None

    @property
    def record(self) -> str:
        return f"{self.runbook_id}/{self.run_id}"

    @property
    def manifest_path(self) -> S3Path:
        return self.path / MANIFEST_NAME


@dataclass(slots=True)
class _Upload:
    rel: str
    sha256: str
    etag: str
    size: int


@dataclass(slots=True)
class AppendStats:
    """How the last ledger append went (for benchmarks and logs)."""

    attempts: int = 0
    seconds: float = 0.0
    conflicts: list[int] = field(default_factory=list)  # the seqs another writer got first


# --------------------------------------------------------------------------------------------------
# the archive


class S3Archive(LedgerReader):
    """The run records under ``s3://BUCKET/PREFIX`` (see the module docstring).

    ``s3`` is the client seam (tests and benchmarks pass their own); by default the endpoint is
    ``$AWS_ENDPOINT_URL_S3`` or ``$AWS_ENDPOINT_URL`` (else AWS), the region ``$AWS_REGION`` /
    ``$AWS_DEFAULT_REGION``, the credentials boto3's default chain. ``retention`` (``MODE:DAYS`` or a
    :class:`Retention`; default ``$OPSBOOK_S3_RETENTION``) puts each record object under Object Lock.
    ``workers`` is the size of the thread pool used to read and write many objects at once.
    """

    def __init__(self, url: str, *, s3: S3 | None = None, retention: Retention | str | None = None,
                 workers: int = 32, fallback_dir: Path | str | None = None, append_timeout: float = 120.0,
                 signer: Any = DEFAULT):
        self.bucket, self.prefix = parse_s3_url(url)
        self.root = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self._base = f"{self.prefix}/" if self.prefix else ""
        if s3 is None:
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
            s3 = S3(endpoint_url=endpoint, region=region, path_style=endpoint is not None,
                    max_pool_connections=workers + 4)
        self.s3 = s3
        if retention is None and os.environ.get(ENV_RETENTION, "").strip():
            retention = os.environ[ENV_RETENTION]
        self.retention = Retention.parse(retention) if isinstance(retention, str) else retention
        self.workers = max(1, workers)
        self.fallback_dir = Path(fallback_dir) if fallback_dir is not None else default_fallback_dir()
        self.append_timeout = append_timeout
        self.signer = _signer(signer)
        self.pack_size = PACK_SIZE
        self.last_append = AppendStats()
        self._lock_ok: bool | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Archive({self.root!r})"

    @property
    def location(self) -> str:
        """The URL, as ``--outputs`` / ``OPSBOOK_OUTPUTS`` take it."""
        return self.root

    # ---------------------------------------------------------------------------------- keys

    def _key(self, *parts: str) -> str:
        return self._base + "/".join(parts)

    def _ledger_key(self, seq: int) -> str:
        return self._key(LEDGER_DIR, f"{seq:0{_SEQ_DIGITS}d}.json")

    def _record_key(self, runbook_id: str, run_id: str, rel: str = "") -> str:
        return self._key(RECORDS_DIR, runbook_id, run_id, rel) if rel else self._key(RECORDS_DIR, runbook_id, run_id)

    def record_path(self, runbook_id: str, run_id: str) -> S3Path:
        return S3Path(self, self._record_key(runbook_id, run_id))

    def _url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # ---------------------------------------------------------------------------------- plumbing

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="opsbook-s3")
            return self._pool

    def close(self) -> None:
        """Stop the worker threads (they also stop at interpreter exit)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def _fetch(self, keys: list[str], *, sha256: bool = False) -> list[Any]:
        """GET many objects at once: their bytes (or sha256 hex), ``None`` for a key that is gone."""
        def one(key: str) -> Any:
            try:
                data = self.s3.get(self.bucket, key)
            except NotFound:
                return None
            return _sha256_bytes(data) if sha256 else data

        if len(keys) <= 1:
            return [one(k) for k in keys]
        return list(self._executor().map(one, keys))

    # ---------------------------------------------------------------------------------- checks

    def check_writable(self, reserve_bytes: int = 0) -> None:
        """Before a run starts: the bucket exists and these credentials may use it, and, if retention
        was asked for, the bucket has Object Lock enabled. Raises ``ArchiveError``/``ClientError``
        (``UsageError`` for retention on a bucket without Object Lock). ``reserve_bytes`` (the space
        the record needs, checked on disk) is ignored: a bucket has no free-space figure to check, and
        a record that cannot be uploaded is kept locally (``RecordNotUploaded``)."""
        if not self.s3.bucket_exists(self.bucket):
            raise ArchiveError(f"the archive {self.root}: bucket {self.bucket!r} does not exist on {self.s3.where}")
        self._lock_kwargs(datetime.now(UTC))

    def _lock_kwargs(self, now: datetime) -> dict[str, Any]:
        if self.retention is None:
            return {}
        if self._lock_ok is None:
            self._lock_ok = self.s3.object_lock_enabled(self.bucket)
        if not self._lock_ok:
            raise UsageError(
                f"retention {self.retention} was asked for, but bucket {self.bucket!r} on {self.s3.where} has no "
                "Object Lock (it must be enabled when the bucket is created: ObjectLockEnabledForBucket); "
                f"use another bucket or drop --retention / ${ENV_RETENTION}")
        return {"lock_mode": self.retention.mode, "retain_until": self.retention.until(now)}

    # ---------------------------------------------------------------------------------- writing

    def record(self, *, runbook_id: str, run_id: str, source_dir: Path | str, manifest: dict[str, Any],
               _resume_token: str | None = None) -> S3RecordRef:
        """Archive the (already redacted) files of one run under ``records/<runbook_id>/<run_id>/``.

        Raises ``RecordExists`` if the run id is already claimed (nothing is written),
        ``RecordNotUploaded`` (an ``ArchiveError``, the record kept locally) if the store fails or
        anything else goes wrong while writing, ``ArchiveError``/``UsageError`` for invalid input
        (before anything is written)."""
        _check_id("runbook id", runbook_id)
        _check_id("run id", run_id)
        source = Path(source_dir)
        if not source.is_dir():
            raise ArchiveError(f"source_dir {source} is not a directory")
        files = _scan_source(source)
        build_manifest(manifest, run_id=run_id, runbook_id=runbook_id, files={})  # invalid input: fail now
        now = datetime.now(UTC)
        lock = self._lock_kwargs(now)
        resume = _resume_token is not None
        token = _resume_token or secrets.token_hex(16)
        claimed = False
        try:
            self._claim(runbook_id, run_id, token, lock, resume=resume)
            claimed = True
            uploads = self._upload_files(runbook_id, run_id, files, lock, resume=resume)
            doc = dict(manifest)
            doc[STORE_KEY] = {u.rel: {"etag": u.etag, "size": u.size} for u in uploads}
            mbytes = build_manifest(doc, run_id=run_id, runbook_id=runbook_id,
                                    files={u.rel: u.sha256 for u in uploads})
            self._put_once(self._record_key(runbook_id, run_id, MANIFEST_NAME), mbytes, lock, resume=resume,
                           content_type="application/json")
            msha = _sha256_bytes(mbytes)
            entry = self._append(lambda tail: chain_entry(prev=tail, run_id=run_id, runbook_id=runbook_id,
                                                          manifest=manifest, manifest_sha256=msha,
                                                          signer=self.signer), lock)
        except Exception as exc:
            if isinstance(exc, RecordExists) and not claimed:
                raise  # the run id is taken: nothing was written, and this is not an upload failure
            kept = self._keep_locally(runbook_id=runbook_id, run_id=run_id, source=source, manifest=manifest,
                                      token=token, error=exc)
            where = f"it is kept in {kept}" if kept else "and it could NOT be kept locally either"
            raise RecordNotUploaded(
                f"the record of run {run_id} was not (completely) written to {self.root}: {exc}; {where}. "
                + (f"Upload it later with: opsbook upload {kept}" if kept else "It is lost: look into the disk "
                   "that holds the fallback folder before the next run"), fallback=kept) from exc
        if entry.seq % self.pack_size == 0:
            with contextlib.suppress(Exception):  # a read-ahead copy only: the record is complete without it
                self._write_pack(entry.seq)
        return S3RecordRef(run_id, runbook_id, self.record_path(runbook_id, run_id), entry)

    def start_run(self, *, runbook_id: str, run_id: str, fields: dict[str, Any], plan: str | None = None,
                  claim: str | None = None) -> LedgerEntry:
        """Write ahead of an apply (as :meth:`opsbook.records.disk.Archive.start_run`): a ``started`` ledger
        entry, consuming ``plan``. The conditional PUT of the next seq serialises it with every other
        append, and the check that the plan is unused is redone on every retry."""
        _check_id("runbook id", runbook_id)
        _check_id("run id", run_id)
        lock = self._lock_kwargs(datetime.now(UTC))

        def make(tail: tuple[int, str]) -> LedgerEntry:
            check_start(self, run_id=run_id, plan=plan)
            return chain_entry(prev=tail, run_id=run_id, runbook_id=runbook_id, manifest={**fields, "status": STARTED},
                               event=STARTED, plan=plan, claim=claim, signer=self.signer,
                               manifest_sha256=_sha256_bytes(canonical_json(fields)))

        try:
            return self._append(make, lock)
        except ClientError as exc:
            raise ArchiveError(f"cannot write the start of run {run_id} to {self.root}: {exc}") from exc

    def _claim(self, runbook_id: str, run_id: str, token: str, lock: dict[str, Any], *, resume: bool) -> None:
        key = self._key(RUNS_DIR, run_id)
        body = canonical_json({"run_id": run_id, "runbook_id": runbook_id, "token": token,
                               "claimed": datetime.now(UTC).isoformat(timespec="seconds")})
        try:
            self.s3.put_if_absent(self.bucket, key, body, content_type="application/json", **lock)
            return
        except Conflict:
            if resume:
                with contextlib.suppress(ValueError, NotFound):
                    mine = json.loads(self.s3.get(self.bucket, key))
                    if isinstance(mine, dict) and mine.get("token") == token and mine.get("runbook_id") == runbook_id:
                        return
        raise RecordExists(f"run {run_id} is already archived (or being archived) in {self.root}: "
                           f"{self._url(key)} exists; a record is never overwritten")

    def _upload_files(self, runbook_id: str, run_id: str, files: list[tuple[str, Path]], lock: dict[str, Any],
                      *, resume: bool) -> list[_Upload]:
        def one(item: tuple[str, Path]) -> _Upload:
            rel, path = item
            data = path.read_bytes()
            etag = self._put_once(self._record_key(runbook_id, run_id, rel), data, lock, resume=resume)
            return _Upload(rel, _sha256_bytes(data), etag, len(data))

        if len(files) <= 1:
            return [one(f) for f in files]
        return list(self._executor().map(one, files))

    def _put_once(self, key: str, data: bytes, lock: dict[str, Any], *, resume: bool,
                  content_type: str = "application/octet-stream") -> str:
        try:
            return self.s3.put_if_absent(self.bucket, key, data, content_type=content_type, **lock)
        except Conflict:
            if resume:  # our own earlier, interrupted attempt wrote it: same bytes, same MD5
                info = self.s3.head(self.bucket, key)
                if info is not None and info["etag"] == hashlib.md5(data, usedforsecurity=False).hexdigest():
                    return str(info["etag"])
            raise RecordExists(f"an object already exists at {self._url(key)}; it was not overwritten") from None

    def _append(self, make: Callable[[tuple[int, str]], LedgerEntry], lock: dict[str, Any]) -> LedgerEntry:
        """Append the entry ``make(tail)`` builds: conditional PUT of the next seq, retried on 412."""
        t0 = time.monotonic()
        deadline = t0 + self.append_timeout
        stats = AppendStats()
        while True:
            stats.attempts += 1
            entry = make(self._tail())
            try:
                self.s3.put_if_absent(self.bucket, self._ledger_key(entry.seq), entry.to_line(),
                                      content_type="application/json", **lock)
            except Conflict:
                stats.conflicts.append(entry.seq)
                if time.monotonic() >= deadline:
                    raise LedgerError(
                        f"could not append to the ledger of {self.root} within {self.append_timeout:.0f} s: "
                        f"{stats.attempts} attempts, each lost to another writer") from None
                # full jitter: the writers that lost spread out instead of colliding again
                time.sleep(random.uniform(0, min(1.0, 0.01 * 2 ** min(stats.attempts, 7))))
                continue
            stats.seconds = time.monotonic() - t0
            self.last_append = stats
            self._write_hint(entry)
            return entry

    def _write_hint(self, entry: LedgerEntry) -> None:
        """Best effort: the hint only speeds up finding the tail; failing to write it changes nothing."""
        with contextlib.suppress(ClientError):
            self.s3.put(self.bucket, self._key(LEDGER_DIR, HINT_NAME),
                        canonical_json({"seq": entry.seq, "hash": entry.hash}), content_type="application/json")

    def _read_hint(self) -> int | None:
        try:
            obj = json.loads(self.s3.get(self.bucket, self._key(LEDGER_DIR, HINT_NAME)))
            seq = obj["seq"]
        except (NotFound, ValueError, TypeError, KeyError):
            return None
        return seq if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 1 else None

    def _ledger_objects(self, *, after_seq: int | None = None) -> tuple[list[tuple[int, ObjectInfo]], list[ObjectInfo]]:
        """Ledger entry objects in key order as (seq, info), and any other object under ``ledger/``
        (``HEAD`` excluded)."""
        prefix = self._key(LEDGER_DIR) + "/"
        start = self._ledger_key(after_seq) if after_seq else None
        entries: list[tuple[int, ObjectInfo]] = []
        other: list[ObjectInfo] = []
        for o in self.s3.iter_objects(self.bucket, prefix, start_after=start):
            name = o.key[len(prefix):]
            m = _LEDGER_KEY_RE.match(name)
            if m:
                entries.append((int(m.group(1)), o))
            elif name != HINT_NAME:
                other.append(o)
        return entries, other

    def _tail(self) -> tuple[int, str]:
        """(seq, hash) of the last ledger entry, ``(0, GENESIS)`` for an empty ledger. The hint says
        where to start listing; the listing and the entry's own content decide."""
        hint = self._read_hint()
        found: list[tuple[int, ObjectInfo]] = []
        if hint is not None:
            found = self._ledger_objects(after_seq=hint - 1)[0]
        if not found:
            found = self._ledger_objects()[0]
        if not found:
            return 0, GENESIS
        seq, info = found[-1]
        try:
            obj = json.loads(self.s3.get(self.bucket, info.key))
            eseq, h = obj["seq"], obj["hash"]
        except NotFound:
            raise LedgerError(f"{self._url(info.key)} vanished while the tail was read; retry") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise LedgerError(f"the last ledger entry {self._url(info.key)} cannot be parsed ({exc}); "
                              "run `opsbook verify`") from exc
        if eseq != seq or not isinstance(h, str) or not _HEX64_RE.match(h):
            raise LedgerError(f"the last ledger entry {self._url(info.key)} has no valid seq/hash (seq {eseq!r}); "
                              "run `opsbook verify`")
        return seq, h

    # ---------------------------------------------------------------------------------- packs

    def _pack_key(self, last: int) -> str:
        return self._key(PACKS_DIR, f"{last:0{_SEQ_DIGITS}d}.json")

    def _write_pack(self, last: int) -> bool:
        """Write the pack of entries ``last - pack_size + 1 .. last`` from the objects as they are now
        (conditional PUT: a pack is written once). False if an entry is missing."""
        first = last - self.pack_size + 1
        lkeys = [self._ledger_key(seq) for seq in range(first, last + 1)]
        lines = self._fetch(lkeys)
        if any(x is None for x in lines):
            return False
        records = []
        for line in lines:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                records.append(json.loads(line)["record"])
        mkeys = [self._key(RECORDS_DIR, rec, MANIFEST_NAME) for rec in records]
        manifests = {rec: m for rec, m in zip(records, self._fetch(mkeys), strict=True) if m is not None}
        with contextlib.suppress(Conflict):
            self.s3.put_if_absent(self.bucket, self._pack_key(last), pack_body(first, last, lines, manifests),
                                  content_type="application/json")
        return True

    def _from_packs(self, listed: dict[str, ObjectInfo]) -> dict[str, bytes]:
        """Bytes of listed ledger entries and manifests, taken from the packs where the pack holds
        exactly the object's bytes (MD5 = the listed ETag). Packs that do not parse are ignored."""
        prefix = self._key(PACKS_DIR) + "/"
        keys = [o.key for o in self.s3.iter_objects(self.bucket, prefix) if _PACK_KEY_RE.match(o.key[len(prefix):])]
        out: dict[str, bytes] = {}
        for data in self._fetch(keys):
            try:
                doc = json.loads(data)
                lines, manifests = doc["lines"], doc["manifests"]
                items = [(self._ledger_key(int(json.loads(x)["seq"])), (x + "\n").encode()) for x in lines]
                items += [(self._key(RECORDS_DIR, rec, MANIFEST_NAME), m.encode()) for rec, m in manifests.items()]
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            for key, body in items:
                o = listed.get(key)
                if o is not None and o.etag == hashlib.md5(body, usedforsecurity=False).hexdigest():
                    out[key] = body
        return out

    # ---------------------------------------------------------------------------------- fallback

    def _keep_locally(self, *, runbook_id: str, run_id: str, source: Path, manifest: dict[str, Any], token: str,
                      error: BaseException) -> Path | None:
        try:
            self.fallback_dir.mkdir(parents=True, exist_ok=True)
            dest = self.fallback_dir / f"{run_id}-{secrets.token_hex(3)}"
            shutil.copytree(source, dest / "files")
            pending = {"archive": self.root, "runbook_id": runbook_id, "run_id": run_id, "token": token,
                       "manifest": manifest, "error": f"{type(error).__name__}: {error}",
                       "saved": datetime.now(UTC).isoformat(timespec="seconds")}
            (dest / PENDING_NAME).write_text(
                json.dumps(pending, indent=2, sort_keys=True, ensure_ascii=False, default=_json_default) + "\n",
                encoding="utf-8")
            return dest
        except (OSError, TypeError, ValueError):
            return None

    def upload_pending(self, folder: Path | str) -> S3RecordRef:
        """Upload a record that :meth:`record` kept locally (``RecordNotUploaded.fallback``), resuming
        where it stopped; the folder is removed once the record is in the ledger."""
        folder = Path(folder)
        try:
            pending = json.loads((folder / PENDING_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ArchiveError(f"{folder} is not a kept record ({PENDING_NAME}: {exc})") from exc
        if pending.get("archive") != self.root:
            raise ArchiveError(f"{folder} was meant for {pending.get('archive')}, not {self.root}")
        ref = self.record(runbook_id=pending["runbook_id"], run_id=pending["run_id"], source_dir=folder / "files",
                          manifest=pending["manifest"], _resume_token=pending["token"])
        shutil.rmtree(folder, ignore_errors=True)
        return ref

    # ---------------------------------------------------------------------------------- reading

    def head(self) -> str | None:
        """The ``hash`` of the last ledger entry (the chain head), ``None`` for an empty ledger."""
        seq, h = self._tail()
        return None if seq == 0 else h

    def _ledger_raw(self) -> list[tuple[int, bytes | None]]:
        found = self._ledger_objects()[0]
        packed = self._from_packs({o.key: o for _, o in found})
        rest = [o.key for _, o in found if o.key not in packed]
        packed.update(zip(rest, self._fetch(rest), strict=True))
        return [(seq, packed.get(o.key)) for seq, o in found]

    def _ledger_lines(self) -> list[tuple[int, bytes]]:
        """(seq of the key, the entry as its ``ledger.jsonl`` line without ``\\n``), as on disk."""
        return [(seq, d[:-1] if d.endswith(b"\n") else d) for seq, d in self._ledger_raw() if d is not None]

    def _where(self, n: int) -> str:
        return self._url(self._ledger_key(n))

    def find(self, run_id: str) -> S3RecordRef | None:
        """The record of ``run_id``: its claim names the runbook; without a claim, each runbook's
        folder is looked at. ``None`` if there is no such record."""
        if not isinstance(run_id, str) or not _ID_RE.match(run_id):
            return None
        try:
            claim = json.loads(self.s3.get(self.bucket, self._key(RUNS_DIR, run_id)))
            rb = claim.get("runbook_id") if isinstance(claim, dict) else None
        except (NotFound, ValueError):
            rb = None
        if isinstance(rb, str) and _ID_RE.match(rb) and self.record_path(rb, run_id).is_dir():
            return S3RecordRef(run_id, rb, self.record_path(rb, run_id))
        prefixes, _ = self.s3.common_prefixes(self.bucket, self._key(RECORDS_DIR) + "/")
        for p in prefixes:
            rb = p.rstrip("/").rsplit("/", 1)[-1]
            if _ID_RE.match(rb) and self.record_path(rb, run_id).is_dir():
                return S3RecordRef(run_id, rb, self.record_path(rb, run_id))
        return None

    def read_manifests(self, entries: Iterable[LedgerEntry]) -> Iterator[tuple[LedgerEntry, S3Path, bytes | None]]:
        """(entry, record folder, bytes of its manifest.json or ``None`` if it is gone), in order;
        the manifests are downloaded in parallel."""
        entries = list(entries)
        paths = [self.record_path(e.runbook_id, e.run_id) for e in entries]
        datas = self._fetch([(p / MANIFEST_NAME).key for p in paths])
        yield from zip(entries, paths, datas, strict=True)

    # ---------------------------------------------------------------------------------- verify

    def verify(self, *, expect_head: str | None = None, deep: bool = False, signers: Any = DEFAULT,
               only: str | None = None) -> VerifyReport:
        """Check the ledger chain and every record, naming what does not match (the on-disk problem
        kinds). Default: ledger entries and manifests are downloaded and hashed, record files are
        checked by their listed ETag and size; ``deep``: every file is downloaded and sha256'd."""
        problems: list[VerifyProblem] = []
        info: list[str] = []
        ledger_objs, ledger_other, folders, stray = self._verify_listing(info)

        for o in ledger_other:
            problems.append(VerifyProblem("unexpected_file", self._rel(o.key),
                                          f"{self._rel(o.key)} is not a ledger entry", file=self._rel(o.key)))
        # every ledger entry and every listed manifest (and in deep mode every file), all at once
        rec_base = self._key(RECORDS_DIR) + "/"
        mkeys = [f"{rec_base}{rec}/{MANIFEST_NAME}" for rec, objs in folders.items() if MANIFEST_NAME in objs
                 and (only is None or rec.endswith("/" + only))]  # only: that run's record (an approval)
        lkeys = [o.key for _, o in ledger_objs]
        fkeys = [o.key for rec, objs in folders.items() for rel, o in objs.items() if rel != MANIFEST_NAME
                 and (only is None or rec.endswith("/" + only))] if deep else []
        packed: dict[str, bytes] = {}
        if not deep:
            listed = {o.key: o for _, o in ledger_objs}
            listed.update((f"{rec_base}{rec}/{MANIFEST_NAME}", objs[MANIFEST_NAME]) for rec, objs in folders.items()
                          if MANIFEST_NAME in objs)
            packed = self._from_packs(listed)
        rest = [k for k in lkeys + mkeys if k not in packed]
        got: dict[str, bytes | None] = dict(packed)
        got.update(zip(rest, self._fetch(rest), strict=True))
        raw_ledger = {k: got[k] for k in lkeys}
        manifests = {k: got[k] for k in mkeys}
        if not deep:
            info.append(f"{len(packed)} of {len(lkeys) + len(mkeys)} ledger entries and manifests were read from "
                        "packs (each matched the listed ETag of its object); the others were downloaded")
        file_sha = dict(zip(fkeys, self._fetch(fkeys, sha256=True), strict=True)) if deep else {}

        lines = self._verify_ledger_objects(ledger_objs, raw_ledger, problems)
        head = lines[-1].entry.hash if lines else None
        Archive._verify_chain(lines, problems)
        Archive._verify_head(lines, head, expect_head, problems, info, where=f"{LEDGER_DIR}/")
        verify_signatures(lines, _signers(signers), problems, info)
        note_unfinished((x.entry for x in lines), info)

        problems.extend(stray)
        count, pending = match_records(lines, folders, problems)
        for e, objs in pending:
            if only is None or e.run_id == only:
                problems.extend(self._check_record(e, objs, manifests, file_sha, deep=deep))
        in_flight = self._in_flight(sorted(folders), ledger_objs[-1][0] if ledger_objs else 0, info)
        for rec in sorted(folders):
            if rec in in_flight:
                continue
            run_id = rec.split("/", 1)[1]
            why = ("" if MANIFEST_NAME in folders[rec] else
                   f" (it has no {MANIFEST_NAME}: an upload that did not finish, or objects put there by hand)")
            problems.append(VerifyProblem(
                "not_in_ledger", run_id,
                f"record {rec} is not in the ledger: added outside the archive, or the writer died before "
                f"its ledger entry{why}"))
        info.append("deep: every record file was downloaded and its sha256 recomputed" if deep else
                    "record files were checked by the ETag and size the store returned when they were written "
                    "(opsbook verify --deep re-hashes every file)")
        return VerifyReport(ok=not problems, head=head, records=count, problems=problems, info=info)

    def _rel(self, key: str) -> str:
        return key[len(self._base):]

    def _in_flight(self, leftover: list[str], last_seq: int, info: list[str]) -> set[str]:
        """Of the record folders the ledger listing does not name, those being written right now
        (not problems, and not checked: their objects may still be arriving). Writers take no lock:
        a record's objects are uploaded before its ledger entry. So the ledger is listed again after
        the records were: a folder whose entry is there now was finished while verify ran. A folder
        still without an entry whose run claim (``runs/<run_id>``, written first) is younger than
        1.5 x ``append_timeout`` (slack for the uploads and clock skew) is being written. Anything
        else is ``not_in_ledger`` (so is a writer that failed, once its claim is that old)."""
        if not leftover:
            return set()
        finished: set[str] = set()
        newer = self._ledger_objects(after_seq=last_seq or None)[0]
        for data in self._fetch([o.key for _, o in newer]):
            with contextlib.suppress(ValueError, TypeError):
                e = LedgerEntry.from_obj(json.loads(data))
                if not e.is_start:
                    finished.add(e.record)
        done = [r for r in leftover if r in finished]
        if done:
            info.append(f"{len(done)} record(s) were finished while verify ran (their ledger entries came after "
                        f"its listing of the ledger) and were not checked; verify again to check them: "
                        + ", ".join(done[:5]) + (" ..." if len(done) > 5 else ""))
        rest = [r for r in leftover if r not in finished]
        window = self.append_timeout * _IN_FLIGHT_FACTOR
        now = datetime.now(UTC)
        writing: list[str] = []
        claims = self._fetch([self._key(RUNS_DIR, r.split("/", 1)[1]) for r in rest])
        for rec, data in zip(rest, claims, strict=True):
            try:
                claim = json.loads(data)
                claimed = datetime.fromisoformat(claim["claimed"])
                if claimed.tzinfo is None:
                    claimed = claimed.replace(tzinfo=UTC)
            except (ValueError, TypeError, KeyError):
                continue  # no claim, or not one of ours: not_in_ledger
            age = (now - claimed).total_seconds()
            if claim.get("runbook_id") == rec.split("/", 1)[0] and -window < age < window:
                writing.append(rec)
        if writing:
            info.append(f"{len(writing)} record(s) being written: claimed less than {window:.0f} s ago, no ledger "
                        "entry yet (not checked; a writer that died shows as not_in_ledger once its claim is "
                        "older): " + ", ".join(writing[:5]) + (" ..." if len(writing) > 5 else ""))
        return set(done) | set(writing)

    def _verify_listing(self, info: list[str]) -> tuple[list[tuple[int, ObjectInfo]], list[ObjectInfo],
                                                        dict[str, dict[str, ObjectInfo]], list[VerifyProblem]]:
        """List the archive: the ledger first, then each runbook's records in parallel."""
        rec_prefix = self._key(RECORDS_DIR) + "/"
        top_prefixes, top_keys = self.s3.common_prefixes(self.bucket, self._base)
        known = {self._key(d) + "/" for d in (LEDGER_DIR, RUNS_DIR, RECORDS_DIR, PACKS_DIR)}
        unknown = [self._rel(k) for k in top_prefixes if k not in known] + [self._rel(k) for k in top_keys]
        if unknown:
            info.append(f"{len(unknown)} object(s)/folder(s) at the archive root that are not the archive's "
                        f"(ignored): {', '.join(unknown[:5])}" + (" ..." if len(unknown) > 5 else ""))
        # The ledger before the records: a writer puts every object of a record before its ledger
        # entry, so each record this ledger listing names is complete in the listing that follows.
        # (Listed at once, an entry could be paired with a listing taken mid-upload: false problems.)
        ledger_objs, ledger_other = self._ledger_objects()
        rb_prefixes, rb_keys = self.s3.common_prefixes(self.bucket, rec_prefix)
        pool = self._executor()
        listings = list(pool.map(lambda p: list(self.s3.iter_objects(self.bucket, p)), rb_prefixes))

        stray: list[VerifyProblem] = []
        for k in rb_keys:
            rel = k[len(rec_prefix):]
            stray.append(VerifyProblem("unexpected_file", rel, f"{RECORDS_DIR}/{rel} is not a record folder",
                                       file=rel))
        folders: dict[str, dict[str, ObjectInfo]] = {}
        for objs in listings:
            for o in objs:
                parts = o.key[len(rec_prefix):].split("/", 2)
                if len(parts) < 3 or not parts[2]:
                    rel = "/".join(parts)
                    stray.append(VerifyProblem("unexpected_file", rel,
                                               f"{RECORDS_DIR}/{rel} is not inside a record folder", file=rel))
                    continue
                folders.setdefault(f"{parts[0]}/{parts[1]}", {})[parts[2]] = o
        return ledger_objs, ledger_other, folders, stray

    def _verify_ledger_objects(self, objs: list[tuple[int, ObjectInfo]], raw: dict[str, bytes | None],
                               problems: list[VerifyProblem]) -> list[_Line]:
        out: list[_Line] = []
        after_bad = False
        for seq, o in objs:
            where = self._rel(o.key)
            data = raw.get(o.key)
            if data is None:  # listed, then gone before it was read
                problems.append(VerifyProblem("unparseable", where, f"{where} vanished while it was read"))
                after_bad = True
                continue
            try:
                if not data.endswith(b"\n") or data.count(b"\n") != 1:
                    raise ValueError("not one newline-terminated line")
                entry, hash_ok = parse_entry(data)
            except ValueError as exc:
                problems.append(VerifyProblem("unparseable", where, f"ledger entry {where}: {exc}"))
                after_bad = True
                continue
            if not hash_ok:
                problems.append(VerifyProblem(
                    "ledger_edited", entry.run_id,
                    f"ledger entry {where} (seq {entry.seq}): the entry's hash does not match its content"))
            out.append(_Line(seq, entry, hash_ok, after_bad))
            after_bad = False
        return out

    def _check_record(self, e: LedgerEntry, objs: dict[str, ObjectInfo], manifests: dict[str, bytes | None],
                      file_sha: dict[str, str | None], *, deep: bool) -> list[VerifyProblem]:
        rid = e.run_id
        rb, run = e.record.split("/", 1)
        objs = dict(objs)
        mkey = self._record_key(rb, run, MANIFEST_NAME)
        mbytes = manifests.get(mkey) if objs.pop(MANIFEST_NAME, None) is not None else None
        if mbytes is None:
            return [VerifyProblem("missing_file", rid, f"{e.record}/{MANIFEST_NAME} is gone", file=MANIFEST_NAME)]
        out, doc = check_manifest(e, mbytes)
        if doc is None:
            return out
        stored = doc.get(STORE_KEY) or {}
        if not isinstance(stored, dict):
            out.append(VerifyProblem("unparseable", rid, f"{e.record}/{MANIFEST_NAME}: {STORE_KEY!r} is not a mapping",
                                     file=MANIFEST_NAME))
            return out
        for rel, digest in doc["files"].items():
            o = objs.pop(rel, None)
            if o is None:
                out.append(VerifyProblem("missing_file", rid, f"{rel} is gone from {e.record}", file=rel))
                continue
            want = stored.get(rel)
            if deep or not isinstance(want, dict):
                key = self._record_key(rb, run, rel)
                actual = file_sha[key] if key in file_sha else self._fetch([key], sha256=True)[0]
                if actual is None:
                    out.append(VerifyProblem("missing_file", rid, f"{rel} is gone from {e.record}", file=rel))
                elif actual != digest:
                    out.append(VerifyProblem("modified", rid, f"{rel} in {e.record}: sha256 {actual[:12]}… != "
                                             f"manifest {digest[:12]}…", file=rel))
            elif o.etag != want.get("etag") or o.size != want.get("size"):
                out.append(VerifyProblem(
                    "modified", rid, f"{rel} in {e.record}: ETag {o.etag[:12]}…/{o.size} bytes, but the upload "
                    f"returned {str(want.get('etag'))[:12]}…/{want.get('size')} bytes: the object was replaced",
                    file=rel))
        for rel in sorted(objs):
            out.append(VerifyProblem("unexpected_file", rid, f"{rel} in {e.record} is not in its manifest", file=rel))
        return out


def pack_body(first: int, last: int, lines: Iterable[bytes], manifests: dict[str, bytes]) -> bytes:
    """The bytes of a pack: ledger lines (without their newline) and manifests (by record), as text."""
    return canonical_json({
        "format": PACK_FORMAT, "first": first, "last": last,
        "lines": [x.decode("utf-8").rstrip("\n") for x in lines],
        "manifests": {rec: m.decode("utf-8") for rec, m in sorted(manifests.items())}}) + b"\n"


def _scan_source(source: Path) -> list[tuple[str, Path]]:
    """Every regular file below ``source`` as (relative posix path, path), sorted; the same refusals as
    the on-disk archive (symlinks, special files, a ``manifest.json`` of the caller's own)."""
    out: list[tuple[str, Path]] = []

    def walk(d: Path, rel: str) -> None:
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            relpath = f"{rel}{e.name}"
            if e.is_symlink():
                raise ArchiveError(f"{relpath} in {source} is a symlink; a record holds regular files only")
            if e.is_dir():
                walk(Path(e.path), relpath + "/")
            elif e.is_file():
                if relpath == MANIFEST_NAME:
                    raise ArchiveError(f"{source} holds a {MANIFEST_NAME}: that name is reserved")
                out.append((relpath, Path(e.path)))
            else:
                raise ArchiveError(f"{relpath} in {source} is not a regular file")

    walk(source, "")
    return out
