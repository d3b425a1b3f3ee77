"""The HorizontalPodAutoscaler controller."""

from __future__ import annotations

import copy

from ..meta import now_iso
from .common import (
    DEPLOY,
    HPAS,
    RSS,
    STSS,
    ControllerBase,
    _cond,
    _set_cond,
)


class AutoscalerController(ControllerBase):
    def sync(self) -> None:
        """The HPA controller without a metrics API (like a cluster without metrics-server): it keeps
        the target within minReplicas..maxReplicas and reports that it cannot get metrics."""
        c = self.c
        targets = {"Deployment": DEPLOY, "StatefulSet": STSS, "ReplicaSet": RSS}
        for hpa in list(c.objects(HPAS)):
            if hpa["metadata"].get("deletionTimestamp"):
                continue
            ns = hpa["metadata"]["namespace"]
            spec = hpa.get("spec") or {}
            ref = spec.get("scaleTargetRef") or {}
            status = copy.deepcopy(hpa.get("status") or {})
            conds = status.setdefault("conditions", [])
            tr = targets.get(ref.get("kind", ""))
            target = c.raw(tr, ns, ref.get("name", "")) if tr else None
            lo, hi = int(spec.get("minReplicas") or 1), int(spec.get("maxReplicas") or 1)
            if target is None:
                what = f"{tr.plural}/scale.{tr.group}" if tr else f"{(ref.get('kind') or '').lower()}s/scale"
                _set_cond(conds, "AbleToScale", "False", "FailedGetScale",
                          f'the HPA controller was unable to get the target\'s current scale: {what} '
                          f'"{ref.get("name")}" not found')
            else:
                current = int((target.get("spec") or {}).get("replicas", 1))
                desired, limited = current, None
                if current == 0 and lo != 0:
                    _set_cond(conds, "ScalingActive", "False", "ScalingDisabled",
                              "scaling is disabled since the replica count of the target is zero")
                elif current > hi:
                    desired, limited = hi, ("TooManyReplicas", "the desired replica count is more than the maximum "
                                                               "replica count")
                elif current < lo:
                    desired, limited = lo, ("TooFewReplicas", "the desired replica count is less than the minimum "
                                                              "replica count")
                if current != 0 or lo == 0:
                    metric = next((m.get("resource", {}).get("name") for m in spec.get("metrics") or []
                                   if m.get("type") == "Resource"), "cpu")
                    _set_cond(conds, "ScalingActive", "False", "FailedGetResourceMetric",
                              f"the HPA was unable to compute the replica count: failed to get {metric} utilization: "
                              f"unable to get metrics for resource {metric}: unable to fetch metrics from resource "
                              f"metrics API: the server could not find the requested resource "
                              f"(get pods.metrics.k8s.io)")
                if limited:
                    _set_cond(conds, "ScalingLimited", "True", *limited)
                else:
                    _set_cond(conds, "ScalingLimited", "False", "DesiredWithinRange",
                              "the desired count is within the acceptable range")
                if desired != current:
                    new = copy.deepcopy(target)
                    new["spec"]["replicas"] = desired
                    if self._update(tr, new) is not None:
                        reason = ("Current number of replicas above Spec.MaxReplicas" if desired == hi else
                                  "Current number of replicas below Spec.MinReplicas")
                        self._event(hpa, "SuccessfulRescale", f"New size: {desired}; reason: {reason}",
                                    component="horizontal-pod-autoscaler")
                        status["lastScaleTime"] = now_iso()
                        _set_cond(conds, "AbleToScale", "True", "SucceededRescale",
                                  f"the HPA controller was able to update the target scale to {desired}")
                elif (_cond(conds, "AbleToScale") or {}).get("status") != "True":
                    _set_cond(conds, "AbleToScale", "True", "ReadyForNewScale",
                              "recommended size matches current size")
                status["currentReplicas"] = int((target.get("status") or {}).get("replicas") or 0)
                status["desiredReplicas"] = desired
            order = ["AbleToScale", "ScalingActive", "ScalingLimited"]
            conds.sort(key=lambda x: order.index(x["type"]) if x.get("type") in order else 9)
            if status != (hpa.get("status") or {}):
                upd = copy.deepcopy(hpa)
                upd["status"] = status
                self._update(HPAS, upd, "status")
