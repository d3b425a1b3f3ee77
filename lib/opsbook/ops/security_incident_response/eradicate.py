"""Phase 4, eradication: back to a known-good state, each way confirmed by a check: the helm release
rolled back to a named revision, a known-good image digest redeployed, a PostgreSQL database
restored from a dump with its row counts before and after kept as evidence.

``opsbook undo`` rolls the release back to the revision before the apply's rollback and puts the
Deployment back as it was before the image was set (both through ``ctx.journal``). Before a database
restore the apply dumps the database as it is (``pg_dump``) into a private folder of this machine
(``.opsbook/undo/RUN_ID/``, mode 0700; the dump holds data, so it never goes into the record): the
record keeps that dump's path and sha256, the server, the database, the password's reference and the
row counts before and after; the undo restores that dump (:data:`DATABASE`)."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from opsbook.errors import ClientError, Invalid
from opsbook.ops.base import Result, change, check
from opsbook.ops.journal import JOURNAL, Status, Undoer, register
from opsbook.ops.security_incident_response import objects
from opsbook.ops.security_incident_response.context import (
    Context,
    apply_needs_cluster,
    first,
    plan_mode,
    unless,
)

_NO_ROLLBACK = unless("release", "rollback_revision", why="no helm rollback asked (release and rollback_revision)")
_NO_IMAGE = unless("known_good_image", why="no known-good image digest given")
_NO_RESTORE = unless("backup_file", why="no backup_file given: no database restore")


# -------------------------------------------------------------------------------------------- helm


def _revision_manifest(ctx: Context, revision: int | None) -> list[dict[str, Any]]:
    from opsbook.clients.helm import parse_manifests

    s = ctx.settings
    args = ["get", "manifest", s.release] + (["--revision", str(revision)] if revision else [])
    return parse_manifests(ctx.helm.run(*args, namespace=s.namespace))


def plan_rollback(ctx: Context) -> Result:
    s = ctx.settings
    if not ctx.has_cluster:
        return Result(summary=f"would run helm rollback {s.release} {s.rollback_revision} (no cluster)",
                      outcome="planned")
    hist = ctx.helm.history(s.release, namespace=s.namespace)
    revs = {int(h["revision"]): h for h in hist}
    if s.rollback_revision not in revs:
        return Result(summary=f"revision {s.rollback_revision} of {s.release} is not in its history "
                      f"({', '.join(map(str, sorted(revs)))})", outcome="failed")
    current = max(revs)
    rows = [{"revision": r, "status": h.get("status"), "chart": h.get("chart"), "updated": h.get("updated"),
             "": "<- roll back to" if r == s.rollback_revision else ("current" if r == current else "")}
            for r, h in sorted(revs.items())]
    return Result(summary=f"would roll {s.release} back from revision {current} to {s.rollback_revision}",
                  outcome="planned", rows=rows)


@change("rollback", "Roll back the release", plan=plan_rollback, phase="eradication",
        skip_if=first(_NO_ROLLBACK, apply_needs_cluster), undo=JOURNAL)
def rollback(ctx: Context) -> Result:
    """``helm rollback RELEASE REVISION`` (idempotent: not repeated when that revision's manifest is live)."""
    s = ctx.settings
    if _revision_manifest(ctx, None) == _revision_manifest(ctx, s.rollback_revision):
        return Result(summary=f"{s.release} already runs the manifest of revision {s.rollback_revision}", outcome="ok")
    with ctx.journal.helm(ctx.helm, s.release, namespace=s.namespace):  # the undo rolls back to the revision before
        ctx.helm.rollback(s.release, s.rollback_revision, namespace=s.namespace, wait=True, timeout=s.timeout)
    hist = ctx.helm.history(s.release, namespace=s.namespace)
    last = hist[-1] if hist else {}
    return Result(summary=f"{s.release} rolled back to revision {s.rollback_revision} (now revision "
                  f"{last.get('revision')})", outcome="changed",
                  rows=[{"revision": h.get("revision"), "status": h.get("status"), "description": h.get("description")}
                        for h in hist[-5:]])


@check("rollback-confirmed", "Rollback confirmed", phase="eradication", needs_cluster=True,
       skip_if=first(_NO_ROLLBACK, plan_mode("nothing was rolled back")))
def rollback_verified(ctx: Context) -> Result:
    """Check: the release is deployed and its live manifest is the known-good revision's."""
    s = ctx.settings
    same = _revision_manifest(ctx, None) == _revision_manifest(ctx, s.rollback_revision)
    status = ctx.helm.status(s.release, namespace=s.namespace)
    state = (status.get("info") or {}).get("status")
    return Result(summary=f"revision {status.get('version')} is {state}; manifest "
                  f"{'equals' if same else 'DIFFERS FROM'} revision {s.rollback_revision}",
                  outcome="ok" if same and state == "deployed" else "failed")


# ------------------------------------------------------------------------------------------- image


_IMAGE_RE = re.compile(r"^(?P<dep>[a-z0-9.-]+)(?:/(?P<container>[a-z0-9.-]+))?=(?P<image>\S+@sha256:[0-9a-f]{64})$")


def image_target(known_good_image: str) -> tuple[str, str | None, str]:
    """``DEPLOYMENT[/CONTAINER]=IMAGE@sha256:DIGEST`` as (deployment, container or None, image). A tag
    is refused: it can be moved to the attacker's image, a digest cannot."""
    m = _IMAGE_RE.match(known_good_image.strip())
    if not m:
        raise Invalid(f"known_good_image {known_good_image!r}: expected DEPLOYMENT[/CONTAINER]=IMAGE@sha256:<64 hex>")
    return m.group("dep"), m.group("container"), m.group("image")


def plan_redeploy_image(ctx: Context) -> Result:
    s = ctx.settings
    dep, container, image = image_target(s.known_good_image)
    if not ctx.has_cluster:
        return Result(summary=f"would set {dep}/{container or '*'} to {image} (no cluster)", outcome="planned")
    obj = ctx.kube.get(kind="Deployment", name=dep, namespace=s.namespace)
    rows = [{"container": c["name"], "image now": c.get("image"), "image after": image}
            for c in obj["spec"]["template"]["spec"]["containers"] if container in (None, c["name"])]
    return Result(summary=f"would redeploy {dep} with {image}", outcome="planned", rows=rows)


@change("redeploy-image", "Redeploy the known-good image", plan=plan_redeploy_image, phase="eradication",
        skip_if=first(_NO_IMAGE, apply_needs_cluster), undo=JOURNAL)
def redeploy_image(ctx: Context) -> Result:
    """Set the Deployment's containers to the known-good digest (idempotent)."""
    s = ctx.settings
    dep, container, image = image_target(s.known_good_image)
    obj = ctx.kube.get(kind="Deployment", name=dep, namespace=s.namespace)
    changed = []
    for c in obj["spec"]["template"]["spec"]["containers"]:
        if container in (None, c["name"]) and c.get("image") != image:
            changed.append({"container": c["name"], "image before": c.get("image"), "image after": image})
            c["image"] = image
    if not changed:
        return Result(summary=f"{dep} already runs {image}", outcome="ok")
    obj.setdefault("kind", "Deployment")
    obj.setdefault("apiVersion", "apps/v1")
    with ctx.journal.object(ctx.kube, kind="Deployment", name=dep, namespace=s.namespace, api_version="apps/v1"):
        objects.put(ctx, obj)
    return Result(summary=f"{dep}: {len(changed)} container(s) set to {image}", outcome="changed", rows=changed)


# ---------------------------------------------------------------------------------------- database


def _dump_tables(db: Any, backup_file: str) -> tuple[list[dict[str, Any]], list[str]]:
    toc = db.contents(backup_file)
    return toc, sorted({f"{r['schema']}.{r['name']}" for r in toc if r["type"] == "TABLE DATA"})


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def plan_restore_database(ctx: Context) -> Result:
    """The tables the dump holds, their rows now (which the restore replaces) and the rows expected."""
    s, backup = ctx.settings, ctx.backup_file
    db = ctx.db()
    toc, tables = _dump_tables(db, backup)
    try:
        now = db.row_counts(s.db_name, tables)
    except ClientError as exc:
        now = {t: f"unknown ({str(exc).splitlines()[0][:60]})" for t in tables}
    rows = [{"table": t, "rows now (replaced)": now.get(t, ""), "expected after": s.expected_rows.get(t, "")}
            for t in tables]
    return Result(summary=f"would restore {len(tables)} table(s) of {Path(backup).name} into "
                  f"{s.db_name} on {s.db_host}:{s.db_port}", outcome="planned", rows=rows,
                  details={"backup_sha256": _sha256_file(backup), "toc_entries": len(toc)})


class DatabaseUndoer(Undoer):
    """The undo of a database restore: the dump taken just before it restored in its place. The
    database is as the apply left it while every table of the restore has the row count the apply
    left (the only fingerprint the record keeps of the rows), and back as before when they have the
    counts from before it. The dump must still be where the apply wrote it, with the same sha256."""

    name = "opsbook.ops.security_incident_response.eradicate:database"

    def key(self, entry: Mapping[str, Any]) -> str | None:
        return f"db:{entry['host']}:{entry['port']}:{entry['database']}"

    def merge(self, older: Mapping[str, Any], newer: Mapping[str, Any]) -> dict[str, Any] | None:
        return {**newer, "dump": older["dump"], "dump_sha256": older["dump_sha256"],
                "rows_before": older["rows_before"]}

    def describe(self, entry: Mapping[str, Any]) -> tuple[str, str]:
        return (f"database {entry['database']} on {entry['host']}:{entry['port']}",
                f"restore the dump taken just before the apply's restore ({entry['dump']})")

    def _db(self, ctx: Any, entry: Mapping[str, Any]) -> Any:
        given = ctx.clients.given("pgbackup")
        if given is not None:
            return given
        from opsbook.clients.pgbackup import PgBackup

        ref = entry.get("password_ref") or ""
        return PgBackup(host=entry["host"], port=int(entry["port"]), user=entry["user"],
                        password=ctx.resolve_secret(ref) if ref else None)

    def _counts(self, ctx: Any, entry: Mapping[str, Any]) -> dict[str, int]:
        return self._db(ctx, entry).row_counts(entry["database"], list(entry["rows_after"]))

    def status(self, ctx: Any, entry: Mapping[str, Any]) -> Status:
        dump = Path(entry["dump"])
        if not dump.is_file() or _sha256_file(str(dump)) != entry["dump_sha256"]:
            return Status("cannot", f"the dump taken before the restore is not at {dump} on this machine (or it "
                          "changed since): restore it by hand from where it is kept")
        now = self._counts(ctx, entry)
        if now == entry["rows_after"]:
            return Status("as-left", "rows " + ", ".join(f"{t} {n}" for t, n in sorted(now.items())))
        if now == entry["rows_before"]:
            return Status("restored", "the row counts from before the restore")
        diff = [f"{t}: {entry['rows_after'].get(t)} -> {now.get(t)}" for t in sorted(now)
                if now.get(t) != entry["rows_after"].get(t)]
        return Status("drifted", "rows changed since the apply's restore: " + "; ".join(diff))

    def reverse(self, ctx: Any, entry: Mapping[str, Any]) -> str:
        how = self._db(ctx, entry).restore(entry["database"], entry["dump"])
        return f"restored from the dump taken before the apply ({how['tool']})"


DATABASE = register(DatabaseUndoer())


def _pre_restore_dump(ctx: Context) -> Path:
    """Where the dump of the database as it is goes before a restore: ``.opsbook/undo/RUN_ID/`` of the
    project, each folder mode 0700 (the dump holds the database's rows)."""
    folder = ctx.project_dir / ".opsbook" / "undo" / (ctx.run_id or "run")
    folder.parent.parent.mkdir(parents=True, exist_ok=True)
    for d in (folder.parent, folder):
        d.mkdir(mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)
    return folder / f"{ctx.settings.db_name}-before-restore.dump"


@change("restore-database", "Restore the database", plan=plan_restore_database, phase="eradication",
        skip_if=_NO_RESTORE, undo=DATABASE)
def restore_database(ctx: Context) -> Result:
    """Restore the database from the dump (``pg_restore`` or ``psql``), counting rows before and after."""
    s, backup = ctx.settings, ctx.backup_file
    db = ctx.db()
    _toc, tables = _dump_tables(db, backup)
    before = db.row_counts(s.db_name, tables)
    digest = _sha256_file(backup)
    saved = db.dump(s.db_name, _pre_restore_dump(ctx))  # for the undo: the rows this restore replaces
    os.chmod(saved, 0o600)
    try:
        how = db.restore(s.db_name, backup)
    finally:  # also a restore that failed may have changed rows (it runs in one transaction: usually not)
        try:
            after = db.row_counts(s.db_name, tables)
        except ClientError:
            after = {t: -1 for t in tables}  # cannot tell: the undo's check will say so
        if after != before:
            ctx.journal.record({"type": "database", "host": s.db_host, "port": s.db_port, "user": s.db_user,
                                "password_ref": s.db_password, "database": s.db_name, "dump": str(saved),
                                "dump_sha256": _sha256_file(str(saved)), "rows_before": before, "rows_after": after})
    ctx.save("eradication/database-restore.json",
             {"backup_file": backup, "backup_sha256": digest, "database": s.db_name, "how": how,
              "rows_before": before, "rows_after": after}, "the database restore: row counts before and after")
    rows = [{"table": t, "rows before": before.get(t), "rows after": after.get(t)} for t in tables]
    return Result(summary=f"{s.db_name} restored from {Path(backup).name} ({how['tool']})", outcome="changed",
                  rows=rows, details={"backup_sha256": digest, **how})


@check("restore-confirmed", "Database restore confirmed", phase="eradication",
       skip_if=first(unless("backup_file", why="no database restore asked"), plan_mode("nothing was restored")))
def restore_verified(ctx: Context) -> Result:
    """Check: every table of the dump is back, with the expected row counts where they were given."""
    s = ctx.settings
    db = ctx.db()
    _toc, dumped = _dump_tables(db, ctx.backup_file)
    tables = sorted(set(dumped) | set(s.expected_rows))
    counts = db.row_counts(s.db_name, tables)
    bad = [t for t in tables if counts.get(t, -1) < 0 or (t in s.expected_rows and counts[t] != int(s.expected_rows[t]))]
    rows = [{"table": t, "rows": counts.get(t), "expected": s.expected_rows.get(t, "(any)"),
             "ok": "yes" if t not in bad else "NO"} for t in tables]
    return Result(summary=(f"{len(tables)} table(s) restored as expected" if not bad else
                           f"{len(bad)} table(s) wrong: {', '.join(bad)}"), outcome="failed" if bad else "ok", rows=rows)
