"""The StatefulSet controller: pods named by ordinal, created in order (OrderedReady) or together
(Parallel), a claim per volumeClaimTemplate, scale down and rolling update from the highest ordinal."""

from __future__ import annotations

import copy

from .common import (
    PODS,
    PVCS,
    STSS,
    ControllerBase,
    _is_available,
    _is_ready,
    template_hash,
)


class StatefulSetController(ControllerBase):
    def sync(self) -> None:
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


def _ordinal(pod_name: str, sts: str) -> int:
    suffix = pod_name[len(sts) + 1:]
    return int(suffix) if suffix.isdigit() else -1

