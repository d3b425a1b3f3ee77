"""The Job controller: pods until enough succeed (completions, parallelism) or too many fail
(backoffLimit), then the Complete or Failed condition; and the TTL-after-finished controller."""

from __future__ import annotations

import copy
import time

from ..errors import ApiError
from ..meta import now_iso, parse_iso
from .common import (
    JOBS,
    PODS,
    ControllerBase,
    _active,
    _is_ready,
    _set_cond,
)


class JobController(ControllerBase):
    def sync(self) -> None:
        c = self.c
        owned = self._owned_pods()
        for job in list(c.objects(JOBS)):
            if job["metadata"].get("deletionTimestamp"):
                continue
            ns = job["metadata"]["namespace"]
            spec = job["spec"]
            status = copy.deepcopy(job.get("status") or {})
            conds = status.setdefault("conditions", [])
            done = any(x.get("type") in ("Complete", "Failed") and x.get("status") == "True" for x in conds)
            ttl = spec.get("ttlSecondsAfterFinished")
            if done and ttl is not None:  # the TTL-after-finished controller
                finished = max((parse_iso(x["lastTransitionTime"]) for x in conds
                                if x.get("type") in ("Complete", "Failed") and x.get("lastTransitionTime")),
                               default=time.time())
                if time.time() >= finished + int(ttl):
                    try:
                        c.delete(JOBS, ns, job["metadata"]["name"], {"propagationPolicy": "Foreground"},
                                 internal=True)
                    except ApiError:
                        pass
                    continue
            pods = owned.get(job["metadata"]["uid"], [])
            succeeded = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Succeeded")
            failed = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Failed")
            active = [p for p in pods if _active(p)]
            succeeded = max(succeeded, int(status.get("succeeded") or 0))
            failed = max(failed, int(status.get("failed") or 0))
            completions = spec.get("completions")
            completions = 1 if completions is None else int(completions)
            parallelism = int(spec.get("parallelism", 1))
            if not done and not spec.get("suspend"):
                status.setdefault("startTime", now_iso())
                if failed > int(spec.get("backoffLimit", 6)):
                    for p in active:
                        self._delete(PODS, p)
                    active = []
                    _set_cond(conds, "FailureTarget", "True", "BackoffLimitExceeded",
                              "Job has reached the specified backoff limit", with_probe_time=True)
                    _set_cond(conds, "Failed", "True", "BackoffLimitExceeded",
                              "Job has reached the specified backoff limit", with_probe_time=True)
                    self._event(job, "BackoffLimitExceeded", "Job has reached the specified backoff limit",
                                "Warning", component="job-controller")
                elif succeeded >= completions:
                    _set_cond(conds, "SuccessCriteriaMet", "True", "CompletionsReached",
                              "Reached expected number of succeeded pods", with_probe_time=True)
                    _set_cond(conds, "Complete", "True", "CompletionsReached",
                              "Reached expected number of succeeded pods", with_probe_time=True)
                    status["completionTime"] = now_iso()
                    self._event(job, "Completed", "Job completed", component="job-controller")
                else:
                    want = min(parallelism, completions - succeeded)
                    for _ in range(max(0, want - len(active))):
                        p = self._create(PODS, ns, self._pod_from_template(job, "Job", "batch/v1", spec["template"]))
                        if p:
                            active.append(p)
                            self._event(job, "SuccessfulCreate", f"Created pod: {p['metadata']['name']}",
                                        component="job-controller")
                        else:
                            self._failed_create(job, "job-controller")
                            break
            if not conds:
                status.pop("conditions")
            for k, v in (("active", len(active)), ("succeeded", succeeded), ("failed", failed),
                         ("ready", sum(1 for p in active if _is_ready(p))), ("terminating", 0)):
                if v or k in ("ready", "terminating"):
                    status[k] = v
                else:
                    status.pop(k, None)
            status["uncountedTerminatedPods"] = {}
            if status != (job.get("status") or {}):
                upd = copy.deepcopy(job)
                upd["status"] = status
                self._update(JOBS, upd, "status")
