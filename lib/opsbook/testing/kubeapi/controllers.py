"""Simulated control plane: nodes, scheduler, kubelet, and the Deployment / ReplicaSet / DaemonSet /
StatefulSet / Job / Endpoints / namespace / garbage-collection controllers. One background thread,
ticking every ~0.1 s, writing through the same store as API clients (so watches see every change)."""

from __future__ import annotations

import copy
import json
import math
import re
import threading
import time
import uuid

from .errors import ApiError
from .resources import res
from .selectors import match_map_selector, match_selector_object
from .store import ALNUM, Cluster, image_never_pulls, now_iso, parse_iso

PODS = res("v1", "pods")
NODES = res("v1", "nodes")
NSS = res("v1", "namespaces")
SAS = res("v1", "serviceaccounts")
CMS = res("v1", "configmaps")
SVCS = res("v1", "services")
EPS = res("v1", "endpoints")
SLICES = res("discovery.k8s.io/v1", "endpointslices")
SLICE_MANAGER = "endpointslice-controller.k8s.io"
DEPLOY = res("apps/v1", "deployments")
RSS = res("apps/v1", "replicasets")
DSS = res("apps/v1", "daemonsets")
STSS = res("apps/v1", "statefulsets")
JOBS = res("batch/v1", "jobs")

TICK = 0.1
PULL_FAIL_SECONDS = 1.0
CRASH_RUN_SECONDS = 0.3
RUN_TO_COMPLETION_SECONDS = 0.5
READY_DELAY_ANNOTATION = "opsbook.test/ready-delay"
RUN_SECONDS_ANNOTATION = "opsbook.test/run-seconds"


def fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def template_hash(tmpl: dict, collision: int = 0) -> str:
    t = copy.deepcopy(tmpl or {})
    (t.get("metadata") or {}).get("labels", {}).pop("pod-template-hash", None)
    h = fnv32a((json.dumps(t, sort_keys=True) + str(collision)).encode())
    return "".join(ALNUM[b % len(ALNUM)] for b in str(h).encode())


def _strip_hash(tmpl: dict) -> dict:
    t = copy.deepcopy(tmpl or {})
    labels = (t.get("metadata") or {}).get("labels")
    if labels is not None:
        labels.pop("pod-template-hash", None)
    return t


