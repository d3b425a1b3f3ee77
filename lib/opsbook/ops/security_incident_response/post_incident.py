"""Phase 6, post-incident: the runs of this incident so far, and how to export its evidence bundle
(``opsbook evidence`` drafts the post-mortem from the records: this run is one of them)."""

from __future__ import annotations

from typing import Any

from opsbook.ops.base import Result, step
from opsbook.ops.security_incident_response.context import Context


@step("incident-runs", "Runs of this incident", phase="post-incident")
def incident_so_far(ctx: Context) -> Result:
    """The runs of this incident already archived, and the commands that export the evidence bundle."""
    s = ctx.settings
    rows: list[dict[str, Any]] = []
    for r in ctx.incident_runs(s.incident_id):
        m = r.manifest
        rows.append({"run": r.run_id, "started": m.get("started"), "mode": m.get("mode"),
                     "status": m.get("status"), "operator": m.get("operator"),
                     "phases": ", ".join((m.get("parameters") or {}).get("phases") or [])})
    return Result(summary=f"{len(rows)} earlier run(s) of {s.incident_id}; this one is archived when it ends. "
                  f"Then: opsbook incident {s.incident_id}; opsbook evidence {s.incident_id} --out "
                  f"{s.incident_id}.tar.gz", rows=rows)
