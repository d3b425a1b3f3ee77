"""Plan, approve, apply: an apply names the plan run it carries out, and consumes it.

Checked before any kernel starts (``opsbook run --approve``) *and again inside the kernel*
(``opsbook.start``), whatever started it (opsbook, papermill, nbclient, JupyterLab): no environment
variable turns the check off. A plan approves an apply when its record

- exists in the archive the apply writes to, and verifies (hashes, chain, and, where the project
  has ``allowed_signers``, a ledger signature by a trusted key);
- is of the same runbook, was run in ``plan`` mode, succeeded, and (headless) from the same notebook
  (sha256);
- is a real plan run: its recorded notebook shows every code cell of the runbook executed, without
  an error (a record forged through the archive API, or a ``start()``/``summary()`` made in plain
  Python, shows none);
- has the same parameters bar ``mode``;
- has not been consumed: the first apply writes a ``started`` ledger entry naming the plan (under the
  ledger lock, or the S3 conditional PUT), and a second apply of it is refused with the id of the
  apply that used it (``PlanConsumed``).

The runner proves to its kernel that it wrote the run's ``started`` entry with a one-time token: the
entry holds the token's sha256, the kernel reads the token from a private file
(``$OPSBOOK_CLAIM_FILE``, in the run's 0700 staging folder). A kernel that cannot prove it (papermill
or nbclient started it, or the environment was faked) writes its own ``started`` entry and archives
its record itself when its summary cell runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from opsbook import catalog
from opsbook.errors import ApprovalError, ArchiveError
from opsbook.ids import utcnow

ENV_CLAIM_FILE = "OPSBOOK_CLAIM_FILE"


def needs_approval(rb: catalog.Runbook, params: dict[str, Any], target: Any) -> bool:
    return params.get("mode") == "apply" and (rb.high_risk or bool(target.requires_approval))


def why_needed(rb: catalog.Runbook, target: Any) -> str:
    if rb.high_risk:
        return "high-risk runbook" + (" (a notebook outside the catalogue is high-risk)" if rb.external else "")
    return f"target {target.name} requires approval ({target.source})"


def _comparable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k != "mode"}


def _source_changed(manifest: dict[str, Any], rb: catalog.Runbook) -> bool:
    """What the plan ran differs from the notebook now: by content (cells and opsbook metadata), or
    for a plan recorded before the content digest existed, by the file's bytes."""
    if manifest.get("source_content_sha256"):
        return manifest["source_content_sha256"] != rb.content_sha256
    return manifest.get("source_sha256") != rb.sha256


def _show(values: dict[str, Any], key: str) -> str:
    return repr(values[key]) if key in values else "(not set)"


def plan_parameters(archive: Any, plan_run_id: str | None) -> dict[str, Any]:
    """The parameters of the plan run an apply names (bar ``mode``), to take as the apply's defaults;
    empty if there is no such record (``check`` then says why)."""
    if not plan_run_id:
        return {}
    try:
        params = archive.load_manifest(plan_run_id).get("parameters")
    except (ArchiveError, OSError, ValueError):
        return {}
    return _comparable(params) if isinstance(params, dict) else {}


