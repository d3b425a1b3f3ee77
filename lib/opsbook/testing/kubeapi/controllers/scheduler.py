"""The scheduler: pending pods go to the least loaded Ready node that fits (node name or affinity,
node selector, taints); pods whose claims are missing or unbound stay Pending."""

from __future__ import annotations

import copy

from .common import (
    NODES,
    PODS,
    PVCS,
    ControllerBase,
    _cond,
    _set_cond,
    _target_node,
    _terminal,
    _tolerates,
)


class Scheduler(ControllerBase):
    def sync(self) -> None:
        c = self.c
        nodes = [n for n in self._ready_nodes() if not (n.get("spec") or {}).get("unschedulable")]
        load: dict[str, int] = {n["metadata"]["name"]: 0 for n in nodes}
        pending = []
        for p in c.objects(PODS):
            nn = (p.get("spec") or {}).get("nodeName")
            if nn:
                if nn in load and not _terminal(p):
                    load[nn] += 1
            elif not p["metadata"].get("deletionTimestamp") and not _terminal(p) and \
                    (p.get("spec") or {}).get("schedulerName", "default-scheduler") == "default-scheduler":
                pending.append(p)
        for p in pending:
            spec = p.get("spec") or {}
            claim_problem = None
            for v in spec.get("volumes") or []:
                claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
                if not claim:
                    continue
                pvc = c.raw(PVCS, p["metadata"]["namespace"], claim)
                if pvc is None:
                    claim_problem = f'persistentvolumeclaim "{claim}" not found'
                elif pvc["metadata"].get("deletionTimestamp"):
                    claim_problem = f'persistentvolumeclaim "{claim}" is being deleted'
                elif (pvc.get("status") or {}).get("phase") != "Bound":
                    claim_problem = "pod has unbound immediate PersistentVolumeClaims"
            if claim_problem:
                new = copy.deepcopy(p)
                conds = new.setdefault("status", {}).setdefault("conditions", [])
                msg = f"0/{len(c.objects(NODES))} nodes are available: {claim_problem}."
                _set_cond(conds, "PodScheduled", "False", "Unschedulable", msg, with_probe_time=True)
                if new != p:
                    self._update(PODS, new, "status")
                    self._event(p, "FailedScheduling", msg, "Warning", component="default-scheduler")
                continue
            target = _target_node(p)
            fits = []
            for n in nodes:
                name = n["metadata"]["name"]
                if target and name != target:
                    continue
                taints = [t for t in (n.get("spec") or {}).get("taints") or []
                          if t.get("effect") in ("NoSchedule", "NoExecute")]
                if not all(_tolerates(spec.get("tolerations") or [], t) for t in taints):
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

    def _ready_nodes(self) -> list[dict]:
        out = []
        for n in self.c.objects(NODES):
            c = _cond((n.get("status") or {}).get("conditions") or [], "Ready")
            if c and c.get("status") == "True":
                out.append(n)
        return out
