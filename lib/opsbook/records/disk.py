"""The archive in a folder (``outputs/``): records written once, the ledger beside them.

Layout of an archive root::

    outputs/
      ledger.jsonl                 one line per record, hash-chained (:mod:`opsbook.records.ledger`)
      ledger.lock                  the file lock every writer holds while it appends
      .incoming/                   staging: a record is built here, then renamed into place
      <runbook_id>/<run_id>/       one record: the redacted files of one run, plus manifest.json
        manifest.json              the runner's manifest + "files" {posix path: sha256} + "record_format"
        notebook.ipynb, notebook.html, evidence/..., (whatever the runner handed over)

A record is written once and never rewritten: it is built in ``.incoming/<run_id>-<random>/``, every
file fsync'd, files made 0o444 and folders 0o555, then renamed into place and appended to the ledger,
both while holding ``ledger.lock``. If the process dies between the rename and the ledger append,
the record is on disk but not in the ledger; ``verify`` reports it as ``not_in_ledger``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import filelock

from opsbook.errors import ArchiveError, ArchiveNotFound, ArchiveNotWritable, LedgerError, RecordExists
from opsbook.records.disk_files import (
    CHUNK,
    INCOMING_NAME,
    LEDGER_NAME,
    LOCK_NAME,
    incoming_leftovers,
    list_records,
    parse_ledger_lines,
    read_last_line,
    read_ledger,
    runbook_dirs,
    snapshot_lock,
    verify_records,
)
from opsbook.records.ledger import (
    DEFAULT,
    GENESIS,
    HEX64_RE,
    ID_RE,
    MANIFEST_NAME,
    STARTED,
    LedgerEntry,
    VerifyProblem,
    VerifyReport,
    build_manifest,
    canonical_json,
    chain_entry,
    check_id,
    note_unfinished,
    resolve_signer,
    resolve_signers,
    sha256_bytes,
    verify_chain,
    verify_head,
    verify_signatures,
)
from opsbook.records.ledger_reads import LedgerReads, check_start

__all__ = ["Archive", "RecordRef"]

_LOCK_TIMEOUT = 120.0
#: Free space check_writable asks for on top of the record's reserve: the ledger line, the lock file
#: and the record's folders (a few blocks each).
_SPACE_MARGIN = 64 << 10


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


class Archive(LedgerReads):
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
        self.signer = resolve_signer(signer)
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
        check_id("runbook id", runbook_id)
        check_id("run id", run_id)
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
            manifest_sha = sha256_bytes(manifest_bytes)
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
        check_id("runbook id", runbook_id)
        check_id("run id", run_id)
        try:
            with self._lock():
                self._refuse_existing(run_id)
                check_start(self, run_id=run_id, plan=plan)
                entry = chain_entry(prev=self._tail(), run_id=run_id, runbook_id=runbook_id,
                                    manifest={**fields, "status": STARTED}, event=STARTED, plan=plan, claim=claim,
                                    manifest_sha256=sha256_bytes(canonical_json(fields)), signer=self.signer)
                self._append(entry)
        except OSError as exc:
            raise ArchiveError(f"cannot write the start of run {run_id} to {self.ledger_path}: {exc}") from exc
        return entry

    def _refuse_existing(self, run_id: str) -> None:
        for rb in runbook_dirs(self.root):
            if os.path.lexists(os.path.join(rb, run_id)):
                raise RecordExists(f"run {run_id} is already archived at {Path(rb) / run_id}")

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
            while chunk := fin.read(CHUNK):
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
        line = read_last_line(self.ledger_path)
        if line is None:
            return 0, GENESIS
        try:
            obj = json.loads(line)
            seq, h = obj["seq"], obj["hash"]
        except (ValueError, TypeError, KeyError) as exc:
            raise LedgerError(f"the last line of {self.ledger_path} cannot be parsed ({exc}); "
                              "run `opsbook verify`") from exc
        if not isinstance(seq, int) or not isinstance(h, str) or not HEX64_RE.match(h):
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

    def ledger_lines(self) -> list[tuple[int, bytes]]:
        """The ledger's lines numbered from 1 (a torn last line included, as it is)."""
        return read_ledger(self.ledger_path)[0]

    def _where(self, n: int) -> str:
        return f"{self.ledger_path}:{n}"

    def find(self, run_id: str) -> RecordRef | None:
        """The record of ``run_id``: looked up in the ledger, else by scanning the runbook folders."""
        if not isinstance(run_id, str) or not ID_RE.match(run_id):
            return None
        needle = canonical_json({"run_id": run_id})[1:-1]  # '"run_id":"..."' as it appears in a line
        for _lineno, raw in self.ledger_lines():
            if needle not in raw:
                continue
            try:
                entry = LedgerEntry.from_obj(json.loads(raw))
            except ValueError:
                continue
            if entry.run_id == run_id and not entry.is_start and ID_RE.match(entry.runbook_id):
                return RecordRef(run_id=run_id, runbook_id=entry.runbook_id,
                                 path=self.root / entry.runbook_id / run_id, entry=entry)
        for rb in runbook_dirs(self.root):
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
        with snapshot_lock(self.lock_path, info):
            ledger = read_ledger(self.ledger_path)
            listing = list_records(self.root)
        lines = parse_ledger_lines(ledger, problems)
        head = lines[-1].entry.hash if lines else None
        verify_chain(lines, problems)
        verify_head(lines, head, expect_head, problems, info, where=LEDGER_NAME)
        verify_signatures(lines, resolve_signers(signers), problems, info)
        note_unfinished((x.entry for x in lines), info)
        count = verify_records(lines, problems, info, listing, only=only)

        leftovers = incoming_leftovers(self.incoming_path)
        if leftovers:
            info.append(f"{len(leftovers)} leftover staging folder(s) in {INCOMING_NAME}/ from interrupted "
                        f"record() calls (ignored, safe to delete): {', '.join(leftovers[:5])}"
                        + (" ..." if len(leftovers) > 5 else ""))
        return VerifyReport(ok=not problems, head=head, records=count, problems=problems, info=info)

