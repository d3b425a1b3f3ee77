"""Label and field selectors, in the query-string syntax and as LabelSelector objects."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Labels = dict[str, str]
Matcher = Callable[[Labels], bool]


class SelectorError(ValueError):
    pass


def _split_top(s: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


_SET_RE = re.compile(r"^([A-Za-z0-9._/-]+)\s+(in|notin)\s*\((.*)\)$")
_KEY_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$")


def parse_label_selector(text: str | None) -> Matcher:
    if not text:
        return lambda labels: True
    reqs: list[Callable[..., bool]] = []
    for part in _split_top(text):
        m = _SET_RE.match(part)
        if m:
            key, op, vals = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            if op == "in":
                reqs.append(lambda lb, k=key, vs=vals: k in lb and lb[k] in vs)
            else:
                reqs.append(lambda lb, k=key, vs=vals: not (k in lb and lb[k] in vs))
            continue
        for op in ("!=", "==", "=", ">", "<"):
            if op in part:
                key, _, val = part.partition(op)
                key, val = key.strip(), val.strip()
                if not _KEY_RE.match(key):
                    raise SelectorError(f"unable to parse requirement: invalid label key {key!r}")
                if op == "!=":
                    reqs.append(lambda lb, k=key, v=val: lb.get(k) != v)
                elif op in ("=", "=="):
                    reqs.append(lambda lb, k=key, v=val: k in lb and lb[k] == v)
                else:
                    try:
                        num = int(val)
                    except ValueError:
                        raise SelectorError("unable to parse requirement: for 'Gt', 'Lt' operators, the value "
                                            "must be an integer") from None
                    if op == ">":
                        reqs.append(lambda lb, k=key, n=num: k in lb and lb[k].lstrip("-").isdigit() and int(lb[k]) > n)
                    else:
                        reqs.append(lambda lb, k=key, n=num: k in lb and lb[k].lstrip("-").isdigit() and int(lb[k]) < n)
                break
        else:
            if part.startswith("!"):
                key = part[1:].strip()
                if not _KEY_RE.match(key):
                    raise SelectorError(f"unable to parse requirement: invalid label key {key!r}")
                reqs.append(lambda lb, k=key: k not in lb)
            else:
                if not _KEY_RE.match(part):
                    raise SelectorError(f"unable to parse requirement: invalid label key {part!r}")
                reqs.append(lambda lb, k=part: k in lb)
    return lambda labels: all(r(labels) for r in reqs)


FIELD_LABELS: dict[str, set[str]] = {
    "pods": {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
             "spec.hostNetwork", "status.phase", "status.podIP", "status.podIPs", "status.nominatedNodeName"},
    "events": {"involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
               "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
               "reason", "reportingComponent", "source", "type", "regarding.kind", "regarding.name",
               "regarding.namespace", "regarding.uid", "note"},
    "secrets": {"type"},
    "nodes": {"spec.unschedulable"},
    "namespaces": {"status.phase"},
    "jobs": {"status.successful"},
    "replicasets": {"status.replicas"},
    "replicationcontrollers": {"status.replicas"},
}


def _field_value(obj: dict, path: str) -> str:
    cur: Any = obj
    for p in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(p)
        if cur is None:
            return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def parse_field_selector(text: str | None, plural: str) -> Callable[[dict], bool]:
    if not text:
        return lambda obj: True
    allowed = {"metadata.name", "metadata.namespace"} | FIELD_LABELS.get(plural, set())
    reqs: list[Callable[..., bool]] = []
    for part in _split_top(text):
        for op in ("!=", "==", "="):
            if op in part:
                key, _, val = part.partition(op)
                key, val = key.strip(), val.strip()
                break
        else:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        if key not in allowed:
            raise SelectorError(f'field label not supported: {key}')
        if op == "!=":
            reqs.append(lambda o, k=key, v=val: _field_value(o, k) != v)
        else:
            reqs.append(lambda o, k=key, v=val: _field_value(o, k) == v)
    return lambda obj: all(r(obj) for r in reqs)


def match_selector_object(selector: dict | None, labels: Labels | None) -> bool:
    """A metav1.LabelSelector (matchLabels / matchExpressions). An empty selector matches everything."""
    labels = labels or {}
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        k, op, vals = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and k in labels and labels[k] in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def match_map_selector(selector: dict | None, labels: Labels | None) -> bool:
    """A plain map selector (Service.spec.selector). Empty or missing selects nothing."""
    if not selector:
        return False
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())
