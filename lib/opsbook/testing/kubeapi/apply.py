"""Server-side apply and managedFields: who owns which field, apply conflicts between managers, and
the fields an apply configuration stops naming (removed unless another manager still owns them).
Field paths are managedFields' own (``f:``/``k:``/``v:`` parts, see patch.py)."""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING

from . import patch as P
from .errors import ApiError, bad_request, not_found
from .meta import now_iso
from .resources import Resource
from .validation import check_apply, check_type

if TYPE_CHECKING:
    from .store import Cluster


def server_side_apply(c: Cluster, r: Resource, ns: str, name: str, raw: bytes, *, subresource: str | None,
                      dry_run: bool, manager: str | None, force: bool,
                      validation: str | None = None) -> tuple[dict, bool]:
    """Apply the YAML configuration ``raw`` as ``manager``; returns (object, created)."""
    import yaml
    if not manager:
        raise ApiError(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                                       'is required for apply patch',
                       {"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [
                           {"reason": "FieldValueRequired", "message": "Required value: is required for apply "
                                                                       "patch", "field": "fieldManager"}]})
    try:
        applied = yaml.safe_load(raw or b"") or {}
    except yaml.YAMLError as e:
        raise bad_request(f"error decoding YAML: {e}") from None
    if not isinstance(applied, dict):
        raise bad_request("apply patch must be an object")
    if not applied.get("apiVersion") or not applied.get("kind"):
        raise bad_request("invalid object type: /, Kind=")
    if subresource != "scale":
        check_type(r, applied)
        # types, field names, keyed lists: refused whatever fieldValidation says
        check_apply(r, applied)
    am = applied.setdefault("metadata", {})
    if am.get("name") and am["name"] != name:
        raise bad_request(f"the name of the object ({am['name']}) does not match the name on the URL ({name})")
    am["name"] = name
    if r.namespaced:
        am.setdefault("namespace", ns)
    applied_store = c.unview(r, applied)
    new_paths = P.field_paths(applied_store, include_status=(subresource == "status"))
    if subresource == "status":
        new_paths = {p for p in new_paths if p[0] == "f:status"}
    cur = c.raw(r, ns, name)
    if cur is None:
        if subresource:
            raise not_found(r, name)
        applied["metadata"].pop("resourceVersion", None)
        obj = c.create(r, ns, applied, dry_run=dry_run, manager=None,
                       _managed=managed_entries({(manager, "Apply", ""): new_paths}, r))
        return obj, True
    live = copy.deepcopy(cur)
    sets = managed_sets(live)
    key = (manager, "Apply", subresource or "")
    # conflicts with other managers
    conflicts = []
    for p in sorted(new_paths):
        if p[-1] == ".":
            continue
        lv, av = P.get_path(live, p), P.get_path(applied_store, p)
        if lv is P.MISSING or lv == av:
            continue
        for k, s in sets.items():
            if k != key and p in s:
                conflicts.append((k, p))
    if conflicts and not force:
        msgs = []
        causes = []
        for (mgr, _op, _sub), p in conflicts:
            fp = _dotted(p)
            msgs.append(f'conflict with "{mgr}"' + (f" using {r.api_version}" if _op == "Update" else "")
                        + f": {fp}")
            causes.append({"reason": "FieldManagerConflict",
                           "message": f'conflict with "{mgr}"' + (f" using {r.api_version}"
                                                                 if _op == "Update" else ""),
                           "field": fp})
        n = len(conflicts)
        if n == 1:
            text = f"Apply failed with 1 conflict: {msgs[0]}"
        else:
            text = f"Apply failed with {n} conflicts: " + "\n".join(msgs)
        raise ApiError(409, "Conflict", text, {"causes": causes})
    merged = P.apply_merge(live, applied_store)
    old_mine = sets.get(key, set())
    others = set().union(*[s for k, s in sets.items() if k != key]) if sets else set()
    if force:
        for k in list(sets):
            if k != key:
                sets[k] -= new_paths
    # without force only equal values got here: their ownership is shared, everybody keeps it
    dropped = [p for p in old_mine - new_paths if p not in others]
    # whole list items first (their key fields identify them), then leaf fields, deepest first
    for p in sorted((p for p in dropped if p[-1] == "."), key=len):
        P.remove_path(merged, p)
    for p in sorted((p for p in dropped if p[-1] != "."), key=len, reverse=True):
        P.remove_path(merged, p)
    P.prune_empty(merged)
    sets[key] = new_paths
    if (applied.get("metadata") or {}).get("resourceVersion"):
        merged["metadata"]["resourceVersion"] = applied["metadata"]["resourceVersion"]
    else:
        merged["metadata"].pop("resourceVersion", None)
    out = c.write_sub(r, ns, name, c.view(r, merged), subresource, dry_run, None,
                      managed=managed_entries(sets, r, live["metadata"].get("managedFields")))
    return out, False


