"""``verify`` of an S3 archive: one listing, the ledger objects and manifests downloaded (or taken from
packs that match their ETags), each record's files checked by their listed ETag and size, or, with
``deep``, downloaded and re-hashed. The same checks and problem kinds as on disk
(:mod:`opsbook.records.ledger`); what is particular to S3 is only how the bytes are listed and read,
and that writers take no lock (records being written are recognised by their recent run claim)."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

from opsbook.clients.s3 import ObjectInfo
from opsbook.records.ledger import (
    MANIFEST_NAME,
    LedgerEntry,
    LedgerLine,
    VerifyProblem,
    VerifyReport,
    check_manifest,
    match_records,
    note_unfinished,
    parse_entry,
    verify_chain,
    verify_head,
    verify_signatures,
)
from opsbook.records.s3_layout import LEDGER_DIR, PACKS_DIR, RECORDS_DIR, RUNS_DIR, STORE_KEY, S3Layout

__all__ = ["verify"]

#: verify: a record without a ledger entry whose run claim is younger than this many times
#: ``append_timeout`` is "being written" (the append's own limit, plus half again for the uploads
#: before it and clock skew between writer and verifier: 180 s by default).
_IN_FLIGHT_FACTOR = 1.5


def verify(store: S3Layout, *, append_timeout: float, expect_head: str | None, deep: bool, signers: Any,
           only: str | None) -> VerifyReport:
    """``S3Archive.verify``: ``signers`` resolved already (``None``: signatures not checked);
    ``append_timeout`` is the writers' (it bounds how long a record may be "being written")."""
    problems: list[VerifyProblem] = []
    info: list[str] = []
    ledger_objs, ledger_other, folders, stray = _listing(store, info)

    for o in ledger_other:
        problems.append(VerifyProblem("unexpected_file", store._rel(o.key),
                                      f"{store._rel(o.key)} is not a ledger entry", file=store._rel(o.key)))
    # every ledger entry and every listed manifest (and in deep mode every file), all at once
    rec_base = store._key(RECORDS_DIR) + "/"
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
        packed = store._from_packs(listed)
    rest = [k for k in lkeys + mkeys if k not in packed]
    got: dict[str, bytes | None] = dict(packed)
    got.update(zip(rest, store._fetch(rest), strict=True))
    raw_ledger = {k: got[k] for k in lkeys}
    manifests = {k: got[k] for k in mkeys}
    if not deep:
        info.append(f"{len(packed)} of {len(lkeys) + len(mkeys)} ledger entries and manifests were read from "
                    "packs (each matched the listed ETag of its object); the others were downloaded")
    file_sha = dict(zip(fkeys, store._fetch(fkeys, sha256=True), strict=True)) if deep else {}

    lines = _ledger_lines(store, ledger_objs, raw_ledger, problems)
    head = lines[-1].entry.hash if lines else None
    verify_chain(lines, problems)
    verify_head(lines, head, expect_head, problems, info, where=f"{LEDGER_DIR}/")
    verify_signatures(lines, signers, problems, info)
    note_unfinished((x.entry for x in lines), info)

    problems.extend(stray)
    count, pending = match_records(lines, folders, problems)
    for e, objs in pending:
        if only is None or e.run_id == only:
            problems.extend(_check_record(store, e, objs, manifests, file_sha, deep=deep))
    in_flight = _in_flight(store, sorted(folders), ledger_objs[-1][0] if ledger_objs else 0, info,
                           append_timeout)
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


def _in_flight(store: S3Layout, leftover: list[str], last_seq: int, info: list[str],
               append_timeout: float) -> set[str]:
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
    newer = store._ledger_objects(after_seq=last_seq or None)[0]
    for data in store._fetch([o.key for _, o in newer]):
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
    window = append_timeout * _IN_FLIGHT_FACTOR
    now = datetime.now(UTC)
    writing: list[str] = []
    claims = store._fetch([store._key(RUNS_DIR, r.split("/", 1)[1]) for r in rest])
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

def _listing(store: S3Layout, info: list[str]) -> tuple[list[tuple[int, ObjectInfo]], list[ObjectInfo],
                                                      dict[str, dict[str, ObjectInfo]], list[VerifyProblem]]:
    """List the archive: the ledger first, then each runbook's records in parallel."""
    rec_prefix = store._key(RECORDS_DIR) + "/"
    top_prefixes, top_keys = store.s3.common_prefixes(store.bucket, store._base)
    known = {store._key(d) + "/" for d in (LEDGER_DIR, RUNS_DIR, RECORDS_DIR, PACKS_DIR)}
    unknown = [store._rel(k) for k in top_prefixes if k not in known] + [store._rel(k) for k in top_keys]
    if unknown:
        info.append(f"{len(unknown)} object(s)/folder(s) at the archive root that are not the archive's "
                    f"(ignored): {', '.join(unknown[:5])}" + (" ..." if len(unknown) > 5 else ""))
    # The ledger before the records: a writer puts every object of a record before its ledger
    # entry, so each record this ledger listing names is complete in the listing that follows.
    # (Listed at once, an entry could be paired with a listing taken mid-upload: false problems.)
    ledger_objs, ledger_other = store._ledger_objects()
    rb_prefixes, rb_keys = store.s3.common_prefixes(store.bucket, rec_prefix)
    pool = store._executor()
    listings = list(pool.map(lambda p: list(store.s3.iter_objects(store.bucket, p)), rb_prefixes))

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

def _ledger_lines(store: S3Layout, objs: list[tuple[int, ObjectInfo]], raw: dict[str, bytes | None],
                  problems: list[VerifyProblem]) -> list[LedgerLine]:
    """The ledger objects that parse (a "line" per object, numbered by its key's seq); a problem for
    each that does not, or whose hash is wrong."""
    out: list[LedgerLine] = []
    after_bad = False
    for seq, o in objs:
        where = store._rel(o.key)
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
        out.append(LedgerLine(seq, entry, hash_ok, after_bad))
        after_bad = False
    return out

def _check_record(store: S3Layout, e: LedgerEntry, objs: dict[str, ObjectInfo],
                  manifests: dict[str, bytes | None], file_sha: dict[str, str | None], *,
                  deep: bool) -> list[VerifyProblem]:
    rid = e.run_id
    rb, run = e.record.split("/", 1)
    objs = dict(objs)
    mkey = store._record_key(rb, run, MANIFEST_NAME)
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
            key = store._record_key(rb, run, rel)
            actual = file_sha[key] if key in file_sha else store._fetch([key], sha256=True)[0]
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

