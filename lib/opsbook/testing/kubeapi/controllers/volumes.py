"""The PersistentVolume controller with a simulated provisioner."""

from __future__ import annotations

import copy

from .common import (
    PODS,
    PVCS,
    PVS,
    SCS,
    ControllerBase,
    _terminal,
)


class VolumeController(ControllerBase):
    def sync(self) -> None:
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
