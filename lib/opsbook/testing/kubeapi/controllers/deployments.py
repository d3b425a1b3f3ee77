"""The Deployment controller: a ReplicaSet per pod template, rolling update (maxSurge,
maxUnavailable) or Recreate, rollbacks, revision history, and the status conditions kubectl rollout
status reads (Available, Progressing, ProgressDeadlineExceeded)."""

from __future__ import annotations

import copy
import time

from ..errors import ApiError
from ..meta import parse_iso
from .common import (
    DEPLOY,
    RSS,
    ControllerBase,
    _cond,
    _controller_uid,
    _int_or_percent,
    _owner_ref,
    _set_cond,
    _strip_hash,
    template_hash,
)


class DeploymentController(ControllerBase):
    def sync(self) -> None:
        c = self.c
        all_rs = c.objects(RSS)
        for d in list(c.objects(DEPLOY)):
            if d["metadata"].get("deletionTimestamp"):
                continue
            try:
                self._sync_deployment(d, [rs for rs in all_rs if _controller_uid(rs) == d["metadata"]["uid"]])
            except ApiError:
                pass

    def _sync_deployment(self, d: dict, rss: list[dict]) -> None:
        c = self.c
        ns, name = d["metadata"]["namespace"], d["metadata"]["name"]
        spec = d["spec"]
        replicas = int(spec.get("replicas", 1))
        tmpl = spec["template"]
        new_rs = next((rs for rs in rss if _strip_hash(rs["spec"]["template"]) == _strip_hash(tmpl)), None)
        revs = [int((rs["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", "0") or 0)
                for rs in rss]
        max_rev = max(revs, default=0)
        status = copy.deepcopy(d.get("status") or {})
        conds = status.setdefault("conditions", [])
        progressing_reason = None
        strategy = spec.get("strategy") or {}
        surge = _int_or_percent((strategy.get("rollingUpdate") or {}).get("maxSurge", "25%"), replicas, True)
        unavail = _int_or_percent((strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%"), replicas, False)
        if strategy.get("type") == "Recreate":
            surge, unavail = 0, replicas
        elif surge == 0 and unavail == 0:
            unavail = 1
        paused = bool(spec.get("paused"))
        if new_rs is None and not paused:
            h = template_hash(tmpl, int(status.get("collisionCount") or 0))
            rs_tmpl = copy.deepcopy(tmpl)
            rs_tmpl.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = h
            sel = copy.deepcopy(spec["selector"])
            sel.setdefault("matchLabels", {})["pod-template-hash"] = h
            old_total = sum(int(rs["spec"].get("replicas") or 0) for rs in rss)
            if strategy.get("type") == "Recreate":
                start = 0 if old_total else replicas
            else:
                start = max(0, min(replicas, replicas + surge - old_total))
            rs_obj = {"metadata": {"name": f"{name}-{h}", "namespace": ns,
                                   "labels": dict(rs_tmpl["metadata"]["labels"]),
                                   "annotations": {"deployment.kubernetes.io/revision": str(max_rev + 1),
                                                   "deployment.kubernetes.io/desired-replicas": str(replicas),
                                                   "deployment.kubernetes.io/max-replicas": str(replicas + surge)},
                                   "ownerReferences": [_owner_ref(d, "Deployment", "apps/v1")]},
                      "spec": {"replicas": start,
                               "minReadySeconds": int(spec.get("minReadySeconds") or 0),
                               "selector": sel, "template": rs_tmpl}}
            created = self._create(RSS, ns, rs_obj)
            if created is None:
                return
            new_rs = created
            rss = rss + [created]
            _set_cond(conds, "Progressing", "True", "NewReplicaSetCreated", f'Created new replica set "{created["metadata"]["name"]}"',
                      with_update_time=True, touch=True)
            progressing_reason = "NewReplicaSetCreated"
            if start:
                self._event(d, "ScalingReplicaSet", f"Scaled up replica set {created['metadata']['name']} from 0 "
                            f"to {start}", component="deployment-controller")
        elif new_rs is not None:
            rev = int((new_rs["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", "0")
                      or 0)
            if rev < max_rev:  # rollback to an older template: it becomes the newest revision
                upd = copy.deepcopy(new_rs)
                ann = upd["metadata"].setdefault("annotations", {})
                hist = [x for x in (ann.get("deployment.kubernetes.io/revision-history") or "").split(",") if x]
                ann["deployment.kubernetes.io/revision-history"] = ",".join(hist + [str(rev)])
                ann["deployment.kubernetes.io/revision"] = str(max_rev + 1)
                new_rs = self._update(RSS, upd) or new_rs
                rss = [new_rs if rs["metadata"]["uid"] == new_rs["metadata"]["uid"] else rs for rs in rss]
                _set_cond(conds, "Progressing", "True", "FoundNewReplicaSet",
                          f'Found new replica set "{new_rs["metadata"]["name"]}"', with_update_time=True, touch=True)
        if new_rs is None:
            return
        # deployment revision annotation
        new_rev = (new_rs["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision")
        if (d["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision") != new_rev:
            upd = copy.deepcopy(d)
            upd["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/revision"] = new_rev
            d = self._update(DEPLOY, upd) or d
        old = [rs for rs in rss if rs["metadata"]["uid"] != new_rs["metadata"]["uid"]]
        if not paused:
            self._scale(d, new_rs, old, replicas, surge, unavail, strategy.get("type") == "Recreate")
        # history limit
        limit = int(spec.get("revisionHistoryLimit", 10))
        dead = [rs for rs in old if not rs["spec"].get("replicas") and not (rs.get("status") or {}).get("replicas")]
        if len(dead) > limit:
            dead.sort(key=lambda rs: int((rs["metadata"].get("annotations") or {}).get(
                "deployment.kubernetes.io/revision", "0") or 0))
            for rs in dead[: len(dead) - limit]:
                self._delete(RSS, rs)
        # status
        rss_now: list[dict] = [x for x in (c.raw(RSS, ns, rs["metadata"]["name"]) for rs in rss) if x is not None]
        new_now = c.raw(RSS, ns, new_rs["metadata"]["name"]) or new_rs
        tot = sum(int((rs.get("status") or {}).get("replicas") or 0) for rs in rss_now)
        updated = int((new_now.get("status") or {}).get("replicas") or 0)
        ready = sum(int((rs.get("status") or {}).get("readyReplicas") or 0) for rs in rss_now)
        avail = sum(int((rs.get("status") or {}).get("availableReplicas") or 0) for rs in rss_now)
        spec_total = sum(int(rs["spec"].get("replicas") or 0) for rs in rss_now)
        before = {k: int((d.get("status") or {}).get(k) or 0) for k in
                  ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")}
        status["observedGeneration"] = d["metadata"].get("generation", 1)
        for k, v in (("replicas", tot), ("updatedReplicas", updated), ("readyReplicas", ready),
                     ("availableReplicas", avail), ("unavailableReplicas", max(spec_total - avail, 0))):
            if v:
                status[k] = v
            else:
                status.pop(k, None)
        status["terminatingReplicas"] = 0
        status.pop("terminatingReplicas")
        if avail >= replicas - (unavail if strategy.get("type") != "Recreate" else 0) and avail >= replicas - unavail:
            _set_cond(conds, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.",
                      with_update_time=True)
        else:
            _set_cond(conds, "Available", "False", "MinimumReplicasUnavailable",
                      "Deployment does not have minimum availability.", with_update_time=True)
        rsname = new_now["metadata"]["name"]
        complete = updated == replicas and tot == replicas and avail == replicas
        cur = _cond(conds, "Progressing")
        deadline = spec.get("progressDeadlineSeconds")
        if paused:
            _set_cond(conds, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused",
                      with_update_time=True)
        elif complete:
            if not cur or cur.get("reason") != "NewReplicaSetAvailable":
                _set_cond(conds, "Progressing", "True", "NewReplicaSetAvailable",
                          f'ReplicaSet "{rsname}" has successfully progressed.', with_update_time=True, touch=True)
        elif progressing_reason is None:
            after = {"replicas": tot, "updatedReplicas": updated, "readyReplicas": ready, "availableReplicas": avail}
            progressed = (after["updatedReplicas"] > before["updatedReplicas"] or
                          after["readyReplicas"] > before["readyReplicas"] or
                          after["availableReplicas"] > before["availableReplicas"] or
                          tot - updated < before["replicas"] - before["updatedReplicas"])
            if cur and cur.get("reason") == "NewReplicaSetAvailable":
                _set_cond(conds, "Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{rsname}" is progressing.',
                          with_update_time=True, touch=True)
            elif progressed:
                _set_cond(conds, "Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{rsname}" is progressing.',
                          with_update_time=True, touch=True)
            elif cur is None:
                _set_cond(conds, "Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{rsname}" is progressing.',
                          with_update_time=True, touch=True)
            cur = _cond(conds, "Progressing")
            if deadline is not None and cur and cur.get("status") == "True" and \
                    time.time() - parse_iso(cur.get("lastUpdateTime") or cur["lastTransitionTime"]) > int(deadline):
                _set_cond(conds, "Progressing", "False", "ProgressDeadlineExceeded",
                          f'ReplicaSet "{rsname}" has timed out progressing.', with_update_time=True, touch=True)
        conds.sort(key=lambda x: {"Available": 0, "Progressing": 1}.get(x.get("type"), 2))
        if status != (d.get("status") or {}):
            upd = copy.deepcopy(d)
            upd["status"] = status
            self._update(DEPLOY, upd, "status")

    def _scale(self, d, new_rs, old, replicas, surge, unavail, recreate) -> None:
        c = self.c

        def set_replicas(rs, n):
            if int(rs["spec"].get("replicas") or 0) == n:
                return rs
            upd = copy.deepcopy(rs)
            before = int(upd["spec"].get("replicas") or 0)
            upd["spec"]["replicas"] = n
            ann = upd["metadata"].setdefault("annotations", {})
            ann["deployment.kubernetes.io/desired-replicas"] = str(replicas)
            ann["deployment.kubernetes.io/max-replicas"] = str(replicas + surge)
            out = self._update(RSS, upd) or rs
            self._event(d, "ScalingReplicaSet", f"Scaled {'up' if n > before else 'down'} replica set "
                        f"{rs['metadata']['name']} from {before} to {n}", component="deployment-controller")
            return out

        if recreate:
            for rs in old:
                set_replicas(rs, 0)
            if any((c.raw(RSS, rs["metadata"]["namespace"], rs["metadata"]["name"]) or {}).get("status", {}).get(
                    "replicas") for rs in old):
                return
            set_replicas(new_rs, replicas)
            return
        if not old:
            set_replicas(new_rs, replicas)
            return
        new_n = int(new_rs["spec"].get("replicas") or 0)
        total_spec = new_n + sum(int(rs["spec"].get("replicas") or 0) for rs in old)
        if new_n < replicas:
            allowed = replicas + surge - total_spec
            if allowed > 0:
                new_n = min(replicas, new_n + allowed)
                new_rs = set_replicas(new_rs, new_n)
        elif new_n > replicas:
            new_n = replicas
            new_rs = set_replicas(new_rs, new_n)
        # scale down old replica sets
        min_avail = replicas - unavail
        all_spec = new_n + sum(int(rs["spec"].get("replicas") or 0) for rs in old)
        new_unavail = new_n - int((new_rs.get("status") or {}).get("availableReplicas") or 0)
        max_down = all_spec - min_avail - new_unavail
        if max_down <= 0:
            return
        old_sorted = sorted(old, key=lambda rs: rs["metadata"]["creationTimestamp"])
        # stored objects are never changed in place: keep the planned replica counts aside
        planned = {rs["metadata"]["uid"]: int(rs["spec"].get("replicas") or 0) for rs in old_sorted}
        # unhealthy first
        for rs in old_sorted:
            if max_down <= 0:
                break
            n = planned[rs["metadata"]["uid"]]
            unhealthy = n - int((rs.get("status") or {}).get("availableReplicas") or 0)
            k = min(unhealthy, max_down, n)
            if k > 0:
                rs = set_replicas(rs, n - k)
                max_down -= k
                planned[rs["metadata"]["uid"]] = n - k
        avail = int((new_rs.get("status") or {}).get("availableReplicas") or 0) + sum(
            min(planned[rs["metadata"]["uid"]], int((rs.get("status") or {}).get("availableReplicas") or 0))
            for rs in old)
        can_down = min(avail - min_avail, max_down)
        for rs in old_sorted:
            if can_down <= 0:
                break
            n = planned[rs["metadata"]["uid"]]
            k = min(n, can_down)
            if k > 0:
                set_replicas(c.raw(RSS, rs["metadata"]["namespace"], rs["metadata"]["name"]) or rs, n - k)
                can_down -= k