def track_managers(r: Resource, old: dict | None, new: dict, manager: str, subresource: str | None) -> None:
    """Record in ``new``'s managedFields that ``manager`` (an Update) set the fields it changed."""
    sets = managed_sets(old) if old else {}
    inc_status = subresource == "status"
    new_paths = P.field_paths(new, include_status=inc_status)
    if inc_status:
        new_paths = {p for p in new_paths if p[0] == "f:status"}
    if old is None:
        changed = new_paths
    else:
        changed = {p for p in new_paths if P.get_path(old, p) != P.get_path(new, p)}
    if not changed and old is not None:
        new["metadata"]["managedFields"] = old["metadata"].get("managedFields") or []
        if not new["metadata"]["managedFields"]:
            new["metadata"].pop("managedFields", None)
        return
    key = (manager, "Update", subresource or "")
    for k in list(sets):
        if k != key:
            sets[k] = {p for p in sets[k] - changed if P.get_path(new, p) is not P.MISSING}
        else:
            sets[k] = {p for p in sets[k] if P.get_path(new, p) is not P.MISSING}
    sets[key] = sets.get(key, set()) | changed
    new["metadata"]["managedFields"] = managed_entries(sets, r, (old or {}).get("metadata", {}).get(
        "managedFields"))


def _dotted(p: tuple) -> str:
    out = ""
    for part in p:
        if part.startswith("f:"):
            out += "." + part[2:]
        elif part.startswith("k:"):
            out += "[" + ",".join(f"{k}=\"{v}\"" for k, v in json.loads(part[2:]).items()) + "]"
        elif part.startswith("v:"):
            out += "[" + part[2:] + "]"
    return out


def managed_sets(obj: dict | None) -> dict[tuple[str, str, str], set]:
    out: dict[tuple[str, str, str], set] = {}
    for e in (obj or {}).get("metadata", {}).get("managedFields") or []:
        if not isinstance(e, dict) or not e.get("manager"):
            continue
        key = (e["manager"], e.get("operation", "Update"), e.get("subresource", ""))
        out[key] = out.get(key, set()) | P.fields_v1_to_paths(e.get("fieldsV1") or {})
    return out


def managed_entries(sets: dict, r: Resource, prev: list | None = None) -> list[dict]:
    entries = []
    now = now_iso()
    before = {(e.get("manager"), e.get("operation"), e.get("subresource", "")): e for e in prev or []
              if isinstance(e, dict)}
    for (mgr, op, sub), paths in sets.items():
        if not paths:
            continue
        fv1 = P.paths_to_fields_v1(paths)
        old = before.get((mgr, op, sub))
        t = old["time"] if old and old.get("fieldsV1") == fv1 and old.get("time") else now
        e = {"manager": mgr, "operation": op, "apiVersion": r.api_version, "time": t,
             "fieldsType": "FieldsV1", "fieldsV1": fv1}
        if sub:
            e["subresource"] = sub
        entries.append(e)
    return entries


