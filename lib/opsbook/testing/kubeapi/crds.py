"""CustomResourceDefinitions: a CRD's served versions become resources of the API (discovery, REST,
watch), the non-storage versions read and write through the storage version (conversion "None"), and
deleting the CRD deletes its custom resources and stops serving them."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from . import resources as RS
from .meta import now_iso
from .resources import RESOURCES, Resource, res

if TYPE_CHECKING:
    from .store import Cluster

CRDS = res("apiextensions.k8s.io/v1", "customresourcedefinitions")


def sync_crd(c: Cluster, crd: dict) -> dict:
    """Serve the versions a CustomResourceDefinition declares, and mark it Established."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    uid = crd["metadata"]["uid"]
    served = [v for v in spec.get("versions") or [] if v.get("served", True)]
    storage_name = next((v["name"] for v in spec.get("versions") or [] if v.get("storage")),
                        served[0]["name"] if served else None)
    wanted: list[Resource] = []
    for v in served:
        subs = tuple(s for s in ("status",) if s in (v.get("subresources") or {}))
        wanted.append(Resource(spec["group"], v["name"], names["plural"], names["kind"],
                               spec.get("scope") == "Namespaced", tuple(names.get("shortNames") or ()),
                               subresources=subs, categories=tuple(names.get("categories") or ()), crd=True))
    storage_r = next((r for r in wanted if r.version == storage_name), wanted[0] if wanted else None)
    for old in c.crd_resources.get(uid, []):
        if old not in wanted:
            RS.unregister(old)
            c.aliases.pop(old, None)
    for r in wanted:
        replaced = RS.register(r)
        if replaced is not None and replaced != r and replaced in c.data:
            c.data.setdefault(r, {}).update(c.data.pop(replaced))
        if r == storage_r:
            c.data.setdefault(r, {})
            c.aliases.pop(r, None)
        elif storage_r is not None:
            c.aliases[r] = storage_r
            if c.data.get(r):  # the storage version moved: keep the objects
                moved = c.data.pop(r)
                c.data.setdefault(storage_r, {}).update(
                    {k: {**o, "apiVersion": storage_r.api_version} for k, o in moved.items()})
    c.crd_resources[uid] = wanted
    now = now_iso()
    status = {"conditions": [
        {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts",
         "message": "no conflicts found"},
        {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted",
         "message": "the initial names have been accepted"}],
        "acceptedNames": names, "storedVersions": [storage_name] if storage_name else []}
    old_status = crd.get("status") or {}
    if old_status.get("conditions"):
        status["conditions"] = old_status["conditions"]
    new = copy.deepcopy(crd)
    new["status"] = status
    if new != crd:
        return c.update(CRDS, "", crd["metadata"]["name"], new, subresource="status", internal=True)
    return crd


def remove_crd(c: Cluster, crd: dict) -> None:
    for r in c.crd_resources.pop(crd["metadata"]["uid"], []):
        sr = c.aliases.pop(r, r)
        for obj in list(c.data.get(sr, {}).values()):
            c.drop(sr, obj)
        RS.unregister(r)
    for r in [r for r in c.data if r.crd and r not in RESOURCES and not c.data[r]]:
        del c.data[r]
