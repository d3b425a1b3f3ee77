"""Reading an archive folder as ``verify`` needs it: the names of its layout, its ledger file, its
record folders, and each record's files against its manifest. Apart from the writer
(:mod:`opsbook.records.disk`) because none of this changes anything: it can be reasoned about, and
benchmarked (``iter_record_files``), on a read-only copy."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import filelock

from opsbook.errors import LedgerError
from opsbook.records.ledger import (
    MANIFEST_NAME,
    LedgerEntry,
    LedgerLine,
    VerifyProblem,
    check_manifest,
    match_records,
    parse_entry,
)

__all__ = ["INCOMING_NAME", "LEDGER_NAME", "LOCK_NAME", "ROOT_FILES", "iter_record_files"]

LEDGER_NAME = "ledger.jsonl"
LOCK_NAME = "ledger.lock"
INCOMING_NAME = ".incoming"
#: Files at the archive root that are ours (or the repo's) and not records.
ROOT_FILES = frozenset({LEDGER_NAME, LOCK_NAME, "README.md", ".gitignore", ".gitkeep"})
CHUNK = 1 << 20
#: How long verify waits for ledger.lock (held by a writer for one rename and one append) to take its
#: snapshot; past that it reads without it and says so.
_SNAPSHOT_LOCK_TIMEOUT = 30.0


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 of a file: one read for small files, 1 MiB chunks for large ones."""
    with open(path, "rb", buffering=0) as f:
        data = f.read(CHUNK)
        h = hashlib.sha256(data)
        if len(data) == CHUNK:
            while chunk := f.read(CHUNK):
                h.update(chunk)
    return h.hexdigest()


def read_ledger(path: Path) -> tuple[list[tuple[int, bytes]], bool]:
    """The ledger's lines numbered from 1, and whether its last line lacks its newline (torn)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], False
    lines = data.split(b"\n")
    torn = lines[-1] != b""
    if not torn:
        lines.pop()
    return list(enumerate(lines, start=1)), torn


def read_last_line(path: Path) -> bytes | None:
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


@contextlib.contextmanager
def snapshot_lock(lock_path: Path, info: list[str]) -> Iterator[None]:
    """Hold ``ledger.lock`` (briefly) so that no record is between its rename and its ledger
    append. An archive where the lock cannot be taken (a read-only copy: no writer can be active
    either) is read without it; a lock held past the timeout is noted in ``info``."""
    lock = filelock.FileLock(str(lock_path), timeout=_SNAPSHOT_LOCK_TIMEOUT)
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


def parse_ledger_lines(snapshot: tuple[list[tuple[int, bytes]], bool],
                       problems: list[VerifyProblem]) -> list[LedgerLine]:
    """The ledger's lines that parse; a problem for each that does not, or whose hash is wrong."""
    out: list[LedgerLine] = []
    after_bad = False
    raw_lines, torn = snapshot
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
        out.append(LedgerLine(lineno, entry, hash_ok, after_bad))
        after_bad = False
    return out


Listing = tuple[dict[str, str], list[VerifyProblem], list[str]]


def list_records(root: Path) -> Listing:
    """The record folders (``runbook/run`` -> path), stray files in runbook folders (problems) and
    unknown files at the root (info)."""
    on_disk: dict[str, str] = {}
    problems: list[VerifyProblem] = []
    info: list[str] = []
    try:
        top = sorted(os.scandir(root), key=lambda e: e.name)
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


def verify_records(lines: list[LedgerLine], problems: list[VerifyProblem], info: list[str], listing: Listing,
                   only: str | None = None) -> int:
    """Each record the ledger names against its folder (only ``only``'s files hashed, when given),
    and each folder the ledger does not name; returns the number of records named."""
    on_disk, stray, root_info = listing
    on_disk = dict(on_disk)
    info.extend(root_info)
    problems.extend(stray)

    count, pairs = match_records(lines, on_disk, problems)
    for e, path in pairs:
        if only is None or e.run_id == only:
            problems.extend(check_record(e, path))

    for rel in sorted(on_disk):
        run_id = rel.split("/", 1)[1]
        problems.append(VerifyProblem(
            "not_in_ledger", run_id,
            f"record folder {rel} is not in the ledger: added outside the archive, or the writer "
            "died between the rename and the ledger append"))
    return count


def incoming_leftovers(incoming: Path) -> list[str]:
    try:
        with os.scandir(incoming) as it:
            return sorted(e.name for e in it)
    except FileNotFoundError:
        return []


def walk_record(path: str) -> dict[str, os.DirEntry[str]]:
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


def check_record(e: LedgerEntry, path: str) -> list[VerifyProblem]:
    rid = e.run_id
    try:
        with open(os.path.join(path, MANIFEST_NAME), "rb") as f:
            mbytes = f.read()
    except FileNotFoundError:
        return [VerifyProblem("missing_file", rid, f"{e.record}/{MANIFEST_NAME} is gone", file=MANIFEST_NAME)]
    out, doc = check_manifest(e, mbytes)
    if doc is None:
        return out
    found = walk_record(path)
    for rel, digest in doc["files"].items():
        de = found.pop(rel, None)
        if de is None:
            out.append(VerifyProblem("missing_file", rid, f"{rel} is gone from {e.record}", file=rel))
        elif de.is_symlink() or not de.is_file(follow_symlinks=False):
            out.append(VerifyProblem("modified", rid, f"{rel} in {e.record} was replaced by a non-regular file",
                                     file=rel))
        else:
            actual = sha256_file(de.path)
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
                yield from (de.path for de in walk_record(rec.path).values())


def runbook_dirs(root: Path) -> Iterator[str]:
    """The runbook folders of an archive (hidden folders such as ``.incoming`` left out)."""
    try:
        it = os.scandir(root)
    except FileNotFoundError:
        return
    with it:
        for e in it:
            if not e.name.startswith(".") and e.is_dir(follow_symlinks=False):
                yield e.path

