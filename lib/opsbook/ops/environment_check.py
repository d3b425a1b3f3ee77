"""The `environment-check` runbook's logic: can this workstation run the runbooks against a target?"""

from __future__ import annotations

import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from opsbook.ops.base import Check, Context, Result, check, preflight, step


@preflight("archive-writable")
def archive_writable(ctx: Context) -> list[Check]:
    """The archive can take this run's record: a folder that exists or can be made, is writable and
    has room; or an S3 archive whose bucket exists and accepts these credentials (``check_writable``)."""
    archive = ctx.archive()
    min_free_gb = ctx.settings.min_free_gb
    root = getattr(archive, "root", archive)
    if not isinstance(root, Path):
        where = getattr(archive, "location", str(root))
        try:
            archive.check_writable()
        except Exception as exc:  # noqa: BLE001 - any refusal is the check's failure, with its message
            return [Check("archive reachable", False, f"{where}: {exc}")]
        return [Check("archive reachable", True, str(where))]
    checks = []
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".probe-"):
            pass
        checks.append(Check("archive folder writable", True, str(root)))
    except OSError as exc:
        checks.append(Check("archive folder writable", False, f"{root}: {exc.strerror}"))
        return checks
    free_gb = shutil.disk_usage(root).free / 1e9
    checks.append(Check("free disk space", free_gb >= min_free_gb,
                        f"{free_gb:.1f} GB free at {root} (need {min_free_gb:g} GB)"))
    return checks


NOT_INSTALLED = "not installed"


@step("python-packages", "Python packages")
def package_versions(ctx: Context) -> Result:
    """The installed version of each Python package; the step fails naming every one that is not
    installed in this environment (the kernel's)."""
    rows, missing = [], []
    for name in ctx.settings.packages:
        try:
            rows.append({"package": name, "version": metadata.version(name), "status": "ok"})
        except metadata.PackageNotFoundError:
            rows.append({"package": name, "version": "-", "status": NOT_INSTALLED})
            missing.append(name)
    return Result(summary=f"{len(rows) - len(missing)} of {len(rows)} installed" + (
        f"; not installed: {', '.join(missing)}" if missing else ""), rows=rows,
        outcome="failed" if missing else "ok", details={"missing": missing})


@step("tools", "Command-line tools")
def tool_versions(ctx: Context) -> Result:
    """The version and path of each command-line tool the runbooks drive."""
    infos = [ctx.clients.tools.info(n) for n in ctx.settings.tools]
    rows = [{"tool": i.name, "version": i.version or "-", "path": i.path or "-", "problem": i.error or ""}
            for i in infos]
    bad = [i.name for i in infos if i.version is None]
    return Result(summary=f"{len(infos) - len(bad)} of {len(infos)} tools work" + (
        f"; broken or missing: {', '.join(bad)}" if bad else ""), rows=rows,
        outcome="failed" if bad else "ok", details={"missing": bad})


@step("target", "Target settings")
def target_report(ctx: Context) -> Result:
    """The target's settings, as the run sees them."""
    target = ctx.target
    rows = [{"setting": k, "value": "" if v is None else str(v)}
            for k, v in target.model_dump(exclude={"description"}).items()]
    note = "no cluster: Kubernetes steps will plan only" if not target.has_cluster else "cluster configured"
    return Result(summary=f"{target.name}: {note}", rows=rows)


@check("archive-integrity", "Archive integrity")
def archive_integrity(ctx: Context) -> Check:
    """Every record of the archive and its ledger chain verify."""
    report = ctx.archive().verify()
    if report.ok:
        return Check("archive verifies", True, f"{report.records} record(s), chain head {report.head or '(empty)'}")
    kinds = sorted({p.kind for p in report.problems})
    return Check("archive verifies", False, f"{len(report.problems)} problem(s): {', '.join(kinds)}",
                 evidence={"problems": [str(p) for p in report.problems[:20]]})