def _owner_ref(obj: dict, kind: str, api_version: str) -> dict:
    return {"apiVersion": api_version, "kind": kind, "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def _controller_uid(obj: dict) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


def _cond(conds: list, typ: str) -> dict | None:
    return next((c for c in conds if c.get("type") == typ), None)


def _set_cond(conds: list, typ: str, status: str, reason: str | None = None, message: str | None = None,
              *, with_update_time: bool = False, with_probe_time: bool = False, touch: bool = False) -> None:
    now = now_iso()
    cur = _cond(conds, typ)
    new = {"type": typ, "status": status}
    if with_probe_time:
        new["lastProbeTime"] = None
    if with_update_time:
        new["lastUpdateTime"] = now if (touch or not cur or cur.get("status") != status or
                                        cur.get("reason") != reason) else cur.get("lastUpdateTime", now)
    new["lastTransitionTime"] = cur["lastTransitionTime"] if cur and cur.get("status") == status and \
        cur.get("lastTransitionTime") else now
    if reason:
        new["reason"] = reason
    if message:
        new["message"] = message
    if cur is None:
        conds.append(new)
    else:
        conds[conds.index(cur)] = new


def _int_or_percent(v, total: int, round_up: bool) -> int:
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.endswith("%"):
        frac = int(v[:-1]) * total / 100.0
        return math.ceil(frac) if round_up else math.floor(frac)
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def _is_ready(pod: dict) -> bool:
    c = _cond((pod.get("status") or {}).get("conditions") or [], "Ready")
    return bool(c and c.get("status") == "True")


def _is_available(pod: dict, min_ready: int) -> bool:
    c = _cond((pod.get("status") or {}).get("conditions") or [], "Ready")
    if not c or c.get("status") != "True":
        return False
    if min_ready <= 0:
        return True
    return time.time() - parse_iso(c["lastTransitionTime"]) >= min_ready


def _terminal(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _active(pod: dict) -> bool:
    return not _terminal(pod) and not pod["metadata"].get("deletionTimestamp")


def _tolerates(tolerations: list, taint: dict) -> bool:
    for t in tolerations or []:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator") == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _shell_cmd(container: dict) -> list[str]:
    return [str(x) for x in (container.get("command") or []) + (container.get("args") or [])]


def container_behaviour(container: dict, restart_policy: str, pod_annotations: dict) -> dict:
    """What the simulated container does: pull failure, exit code after a while, or run forever."""
    if image_never_pulls(container.get("image") or ""):
        return {"pull": False}
    cmd = _shell_cmd(container)
    script = None
    if len(cmd) >= 3 and cmd[0] in ("sh", "/bin/sh", "bash", "/bin/bash") and cmd[1] == "-c":
        script = cmd[2].strip()
    exit_code, run_for = None, None
    if cmd in (["false"], ["/bin/false"], ["/usr/bin/false"]) or script == "false":
        exit_code, run_for = 1, CRASH_RUN_SECONDS
    elif cmd in (["true"], ["/bin/true"], ["/usr/bin/true"]) or script == "true":
        exit_code, run_for = 0, CRASH_RUN_SECONDS
    elif script is not None and re.fullmatch(r"exit\s+(\d+)", script):
        exit_code, run_for = int(script.split()[1]), CRASH_RUN_SECONDS
    elif (len(cmd) == 2 and cmd[0] in ("sleep", "/bin/sleep") and re.fullmatch(r"\d+(\.\d+)?", cmd[1])) or (
            script and re.fullmatch(r"sleep\s+\d+(\.\d+)?", script)):
        secs = float(cmd[1] if script is None else script.split()[1])
        exit_code, run_for = 0, secs
    if exit_code is None and restart_policy != "Always":
        exit_code, run_for = 0, float(pod_annotations.get(RUN_SECONDS_ANNOTATION) or RUN_TO_COMPLETION_SECONDS)
    probe = container.get("readinessProbe") or {}
    pcmd = ((probe.get("exec") or {}).get("command")) or []
    never_ready = pcmd in (["false"], ["/bin/false"]) or (len(pcmd) >= 3 and pcmd[1] == "-c" and
                                                         re.fullmatch(r"false|exit\s+[1-9]\d*", pcmd[2].strip()))
    return {"pull": True, "exit": exit_code, "run_for": run_for, "never_ready": bool(never_ready),
            "initial_delay": float(probe.get("initialDelaySeconds") or 0) if probe else 0.0}


class Controllers:
    def __init__(self, cluster: Cluster):
        self.c = cluster
        self.thread = threading.Thread(target=self._loop, name="kubeapi-controllers", daemon=True)
        self.rr = 0
        self.errors = 0

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
            time.sleep(max(0.0, TICK - (time.time() - t0)))

    # ------------------------------------------------------------ helpers

    def _create(self, r, ns, obj):
        try:
            return self.c.create(r, ns, obj, internal=True)
        except ApiError:
            return None

    def _update(self, r, obj, sub=None):
        try:
            return self.c.update(r, obj["metadata"].get("namespace", ""), obj["metadata"]["name"], obj,
                                 subresource=sub, internal=True)
        except ApiError:
            return None

    def _delete(self, r, obj):
        try:
            return self.c.delete(r, obj["metadata"].get("namespace", ""), obj["metadata"]["name"], {},
                                 internal=True)
        except ApiError:
            return None

    def _event(self, obj, reason, message, typ="Normal", component="kubelet"):
        self.c.record_event(obj, reason, message, typ, component)

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
            if cp:
                labels["node-role.kubernetes.io/control-plane"] = ""
            else:
                labels["node-role.kubernetes.io/worker"] = ""
            spec = {"podCIDR": f"10.244.{i}.0/24", "podCIDRs": [f"10.244.{i}.0/24"]}
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
        c.create(SVCS, "default", {"metadata": {"name": "kubernetes", "labels": {
            "component": "apiserver", "provider": "kubernetes"}}, "spec": {
            "clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]}},
            internal=True)
        self.namespaces()

    # ------------------------------------------------------------ the tick

    def tick(self) -> None:
        self.namespaces()
        self.garbage_collect()
        self.deployments()
        self.replicasets()
        self.daemonsets()
        self.statefulsets()
        self.jobs()
        self.schedule()
        self.kubelet()
        self.endpoints()
        self.nodes()

    # ------------------------------------------------------------ nodes

    def nodes(self) -> None:
        overrides = getattr(self.c, "node_overrides", {})
        for name, ov in list(overrides.items()):
            node = self.c.raw(NODES, "", name)
            if node is None:
                continue
            new = copy.deepcopy(node)
            conds = new["status"]["conditions"]
            ready = ov.get("ready", True)
            cur = _cond(conds, "Ready")
            if (cur["status"] == "True") != bool(ready):
                now = now_iso()
                cur.update({"status": "True" if ready else "Unknown", "lastTransitionTime": now,
                            "lastHeartbeatTime": now,
                            "reason": "KubeletReady" if ready else "NodeStatusUnknown",
                            "message": "kubelet is posting ready status" if ready else
                            "Kubelet stopped posting node status."})
                self._update(NODES, new, "status")

    def _ready_nodes(self) -> list[dict]:
        out = []
        for n in self.c.objects(NODES):
            c = _cond((n.get("status") or {}).get("conditions") or [], "Ready")
            if c and c.get("status") == "True":
                out.append(n)
        return out

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
        rev = (new_rs["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision")
        if (d["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision") != rev:
            upd = copy.deepcopy(d)
            upd["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/revision"] = rev
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
        rss_now = [c.raw(RSS, ns, rs["metadata"]["name"]) for rs in rss]
        rss_now = [rs for rs in rss_now if rs is not None]
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
        # unhealthy first
        for rs in old_sorted:
            if max_down <= 0:
                break
            n = int(rs["spec"].get("replicas") or 0)
            unhealthy = n - int((rs.get("status") or {}).get("availableReplicas") or 0)
            k = min(unhealthy, max_down, n)
            if k > 0:
                set_replicas(rs, n - k)
                max_down -= k
                rs["spec"]["replicas"] = n - k
        avail = int((new_rs.get("status") or {}).get("availableReplicas") or 0) + sum(
            min(int(rs["spec"].get("replicas") or 0), int((rs.get("status") or {}).get("availableReplicas") or 0))
            for rs in old)
        can_down = min(avail - min_avail, max_down)
        for rs in old_sorted:
            if can_down <= 0:
                break
            n = int(rs["spec"].get("replicas") or 0)
            k = min(n, can_down)
            if k > 0:
                set_replicas(rs, n - k)
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
        meta = {"labels": dict((t.get("metadata") or {}).get("labels") or {}),
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

    # ------------------------------------------------------------ daemonsets

    def daemonsets(self) -> None:
        c = self.c
        owned = self._owned_pods()
        nodes = self._ready_nodes()
        for ds in list(c.objects(DSS)):
            if ds["metadata"].get("deletionTimestamp"):
                continue
            ns = ds["metadata"]["namespace"]
            tmpl = ds["spec"]["template"]
            tspec = tmpl.get("spec") or {}
            h = template_hash(tmpl)[:10]
            eligible = []
            for n in nodes:
                if (n.get("spec") or {}).get("unschedulable"):
                    continue
                taints = [t for t in (n.get("spec") or {}).get("taints") or []
                          if t.get("effect") in ("NoSchedule", "NoExecute")]
                if not all(_tolerates(tspec.get("tolerations"), t) for t in taints):
                    continue
                if not all((n["metadata"].get("labels") or {}).get(k) == v
                           for k, v in (tspec.get("nodeSelector") or {}).items()):
                    continue
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
                    tol = ps.setdefault("tolerations", [])
                    for key, eff in (("node.kubernetes.io/not-ready", "NoExecute"),
                                     ("node.kubernetes.io/unreachable", "NoExecute"),
                                     ("node.kubernetes.io/disk-pressure", "NoSchedule"),
                                     ("node.kubernetes.io/memory-pressure", "NoSchedule"),
                                     ("node.kubernetes.io/pid-pressure", "NoSchedule"),
                                     ("node.kubernetes.io/unschedulable", "NoSchedule")):
                        tol.append({"key": key, "operator": "Exists", "effect": eff})
                    p = self._create(PODS, ns, pod)
                    if p:
                        by_node[node] = [p]
                        self._event(ds, "SuccessfulCreate", f"Created pod: {p['metadata']['name']}",
                                    component="daemonset-controller")
            for node, ps in list(by_node.items()):
                if node not in eligible:
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
            cur = [ps[0] for n, ps in by_node.items() if c.raw(PODS, ns, ps[0]["metadata"]["name"])]
            min_ready = int(ds["spec"].get("minReadySeconds") or 0)
            ready = sum(1 for p in cur if _is_ready(p))
            avail = sum(1 for p in cur if _is_available(p, min_ready))
            st = {"currentNumberScheduled": len(cur), "desiredNumberScheduled": len(eligible),
                  "numberMisscheduled": 0, "numberReady": ready,
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
                        created = self._create(PODS, ns, pod)
                        if created:
                            pods[pn] = created
                            self._event(ss, "SuccessfulCreate", f"create Pod {pn} in StatefulSet {name} successful",
                                        component="statefulset-controller")
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
                in_range = [pods.get(f"{name}-{i}") for i in range(want)]
                if all(p is not None and _is_ready(p) for p in in_range):
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

    # ------------------------------------------------------------ scheduler

    def schedule(self) -> None:
        c = self.c
        nodes = [n for n in self._ready_nodes() if not (n.get("spec") or {}).get("unschedulable")]
        load: dict[str, int] = {n["metadata"]["name"]: 0 for n in nodes}
        pending = []
        for p in c.objects(PODS):
            nn = (p.get("spec") or {}).get("nodeName")
            if nn:
                if nn in load and not _terminal(p):
                    load[nn] += 1
            elif not p["metadata"].get("deletionTimestamp") and not _terminal(p):
                pending.append(p)
        for p in pending:
            spec = p.get("spec") or {}
            target = _target_node(p)
            fits = []
            for n in nodes:
                name = n["metadata"]["name"]
                if target and name != target:
                    continue
                taints = [t for t in (n.get("spec") or {}).get("taints") or []
                          if t.get("effect") in ("NoSchedule", "NoExecute")]
                if not all(_tolerates(spec.get("tolerations"), t) for t in taints):
                    continue
                if not all((n["metadata"].get("labels") or {}).get(k) == v
                           for k, v in (spec.get("nodeSelector") or {}).items()):
                    continue
                fits.append(name)
            new = copy.deepcopy(p)
            st = new.setdefault("status", {})
            conds = st.setdefault("conditions", [])
            if not fits:
                msg = f"0/{len(c.objects(NODES))} nodes are available: {len(c.objects(NODES))} node(s) didn't " \
                      f"match Pod's node affinity/selector or had untolerated taint."
                _set_cond(conds, "PodScheduled", "False", "Unschedulable", msg, with_probe_time=True)
                if new != p:
                    self._update(PODS, new, "status")
                    self._event(p, "FailedScheduling", msg, "Warning", component="default-scheduler")
                continue
            node = min(fits, key=lambda n: (load[n], n))
            load[node] += 1
            new["spec"]["nodeName"] = node
            out = self._update(PODS, new)
            if out is None:
                continue
            out = copy.deepcopy(out)
            _set_cond(out.setdefault("status", {}).setdefault("conditions", []), "PodScheduled", "True",
                      with_probe_time=True)
            self._update(PODS, out, "status")
            self._event(out, "Scheduled", f"Successfully assigned {p['metadata']['namespace']}/"
                        f"{p['metadata']['name']} to {node}", component="default-scheduler")

    # ------------------------------------------------------------ kubelet

    def kubelet(self) -> None:
        c = self.c
        now = time.time()
        nodes = {n["metadata"]["name"]: n for n in c.objects(NODES)}
        for p in list(c.objects(PODS)):
            spec = p.get("spec") or {}
            node = spec.get("nodeName")
            if not node or node not in nodes or _terminal(p):
                continue
            uid = p["metadata"]["uid"]
            if p["metadata"].get("deletionTimestamp"):
                term = c.sim.get(uid, {}).get("terminate_at")
                if term is not None and now >= term:
                    if p["metadata"].get("finalizers"):
                        c.sim[uid].pop("terminate_at", None)
                    else:
                        c._drop(PODS, p)
                continue
            sim = c.sim.setdefault(uid, {"created": now})
            if "start" not in sim:
                sim["start"] = now
                sim["containers"] = {}
                self.ip_for(p, sim, nodes[node])
            new = copy.deepcopy(p)
            st = new.setdefault("status", {})
            ann = p["metadata"].get("annotations") or {}
            ready_delay = float(ann.get(READY_DELAY_ANNOTATION) or c.ready_delay)
            policy = spec.get("restartPolicy", "Always")
            statuses = []
            all_ready = True
            all_done = True
            any_failed = False
            any_running = False
            init_ok = True
            init_statuses = []
            for ic in spec.get("initContainers") or []:
                s, ok = self._init_container(p, ic, sim, now, policy)
                init_statuses.append(s)
                if not ok:
                    init_ok = False
                    break
            for ctr in spec.get("containers") or []:
                if not init_ok:
                    statuses.append(self._cstatus(ctr, {"waiting": {"reason": "PodInitializing"}}, 0, False, {}))
                    all_ready = False
                    all_done = False
                    continue
                s, info = self._container(p, ctr, sim, now, policy, ready_delay)
                statuses.append(s)
                if not s["ready"]:
                    all_ready = False
                term = (s["state"] or {}).get("terminated")
                if info == "done":
                    if term and term.get("exitCode"):
                        any_failed = True
                else:
                    all_done = False
                if (s["state"] or {}).get("running"):
                    any_running = True
            if all_done and statuses:
                phase = "Failed" if any_failed else "Succeeded"
                if policy == "OnFailure" and any_failed:
                    phase = "Running"
            elif any_running or any(int(s.get("restartCount") or 0) > 0 for s in statuses) or \
                    any((s["state"] or {}).get("terminated") for s in statuses):
                phase = "Running"
            else:
                phase = "Pending"
            st["phase"] = phase
            st["hostIP"] = sim["hostIP"]
            st["hostIPs"] = [{"ip": sim["hostIP"]}]
            st["podIP"] = sim["podIP"]
            st["podIPs"] = [{"ip": sim["podIP"]}]
            st.setdefault("startTime", now_iso(sim["start"]))
            st["containerStatuses"] = statuses
            if init_statuses:
                st["initContainerStatuses"] = init_statuses
            conds = st.setdefault("conditions", [])
            _set_cond(conds, "PodReadyToStartContainers", "True", with_probe_time=True)
            _set_cond(conds, "Initialized", "True" if init_ok else "False",
                      None if init_ok else "ContainersNotInitialized",
                      None if init_ok else "containers with incomplete status: [" + " ".join(
                          ic.get("name", "") for ic in spec.get("initContainers") or []) + "]",
                      with_probe_time=True)
            not_ready = [s["name"] for s in statuses if not s["ready"]]
            if phase in ("Succeeded", "Failed"):
                reason = "PodCompleted"
                _set_cond(conds, "Ready", "False", reason, None, with_probe_time=True)
                _set_cond(conds, "ContainersReady", "False", reason, None, with_probe_time=True)
            elif all_ready:
                _set_cond(conds, "Ready", "True", with_probe_time=True)
                _set_cond(conds, "ContainersReady", "True", with_probe_time=True)
            else:
                msg = f"containers with unready status: [{' '.join(not_ready)}]"
                _set_cond(conds, "Ready", "False", "ContainersNotReady", msg, with_probe_time=True)
                _set_cond(conds, "ContainersReady", "False", "ContainersNotReady", msg, with_probe_time=True)
            _set_cond(conds, "PodScheduled", "True", with_probe_time=True)
            order = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
            conds.sort(key=lambda x: order.index(x["type"]) if x.get("type") in order else 99)
            if new != p:
                self._update(PODS, new, "status")

    def ip_for(self, pod, sim, node) -> None:
        c = self.c
        c.ip_counter += 1
        idx = int(node["spec"]["podCIDR"].split(".")[2])
        sim["podIP"] = f"10.244.{idx}.{c.ip_counter % 250 + 2}"
        sim["hostIP"] = next((a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"), "")

    def _cstatus(self, ctr, state, restarts, ready, last, started=None) -> dict:
        image = ctr.get("image") or ""
        s = {"name": ctr.get("name"), "state": state, "lastState": last or {}, "ready": ready,
             "restartCount": restarts, "image": image if ":" in image.rsplit("/", 1)[-1] or "@" in image
             else image + ":latest",
             "imageID": ""}
        if started is not None:
            s["started"] = started
        else:
            s["started"] = bool(state.get("running"))
        if "waiting" not in state or restarts:
            s["imageID"] = image.split("@")[0] + "@sha256:" + ("%064x" % (fnv32a(image.encode()) * 7919))[-64:]
        cid = state.get("_cid")
        if cid:
            s["containerID"] = "containerd://" + cid
            state.pop("_cid")
        return s

    def _start_logs(self, p, ctr, sim_c) -> None:
        c = self.c
        key = (p["metadata"]["namespace"], p["metadata"]["name"], ctr["name"])
        if key in c.logs:
            c.prev_logs[key] = c.logs[key]
        lines = [f"opsbook-kubeapi: container {ctr['name']} starting (image {ctr.get('image')})"]
        for port in ctr.get("ports") or []:
            lines.append(f"listening on port {port.get('containerPort')}/{port.get('protocol', 'TCP')}")
        lines.append(f"{ctr['name']} started")
        now = time.time()
        c.logs[key] = [(now, line) for line in lines]
        c.cond.notify_all()

    def _container(self, p, ctr, sim, now, policy, ready_delay):
        """Advance one container's state machine; returns (status, 'running'|'done'|'waiting')."""
        ann = p["metadata"].get("annotations") or {}
        beh = container_behaviour(ctr, policy, ann)
        cs = sim["containers"].setdefault(ctr["name"], {"restarts": 0, "phase": "new", "since": now,
                                                        "cid": uuid.uuid4().hex, "last": {}})
        name = ctr["name"]
        if not beh["pull"]:
            # ErrImagePull, then ImagePullBackOff, alternating
            if cs["phase"] == "new":
                cs["phase"], cs["since"] = "pullerr", now
                self._event(p, "Pulling", f'Pulling image "{ctr.get("image")}"')
                self._event(p, "Failed", f'Failed to pull image "{ctr.get("image")}": failed to resolve reference '
                            f'"{ctr.get("image")}": failed to do request: Head "https://'
                            f'{ctr.get("image").split("/")[0]}/v2/": dial tcp: lookup '
                            f'{ctr.get("image").split("/")[0]}: no such host', "Warning")
                self._event(p, "Failed", "Error: ErrImagePull", "Warning")
            elif cs["phase"] == "pullerr" and now - cs["since"] > PULL_FAIL_SECONDS:
                cs["phase"], cs["since"] = "backoff", now
                self._event(p, "BackOff", f'Back-off pulling image "{ctr.get("image")}"', "Normal")
                self._event(p, "Failed", "Error: ImagePullBackOff", "Warning")
            elif cs["phase"] == "backoff" and now - cs["since"] > 3 * PULL_FAIL_SECONDS:
                cs["phase"], cs["since"] = "pullerr", now
            if cs["phase"] == "pullerr":
                w = {"reason": "ErrImagePull", "message": f'failed to pull and unpack image "{ctr.get("image")}": '
                                                          f'failed to resolve reference: no such host'}
            else:
                w = {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{ctr.get("image")}": '
                                                              f'ErrImagePull: no such host'}
            return self._cstatus(ctr, {"waiting": w}, 0, False, {}), "waiting"
        if cs["phase"] == "new":
            cs["phase"], cs["since"] = "running", now
            self._start_logs(p, ctr, cs)
            if cs["restarts"] == 0:
                self._event(p, "Pulled", f'Container image "{ctr.get("image")}" already present on machine')
            self._event(p, "Created", f"Created container: {name}")
            self._event(p, "Started", f"Started container {name}")
        if cs["phase"] == "running" and beh["exit"] is not None and now - cs["since"] >= beh["run_for"]:
            code = beh["exit"]
            cs["last"] = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                         "startedAt": now_iso(cs["since"]), "finishedAt": now_iso(now),
                                         "containerID": "containerd://" + cs["cid"]}}
            restart = policy == "Always" or (policy == "OnFailure" and code != 0)
            if restart:
                backoff = min(1.0 * (2 ** cs["restarts"]), 10.0)
                cs["phase"], cs["since"], cs["until"] = "crashloop", now, now + backoff
                if code != 0:
                    self._event(p, "BackOff", f"Back-off restarting failed container {name} in pod "
                                f"{p['metadata']['name']}_{p['metadata']['namespace']}({p['metadata']['uid']})",
                                "Warning")
            else:
                cs["phase"], cs["since"] = "done", now
        if cs["phase"] == "crashloop" and now >= cs.get("until", now):
            cs["restarts"] += 1
            cs["cid"] = uuid.uuid4().hex
            cs["phase"], cs["since"] = "running", now
            self._start_logs(p, ctr, cs)
            self._event(p, "Created", f"Created container: {name}")
            self._event(p, "Started", f"Started container {name}")
        if cs["phase"] == "done":
            term = dict(cs["last"]["terminated"])
            return self._cstatus(ctr, {"terminated": term}, cs["restarts"], False, {}, started=False), "done"
        if cs["phase"] == "crashloop":
            w = {"reason": "CrashLoopBackOff",
                 "message": f"back-off {int(min(10 * 2 ** max(cs['restarts'], 0), 300))}s restarting failed "
                            f"container={name} pod={p['metadata']['name']}_{p['metadata']['namespace']}"
                            f"({p['metadata']['uid']})"}
            return self._cstatus(ctr, {"waiting": w, "_cid": cs["cid"]}, cs["restarts"], False, cs["last"],
                                 started=False), "waiting"
        delay = max(ready_delay, beh.get("initial_delay") or 0.0)
        ready = not beh["never_ready"] and now - cs["since"] >= delay
        return self._cstatus(ctr, {"running": {"startedAt": now_iso(cs["since"])}, "_cid": cs["cid"]},
                             cs["restarts"], ready, cs["last"], started=True), "running"

    def _init_container(self, p, ctr, sim, now, policy):
        beh = container_behaviour(ctr, "Never", {})
        cs = sim["containers"].setdefault("init:" + ctr["name"], {"restarts": 0, "since": now})
        if not beh["pull"]:
            return self._cstatus(ctr, {"waiting": {"reason": "ImagePullBackOff",
                                                   "message": f'Back-off pulling image "{ctr.get("image")}"'}},
                                 0, False, {}), False
        code = beh["exit"] if beh["exit"] is not None else 0
        run_for = beh["run_for"] if beh["run_for"] is not None else 0.1
        if now - cs["since"] < run_for:
            return self._cstatus(ctr, {"running": {"startedAt": now_iso(cs["since"])}}, 0, False, {}), False
        term = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                "startedAt": now_iso(cs["since"]), "finishedAt": now_iso(cs["since"] + run_for)}
        if code != 0:
            if policy == "Never":
                return self._cstatus(ctr, {"terminated": term}, 0, False, {}), False
            return self._cstatus(ctr, {"waiting": {"reason": "CrashLoopBackOff"}}, cs["restarts"], False,
                                 {"terminated": term}), False
        return self._cstatus(ctr, {"terminated": term}, 0, True, {}, started=False), True

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
            ready, not_ready = [], []
            chosen = []
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
            subset = {}
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
            body = {"metadata": {"name": name, "namespace": ns, "labels": labels}}
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


def _target_node(pod: dict) -> str | None:
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return spec["nodeName"]
    terms = (((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or []
    for t in terms:
        for mf in t.get("matchFields") or []:
            if mf.get("key") == "metadata.name" and mf.get("operator") == "In" and mf.get("values"):
                return mf["values"][0]
    return None


def _ordinal(pod_name: str, sts: str) -> int:
    suffix = pod_name[len(sts) + 1:]
    return int(suffix) if suffix.isdigit() else -1


_ = match_selector_object
