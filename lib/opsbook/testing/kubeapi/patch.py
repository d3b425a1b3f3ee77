"""JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch and a simplified
server-side apply (field sets per manager, in the fieldsV1 notation)."""

from __future__ import annotations

import copy
import json
from typing import Any


class PatchError(ValueError):
    """An invalid patch: answered with 422 (or 400 for an unreadable one)."""


# ---------------------------------------------------------------- JSON merge patch

def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# ---------------------------------------------------------------- JSON patch

def _ptr(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    cur = doc
    for p in parts:
        if isinstance(cur, dict):
            if p not in cur:
                raise PatchError(f"doc is missing path: /{'/'.join(parts)}")
            cur = cur[p]
        elif isinstance(cur, list):
            try:
                cur = cur[int(p)]
            except (ValueError, IndexError):
                raise PatchError(f"doc is missing path: /{'/'.join(parts)}") from None
        else:
            raise PatchError(f"doc is missing path: /{'/'.join(parts)}")
    return cur


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            try:
                i = int(last)
            except ValueError:
                raise PatchError(f"invalid index {last!r}") from None
            if i < 0 or i > len(parent):
                raise PatchError(f"index out of range: {i}")
            parent.insert(i, value)
    else:
        raise PatchError(f"cannot add to path /{'/'.join(parts)}")
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    if not parts:
        raise PatchError("cannot remove the whole document")
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"unable to remove nonexistent key: {last}: missing value")
        return parent.pop(last)
    if isinstance(parent, list):
        try:
            return parent.pop(int(last))
        except (ValueError, IndexError):
            raise PatchError(f"unable to remove item at index {last}") from None
    raise PatchError(f"cannot remove /{'/'.join(parts)}")


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise PatchError("json patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op:
            raise PatchError(f"invalid operation {op!r}")
        kind = op["op"]
        parts = _ptr(op.get("path", ""))
        if kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, parts)
        elif kind == "replace":
            _walk(doc, parts)  # must exist
            if not parts:
                doc = copy.deepcopy(op.get("value"))
            else:
                parent = _walk(doc, parts[:-1])
                if isinstance(parent, list):
                    parent[int(parts[-1])] = copy.deepcopy(op.get("value"))
                else:
                    parent[parts[-1]] = copy.deepcopy(op.get("value"))
        elif kind == "move":
            val = _remove(doc, _ptr(op["from"]))
            doc = _add(doc, parts, val)
        elif kind == "copy":
            val = copy.deepcopy(_walk(doc, _ptr(op["from"])))
            doc = _add(doc, parts, val)
        elif kind == "test":
            if _walk(doc, parts) != op.get("value"):
                raise PatchError(f"testing value /{'/'.join(parts)} failed")
        else:
            raise PatchError(f"Unexpected kind: {kind}")
    return doc


# ---------------------------------------------------------------- strategic merge patch

# list field name -> merge key (None: merge a list of primitives as a set)
MERGE_KEYS: dict[str, str | None] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
    "finalizers": None,
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "addresses": "type",  # node status
    "taints": "key",
}
# ports: container ports merge by containerPort, service ports by port
_PORT_KEYS = ("containerPort", "port")


def merge_key_for(field: str, items: list) -> str | None | bool:
    """The merge key for a list field; False when the list is atomic (replaced as a whole)."""
    if field == "ports":
        for it in items:
            if isinstance(it, dict):
                for k in _PORT_KEYS:
                    if k in it:
                        return k
        return "containerPort"
    if field in MERGE_KEYS:
        return MERGE_KEYS[field]
    return False


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items()
                if not k.startswith("$") and v is not None}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value
                if not (isinstance(v, dict) and v.get("$patch") == "delete")]
    return value


def strategic_merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return _strip_directives(patch)
    if patch.get("$patch") == "delete":
        return None
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith("$setElementOrder/") or k == "$retainKeys" or k == "$patch":
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            if isinstance(out.get(field), list) and isinstance(v, list):
                out[field] = [x for x in out[field] if x not in v]
            continue
        if v is None:
            out.pop(k, None)
            continue
        if isinstance(v, list):
            out[k] = _merge_list(k, out.get(k), v)
        elif isinstance(v, dict):
            merged = strategic_merge(out.get(k), v)
            if merged is None:
                out.pop(k, None)
            else:
                out[k] = merged
        else:
            out[k] = v
    return out