def code_cells_ran(recorded: dict[str, Any], rb: catalog.Runbook) -> str | None:
    """``None`` if the recorded notebook shows every code cell of the runbook executed without an
    error (in order; injected cells may sit between them), else what is missing."""
    source = json.loads(rb.path.read_bytes())
    want = [(i, catalog.cell_source(c).strip()) for i, c in enumerate(source.get("cells", []))
            if c.get("cell_type") == "code" and i != rb.parameters_cell and catalog.cell_source(c).strip()]
    ran = [catalog.cell_source(c).strip() for c in recorded.get("cells", [])
           if c.get("cell_type") == "code" and isinstance(c.get("execution_count"), int)
           and not any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    pos = 0
    for i, src in want:
        while pos < len(ran) and ran[pos] != src:
            pos += 1
        if pos == len(ran):
            first = src.splitlines()[0][:60]
            return f"cell {i} ({first!r}) was never run (or failed) in that plan run"
        pos += 1
    return None


def check(archive: Any, rb: catalog.Runbook, params: dict[str, Any], plan_run_id: str | None, *,
          approver: str, check_source: bool = True, run_id: str | None = None,
          target: Any = None) -> dict[str, Any]:
    """The approval of an apply by the plan run ``plan_run_id`` (see the module docstring), as it is
    recorded in the apply's manifest; ``ApprovalError`` saying what is wrong. ``run_id`` is the apply's
    own id (its own ``started`` entry does not count as a second use of the plan)."""
    if not plan_run_id:
        why = why_needed(rb, target) if target is not None else "high-risk runbook"
        raise ApprovalError(f"{rb.id} in apply mode needs --approve PLAN_RUN_ID ({why}): run it with "
                            f"--mode plan first, review the record, then apply naming that plan run")
    try:
        manifest = archive.load_manifest(plan_run_id)
        ref = archive.find(plan_run_id)
    except ArchiveError as exc:
        raise ApprovalError(f"--approve {plan_run_id}: no such plan record in {archive.root} ({exc})") from None
    if ref is None:
        raise ApprovalError(f"--approve {plan_run_id}: no such plan record in {archive.root}")
    report = archive.verify(only=plan_run_id)  # the whole ledger, and the plan's own files
    problems = [p for p in report.problems if plan_run_id in (p.record or "")]
    if problems:
        raise ApprovalError(f"--approve {plan_run_id}: the plan record does not verify: "
                            + "; ".join(f"{p.kind}: {p.detail}" for p in problems))
    if manifest.get("runbook_id") != rb.id:
        raise ApprovalError(f"--approve {plan_run_id}: that run is of runbook {manifest.get('runbook_id')!r}, "
                            f"not {rb.id!r}")
    if manifest.get("mode") != "plan":
        raise ApprovalError(f"--approve {plan_run_id}: that run was in {manifest.get('mode')!r} mode, not plan")
    if manifest.get("status") != "succeeded":
        raise ApprovalError(f"--approve {plan_run_id}: that plan run {manifest.get('status')}; approve a "
                            "plan that succeeded")
    if check_source and _source_changed(manifest, rb):
        raise ApprovalError(f"--approve {plan_run_id}: the runbook notebook changed since that plan was made "
                            "(its cells or opsbook metadata differ); make a new plan")
    planned, now = _comparable(manifest.get("parameters", {})), _comparable(params)
    if planned != now:
        diff = sorted(k for k in set(planned) | set(now) if planned.get(k) != now.get(k))
        shown = "; ".join(f"{k}: plan {_show(planned, k)}, apply {_show(now, k)}" for k in diff)
        raise ApprovalError(f"--approve {plan_run_id}: parameters differ from the plan's: {shown} (an apply "
                            "takes the plan's parameters when it is not given them)")
    try:
        recorded = json.loads((ref.path / "notebook.ipynb").read_bytes())
    except (OSError, ValueError, ArchiveError) as exc:
        raise ApprovalError(f"--approve {plan_run_id}: the plan record holds no readable notebook ({exc}); "
                            "it is not a plan run the engine recorded") from None
    missing = code_cells_ran(recorded, rb)
    if missing:
        raise ApprovalError(f"--approve {plan_run_id}: not a complete plan run: {missing}; approve a plan run "
                            "that ran every step")
    used = archive.plan_used_by(plan_run_id, other_than=run_id)
    if used is not None:
        from opsbook.errors import PlanConsumed

        raise PlanConsumed(f"--approve {plan_run_id}: that plan was already carried out by apply run "
                           f"{used.run_id} (started {used.started}); a plan is consumed once: make a new plan "
                           "run and approve that", used_by=used.run_id)
    signed_by = next((i.split(": ", 1)[1] for i in report.info if i.startswith("signed by trusted keys")), None)
    return {"plan_run_id": plan_run_id, "approver": approver, "approved_at": utcnow(),
            "source_checked": check_source, "plan_operator": manifest.get("operator"),
            "plan_signatures": "checked" if signed_by else "not configured"}


def new_claim() -> tuple[str, str]:
    """A one-time token for a run's ``started`` entry: (token, its sha256 for the ledger)."""
    import secrets

    token = secrets.token_hex(32)
    return token, hashlib.sha256(token.encode()).hexdigest()


def runner_claim_ok(archive: Any, run_id: str | None, plan: str | None) -> bool:
    """Whether the runner that started this kernel wrote ``run_id``'s ``started`` entry (for
    ``plan``): the token in ``$OPSBOOK_CLAIM_FILE`` hashes to the entry's ``claim``."""
    path = os.environ.get(ENV_CLAIM_FILE)
    if not run_id or not path:
        return False
    try:
        p = Path(path)
        if not p.is_file() or p.stat().st_size > 1024:
            return False
        token = p.read_text().strip()
        entry = archive.start_entry(run_id)
    except (OSError, ArchiveError):
        return False
    return (entry is not None and entry.claim == hashlib.sha256(token.encode()).hexdigest()
            and (entry.plan or None) == (plan or None))


def start_fields(*, rb: catalog.Runbook, params: dict[str, Any], target: Any, operator: str) -> dict[str, Any]:
    """What a ``started`` ledger entry says about the apply that begins."""
    return {"runbook_version": rb.version, "mode": params.get("mode", "plan"), "target": target.name,
            "operator": operator, "started": utcnow(), "ended": None}
