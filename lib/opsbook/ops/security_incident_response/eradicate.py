"""Phase 4, eradication: back to a known-good state, each way confirmed by a check: the helm release
rolled back to a named revision, a known-good image digest redeployed, a PostgreSQL database
restored from a dump with its row counts before and after kept as evidence.

``opsbook undo`` rolls the release back to the revision before the apply's rollback and puts the
Deployment back as it was before the image was set (both through ``ctx.journal``); it does not
take back a database restore (declared irreversible, with why)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from opsbook.errors import ClientError, Invalid
from opsbook.ops.base import Result, change, check
from opsbook.ops.journal import JOURNAL, irreversible
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


@change("restore-database", "Restore the database", plan=plan_restore_database, phase="eradication",
        skip_if=_NO_RESTORE, undo=irreversible(
            "the restore replaced the tables of the dump with the dump's rows, and this runbook keeps no copy of "
            "the rows it replaced (only their counts, in the evidence): to go back, restore a dump taken before "
            "it (pg_dump), e.g. with this runbook's eradication phase and that dump as backup_file"))
def restore_database(ctx: Context) -> Result:
    """Restore the database from the dump (``pg_restore`` or ``psql``), counting rows before and after."""
    s, backup = ctx.settings, ctx.backup_file
    db = ctx.db()
    _toc, tables = _dump_tables(db, backup)
    before = db.row_counts(s.db_name, tables)
    digest = _sha256_file(backup)
    how = db.restore(s.db_name, backup)
    after = db.row_counts(s.db_name, tables)
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