def _merge_list(field: str, cur: Any, patch: list) -> list:
    key = merge_key_for(field, patch + (cur if isinstance(cur, list) else []))
    if key is False or not isinstance(cur, list):
        if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
            return [_strip_directives(p) for p in patch if not (isinstance(p, dict) and "$patch" in p)]
        return _strip_directives(patch)
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [_strip_directives(p) for p in patch if not (isinstance(p, dict) and "$patch" in p)]
    out = copy.deepcopy(cur)
    if key is None:  # set of primitives
        for p in patch:
            if p not in out:
                out.append(p)
        return out
    for p in patch:
        if not isinstance(p, dict):
            raise PatchError(f"list {field} items must be objects")
        if key not in p:
            raise PatchError(f"map: {p} does not contain declared merge key: {key}")
        idx = next((i for i, c in enumerate(out) if isinstance(c, dict) and c.get(key) == p[key]), None)
        if p.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
            continue
        if idx is None:
            out.append(_strip_directives(p))
        else:
            out[idx] = strategic_merge(out[idx], p)
    return out


# ---------------------------------------------------------------- server-side apply

Path = tuple[str, ...]
IGNORED_META = {"uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
                "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"}


def field_paths(obj: Any, include_status: bool = False) -> set[Path]:
    """Leaf paths of an object in the fieldsV1 notation (f:name, k:{"key":"value"}, v:value)."""
    out: set[Path] = set()

    def walk(val: Any, prefix: Path, field: str | None) -> None:
        if isinstance(val, dict) and val:
            for k, v in val.items():
                if not prefix and k in ("apiVersion", "kind"):
                    continue
                if not prefix and k == "status" and not include_status:
                    continue
                if prefix == ("f:metadata",) and k in IGNORED_META:
                    continue
                if prefix == ("f:metadata",) and k in ("name", "namespace"):
                    continue  # identity fields are not owned (stripped like the real field manager does)
                walk(v, prefix + (f"f:{k}",), k)
            return
        if isinstance(val, list) and val and field is not None:
            key = merge_key_for(field, val)
            if key is not False:
                for it in val:
                    if key is None:
                        out.add(prefix + ("v:" + json.dumps(it, separators=(",", ":")),))
                    elif isinstance(it, dict) and key in it:
                        kp = prefix + ("k:" + json.dumps({key: it[key]}, separators=(",", ":")),)
                        out.add(kp + (".",))
                        rest = {k2: v2 for k2, v2 in it.items()}
                        walk(rest, kp, None)
                return
        out.add(prefix)

    walk(obj, (), None)
    return {p for p in out if p}


def paths_to_fields_v1(paths: set[Path]) -> dict:
    root: dict = {}
    for p in sorted(paths):
        cur = root
        for part in p:
            cur = cur.setdefault(part, {})
    return root


def fields_v1_to_paths(tree: dict, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for k, v in (tree or {}).items():
        if isinstance(v, dict) and v:
            out |= fields_v1_to_paths(v, prefix + (k,))
        else:
            out.add(prefix + (k,))
    return out


def get_path(obj: Any, path: Path) -> Any:
    """The value at a fieldsV1 path, or a sentinel `_MISSING`."""
    cur = obj
    for part in path:
        if part == ".":
            return cur
        if part.startswith("f:"):
            if not isinstance(cur, dict) or part[2:] not in cur:
                return _MISSING
            cur = cur[part[2:]]
        elif part.startswith("k:"):
            want = json.loads(part[2:])
            if not isinstance(cur, list):
                return _MISSING
            cur = next((it for it in cur if isinstance(it, dict)
                        and all(it.get(a) == b for a, b in want.items())), _MISSING)
            if cur is _MISSING:
                return _MISSING
        elif part.startswith("v:"):
            want = json.loads(part[2:])
            if not isinstance(cur, list) or want not in cur:
                return _MISSING
            cur = want
    return cur


def remove_path(obj: Any, path: Path) -> None:
    if not path:
        return
    if path[-1] == ".":
        path = path[:-1]
    parent = get_path(obj, path[:-1]) if len(path) > 1 else obj
    last = path[-1]
    if parent is _MISSING:
        return
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif last.startswith("k:") and isinstance(parent, list):
        want = json.loads(last[2:])
        parent[:] = [it for it in parent if not (isinstance(it, dict)
                                                 and all(it.get(a) == b for a, b in want.items()))]
    elif last.startswith("v:") and isinstance(parent, list):
        want = json.loads(last[2:])
        parent[:] = [it for it in parent if it != want]


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()
MISSING = _MISSING


def apply_merge(live: Any, applied: Any) -> Any:
    """Merge an applied configuration into the live object (keyed lists merged by their keys)."""
    return strategic_merge(live, applied)


def prune_empty(obj: Any) -> Any:
    """After removing fields, drop maps that became empty under spec/metadata labels and annotations."""
    if isinstance(obj, dict):
        for k in list(obj):
            v = obj[k]
            prune_empty(v)
            if k in ("labels", "annotations") and v == {}:
                obj.pop(k)
    elif isinstance(obj, list):
        for v in obj:
            prune_empty(v)
    return obj
