"""The CronJob controller: a Job per due schedule time (concurrency policy, starting deadline),
and the history limits of finished Jobs."""

from __future__ import annotations

import copy
import time

from ..meta import now_iso, parse_iso
from ..store import Cluster
from .common import (
    CRONJOBS,
    JOBS,
    ControllerBase,
    _controller_uid,
    _owner_ref,
)
from .cron import CronError, last_due


class CronJobController(ControllerBase):
    def __init__(self, cluster: Cluster):
        super().__init__(cluster)
        self.checked: dict[str, tuple] = {}  # CronJob uid -> (minute, resourceVersion) last looked at

    def sync(self) -> None:
        c = self.c
        now = time.time()
        jobs = c.objects(JOBS)
        for cj in list(c.objects(CRONJOBS)):
            if cj["metadata"].get("deletionTimestamp"):
                continue
            ns, name, uid = cj["metadata"]["namespace"], cj["metadata"]["name"], cj["metadata"]["uid"]
            spec = cj.get("spec") or {}
            status = copy.deepcopy(cj.get("status") or {})
            mine = [j for j in jobs if _controller_uid(j) == uid]

            def finished(j: dict, typ: str | None = None) -> bool:
                return any(x.get("type") in ((typ,) if typ else ("Complete", "Failed")) and x.get("status") == "True"
                           for x in (j.get("status") or {}).get("conditions") or [])

            active = [j for j in mine if not finished(j)]
            # the schedule is looked at once a minute (and when the CronJob changes)
            check_key = (int(now // 60), cj["metadata"]["resourceVersion"])
            due_check = self.checked.get(uid) != check_key
            self.checked[uid] = check_key
            if due_check and not spec.get("suspend"):
                since = parse_iso(status.get("lastScheduleTime") or cj["metadata"]["creationTimestamp"])
                try:
                    due = last_due(spec.get("schedule", ""), since, now, spec.get("timeZone"))
                except CronError as e:
                    self._event(cj, "UnparseableSchedule", f"unparseable schedule: {e}", "Warning",
                                component="cronjob-controller")
                    due = None
                deadline = spec.get("startingDeadlineSeconds")
                if due is not None and (deadline is None or now - due <= int(deadline)):
                    policy = spec.get("concurrencyPolicy", "Allow")
                    if active and policy == "Forbid":
                        pass
                    else:
                        if active and policy == "Replace":
                            for j in active:
                                c.delete(JOBS, ns, j["metadata"]["name"], {"propagationPolicy": "Background"},
                                         internal=True)
                            active = []
                        jt = spec.get("jobTemplate") or {}
                        jmeta = copy.deepcopy(jt.get("metadata") or {})
                        jmeta["name"] = f"{name}-{int(due // 60)}"
                        jmeta["ownerReferences"] = [_owner_ref(cj, "CronJob", "batch/v1")]
                        jmeta.setdefault("annotations", {})["batch.kubernetes.io/cronjob-scheduled-timestamp"] = \
                            now_iso(due)
                        created = self._create(JOBS, ns, {"metadata": jmeta, "spec": copy.deepcopy(jt.get("spec"))})
                        if created is not None:
                            active.append(created)
                            self._event(cj, "SuccessfulCreate", f"Created job {jmeta['name']}",
                                        component="cronjob-controller")
                        status["lastScheduleTime"] = now_iso(due)
                elif due is not None:
                    status["lastScheduleTime"] = now_iso(due)  # missed its deadline: skip this run
            # history limits
            for typ, limit in (("Complete", spec.get("successfulJobsHistoryLimit", 3)),
                               ("Failed", spec.get("failedJobsHistoryLimit", 1))):
                done = sorted((j for j in mine if finished(j, typ)), key=lambda j: j["metadata"]["creationTimestamp"])
                for j in done[: max(0, len(done) - int(limit))]:
                    c.delete(JOBS, ns, j["metadata"]["name"], {"propagationPolicy": "Background"}, internal=True)
            ok = [j for j in mine if finished(j, "Complete")]
            if ok:
                status["lastSuccessfulTime"] = max((j.get("status") or {}).get("completionTime") or "" for j in ok)
            if active:
                status["active"] = [{"kind": "Job", "namespace": ns, "name": j["metadata"]["name"],
                                     "uid": j["metadata"]["uid"], "apiVersion": "batch/v1",
                                     "resourceVersion": j["metadata"].get("resourceVersion")} for j in active]
            else:
                status.pop("active", None)
            if status != (cj.get("status") or {}):
                upd = copy.deepcopy(c.raw(CRONJOBS, ns, name) or cj)
                upd["status"] = status
                self._update(CRONJOBS, upd, "status")
