"""The run archive in an S3-compatible object store: ``--outputs s3://BUCKET/PREFIX``.

The same records, manifests and ledger as the on-disk archive (:mod:`opsbook.records.disk`), both
built on :mod:`opsbook.records.ledger`: the same ``build_manifest``, ``chain_entry`` and
``canonical_json``, the same ``LedgerEntry`` hash chain, the same ``verify`` problem kinds. Only where
the bytes live differs (:mod:`opsbook.records.s3_layout` names the keys, :mod:`opsbook.records.s3_verify`
checks them). Layout under ``s3://BUCKET/PREFIX/``::

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
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opsbook.clients.s3 import S3, ObjectInfo
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
from opsbook.records.ledger import (
    DEFAULT,
    GENESIS,
    HEX64_RE,
    ID_RE,
    MANIFEST_NAME,
    STARTED,
    LedgerEntry,
    VerifyReport,
    build_manifest,
    canonical_json,
    chain_entry,
    check_id,
    json_default,
    resolve_signer,
    resolve_signers,
    sha256_bytes,
)
from opsbook.records.ledger_reads import LedgerReads, check_start
from opsbook.records.s3_layout import (
    HINT_NAME,
    LEDGER_DIR,
    PACK_SIZE,
    RECORDS_DIR,
    RUNS_DIR,
    STORE_KEY,
    Retention,
    S3Layout,
    S3Path,
    S3RecordRef,
    pack_body,
    parse_s3_url,
)
from opsbook.records.s3_verify import verify as verify_s3

__all__ = ["S3Archive", "S3Path", "S3RecordRef", "Retention", "RecordNotUploaded", "parse_s3_url",
           "ENV_RETENTION", "ENV_FALLBACK", "STORE_KEY", "PENDING_NAME", "default_fallback_dir"]

ENV_RETENTION = "OPSBOOK_S3_RETENTION"
ENV_FALLBACK = "OPSBOOK_S3_FALLBACK"
PENDING_NAME = "pending.json"


def default_fallback_dir() -> Path:
    """Where records that could not be uploaded are kept: ``$OPSBOOK_S3_FALLBACK``, else
    ``$XDG_STATE_HOME/opsbook/unuploaded`` (``~/.local/state/opsbook/unuploaded``)."""
    env = os.environ.get(ENV_FALLBACK, "").strip()
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(env) if env else Path(state) / "opsbook" / "unuploaded"


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


class S3Archive(S3Layout, LedgerReads):
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
        parse_s3_url(url)  # an invalid URL is refused before a client is made
        if s3 is None:
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
            s3 = S3(endpoint_url=endpoint, region=region, path_style=endpoint is not None,
                    max_pool_connections=workers + 4)
        super().__init__(url, s3=s3, workers=workers)
        if retention is None and os.environ.get(ENV_RETENTION, "").strip():
            retention = os.environ[ENV_RETENTION]
        self.retention = Retention.parse(retention) if isinstance(retention, str) else retention
        self.fallback_dir = Path(fallback_dir) if fallback_dir is not None else default_fallback_dir()
        self.append_timeout = append_timeout
        self.signer = resolve_signer(signer)
        self.pack_size = PACK_SIZE
        self.last_append = AppendStats()
        self._lock_ok: bool | None = None

    def __repr__(self) -> str:
        return f"S3Archive({self.root!r})"

    @property
    def location(self) -> str:
        """The URL, as ``--outputs`` / ``OPSBOOK_OUTPUTS`` take it."""
        return self.root

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
        check_id("runbook id", runbook_id)
        check_id("run id", run_id)
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
            msha = sha256_bytes(mbytes)
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
        check_id("runbook id", runbook_id)
        check_id("run id", run_id)
        lock = self._lock_kwargs(datetime.now(UTC))

        def make(tail: tuple[int, str]) -> LedgerEntry:
            check_start(self, run_id=run_id, plan=plan)
            return chain_entry(prev=tail, run_id=run_id, runbook_id=runbook_id, manifest={**fields, "status": STARTED},
                               event=STARTED, plan=plan, claim=claim, signer=self.signer,
                               manifest_sha256=sha256_bytes(canonical_json(fields)))

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
            return _Upload(rel, sha256_bytes(data), etag, len(data))

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
        if eseq != seq or not isinstance(h, str) or not HEX64_RE.match(h):
            raise LedgerError(f"the last ledger entry {self._url(info.key)} has no valid seq/hash (seq {eseq!r}); "
                              "run `opsbook verify`")
        return seq, h

    # ---------------------------------------------------------------------------------- packs

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
                json.dumps(pending, indent=2, sort_keys=True, ensure_ascii=False, default=json_default) + "\n",
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

    def ledger_lines(self) -> list[tuple[int, bytes]]:
        """(seq of the key, the entry as its ``ledger.jsonl`` line without ``\\n``), as on disk."""
        return [(seq, d[:-1] if d.endswith(b"\n") else d) for seq, d in self._ledger_raw() if d is not None]

    def _where(self, n: int) -> str:
        return self._url(self._ledger_key(n))

    def find(self, run_id: str) -> S3RecordRef | None:
        """The record of ``run_id``: its claim names the runbook; without a claim, each runbook's
        folder is looked at. ``None`` if there is no such record."""
        if not isinstance(run_id, str) or not ID_RE.match(run_id):
            return None
        try:
            claim = json.loads(self.s3.get(self.bucket, self._key(RUNS_DIR, run_id)))
            rb = claim.get("runbook_id") if isinstance(claim, dict) else None
        except (NotFound, ValueError):
            rb = None
        if isinstance(rb, str) and ID_RE.match(rb) and self.record_path(rb, run_id).is_dir():
            return S3RecordRef(run_id, rb, self.record_path(rb, run_id))
        prefixes, _ = self.s3.common_prefixes(self.bucket, self._key(RECORDS_DIR) + "/")
        for p in prefixes:
            rb = p.rstrip("/").rsplit("/", 1)[-1]
            if ID_RE.match(rb) and self.record_path(rb, run_id).is_dir():
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
        return verify_s3(self, append_timeout=self.append_timeout, expect_head=expect_head, deep=deep,
                         signers=resolve_signers(signers), only=only)


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
