"""Simulated control plane: the Deployment / ReplicaSet / DaemonSet / StatefulSet / Job / Endpoints /
volume / namespace / garbage-collection controllers, on top of the node agents (kubelet.py). One
background thread, ticking every ~0.1 s (sooner after a write), writing through the same store as API
clients, so watches see every change."""

from __future__ import annotations

import copy
import threading
import time
import uuid
from typing import Any

from .common import (
    CREVS,
    CRONJOBS,
    DEPLOY,
    DS_TOLERATIONS,
    DSS,
    EPS,
    HPAS,
    JOBS,
    MIN_TICK,
    NODES,
    NSS,
    PODS,
    PVCS,
    PVS,
    RSS,
    SCS,
    SLICE_MANAGER,
    SLICES,
    STSS,
    SVCS,
    TICK,
    _active,
    _cond,
    _controller_uid,
    _int_or_percent,
    _is_available,
    _is_ready,
    _owner_ref,
    _set_cond,
    _strip_hash,
    _target_node,
    _terminal,
    _tolerates,
    template_hash,
)
from .errors import ApiError
from .kubelet import NodeAgents
from .selectors import match_map_selector
from .store import Cluster, now_iso, parse_iso


class Controllers(NodeAgents):
    def __init__(self, cluster: Cluster):
        super().__init__(cluster)
        self.thread = threading.Thread(target=self._loop, name="kubeapi-controllers", daemon=True)
        self.last_rv = -1
        self.cron_checked: dict[str, tuple] = {}

    def start(self) -> None:
        with self.c.lock:
            self.bootstrap()
        self.thread.start()

    def _loop(self) -> None:
        while not self.c.stopping:
            t0 = time.time()
            try:
                with self.c.lock:
                    self.tick()
            except Exception:  # keep the world moving; print for the log
                import traceback
                traceback.print_exc()
                self.errors += 1
            # next tick after TICK, or sooner when something was written (but not more often than
            # every MIN_TICK, so that the controllers' own writes cannot make this a busy loop)
            time.sleep(max(0.0, MIN_TICK - (time.time() - t0)))
            with self.c.lock:
                seen = self.c.rv
                if self.c.rv == self.last_rv:
                    self.c.cond.wait(max(0.0, TICK - (time.time() - t0)))
                self.last_rv = seen


    # ------------------------------------------------------------ bootstrap

    def bootstrap(self) -> None:
        c = self.c
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            c.create(NSS, "", {"metadata": {"name": ns}}, internal=True)
        n = c.node_count
        for i in range(n):
            name = "opsbook-control-plane" if (i == 0 and n > 1) else (
                "opsbook-worker" + ("" if i <= 1 else str(i)) if n > 1 else "opsbook-node")
            cp = i == 0 and n > 1
            labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                      "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64"}
            if cp or n == 1:  # a single node is an untainted control plane, as in minikube
                labels["node-role.kubernetes.io/control-plane"] = ""
            else:
                labels["node-role.kubernetes.io/worker"] = ""
            spec: dict[str, Any] = {"podCIDR": f"10.244.{i}.0/24", "podCIDRs": [f"10.244.{i}.0/24"]}
            if cp:
                spec["taints"] = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
            now = now_iso()
            conds = []
            for typ, reason, msg in (("MemoryPressure", "KubeletHasSufficientMemory",
                                      "kubelet has sufficient memory available"),
                                     ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                                     ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available")):
                conds.append({"type": typ, "status": "False", "lastHeartbeatTime": now,
                              "lastTransitionTime": now, "reason": reason, "message": msg})
            conds.append({"type": "Ready", "status": "True", "lastHeartbeatTime": now, "lastTransitionTime": now,
                          "reason": "KubeletReady", "message": "kubelet is posting ready status"})
            cap = {"cpu": "4", "memory": "16331000Ki", "pods": "110", "ephemeral-storage": "102626232Ki",
                   "hugepages-2Mi": "0"}
            node = {"metadata": {"name": name, "labels": labels,
                                 "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
                    "spec": spec,
                    "status": {"conditions": conds, "capacity": cap, "allocatable": dict(cap),
                               "addresses": [{"type": "InternalIP", "address": f"172.18.0.{i + 2}"},
                                             {"type": "Hostname", "address": name}],
                               "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                               "nodeInfo": {"machineID": uuid.uuid4().hex, "systemUUID": str(uuid.uuid4()),
                                            "bootID": str(uuid.uuid4()), "kernelVersion": "6.1.0-opsbook",
                                            "osImage": "Debian GNU/Linux 12 (bookworm)",
                                            "containerRuntimeVersion": "containerd://2.1.0",
                                            "kubeletVersion": "v1.37.0", "kubeProxyVersion": "",
                                            "operatingSystem": "linux", "architecture": "amd64"}}}
            c.create(NODES, "", node, internal=True)
        c.create(SCS, "", {"metadata": {"name": "standard", "annotations": {
            "storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "opsbook.test/simulated", "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate"}, internal=True)
        c.create(SVCS, "default", {"metadata": {"name": "kubernetes", "labels": {
            "component": "apiserver", "provider": "kubernetes"}}, "spec": {
            "clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]}},
            internal=True)
        # the API server's own endpoints (the apiserver writes them; there is no selector)
        c.create(EPS, "default", {"metadata": {"name": "kubernetes", "labels": {
            "endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": "172.18.0.2"}],
                         "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}]}, internal=True)
        c.create(SLICES, "default", {"metadata": {"name": "kubernetes", "labels": {
            "kubernetes.io/service-name": "kubernetes"}}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["172.18.0.2"], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}, internal=True)
        self.namespaces()

    # ------------------------------------------------------------ the tick

    def tick(self) -> None:
        self.namespaces()
        self.garbage_collect()
        self.deployments()
        self.replicasets()
        self.daemonsets()
        self.statefulsets()
        self.autoscalers()
        self.cronjobs()
        self.jobs()
        self.schedule()
        self.kubelet()
        self.endpoints()
        self.volumes()
        self.nodes()

    # ------------------------------------------------------------ namespaces

    def namespaces(self) -> None:
        c = self.c
        for nso in list(c.objects(NSS)):
            name = nso["metadata"]["name"]
            if nso["metadata"].get("deletionTimestamp"):
                remaining = 0
                for r in list(c.data):
                    if not r.namespaced:
                        continue
                    for o in [o for o in c.data[r].values() if o["metadata"].get("namespace") == name]:
                        remaining += 1
                        if not o["metadata"].get("deletionTimestamp"):
                            try:
                                c.delete(r, name, o["metadata"]["name"], {}, internal=True)
                            except ApiError:
                                pass
                if remaining == 0 or not any(o["metadata"].get("namespace") == name
                                             for r in c.data if r.namespaced for o in c.data[r].values()):
                    c._drop(NSS, nso)
                continue
            c.namespace_defaults(name)

    # ------------------------------------------------------------ garbage collector

    def garbage_collect(self) -> None:
        c = self.c
        uids: dict[str, dict] = {}
        for r in c.data:
            for o in c.data[r].values():
                uids[o["metadata"]["uid"]] = o
        for r in list(c.data):
            for o in list(c.data[r].values()):
                refs = o["metadata"].get("ownerReferences")
                if refs:
                    owners = [uids.get(ref.get("uid")) for ref in refs]
                    if all(ow is None for ow in owners):
                        if not o["metadata"].get("deletionTimestamp"):
                            self._delete(r, o)
                        continue
                    if any(ow is not None and ow["metadata"].get("deletionTimestamp") and
                           "foregroundDeletion" in (ow["metadata"].get("finalizers") or []) for ow in owners):
                        if not o["metadata"].get("deletionTimestamp"):
                            try:
                                c.delete(r, o["metadata"].get("namespace", ""), o["metadata"]["name"],
                                         {"propagationPolicy": "Foreground"}, internal=True)
                            except ApiError:
                                pass
                fins = o["metadata"].get("finalizers") or []
                if "foregroundDeletion" in fins and o["metadata"].get("deletionTimestamp"):
                    if not c._has_dependents(o):
                        new = copy.deepcopy(o)
                        new["metadata"]["finalizers"] = [f for f in fins if f != "foregroundDeletion"]
                        self._update(r, new)

    # ------------------------------------------------------------ deployments

    def deployments(self) -> None:
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

    # ------------------------------------------------------------ pods owned by controllers

    def _owned_pods(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for p in self.c.objects(PODS):
            uid = _controller_uid(p)
            if uid:
                out.setdefault(uid, []).append(p)
        return out

    def _pod_from_template(self, owner: dict, kind: str, api_version: str, tmpl: dict, *, name=None,
                           generate=None, extra_labels=None) -> dict:
        t = copy.deepcopy(tmpl)
        meta: dict[str, Any] = {"labels": dict((t.get("metadata") or {}).get("labels") or {}),
                "ownerReferences": [_owner_ref(owner, kind, api_version)]}
        if extra_labels:
            meta["labels"].update(extra_labels)
        ann = (t.get("metadata") or {}).get("annotations")
        if ann:
            meta["annotations"] = dict(ann)
        if name:
            meta["name"] = name
        else:
            meta["generateName"] = generate or owner["metadata"]["name"] + "-"
        return {"metadata": meta, "spec": t.get("spec") or {}}

    def replicasets(self) -> None:
        c = self.c
        owned = self._owned_pods()
        for rs in list(c.objects(RSS)):
            if rs["metadata"].get("deletionTimestamp"):
                continue
            ns = rs["metadata"]["namespace"]
            pods = [p for p in owned.get(rs["metadata"]["uid"], []) if _active(p)]
            want = int(rs["spec"].get("replicas", 1))
            if len(pods) < want:
                for _ in range(min(want - len(pods), 50)):
                    p = self._create(PODS, ns, self._pod_from_template(rs, "ReplicaSet", "apps/v1",
                                                                        rs["spec"]["template"]))
                    if p:
                        pods.append(p)
                        self._event(rs, "SuccessfulCreate", f"Created pod: {p['metadata']['name']}",
                                    component="replicaset-controller")
                    else:
                        self._failed_create(rs, "replicaset-controller")
                        break
            elif len(pods) > want:
                ranked = sorted(pods, key=lambda p: (0 if not p["spec"].get("nodeName") else
                                                     1 if not _is_ready(p) else 2,
                                                     [-ord(ch) for ch in p["metadata"]["creationTimestamp"]]))
                for p in ranked[: len(pods) - want]:
                    self._delete(PODS, p)
                    self._event(rs, "SuccessfulDelete", f"Deleted pod: {p['metadata']['name']}",
                                component="replicaset-controller")
                pods = [p for p in pods if c.raw(PODS, ns, p["metadata"]["name"]) is not None]
            min_ready = int(rs["spec"].get("minReadySeconds") or 0)
            st = {"replicas": len(pods), "fullyLabeledReplicas": len(pods),
                  "readyReplicas": sum(1 for p in pods if _is_ready(p)),
                  "availableReplicas": sum(1 for p in pods if _is_available(p, min_ready)),
                  "observedGeneration": rs["metadata"].get("generation", 1)}
            st = {k: v for k, v in st.items() if v or k == "replicas"}
            if st != rs.get("status"):
                upd = copy.deepcopy(c.raw(RSS, ns, rs["metadata"]["name"]) or rs)
                upd["status"] = st
                self._update(RSS, upd, "status")

    # ------------------------------------------------------------ controller revisions (DaemonSet, StatefulSet)

    def _revision(self, owner: dict, kind: str, tmpl: dict, h: str) -> None:
        """Keep a ControllerRevision per template, as `kubectl rollout history|undo` reads them."""
        c = self.c
        ns, name, uid = owner["metadata"]["namespace"], owner["metadata"]["name"], owner["metadata"]["uid"]
        crs = [cr for cr in c.objects(CREVS, ns) if _controller_uid(cr) == uid]
        max_rev = max((int(cr.get("revision") or 0) for cr in crs), default=0)
        cr_name = f"{name}-{h}"
        cur = next((cr for cr in crs if cr["metadata"]["name"] == cr_name), None)
        if cur is None:
            data_tmpl = copy.deepcopy(tmpl)
            data_tmpl["$patch"] = "replace"
            labels = dict((tmpl.get("metadata") or {}).get("labels") or {})
            labels["controller-revision-hash"] = h
            created = self._create(CREVS, ns, {"metadata": {"name": cr_name, "labels": labels,
                                                            "ownerReferences": [_owner_ref(owner, kind, "apps/v1")]},
                                               "data": {"spec": {"template": data_tmpl}}, "revision": max_rev + 1})
            if created is not None:
                crs.append(created)
        elif int(cur.get("revision") or 0) < max_rev:
            new = copy.deepcopy(cur)
            new["revision"] = max_rev + 1
            self._update(CREVS, new)
        limit = int((owner.get("spec") or {}).get("revisionHistoryLimit", 10))
        old = sorted((cr for cr in crs if cr["metadata"]["name"] != cr_name), key=lambda cr: int(cr.get("revision") or 0))
        for cr in old[: max(0, len(old) - limit)]:
            self._delete(CREVS, cr)

    # ------------------------------------------------------------ daemonsets

    def daemonsets(self) -> None:
        c = self.c
        owned = self._owned_pods()
        nodes = c.objects(NODES)
        for ds in list(c.objects(DSS)):
            if ds["metadata"].get("deletionTimestamp"):
                continue
            ns = ds["metadata"]["namespace"]
            tmpl = ds["spec"]["template"]
            tspec = tmpl.get("spec") or {}
            h = template_hash(tmpl)[:10]
            self._revision(ds, "DaemonSet", tmpl, h)
            tols = list(tspec.get("tolerations") or []) + DS_TOLERATIONS
            eligible = []  # nodes that should run a daemon pod
            keep = set()  # nodes whose daemon pod may continue running (only NoExecute taints matter)
            for n in nodes:
                if not all((n["metadata"].get("labels") or {}).get(k) == v
                           for k, v in (tspec.get("nodeSelector") or {}).items()):
                    continue
                taints = (n.get("spec") or {}).get("taints") or []
                if all(_tolerates(tols, t) for t in taints if t.get("effect") == "NoExecute"):
                    keep.add(n["metadata"]["name"])
                if all(_tolerates(tols, t) for t in taints if t.get("effect") in ("NoSchedule", "NoExecute")):
                    eligible.append(n["metadata"]["name"])
            pods = [p for p in owned.get(ds["metadata"]["uid"], []) if _active(p)]
            occupied = {_target_node(p) for p in owned.get(ds["metadata"]["uid"], []) if not _terminal(p)}
            by_node: dict[str, list[dict]] = {}
            for p in pods:
                by_node.setdefault(_target_node(p) or "", []).append(p)
            for node in eligible:
                if node not in occupied:
                    pod = self._pod_from_template(ds, "DaemonSet", "apps/v1", tmpl, extra_labels={
                        "controller-revision-hash": h,
                        "pod-template-generation": str(ds["metadata"].get("generation", 1))})
                    ps = pod["spec"]
                    ps["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In",
                                                                "values": [node]}]}]}}}
                    ps.setdefault("tolerations", []).extend(copy.deepcopy(DS_TOLERATIONS))
                    p = self._create(PODS, ns, pod)
                    if p:
                        by_node[node] = [p]
                        self._event(ds, "SuccessfulCreate", f"Created pod: {p['metadata']['name']}",
                                    component="daemonset-controller")
                    else:
                        self._failed_create(ds, "daemonset-controller")
                        break
            for node, ps in list(by_node.items()):
                if node not in keep:
                    for p in ps:
                        self._delete(PODS, p)
                    by_node.pop(node)
                elif len(ps) > 1:
                    for p in ps[1:]:
                        self._delete(PODS, p)
                    by_node[node] = ps[:1]
            # rolling update
            if (ds["spec"].get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate":
                max_unavail = _int_or_percent(((ds["spec"].get("updateStrategy") or {}).get("rollingUpdate") or {})
                                              .get("maxUnavailable", 1), len(eligible), True) or 1
                cur = [ps[0] for ps in by_node.values()]
                unavailable = sum(1 for p in cur if not _is_ready(p))
                budget = max_unavail - unavailable
                for p in cur:
                    if budget <= 0:
                        break
                    if (p["metadata"].get("labels") or {}).get("controller-revision-hash") != h:
                        self._delete(PODS, p)
                        budget -= 1
            live = {n: ps[0] for n, ps in by_node.items() if c.raw(PODS, ns, ps[0]["metadata"]["name"])}
            cur = [p for n, p in live.items() if n in eligible]
            misscheduled = sum(1 for n in live if n not in eligible)
            min_ready = int(ds["spec"].get("minReadySeconds") or 0)
            ready = sum(1 for p in cur if _is_ready(p))
            avail = sum(1 for p in cur if _is_available(p, min_ready))
            st = {"currentNumberScheduled": len(cur), "desiredNumberScheduled": len(eligible),
                  "numberMisscheduled": misscheduled, "numberReady": ready,
                  "observedGeneration": ds["metadata"].get("generation", 1),
                  "updatedNumberScheduled": sum(1 for p in cur if (p["metadata"].get("labels") or {}).get(
                      "controller-revision-hash") == h),
                  "numberAvailable": avail, "numberUnavailable": max(len(eligible) - avail, 0)}
            st = {k: v for k, v in st.items() if v or k in ("currentNumberScheduled", "desiredNumberScheduled",
                                                             "numberMisscheduled", "numberReady")}
            if st != ds.get("status"):
                upd = copy.deepcopy(c.raw(DSS, ns, ds["metadata"]["name"]) or ds)
                upd["status"] = st
                self._update(DSS, upd, "status")

    # ------------------------------------------------------------ statefulsets

    def statefulsets(self) -> None:
        c = self.c
        owned = self._owned_pods()
        for ss in list(c.objects(STSS)):
            if ss["metadata"].get("deletionTimestamp"):
                continue
            ns, name = ss["metadata"]["namespace"], ss["metadata"]["name"]
            spec = ss["spec"]
            want = int(spec.get("replicas", 1))
            tmpl = spec["template"]
            rev = f"{name}-{template_hash(tmpl)[:10]}"
            self._revision(ss, "StatefulSet", tmpl, template_hash(tmpl)[:10])
            ordered = spec.get("podManagementPolicy", "OrderedReady") == "OrderedReady"
            pods = {p["metadata"]["name"]: p for p in owned.get(ss["metadata"]["uid"], [])}
            blocked = False
            for i in range(want):
                pn = f"{name}-{i}"
                p = pods.get(pn)
                if p is None or p["metadata"].get("deletionTimestamp"):
                    if p is None:
                        pod = self._pod_from_template(ss, "StatefulSet", "apps/v1", tmpl, name=pn, extra_labels={
                            "controller-revision-hash": rev, "statefulset.kubernetes.io/pod-name": pn,
                            "apps.kubernetes.io/pod-index": str(i)})
                        pod["spec"]["hostname"] = pn
                        if spec.get("serviceName"):
                            pod["spec"]["subdomain"] = spec["serviceName"]
                        for vct in spec.get("volumeClaimTemplates") or []:
                            claim = f"{vct['metadata']['name']}-{pn}"
                            if c.raw(PVCS, ns, claim) is None:
                                labels = dict((vct.get("metadata") or {}).get("labels") or {})
                                labels.update((tmpl.get("metadata") or {}).get("labels") or {})
                                self._create(PVCS, ns, {"metadata": {"name": claim, "labels": labels},
                                                        "spec": copy.deepcopy(vct.get("spec") or {})})
                            vols = pod["spec"].setdefault("volumes", [])
                            if not any(v.get("name") == vct["metadata"]["name"] for v in vols):
                                vols.append({"name": vct["metadata"]["name"],
                                             "persistentVolumeClaim": {"claimName": claim}})
                        created = self._create(PODS, ns, pod)
                        if created:
                            pods[pn] = created
                            self._event(ss, "SuccessfulCreate", f"create Pod {pn} in StatefulSet {name} successful",
                                        component="statefulset-controller")
                        else:
                            self._event(ss, "FailedCreate", f"create Pod {pn} in StatefulSet {name} failed error: "
                                        f"{self.last_error}", "Warning", component="statefulset-controller")
                    if ordered:
                        blocked = True
                        break
                elif ordered and not _is_ready(p):
                    blocked = True
                    break
            # scale down, highest ordinal first
            extra = sorted([p for n_, p in pods.items() if _ordinal(n_, name) >= want],
                           key=lambda p: -_ordinal(p["metadata"]["name"], name))
            if extra and not blocked:
                for p in extra[: 1 if ordered else len(extra)]:
                    self._delete(PODS, p)
                    pods.pop(p["metadata"]["name"], None)
            # rolling update, highest ordinal first, one at a time
            us = spec.get("updateStrategy") or {}
            if us.get("type", "RollingUpdate") == "RollingUpdate" and not blocked and not extra:
                partition = int((us.get("rollingUpdate") or {}).get("partition") or 0)
                maybe = [pods.get(f"{name}-{i}") for i in range(want)]
                in_range = [p for p in maybe if p is not None]
                if len(in_range) == want and all(_is_ready(p) for p in in_range):
                    for i in reversed(range(partition, want)):
                        p = in_range[i]
                        if (p["metadata"].get("labels") or {}).get("controller-revision-hash") != rev:
                            self._delete(PODS, p)
                            pods.pop(p["metadata"]["name"], None)
                            break
            live = [p for p in pods.values() if c.raw(PODS, ns, p["metadata"]["name"]) is not None]
            ready = sum(1 for p in live if _is_ready(p))
            updated = sum(1 for p in live if (p["metadata"].get("labels") or {}).get("controller-revision-hash") == rev)
            old_status = ss.get("status") or {}
            current_rev = old_status.get("currentRevision") or rev
            if updated == want and ready == want and len(live) == want:
                current_rev = rev
            current = sum(1 for p in live if (p["metadata"].get("labels") or {}).get(
                "controller-revision-hash") == current_rev)
            st = {"observedGeneration": ss["metadata"].get("generation", 1), "replicas": len(live),
                  "readyReplicas": ready, "currentReplicas": current, "updatedReplicas": updated,
                  "currentRevision": current_rev, "updateRevision": rev, "collisionCount": 0,
                  "availableReplicas": sum(1 for p in live if _is_available(p, int(spec.get("minReadySeconds") or 0)))}
            st = {k: v for k, v in st.items() if v or k in ("replicas", "availableReplicas")}
            if st != old_status:
                upd = copy.deepcopy(c.raw(STSS, ns, name) or ss)
                upd["status"] = st
                self._update(STSS, upd, "status")

    # ------------------------------------------------------------ horizontal pod autoscalers

    def autoscalers(self) -> None:
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

    # ------------------------------------------------------------ cronjobs

    def cronjobs(self) -> None:
        from .cron import CronError, last_due

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
            due_check = self.cron_checked.get(uid) != check_key
            self.cron_checked[uid] = check_key
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

    # ------------------------------------------------------------ jobs

    def jobs(self) -> None:
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

    # ------------------------------------------------------------ volumes

    def volumes(self) -> None:
        """The PV controller with a simulated provisioner (Immediate binding), and the pvc/pv-protection
        finalizers (a claim in use by a pod stays until the pod is gone)."""
        c = self.c
        used: set[tuple[str, str]] = set()
        for p in c.objects(PODS):
            if _terminal(p):
                continue
            for v in (p.get("spec") or {}).get("volumes") or []:
                claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
                if claim:
                    used.add((p["metadata"]["namespace"], claim))
        for pvc in list(c.objects(PVCS)):
            ns, name = pvc["metadata"]["namespace"], pvc["metadata"]["name"]
            if pvc["metadata"].get("deletionTimestamp"):
                fins = pvc["metadata"].get("finalizers") or []
                if "kubernetes.io/pvc-protection" in fins and (ns, name) not in used:
                    new = copy.deepcopy(pvc)
                    new["metadata"]["finalizers"] = [f for f in fins if f != "kubernetes.io/pvc-protection"]
                    self._update(PVCS, new)
                continue
            if (pvc.get("status") or {}).get("phase") == "Bound":
                continue
            spec = pvc.get("spec") or {}
            sc = c.raw(SCS, "", spec.get("storageClassName") or "")
            if sc is None:
                continue  # no class, no provisioner: stays Pending, as on a real cluster
            size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
            pv_name = spec.get("volumeName") or f"pvc-{pvc['metadata']['uid']}"
            if c.raw(PVS, "", pv_name) is None:
                pv = self._create(PVS, "", {
                    "metadata": {"name": pv_name, "annotations": {
                        "pv.kubernetes.io/provisioned-by": sc.get("provisioner", "")}},
                    "spec": {"capacity": {"storage": size}, "accessModes": spec.get("accessModes"),
                             "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy", "Delete"),
                             "storageClassName": sc["metadata"]["name"], "volumeMode": "Filesystem",
                             "hostPath": {"path": f"/var/local-path-provisioner/{pv_name}", "type": ""},
                             "claimRef": {"kind": "PersistentVolumeClaim", "namespace": ns, "name": name,
                                          "uid": pvc["metadata"]["uid"], "apiVersion": "v1"}}})
                if pv is None:
                    continue
                pv = copy.deepcopy(pv)
                pv["status"] = {"phase": "Bound"}
                self._update(PVS, pv, "status")
            new = copy.deepcopy(pvc)
            new["spec"]["volumeName"] = pv_name
            ann = new["metadata"].setdefault("annotations", {})
            ann["pv.kubernetes.io/bind-completed"] = "yes"
            ann["pv.kubernetes.io/bound-by-controller"] = "yes"
            ann["volume.kubernetes.io/storage-provisioner"] = sc.get("provisioner", "")
            out = self._update(PVCS, new)
            if out is not None:
                out = copy.deepcopy(out)
                out["status"] = {"phase": "Bound", "accessModes": spec.get("accessModes"),
                                 "capacity": {"storage": size}}
                self._update(PVCS, out, "status")
                self._event(out, "ProvisioningSucceeded", f"Successfully provisioned volume {pv_name}",
                            component="persistentvolume-controller")
        # released volumes: Delete reclaims them, Retain keeps them Released
        for pv in list(c.objects(PVS)):
            ref = (pv.get("spec") or {}).get("claimRef") or {}
            if not ref or pv["metadata"].get("deletionTimestamp"):
                if pv["metadata"].get("deletionTimestamp"):
                    fins = pv["metadata"].get("finalizers") or []
                    if "kubernetes.io/pv-protection" in fins and (pv.get("status") or {}).get("phase") != "Bound":
                        new = copy.deepcopy(pv)
                        new["metadata"]["finalizers"] = [f for f in fins if f != "kubernetes.io/pv-protection"]
                        self._update(PVS, new)
                continue
            claim = c.raw(PVCS, ref.get("namespace", ""), ref.get("name", ""))
            if claim is None or claim["metadata"]["uid"] != ref.get("uid"):
                if pv["spec"].get("persistentVolumeReclaimPolicy") == "Delete":
                    new = copy.deepcopy(pv)
                    new["status"] = {"phase": "Released"}
                    self._update(PVS, new, "status")
                    self._delete(PVS, pv)
                elif (pv.get("status") or {}).get("phase") != "Released":
                    new = copy.deepcopy(pv)
                    new["status"] = {"phase": "Released"}
                    self._update(PVS, new, "status")

    # ------------------------------------------------------------ endpoints

    def _endpoint_slice(self, svc: dict, pods: list[dict], ports: list[dict]) -> None:
        c = self.c
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        want = _slice_body(svc, pods, ports)
        cur = next((sl for sl in c.objects(SLICES, ns)
                    if (sl["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == name and
                    (sl["metadata"].get("labels") or {}).get("endpointslice.kubernetes.io/managed-by")
                    == SLICE_MANAGER), None)
        if cur is None:
            body = {"metadata": {"generateName": f"{name}-", "labels": want["labels"],
                                 "ownerReferences": [_owner_ref(svc, "Service", "v1")]},
                    "addressType": "IPv4"}
            if want["endpoints"]:
                body["endpoints"] = want["endpoints"]
            if want["ports"]:
                body["ports"] = want["ports"]
            self._create(SLICES, ns, body)
            return
        if cur.get("endpoints") != want["endpoints"] or cur.get("ports") != want["ports"] or \
                (cur["metadata"].get("labels") or {}) != want["labels"]:
            new = copy.deepcopy(cur)
            new["metadata"]["labels"] = want["labels"]
            for k in ("endpoints", "ports"):
                if want[k]:
                    new[k] = want[k]
                else:
                    new.pop(k, None)
            self._update(SLICES, new)

    def endpoints(self) -> None:
        c = self.c
        pods_by_ns: dict[str, list[dict]] = {}
        for p in c.objects(PODS):
            pods_by_ns.setdefault(p["metadata"]["namespace"], []).append(p)
        seen = set()
        for svc in list(c.objects(SVCS)):
            ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
            sel = (svc.get("spec") or {}).get("selector")
            if not sel:
                continue
            seen.add((ns, name))
            ready: list[dict] = []
            not_ready: list[dict] = []
            chosen: list[dict] = []
            for p in pods_by_ns.get(ns, []):
                if not match_map_selector(sel, p["metadata"].get("labels")) or _terminal(p):
                    continue
                ip = (p.get("status") or {}).get("podIP")
                if not ip or p["metadata"].get("deletionTimestamp"):
                    continue
                addr = {"ip": ip, "nodeName": p["spec"].get("nodeName"),
                        "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"],
                                      "uid": p["metadata"]["uid"]}}
                (ready if _is_ready(p) else not_ready).append(addr)
                chosen.append(p)
            ports = []
            for sp in (svc.get("spec") or {}).get("ports") or []:
                tp = sp.get("targetPort", sp.get("port"))
                if isinstance(tp, str) and not tp.isdigit():
                    num = None
                    for p in chosen:
                        for ctr in p["spec"].get("containers") or []:
                            for cp in ctr.get("ports") or []:
                                if cp.get("name") == tp:
                                    num = cp.get("containerPort")
                    if num is None:
                        continue
                    tp = num
                e = {"port": int(tp), "protocol": sp.get("protocol", "TCP")}
                if sp.get("name"):
                    e["name"] = sp["name"]
                ports.append(e)
            subset: dict[str, Any] = {}
            if ready:
                subset["addresses"] = sorted(ready, key=lambda a: a["ip"])
            if not_ready:
                subset["notReadyAddresses"] = sorted(not_ready, key=lambda a: a["ip"])
            if subset and ports:
                subset["ports"] = ports
            self._endpoint_slice(svc, chosen, ports)
            labels = dict(svc["metadata"].get("labels") or {})
            labels["endpoints.kubernetes.io/managed-by"] = "endpoint-controller"
            cur = c.raw(EPS, ns, name)
            body: dict[str, Any] = {"metadata": {"name": name, "namespace": ns, "labels": labels}}
            if subset and ports:
                body["subsets"] = [subset]
            if cur is None:
                self._create(EPS, ns, body)
            else:
                if cur.get("subsets") != body.get("subsets") or (cur["metadata"].get("labels") or {}) != labels:
                    new = copy.deepcopy(cur)
                    new["metadata"]["labels"] = labels
                    if "subsets" in body:
                        new["subsets"] = body["subsets"]
                    else:
                        new.pop("subsets", None)
                    self._update(EPS, new)
        for sl in list(c.objects(SLICES)):
            lb = sl["metadata"].get("labels") or {}
            if lb.get("endpointslice.kubernetes.io/managed-by") == SLICE_MANAGER and \
                    (sl["metadata"]["namespace"], lb.get("kubernetes.io/service-name")) not in seen:
                self._delete(SLICES, sl)
        for ep in list(c.objects(EPS)):
            key = (ep["metadata"]["namespace"], ep["metadata"]["name"])
            if key not in seen and (ep["metadata"].get("labels") or {}).get(
                    "endpoints.kubernetes.io/managed-by") == "endpoint-controller":
                self._delete(EPS, ep)


def _slice_body(svc: dict, pods: list[dict], ports: list[dict]) -> dict:
    eps = []
    for p in sorted(pods, key=lambda p: (p.get("status") or {}).get("podIP") or ""):
        ready = _is_ready(p)
        terminating = bool(p["metadata"].get("deletionTimestamp"))
        eps.append({"addresses": [p["status"]["podIP"]],
                    "conditions": {"ready": ready and not terminating, "serving": ready, "terminating": terminating},
                    "nodeName": p["spec"].get("nodeName"),
                    "targetRef": {"kind": "Pod", "namespace": p["metadata"]["namespace"],
                                  "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]}})
    labels = dict(svc["metadata"].get("labels") or {})
    labels.update({"kubernetes.io/service-name": svc["metadata"]["name"],
                   "endpointslice.kubernetes.io/managed-by": SLICE_MANAGER})
    # a real EndpointSlice always names its ports (kubectl describe dereferences the name)
    sports = [{"name": p.get("name", ""), "port": p["port"], "protocol": p.get("protocol", "TCP")} for p in ports]
    return {"addressType": "IPv4", "endpoints": eps or None, "ports": sports or None, "labels": labels}


def _ordinal(pod_name: str, sts: str) -> int:
    suffix = pod_name[len(sts) + 1:]
    return int(suffix) if suffix.isdigit() else -1


