"""Where each object of an S3 archive lives, and the reads many at once that the writer and
``verify`` share: the key layout, ``s3://`` URLs, Object Lock retention, :class:`S3Path` (a record's
folder with the few ``Path`` methods its readers use) and the packs. The layout and the protocol it
serves are described in :mod:`opsbook.records.s3`."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

from opsbook.clients.s3 import LOCK_MODES, S3, ObjectInfo
from opsbook.errors import NotFound, UsageError
from opsbook.records.ledger import MANIFEST_NAME, LedgerEntry, canonical_json, sha256_bytes

__all__ = ["S3Layout", "S3Path", "S3RecordRef", "Retention", "parse_s3_url", "pack_body", "STORE_KEY"]

#: The manifest key holding, per file, the ETag and size the store returned for its PUT.
STORE_KEY = "s3_objects"
LEDGER_DIR, RUNS_DIR, RECORDS_DIR, PACKS_DIR, HINT_NAME = "ledger", "runs", "records", "packs", "HEAD"
#: Every PACK_SIZE-th append also writes a pack of the last PACK_SIZE entries and their manifests.
PACK_SIZE = 100
PACK_FORMAT = 1
_SEQ_DIGITS = 12
_LEDGER_KEY_RE = re.compile(r"^(\d{12})\.json$")
_PACK_KEY_RE = re.compile(r"^(\d{12})\.json$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_MAX_DAYS = 36500


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

    def __init__(self, archive: S3Layout, key: str):
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


class S3Layout:
    """The objects of an archive under ``s3://BUCKET/PREFIX``: their keys, and reads of many at once in
    a thread pool of ``workers`` (``s3`` is the client). :class:`opsbook.records.s3.S3Archive` is this
    plus the writer and the reader of records."""

    def __init__(self, url: str, *, s3: S3, workers: int):
        self.bucket, self.prefix = parse_s3_url(url)
        self.root = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self._base = f"{self.prefix}/" if self.prefix else ""
        self.s3 = s3
        self.workers = max(1, workers)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

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

    def _rel(self, key: str) -> str:
        return key[len(self._base):]

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
            return sha256_bytes(data) if sha256 else data

        if len(keys) <= 1:
            return [one(k) for k in keys]
        return list(self._executor().map(one, keys))

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

    # ---------------------------------------------------------------------------------- packs

    def _pack_key(self, last: int) -> str:
        return self._key(PACKS_DIR, f"{last:0{_SEQ_DIGITS}d}.json")

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


def pack_body(first: int, last: int, lines: Iterable[bytes], manifests: dict[str, bytes]) -> bytes:
    """The bytes of a pack: ledger lines (without their newline) and manifests (by record), as text."""
    return canonical_json({
        "format": PACK_FORMAT, "first": first, "last": last,
        "lines": [x.decode("utf-8").rstrip("\n") for x in lines],
        "manifests": {rec: m.decode("utf-8") for rec, m in sorted(manifests.items())}}) + b"\n"

