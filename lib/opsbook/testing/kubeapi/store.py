"""The object store and the API semantics: create / get / list / update / patch / delete, resource
versions, generation, validation, defaulting, finalizers, managedFields, and the watch history."""

from __future__ import annotations

import base64
import builtins
import copy
import datetime as _dt
import json
import random
import re
import threading
import time
import uuid
from typing import Any

from . import patch as P
from .errors import (
    ApiError,
    already_exists,
    bad_request,
    conflict,
    forbidden,
    invalid,
    not_found,
    unsupported_media,
)
from .resources import RESOURCES, Resource, res

NS_RES = res("v1", "namespaces")
EVENTS_CORE = res("v1", "events")
EVENTS_NEW = res("events.k8s.io/v1", "events")
SAR = res("authorization.k8s.io/v1", "selfsubjectaccessreviews")
REVIEWS = {SAR, res("authorization.k8s.io/v1", "selfsubjectrulesreviews"),
           res("authentication.k8s.io/v1", "selfsubjectreviews")}
TEST_USER = {"username": "opsbook-test-admin", "groups": ["system:masters", "system:authenticated"]}
CRDS = res("apiextensions.k8s.io/v1", "customresourcedefinitions")


def _has_status(r: Resource) -> bool:
    return "status" in r.subresources

ALNUM = "bcdfghjklmnpqrstvwxz2456789"
HISTORY_MAX = 20000  # watch history kept (older resourceVersions get 410 Expired)
POD_TERMINATION_SECONDS = 0.3  # how long a gracefully deleted pod stays Terminating (at most its grace period)


def now_iso(t: float | None = None) -> str:
    t = time.time() if t is None else t
    return _dt.datetime.fromtimestamp(int(t), _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_iso(t: float | None = None) -> str:
    t = time.time() if t is None else t
    return _dt.datetime.fromtimestamp(t, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(s: str) -> float:
    s = s.rstrip("Z")
    fmt = "%Y-%m-%dT%H:%M:%S.%f" if "." in s else "%Y-%m-%dT%H:%M:%S"
    return _dt.datetime.strptime(s, fmt).replace(tzinfo=_dt.UTC).timestamp()


def rand_suffix(n: int = 5) -> str:
    return "".join(random.choice(ALNUM) for _ in range(n))


# ---------------------------------------------------------------- validation helpers

DNS1123_SUB = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

SUB_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and "
           "must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
           "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
             "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
             "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS1035_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
               "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex "
               "used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")


def _name_problem(r: Resource, name: str) -> str | None:
    if r.group == "rbac.authorization.k8s.io":
        if name in (".", "..") or "/" in name or "%" in name:
            return "may not contain '/' or '%'"
        return None
    if r.plural in ("namespaces",):
        if len(name) > 63:
            return "must be no more than 63 characters"
        return None if DNS1123_LABEL.match(name) else LABEL_MSG
    if r.plural == "services":
        if len(name) > 63:
            return "must be no more than 63 characters"
        return None if DNS1035_LABEL.match(name) else DNS1035_MSG
    if len(name) > 253:
        return "must be no more than 253 characters"
    return None if DNS1123_SUB.match(name) else SUB_MSG


def _container_image_host(image: str) -> str:
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return first.split(":")[0]
    return ""


def image_never_pulls(image: str) -> bool:
    return _container_image_host(image or "").endswith(".invalid")


# ---------------------------------------------------------------- the cluster


# core/v1 Event field -> events.k8s.io/v1 Event field (unview uses the inverse)
_EVENT_FIELDS = {"eventTime": "eventTime", "series": "series", "reportingComponent": "reportingController",
                 "reportingInstance": "reportingInstance", "action": "action", "reason": "reason",
                 "involvedObject": "regarding", "related": "related", "message": "note", "type": "type",
                 "source": "deprecatedSource", "firstTimestamp": "deprecatedFirstTimestamp",
                 "lastTimestamp": "deprecatedLastTimestamp", "count": "deprecatedCount"}

class Cluster:
    def __init__(self, nodes: int = 3, ready_delay: float = 0.3):
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.rv = 0
        self.data: dict[Resource, dict[tuple[str, str], dict]] = {r: {} for r in RESOURCES}
        self.history: list[tuple] = []
        self.history_floor = 0  # events with rv <= floor are no longer available
        self.node_count = nodes
        self.ready_delay = ready_delay
        self.started = time.time()
        self.logs: dict[tuple[str, str, str], list[tuple[float, str]]] = {}
        self.prev_logs: dict[tuple[str, str, str], list[tuple[float, str]]] = {}
        self.faults: dict[str, Any] = {"api_error_rate": 0.0, "paths": None, "methods": None}
        self.sim: dict[str, dict] = {}  # pod uid -> simulation state
        self.node_overrides: dict[str, dict] = {}  # admin: node name -> {"ready": bool}
        self.tl = threading.local()  # per request: warnings for the Warning header
        self.aliases: dict[Resource, Resource] = {}  # served CR version -> its storage version
        self.crd_resources: dict[str, list[Resource]] = {}  # CRD uid -> the resources it serves
        self.ip_counter = 10
        self.svc_ip_counter = 10
        self.node_port_counter = 30000
        self.stopping = False

    # ------------------------------------------------------------ field validation

    def field_check(self, r: Resource, body: dict, mode: str | None) -> None:
        """Server-side field validation: Strict -> 400, Warn -> Warning headers, Ignore/None -> nothing."""
        if not mode or mode == "Ignore" or not isinstance(body, dict) or r.crd:
            return
        from .schema import check
        unknown = check(r.api_version, r.kind, body)
        if not unknown:
            return
        if mode == "Strict":
            raise bad_request(f'{r.kind} in version "{r.version}" cannot be handled as a {r.kind}: strict decoding '
                              f'error: ' + ", ".join(f'unknown field "{u}"' for u in unknown))
        warnings = getattr(self.tl, "warnings", None)
        if warnings is not None:
            warnings.extend(f'unknown field "{u}"' for u in unknown)

    # ------------------------------------------------------------ raw storage

    def _emit(self, typ: str, r: Resource, obj: dict, prev: dict | None = None) -> None:
        self.history.append((self.rv, typ, r, obj, prev))
        if len(self.history) > HISTORY_MAX:
            cut = len(self.history) // 2
            self.history_floor = self.history[cut - 1][0]
            del self.history[:cut]
        self.cond.notify_all()

    def _store(self, r: Resource, obj: dict, typ: str) -> dict:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        m = obj["metadata"]
        key = (m.get("namespace", ""), m["name"])
        prev = self.data[r].get(key)
        self.data[r][key] = obj
        self._emit(typ, r, obj, prev)
        return obj

    def _drop(self, r: Resource, obj: dict) -> dict:
        if r is CRDS:
            self._remove_crd(obj)
        m = obj["metadata"]
        self.data[r].pop((m.get("namespace", ""), m["name"]), None)
        gone = copy.deepcopy(obj)
        self.rv += 1
        gone["metadata"]["resourceVersion"] = str(self.rv)
        self._emit("DELETED", r, gone, obj)
        if r.plural == "pods" and not r.group:
            ns, name = m.get("namespace", ""), m["name"]
            for key in [k for k in self.logs if k[0] == ns and k[1] == name]:
                self.logs.pop(key, None)
                self.prev_logs.pop(key, None)
            self.sim.pop(m.get("uid", ""), None)
        return gone

    def storage(self, r: Resource) -> Resource:
        if r is EVENTS_NEW:
            return EVENTS_CORE
        return self.aliases.get(r, r)

    def raw(self, r: Resource, ns: str, name: str) -> dict | None:
        return self.data[self.storage(r)].get((ns if r.namespaced else "", name))

    def objects(self, r: Resource, ns: str | None = None) -> list[dict]:
        items = self.data[self.storage(r)].values()
        if ns is not None and r.namespaced:
            return [o for o in items if o["metadata"].get("namespace") == ns]
        return list(items)

    # ------------------------------------------------------------ views (events.k8s.io over core events)

    def view(self, r: Resource, obj: dict) -> dict:
        if r in self.aliases:  # another served version of a custom resource: conversion "None"
            return {**obj, "apiVersion": r.api_version}
        if r is not EVENTS_NEW:
            return obj
        o = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": obj["metadata"]}
        for a, b in _EVENT_FIELDS.items():
            if obj.get(a) not in (None, "", {}):
                o[b] = obj[a]
        if "eventTime" not in o:
            o["eventTime"] = None
        return o

    def unview(self, r: Resource, body: dict) -> dict:
        if r in self.aliases and isinstance(body, dict):
            return {**body, "apiVersion": self.aliases[r].api_version}
        if r is not EVENTS_NEW:
            return body
        o = {"apiVersion": "v1", "kind": "Event", "metadata": body.get("metadata", {})}
        for b, a in _EVENT_FIELDS.items():
            if body.get(a) is not None:
                o[b] = body[a]
        o.setdefault("involvedObject", {})
        return o

    # ------------------------------------------------------------ reads

    def get(self, r: Resource, ns: str, name: str) -> dict:
        with self.lock:
            obj = self.raw(r, ns, name)
            if obj is None:
                raise not_found(r, name)
            return self.view(r, obj)

    def list(self, r: Resource, ns: str | None, label_match=None, field_match=None) -> tuple[list[dict], str]:
        with self.lock:
            out = []
            for obj in self.objects(r, ns):
                v = self.view(r, obj)
                if label_match and not label_match(v["metadata"].get("labels") or {}):
                    continue
                if field_match and not field_match(v):
                    continue
                out.append(v)
            out.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
            return out, str(self.rv)

    # ------------------------------------------------------------ create

    def create(self, r: Resource, ns: str, body: Any, *, dry_run: bool = False, manager: str | None = None,
               internal: bool = False, _managed: builtins.list | None = None,
               validation: str | None = None) -> dict:
        with self.lock:
            if not isinstance(body, dict):
                raise bad_request("the body of the request was not a JSON object")
            self._check_type(r, body)
            self.field_check(r, body, validation)
            if r in REVIEWS:
                return self._review(r, body)
            obj = copy.deepcopy(self.unview(r, body))
            sr = self.storage(r)
            meta = obj.get("metadata")
            if not isinstance(meta, dict):
                meta = obj["metadata"] = {}
            if r.namespaced:
                if meta.get("namespace") and meta["namespace"] != ns:
                    raise bad_request("the namespace of the provided object does not match the namespace sent "
                                      "on the request")
                meta["namespace"] = ns
                nso = self.data[NS_RES].get(("", ns))
                if nso is None:
                    raise not_found(NS_RES, ns)
                if nso["metadata"].get("deletionTimestamp"):
                    raise forbidden(f"{r.kind.lower()}s \"{meta.get('name') or meta.get('generateName', '')}\" "
                                    f"is forbidden: unable to create new content in namespace {ns} because it "
                                    f"is being terminated", r, meta.get("name"))
            else:
                meta.pop("namespace", None)
                ns = ""
            if not meta.get("name") and meta.get("generateName"):
                for _ in range(20):
                    cand = meta["generateName"] + rand_suffix()
                    if (ns, cand) not in self.data[sr]:
                        meta["name"] = cand
                        break
            if meta.get("resourceVersion") and not internal:
                raise bad_request("resourceVersion should not be set on objects to be created")
            name = meta.get("name") or ""
            if not name:
                raise invalid(r, "", [("metadata.name", "FieldValueRequired",
                                       "Required value: name or generateName is required")])
            if (ns, name) in self.data[sr]:
                raise already_exists(r, name)
            for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields",
                      "selfLink"):
                meta.pop(k, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_iso()
            if r.has_spec:
                meta["generation"] = 1
            obj["apiVersion"], obj["kind"] = sr.api_version, sr.kind
            if _has_status(sr) and not internal:
                obj.pop("status", None)
            self._defaults(sr, obj, None)
            self._validate(sr, obj, None)
            if sr.kind == "Pod" and not sr.group:
                sa = (obj.get("spec") or {}).get("serviceAccountName") or "default"
                if (ns, sa) not in self.data[res("v1", "serviceaccounts")]:
                    shown = meta.get("name") if not body.get("metadata", {}).get("generateName") or \
                        body.get("metadata", {}).get("name") else body["metadata"]["generateName"]
                    raise forbidden(f'pods "{shown}" is forbidden: error looking up service account {ns}/{sa}: '
                                    f'serviceaccount "{sa}" not found', r, meta.get("name"))
            if manager and not internal:
                self._manage(sr, None, obj, manager, "Update", None)
            if _managed:
                meta["managedFields"] = _managed
            if dry_run:
                return self.view(r, obj)
            self._store(sr, obj, "ADDED")
            self._after_create(sr, obj)
            if sr is CRDS:
                obj = self._sync_crd(obj)
            return self.view(r, obj)

    def _review(self, r: Resource, body: dict) -> dict:
        """Reviews are answered, not stored: everyone is the admin user and everything is allowed."""
        out = copy.deepcopy(body)
        out["apiVersion"], out["kind"] = r.api_version, r.kind
        out.setdefault("metadata", {})["creationTimestamp"] = None
        if r.kind == "SelfSubjectAccessReview":
            out["status"] = {"allowed": True, "reason": "opsbook test server allows everything"}
        elif r.kind == "SelfSubjectRulesReview":
            out["status"] = {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                             "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}], "incomplete": False}
        else:
            out["status"] = {"userInfo": copy.deepcopy(TEST_USER)}
        return out

    def _check_type(self, r: Resource, body: dict) -> None:
        av, kind = body.get("apiVersion"), body.get("kind")
        if kind and kind != r.kind:
            raise bad_request(f"the API version in the data ({av}) does not match the expected API version "
                              f"({r.api_version})" if av and av != r.api_version else
                              f"Object 'Kind' is {kind}, expected {r.kind}")
        if av and av != r.api_version:
            raise bad_request(f"the API version in the data ({av}) does not match the expected API version "
                              f"({r.api_version})")

    # ------------------------------------------------------------ update

    def update(self, r: Resource, ns: str, name: str, body: Any, *, subresource: str | None = None,
               dry_run: bool = False, manager: str | None = None, internal: bool = False,
               _operation: str = "Update", _applied: tuple | None = None, _managed: builtins.list | None = None,
               validation: str | None = None) -> dict:
        with self.lock:
            if not isinstance(body, dict):
                raise bad_request("the body of the request was not a JSON object")
            if subresource != "scale":
                self.field_check(r, body, validation)
            sr = self.storage(r)
            ns = ns if r.namespaced else ""
            old = self.data[sr].get((ns, name))
            if old is None:
                raise not_found(r, name)
            if subresource != "scale":
                self._check_type(r, body)
            body = self.unview(r, body)
            bmeta = body.get("metadata") or {}
            if bmeta.get("name") and bmeta["name"] != name:
                raise bad_request(f"the name of the object ({bmeta['name']}) does not match the name on the URL "
                                  f"({name})")
            if bmeta.get("uid") and bmeta["uid"] != old["metadata"]["uid"]:
                raise conflict(r, name, f"Precondition failed: UID in precondition: {bmeta['uid']}, UID in "
                                        f"object meta: {old['metadata']['uid']}")
            brv = bmeta.get("resourceVersion")
            if brv and brv != old["metadata"]["resourceVersion"]:
                raise conflict(r, name)
            if subresource == "status":
                new = copy.deepcopy(old)
                new["status"] = copy.deepcopy(body.get("status"))
                if new["status"] is None:
                    new.pop("status")
            else:
                new = copy.deepcopy(body)
                new.setdefault("metadata", {})
                if _has_status(sr) and not internal:
                    if "status" in old:
                        new["status"] = copy.deepcopy(old["status"])
                    else:
                        new.pop("status", None)
            meta = new["metadata"]
            ometa = old["metadata"]
            for k in ("uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds",
                      "namespace", "name", "managedFields"):
                if k in ometa:
                    meta[k] = ometa[k]
                else:
                    meta.pop(k, None)
            if not r.namespaced:
                meta.pop("namespace", None)
            meta["resourceVersion"] = ometa["resourceVersion"]
            new["apiVersion"], new["kind"] = sr.api_version, sr.kind
            self._defaults(sr, new, old)
            self._validate(sr, new, old)
            if r.has_spec and _spec_of(new) != _spec_of(old) and not (internal and sr.kind == "Pod"):
                meta["generation"] = int(ometa.get("generation", 1)) + 1
            if meta.get("deletionTimestamp") and not ometa.get("deletionTimestamp"):
                meta.pop("deletionTimestamp")
            # finalizers cannot be added to an object being deleted
            if ometa.get("deletionTimestamp") and set(meta.get("finalizers") or []) - set(ometa.get("finalizers") or []):
                raise forbidden(f"{r.qualified} \"{name}\" is forbidden: no new finalizers can be added if the "
                                f"object is being deleted", r, name)
            if manager and not internal:
                self._manage(sr, old, new, manager, _operation, subresource, _applied)
            if _managed is not None:
                meta["managedFields"] = _managed
            if not meta.get("managedFields"):
                meta.pop("managedFields", None)
            if new == old:
                return self.view(r, old)
            if dry_run:
                return self.view(r, new)
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                gone = self._drop(sr, new)
                return self.view(r, gone)
            self._store(sr, new, "MODIFIED")
            if sr is CRDS and subresource != "status" and new.get("spec") != old.get("spec"):
                new = self._sync_crd(new)
            return self.view(r, new)

    # ------------------------------------------------------------ patch

    def patch(self, r: Resource, ns: str, name: str, content_type: str, raw: bytes, *,
              subresource: str | None = None, dry_run: bool = False, manager: str | None = None,
              force: bool = False, validation: str | None = None) -> tuple[dict, bool]:
        """Returns (object, created)."""
        ct = content_type.split(";")[0].strip().lower()
        with self.lock:
            if ct == "application/apply-patch+yaml":
                return self._apply(r, ns, name, raw, subresource=subresource, dry_run=dry_run,
                                   manager=manager, force=force, validation=validation)
            try:
                doc = json.loads(raw or b"null")
            except ValueError as e:
                raise bad_request(f"error decoding patch: {e}") from None
            current = self._current_for(r, ns, name, subresource)
            try:
                if ct == "application/merge-patch+json":
                    if not isinstance(doc, dict):
                        raise P.PatchError("merge patch must be a JSON object")
                    newdoc = P.merge_patch(current, doc)
                elif ct == "application/json-patch+json":
                    newdoc = P.json_patch(current, doc)
                elif ct == "application/strategic-merge-patch+json" and r.crd:
                    raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                                   "accepted media types include: application/json-patch+json, "
                                   "application/merge-patch+json, application/apply-patch+yaml")
                elif ct == "application/strategic-merge-patch+json":
                    if not isinstance(doc, dict):
                        raise P.PatchError("strategic merge patch must be a JSON object")
                    newdoc = P.strategic_merge(current, doc)
                else:
                    raise unsupported_media(content_type)
            except P.PatchError as e:
                raise ApiError(422, "Invalid", str(e)) from None
            if not isinstance(newdoc, dict):
                raise bad_request("the patched object is not a JSON object")
            if subresource != "scale":
                self.field_check(r, newdoc, validation)
            if newdoc.get("metadata", {}).get("resourceVersion") == current["metadata"].get("resourceVersion"):
                # the patch did not set a precondition
                newdoc["metadata"].pop("resourceVersion", None)
            return self._write_sub(r, ns, name, newdoc, subresource, dry_run, manager, "Update"), False

    def _current_for(self, r: Resource, ns: str, name: str, subresource: str | None) -> dict:
        obj = self.raw(r, ns, name)
        if obj is None:
            raise not_found(r, name)
        if subresource == "scale":
            return self.scale_of(r, obj)
        return self.view(r, obj)

    def _write_sub(self, r, ns, name, newdoc, subresource, dry_run, manager, operation, managed=None) -> dict:
        if subresource == "scale":
            return self.write_scale(r, ns, name, newdoc, dry_run=dry_run, manager=manager)
        return self.update(r, ns, name, newdoc, subresource=subresource, dry_run=dry_run, manager=manager,
                           _operation=operation, _managed=managed)

    # ------------------------------------------------------------ scale subresource

    def scale_of(self, r: Resource, obj: dict) -> dict:
        m = obj["metadata"]
        sel = (obj.get("spec") or {}).get("selector") or {}
        sel_str = ",".join(f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items()))
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": m["name"], "namespace": m.get("namespace"), "uid": m["uid"],
                             "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
                "spec": {"replicas": int((obj.get("spec") or {}).get("replicas", 1))},
                "status": {"replicas": int((obj.get("status") or {}).get("replicas", 0)), "selector": sel_str}}

    def write_scale(self, r: Resource, ns: str, name: str, body: dict, *, dry_run: bool = False,
                    manager: str | None = None) -> dict:
        with self.lock:
            obj = self.raw(r, ns, name)
            if obj is None:
                raise not_found(r, name)
            replicas = (body.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise ApiError(422, "Invalid", f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid '
                                               f'value: {replicas}: must be greater than or equal to 0')
            brv = (body.get("metadata") or {}).get("resourceVersion")
            if brv and brv != obj["metadata"]["resourceVersion"]:
                raise conflict(r, name)
            new = copy.deepcopy(obj)
            new["spec"]["replicas"] = replicas
            out = self.update(r, ns, name, new, dry_run=dry_run, manager=manager)
            return self.scale_of(r, out)

    # ------------------------------------------------------------ server-side apply

    def _apply(self, r: Resource, ns: str, name: str, raw: bytes, *, subresource, dry_run, manager, force,
               validation=None):
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
            self._check_type(r, applied)
            # an apply configuration with fields the schema does not know is always refused
            self.field_check(r, applied, "Strict" if validation != "Ignore" else "Ignore")
        am = applied.setdefault("metadata", {})
        if am.get("name") and am["name"] != name:
            raise bad_request(f"the name of the object ({am['name']}) does not match the name on the URL ({name})")
        am["name"] = name
        if r.namespaced:
            am.setdefault("namespace", ns)
        applied_store = self.unview(r, applied)
        new_paths = P.field_paths(applied_store, include_status=(subresource == "status"))
        if subresource == "status":
            new_paths = {p for p in new_paths if p[0] == "f:status"}
        cur = self.raw(r, ns, name)
        if cur is None:
            if subresource:
                raise not_found(r, name)
            applied["metadata"].pop("resourceVersion", None)
            obj = self.create(r, ns, applied, dry_run=dry_run, manager=None,
                              _managed=_managed_entries({(manager, "Apply", ""): new_paths}, r))
            return obj, True
        live = copy.deepcopy(cur)
        sets = _managed_sets(live)
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
        else:
            # shared ownership: values equal, everybody keeps it
            pass
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
        out = self._write_sub(r, ns, name, self.view(r, merged), subresource, dry_run, None, "Apply",
                              managed=_managed_entries(sets, r, live["metadata"].get("managedFields")))
        return out, False

    def _manage(self, r: Resource, old: dict | None, new: dict, manager: str, operation: str,
                subresource: str | None, applied=None) -> None:
        sets = _managed_sets(old) if old else {}
        if operation == "Apply":
            new["metadata"]["managedFields"] = _managed_entries(sets, r) if sets else []
            return
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
        key = (manager, operation, subresource or "")
        for k in list(sets):
            if k != key:
                sets[k] = {p for p in sets[k] - changed if P.get_path(new, p) is not P.MISSING}
            else:
                sets[k] = {p for p in sets[k] if P.get_path(new, p) is not P.MISSING}
        sets[key] = sets.get(key, set()) | changed
        new["metadata"]["managedFields"] = _managed_entries(sets, r, (old or {}).get("metadata", {}).get(
            "managedFields"))

    # ------------------------------------------------------------ delete

    def delete(self, r: Resource, ns: str, name: str, options: dict | None = None, *,
               dry_run: bool = False, internal: bool = False) -> tuple[dict, int]:
        options = options or {}
        with self.lock:
            sr = self.storage(r)
            ns = ns if r.namespaced else ""
            obj = self.data[sr].get((ns, name))
            if obj is None:
                raise not_found(r, name)
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
                raise conflict(r, name, f"Precondition failed: UID in precondition: {pre['uid']}, UID in object "
                                        f"meta: {obj['metadata']['uid']}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]:
                raise conflict(r, name, f"Precondition failed: ResourceVersion in precondition: "
                                        f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                        f"{obj['metadata']['resourceVersion']}")
            policy = options.get("propagationPolicy")
            if policy is None and options.get("orphanDependents") is True:
                policy = "Orphan"
            if sr is NS_RES:
                if name in ("default", "kube-system", "kube-public") and not internal:
                    raise forbidden(f'namespaces "{name}" is forbidden: this namespace may not be deleted', r, name)
                new = copy.deepcopy(obj)
                if dry_run:
                    return new, 200
                if not new["metadata"].get("deletionTimestamp"):
                    new["metadata"]["deletionTimestamp"] = now_iso()
                    new["metadata"]["deletionGracePeriodSeconds"] = 0
                    new.setdefault("status", {})["phase"] = "Terminating"
                    self._store(sr, new, "MODIFIED")
                return copy.deepcopy(new), 200
            if sr.kind == "Pod" and not sr.group and not obj["metadata"].get("deletionTimestamp"):
                grace = options.get("gracePeriodSeconds")
                if grace in (None, ""):
                    grace = (obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
                grace = int(grace)
                phase = (obj.get("status") or {}).get("phase")
                if grace > 0 and (obj.get("spec") or {}).get("nodeName") and phase not in ("Succeeded", "Failed"):
                    # graceful deletion: the kubelet stops the containers, then the pod goes away
                    new = copy.deepcopy(obj)
                    new["metadata"]["deletionTimestamp"] = now_iso(time.time() + grace)
                    new["metadata"]["deletionGracePeriodSeconds"] = grace
                    if dry_run:
                        return self.view(r, new), 200
                    if policy == "Orphan":
                        self._orphan(obj)
                    self.sim.setdefault(obj["metadata"]["uid"], {})["terminate_at"] = \
                        time.time() + min(grace, POD_TERMINATION_SECONDS)
                    self._store(sr, new, "MODIFIED")
                    return self.view(r, new), 200
            finalizers = list(obj["metadata"].get("finalizers") or [])
            if policy == "Orphan":
                if not dry_run:
                    self._orphan(obj)
            elif policy == "Foreground" and self._has_dependents(obj):
                if "foregroundDeletion" not in finalizers:
                    finalizers.append("foregroundDeletion")
            if finalizers:
                new = copy.deepcopy(obj)
                new["metadata"]["finalizers"] = finalizers
                if not new["metadata"].get("deletionTimestamp"):
                    new["metadata"]["deletionTimestamp"] = now_iso()
                    new["metadata"]["deletionGracePeriodSeconds"] = 0
                if dry_run:
                    return self.view(r, new), 200
                if new != obj:
                    self._store(sr, new, "MODIFIED")
                return self.view(r, new), 200
            if dry_run:
                gone = obj
            else:
                gone = self._drop(sr, obj)
            if r.return_deleted:
                return self.view(r, gone), 200
            details = {"name": name}
            if r.group:
                details["group"] = r.group
            details["kind"] = r.plural
            details["uid"] = obj["metadata"]["uid"]
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": details}, 200

    def _has_dependents(self, owner: dict) -> bool:
        uid = owner["metadata"]["uid"]
        ns = owner["metadata"].get("namespace")
        for rr in RESOURCES:
            if not rr.namespaced and ns:
                continue
            for o in self.data[rr].values():
                if any(ref.get("uid") == uid for ref in o["metadata"].get("ownerReferences") or []):
                    return True
        return False

    def _orphan(self, owner: dict) -> None:
        uid = owner["metadata"]["uid"]
        for rr in RESOURCES:
            for o in list(self.data[rr].values()):
                refs = o["metadata"].get("ownerReferences") or []
                if any(ref.get("uid") == uid for ref in refs):
                    new = copy.deepcopy(o)
                    new["metadata"]["ownerReferences"] = [ref for ref in refs if ref.get("uid") != uid]
                    if not new["metadata"]["ownerReferences"]:
                        new["metadata"].pop("ownerReferences")
                    self._store(rr, new, "MODIFIED")

    def delete_collection(self, r: Resource, ns: str | None, label_match, field_match, options: dict,
                          dry_run: bool = False) -> builtins.list[dict]:
        with self.lock:
            items, _ = self.list(r, ns, label_match, field_match)
            out = []
            for it in items:
                try:
                    obj, _code = self.delete(r, it["metadata"].get("namespace", ""), it["metadata"]["name"],
                                             options, dry_run=dry_run)
                except ApiError:
                    continue
                out.append(it if obj.get("kind") == "Status" else obj)
            return out

    # ------------------------------------------------------------ defaults

    def _defaults(self, r: Resource, obj: dict, old: dict | None) -> None:
        kind = r.kind
        spec = obj.get("spec")
        meta = obj["metadata"]
        if kind == "Namespace":
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            st = obj.setdefault("status", {})
            st.setdefault("phase", "Active")
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        elif kind == "Pod":
            if isinstance(spec, dict):
                _pod_spec_defaults(spec)
                if old is None:
                    spec.setdefault("tolerations", [])
                    keys = {t.get("key") for t in spec["tolerations"]}
                    for k in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
                        if k not in keys:
                            spec["tolerations"].append({"key": k, "operator": "Exists", "effect": "NoExecute",
                                                        "tolerationSeconds": 300})
            if old is None:
                obj["status"] = obj.get("status") or {"phase": "Pending", "qosClass": _qos(spec or {})}
        elif kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job"):
            if isinstance(spec, dict):
                tmpl = spec.get("template")
                if isinstance(tmpl, dict) and isinstance(tmpl.get("spec"), dict):
                    _pod_spec_defaults(tmpl["spec"])
                if kind == "Deployment":
                    spec.setdefault("replicas", 1)
                    spec.setdefault("revisionHistoryLimit", 10)
                    spec.setdefault("progressDeadlineSeconds", 600)
                    st = spec.setdefault("strategy", {})
                    st.setdefault("type", "RollingUpdate")
                    if st["type"] == "RollingUpdate":
                        ru = st.setdefault("rollingUpdate", {})
                        ru.setdefault("maxSurge", "25%")
                        ru.setdefault("maxUnavailable", "25%")
                elif kind == "ReplicaSet":
                    spec.setdefault("replicas", 1)
                elif kind == "StatefulSet":
                    spec.setdefault("replicas", 1)
                    spec.setdefault("podManagementPolicy", "OrderedReady")
                    spec.setdefault("revisionHistoryLimit", 10)
                    us = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
                    if us.get("type") == "RollingUpdate":
                        us.setdefault("rollingUpdate", {"partition": 0})
                    spec.setdefault("persistentVolumeClaimRetentionPolicy",
                                    {"whenDeleted": "Retain", "whenScaled": "Retain"})
                elif kind == "DaemonSet":
                    spec.setdefault("revisionHistoryLimit", 10)
                    us = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
                    if us.get("type") == "RollingUpdate":
                        ru = us.setdefault("rollingUpdate", {})
                        ru.setdefault("maxUnavailable", 1)
                        ru.setdefault("maxSurge", 0)
                elif kind == "Job":
                    spec.setdefault("parallelism", 1)
                    spec.setdefault("completions", 1)
                    spec.setdefault("backoffLimit", 6)
                    spec.setdefault("completionMode", "NonIndexed")
                    spec.setdefault("suspend", False)
                    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
                    if old is None and not spec.get("manualSelector"):
                        uid = meta["uid"]
                        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
                        if isinstance(tmpl, dict):
                            lb = tmpl.setdefault("metadata", {}).setdefault("labels", {})
                            lb.update({"batch.kubernetes.io/controller-uid": uid,
                                       "batch.kubernetes.io/job-name": meta["name"],
                                       "controller-uid": uid, "job-name": meta["name"]})
        elif kind == "Service":
            if isinstance(spec, dict):
                spec.setdefault("type", "ClusterIP")
                spec.setdefault("sessionAffinity", "None")
                if spec["type"] != "ExternalName":
                    if old is not None and (old.get("spec") or {}).get("clusterIP") and not spec.get("clusterIP"):
                        spec["clusterIP"] = old["spec"]["clusterIP"]
                    if not spec.get("clusterIP"):
                        self.svc_ip_counter += 1
                        n = self.svc_ip_counter
                        spec["clusterIP"] = f"10.96.{n // 250}.{n % 250 + 1}"
                    spec.setdefault("clusterIPs", [spec["clusterIP"]])
                    spec.setdefault("ipFamilies", ["IPv4"])
                    spec.setdefault("ipFamilyPolicy", "SingleStack")
                    spec.setdefault("internalTrafficPolicy", "Cluster")
                for i, p in enumerate(spec.get("ports") or []):
                    if isinstance(p, dict):
                        p.setdefault("protocol", "TCP")
                        if "port" in p:
                            p.setdefault("targetPort", p["port"])
                        if spec["type"] in ("NodePort", "LoadBalancer") and "nodePort" not in p:
                            oldp = ((old or {}).get("spec") or {}).get("ports") or []
                            if i < len(oldp) and oldp[i].get("nodePort"):
                                p["nodePort"] = oldp[i]["nodePort"]
                            else:
                                self.node_port_counter += 1
                                p["nodePort"] = self.node_port_counter
            obj.setdefault("status", {"loadBalancer": {}})
        elif kind == "Secret":
            obj.setdefault("type", "Opaque")
            sd = obj.pop("stringData", None)
            if isinstance(sd, dict):
                data = obj.setdefault("data", {}) or {}
                obj["data"] = data
                for k, v in sd.items():
                    data[k] = base64.b64encode(str(v).encode()).decode()
        elif kind == "PersistentVolumeClaim" and old is None:
            spec = obj.setdefault("spec", {})
            if "storageClassName" not in spec:  # the DefaultStorageClass admission plugin
                for sc in self.data[res("storage.k8s.io/v1", "storageclasses")].values():
                    if (sc["metadata"].get("annotations") or {}).get(
                            "storageclass.kubernetes.io/is-default-class") == "true":
                        spec["storageClassName"] = sc["metadata"]["name"]
            spec.setdefault("volumeMode", "Filesystem")
            fins = meta.setdefault("finalizers", [])
            if "kubernetes.io/pvc-protection" not in fins:
                fins.append("kubernetes.io/pvc-protection")
            obj["status"] = {"phase": "Pending"}
        elif kind == "PersistentVolume" and old is None:
            fins = meta.setdefault("finalizers", [])
            if "kubernetes.io/pv-protection" not in fins:
                fins.append("kubernetes.io/pv-protection")
            obj.setdefault("spec", {}).setdefault("persistentVolumeReclaimPolicy", "Retain")
            obj["spec"].setdefault("volumeMode", "Filesystem")
            obj["status"] = obj.get("status") or {"phase": "Pending"}
        elif kind == "HorizontalPodAutoscaler" and isinstance(spec, dict):
            spec.setdefault("minReplicas", 1)
            if not spec.get("metrics"):
                spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": {
                    "type": "Utilization", "averageUtilization": 80}}}]
        elif kind == "StorageClass" and old is None:
            obj.setdefault("reclaimPolicy", "Delete")
            obj.setdefault("volumeBindingMode", "Immediate")
        elif kind == "Ingress":
            obj.setdefault("status", {"loadBalancer": {}})
        elif kind == "Event":
            obj.setdefault("involvedObject", {})
            if not obj.get("reportingComponent"):
                obj["reportingComponent"] = (obj.get("source") or {}).get("component", "")
            obj.setdefault("reportingInstance", "")

    # ------------------------------------------------------------ validation

    def _validate(self, r: Resource, obj: dict, old: dict | None) -> None:
        meta = obj["metadata"]
        name = meta.get("name", "")
        causes: list[tuple[str, str, str]] = []
        if old is None:
            prob = _name_problem(r, name)
            if prob:
                causes.append(("metadata.name", "FieldValueInvalid", f'Invalid value: "{name}": {prob}'))
        for k, v in (meta.get("labels") or {}).items():
            if not isinstance(v, str) or len(v) > 63 or not LABEL_VALUE.match(v):
                causes.append(("metadata.labels", "FieldValueInvalid",
                               f'Invalid value: "{v}": a valid label must be an empty string or consist of '
                               f"alphanumeric characters, '-', '_' or '.', and must start and end with an "
                               f"alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used "
                               f"for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"))
            key = k.rsplit("/", 1)[-1]
            if not key or len(key) > 63 or not QUALIFIED_NAME.match(key):
                causes.append(("metadata.labels", "FieldValueInvalid", f'Invalid value: "{k}": name part must '
                               f"consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
                               f"an alphanumeric character"))
        for k, v in (meta.get("annotations") or {}).items():
            if not isinstance(v, str):
                causes.append(("metadata.annotations", "FieldValueInvalid", f"Invalid value: {k}: must be a string"))
        spec = obj.get("spec")
        kind = r.kind
        if kind == "Pod":
            _validate_pod_spec(spec, "spec", causes)
            if old is not None and isinstance(spec, dict):
                os_ = old.get("spec") or {}
                for fld in ("nodeName",):
                    if os_.get(fld) and spec.get(fld) != os_.get(fld):
                        causes.append((f"spec.{fld}", "FieldValueForbidden",
                                       "Forbidden: pod updates may not change fields other than "
                                       "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                                       "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
                                       "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to "
                                       "be set to 1 if it was previously negative)"))
        elif kind in ("Deployment", "ReplicaSet", "DaemonSet", "StatefulSet", "Job"):
            if not isinstance(spec, dict):
                causes.append(("spec", "FieldValueRequired", "Required value"))
            else:
                sel = spec.get("selector")
                tmpl = spec.get("template") if isinstance(spec.get("template"), dict) else None
                if not sel:
                    causes.append(("spec.selector", "FieldValueRequired", "Required value"))
                elif not (sel.get("matchLabels") or sel.get("matchExpressions")):
                    causes.append(("spec.selector", "FieldValueInvalid",
                                   "Invalid value: \"null\": empty selector is invalid for deployment"))
                if tmpl is None:
                    causes.append(("spec.template", "FieldValueRequired", "Required value"))
                else:
                    from .selectors import match_selector_object
                    labels = (tmpl.get("metadata") or {}).get("labels") or {}
                    if sel and not match_selector_object(sel, labels):
                        causes.append(("spec.template.metadata.labels", "FieldValueInvalid",
                                       f"Invalid value: {_gomap(labels)}: `selector` does not match template "
                                       f"`labels`"))
                    _validate_pod_spec(tmpl.get("spec"), "spec.template.spec", causes)
                    rp = (tmpl.get("spec") or {}).get("restartPolicy")
                    if kind == "Job" and rp not in ("OnFailure", "Never"):
                        causes.append(("spec.template.spec.restartPolicy", "FieldValueNotSupported",
                                       f'Unsupported value: "{rp}": supported values: "OnFailure", "Never"'))
                    elif kind != "Job" and rp not in (None, "Always"):
                        causes.append(("spec.template.spec.restartPolicy", "FieldValueNotSupported",
                                       f'Unsupported value: "{rp}": supported values: "Always"'))
                rep = spec.get("replicas")
                if rep is not None and (not isinstance(rep, int) or rep < 0):
                    causes.append(("spec.replicas", "FieldValueInvalid",
                                   f"Invalid value: {rep}: must be greater than or equal to 0"))
                if old is not None and kind != "Job":
                    if (old.get("spec") or {}).get("selector") != sel:
                        causes.append(("spec.selector", "FieldValueInvalid",
                                       f"Invalid value: {_golabelsel(sel)}: field is immutable"))
                if old is not None and kind == "Job":
                    if json.dumps((old.get("spec") or {}).get("template"), sort_keys=True) != json.dumps(
                            tmpl, sort_keys=True):
                        causes.append(("spec.template", "FieldValueInvalid",
                                       "Invalid value: ...: field is immutable"))
        elif kind == "Service":
            if not isinstance(spec, dict):
                spec = {}
            ports = spec.get("ports")
            if not ports and spec.get("clusterIP") != "None" and spec.get("type") != "ExternalName":
                causes.append(("spec.ports", "FieldValueRequired", "Required value"))
            for i, p in enumerate(ports or []):
                port = p.get("port") if isinstance(p, dict) else None
                if not isinstance(port, int) or not 1 <= port <= 65535:
                    causes.append((f"spec.ports[{i}].port", "FieldValueInvalid",
                                   f"Invalid value: {port}: must be between 1 and 65535, inclusive"))
                if len(ports or []) > 1 and isinstance(p, dict) and not p.get("name"):
                    causes.append((f"spec.ports[{i}].name", "FieldValueRequired", "Required value"))
            if old is not None and (old.get("spec") or {}).get("clusterIP") not in (None, "") and \
                    spec.get("clusterIP") != old["spec"]["clusterIP"]:
                causes.append(("spec.clusterIPs[0]", "FieldValueInvalid",
                               f"Invalid value: []string{{\"{spec.get('clusterIP')}\"}}: may not change once set"))
        elif kind in ("ConfigMap", "Secret"):
            for fld in ("data", "binaryData"):
                d = obj.get(fld)
                if d is None:
                    continue
                if not isinstance(d, dict):
                    causes.append((fld, "FieldValueInvalid", "Invalid value: must be a map"))
                    continue
                for k, v in d.items():
                    if not re.match(r"^[-._a-zA-Z0-9]+$", k):
                        causes.append((f"{fld}[{k}]", "FieldValueInvalid",
                                       f"Invalid value: \"{k}\": a valid config key must consist of alphanumeric "
                                       f"characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or "
                                       f"'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"))
                    elif not isinstance(v, str):
                        causes.append((f"{fld}[{k}]", "FieldValueInvalid", "Invalid value: must be a string"))
                    elif kind == "Secret" or fld == "binaryData":
                        try:
                            base64.b64decode(v, validate=True)
                        except Exception:
                            raise bad_request(f"illegal base64 data in {fld}[{k}]") from None
            if kind == "Secret" and old is not None and old.get("type") != obj.get("type"):
                causes.append(("type", "FieldValueInvalid", f'Invalid value: "{obj.get("type")}": field is immutable'))
            if old is not None and old.get("immutable") and (old.get("data") != obj.get("data")):
                causes.append(("data", "FieldValueForbidden",
                               "Forbidden: field is immutable when `immutable` is set"))
        elif kind in ("RoleBinding", "ClusterRoleBinding"):
            if not obj.get("roleRef"):
                causes.append(("roleRef.name", "FieldValueRequired", "Required value"))
            elif old is not None and old.get("roleRef") != obj.get("roleRef"):
                causes.append(("roleRef", "FieldValueInvalid", "Invalid value: cannot change roleRef"))
        elif kind == "Ingress":
            if isinstance(spec, dict):
                if not spec.get("rules") and not spec.get("defaultBackend"):
                    causes.append(("spec.rules", "FieldValueRequired",
                                   "Required value: either `defaultBackend` or `rules` must be specified"))
        elif kind == "CustomResourceDefinition":
            spec = spec if isinstance(spec, dict) else {}
            names = spec.get("names") or {}
            for fld in ("group",):
                if not spec.get(fld):
                    causes.append((f"spec.{fld}", "FieldValueRequired", "Required value"))
            for fld in ("plural", "kind"):
                if not names.get(fld):
                    causes.append((f"spec.names.{fld}", "FieldValueRequired", "Required value"))
            if spec.get("scope") not in ("Namespaced", "Cluster"):
                causes.append(("spec.scope", "FieldValueNotSupported",
                               f'Unsupported value: "{spec.get("scope")}": supported values: "Cluster", "Namespaced"'))
            versions = spec.get("versions") or []
            if not versions:
                causes.append(("spec.versions", "FieldValueInvalid", "Invalid value: must have exactly one version "
                                                                     "marked as storage version"))
            elif sum(1 for v in versions if v.get("storage")) != 1:
                causes.append(("spec.versions", "FieldValueInvalid",
                               "Invalid value: must have exactly one version marked as storage version"))
            if names.get("plural") and spec.get("group") and name != f"{names['plural']}.{spec['group']}":
                causes.append(("metadata.name", "FieldValueInvalid",
                               f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group'))
            if old is not None and (old.get("spec") or {}).get("group") != spec.get("group"):
                causes.append(("spec.group", "FieldValueInvalid", "Invalid value: field is immutable"))
        elif kind == "PersistentVolumeClaim":
            spec = spec if isinstance(spec, dict) else {}
            if not spec.get("accessModes"):
                causes.append(("spec.accessModes", "FieldValueRequired", "Required value: at least 1 access mode "
                                                                          "is required"))
            if not ((spec.get("resources") or {}).get("requests") or {}).get("storage"):
                causes.append(("spec.resources[storage]", "FieldValueRequired", "Required value"))
            if old is not None and old.get("spec", {}).get("volumeName") and \
                    spec.get("volumeName") != old["spec"]["volumeName"]:
                causes.append(("spec", "FieldValueForbidden", "Forbidden: spec is immutable after creation except "
                                                              "resources.requests and volumeAttributesClassName for "
                                                              "bound claims"))
        if causes:
            raise invalid(r, name, causes)

    # ------------------------------------------------------------ custom resources

    def _sync_crd(self, crd: dict) -> dict:
        """Serve the versions a CustomResourceDefinition declares, and mark it Established."""
        from . import resources as RS

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
        for old in self.crd_resources.get(uid, []):
            if old not in wanted:
                RS.unregister(old)
                self.aliases.pop(old, None)
        for r in wanted:
            replaced = RS.register(r)
            if replaced is not None and replaced != r and replaced in self.data:
                self.data.setdefault(r, {}).update(self.data.pop(replaced))
            if r == storage_r:
                self.data.setdefault(r, {})
                self.aliases.pop(r, None)
            elif storage_r is not None:
                self.aliases[r] = storage_r
                if self.data.get(r):  # the storage version moved: keep the objects
                    moved = self.data.pop(r)
                    self.data.setdefault(storage_r, {}).update(
                        {k: {**o, "apiVersion": storage_r.api_version} for k, o in moved.items()})
        self.crd_resources[uid] = wanted
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
            return self.update(CRDS, "", crd["metadata"]["name"], new, subresource="status", internal=True)
        return crd

    def _remove_crd(self, crd: dict) -> None:
        from . import resources as RS

        for r in self.crd_resources.pop(crd["metadata"]["uid"], []):
            sr = self.aliases.pop(r, r)
            for obj in list(self.data.get(sr, {}).values()):
                self._drop(sr, obj)
            RS.unregister(r)
        for r in [r for r in self.data if r.crd and r not in RESOURCES and not self.data[r]]:
            del self.data[r]

    # ------------------------------------------------------------ pods/binding, pods/eviction

    def bind(self, ns: str, name: str, body: dict, dry_run: bool = False) -> dict:
        pods = res("v1", "pods")
        with self.lock:
            pod = self.raw(pods, ns, name)
            if pod is None:
                raise not_found(pods, name)
            target = (body or {}).get("target") or {}
            node = target.get("name")
            if not node:
                raise invalid(res("v1", "pods"), name, [("target.name", "FieldValueRequired", "Required value")])
            if (pod.get("spec") or {}).get("nodeName"):
                raise conflict(pods, name, f"pod {name} is already assigned to node "
                                           f"\"{pod['spec']['nodeName']}\"")
            if not dry_run:
                new = copy.deepcopy(pod)
                new["spec"]["nodeName"] = node
                self.update(pods, ns, name, new, internal=True)
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    def evict(self, ns: str, name: str, body: dict, dry_run: bool = False) -> dict:
        from .selectors import match_selector_object
        pods, pdbs = res("v1", "pods"), res("policy/v1", "poddisruptionbudgets")
        with self.lock:
            pod = self.raw(pods, ns, name)
            if pod is None:
                raise not_found(pods, name)
            labels = pod["metadata"].get("labels") or {}
            for pdb in self.objects(pdbs, ns):
                spec = pdb.get("spec") or {}
                if not match_selector_object(spec.get("selector") or {}, labels):
                    continue
                matching = [p for p in self.objects(pods, ns)
                            if match_selector_object(spec.get("selector") or {}, p["metadata"].get("labels"))
                            and not p["metadata"].get("deletionTimestamp")]
                healthy = sum(1 for p in matching if any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (p.get("status") or {}).get("conditions") or []))
                total = len(matching)

                def _n(v, tot):
                    if isinstance(v, str) and v.endswith("%"):
                        return -(-int(v[:-1]) * tot // 100)
                    return int(v)
                if "minAvailable" in spec:
                    allowed = healthy - _n(spec["minAvailable"], total)
                elif "maxUnavailable" in spec:
                    allowed = _n(spec["maxUnavailable"], total) - (total - healthy)
                else:
                    allowed = 1
                if allowed <= 0:
                    raise ApiError(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's "
                                                           "disruption budget.",
                                   {"causes": [{"reason": "DisruptionBudget", "message": f"The disruption "
                                                f"budget {pdb['metadata']['name']} needs "
                                                f"{healthy - max(allowed, 0)} healthy pods and has {healthy} "
                                                f"currently"}]})
            opts = (body or {}).get("deleteOptions") or {}
            self.delete(pods, ns, name, opts, dry_run=dry_run)
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    # ------------------------------------------------------------ hooks

    def _after_create(self, r: Resource, obj: dict) -> None:
        if r.kind == "Pod" and not r.group:
            self.sim.setdefault(obj["metadata"]["uid"], {"created": time.time()})
        if r is NS_RES:
            self.namespace_defaults(obj["metadata"]["name"])

    def namespace_defaults(self, ns: str) -> None:
        """What the service-account and root-CA controllers put into every namespace."""
        sa, cm = res("v1", "serviceaccounts"), res("v1", "configmaps")
        if (ns, "default") not in self.data[sa]:
            self.create(sa, ns, {"metadata": {"name": "default"}}, internal=True)
        if (ns, "kube-root-ca.crt") not in self.data[cm]:
            self.create(cm, ns, {"metadata": {"name": "kube-root-ca.crt", "annotations": {
                "kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver "
                                             "when using internal endpoints such as the internal service IP or "
                                             "kubernetes.default.svc. No other usage is guaranteed across "
                                             "distributions of Kubernetes clusters."}},
                "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nopsbook-test-server\n-----END CERTIFICATE-----\n"}},
                internal=True)

    # ------------------------------------------------------------ events (for controllers)

    def record_event(self, involved: dict, reason: str, message: str, typ: str = "Normal",
                     component: str = "kubelet") -> None:
        with self.lock:
            m = involved["metadata"]
            ns = m.get("namespace") or "default"
            if ("", ns) not in self.data[NS_RES]:
                return
            nso = self.data[NS_RES][("", ns)]
            if nso["metadata"].get("deletionTimestamp"):
                return
            now = now_iso()
            for ev in self.data[EVENTS_CORE].values():
                io = ev.get("involvedObject") or {}
                if io.get("uid") == m.get("uid") and ev.get("reason") == reason and ev.get("message") == message:
                    new = copy.deepcopy(ev)
                    new["count"] = int(new.get("count", 1)) + 1
                    new["lastTimestamp"] = now
                    self._store(EVENTS_CORE, new, "MODIFIED")
                    return
            name = f"{m['name']}.{int(time.time() * 1e9):x}"[:253]
            ev = {"apiVersion": "v1", "kind": "Event",
                  "metadata": {"name": name, "namespace": ns, "uid": str(uuid.uuid4()), "creationTimestamp": now},
                  "involvedObject": {"kind": involved.get("kind"), "namespace": m.get("namespace"),
                                     "name": m["name"], "uid": m.get("uid"),
                                     "apiVersion": involved.get("apiVersion"),
                                     "resourceVersion": m.get("resourceVersion")},
                  "reason": reason, "message": message, "type": typ, "count": 1,
                  "source": {"component": component}, "firstTimestamp": now, "lastTimestamp": now,
                  "eventTime": micro_iso(), "reportingComponent": component,
                  "reportingInstance": f"{component}-opsbook", "action": reason}
            if not ev["involvedObject"]["namespace"]:
                ev["involvedObject"].pop("namespace")
            self._store(EVENTS_CORE, ev, "ADDED")

    # ------------------------------------------------------------ logs

    def append_log(self, ns: str, pod: str, container: str, text: str, previous: bool = False) -> None:
        with self.lock:
            store = self.prev_logs if previous else self.logs
            lines = store.setdefault((ns, pod, container), [])
            now = time.time()
            for line in text.splitlines():
                lines.append((now, line))
            self.cond.notify_all()


# ---------------------------------------------------------------- helpers

def _spec_of(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _gomap(d: dict) -> str:
    return "map[string]string{" + ", ".join(f'"{k}":"{v}"' for k, v in sorted(d.items())) + "}"


def _golabelsel(sel: Any) -> str:
    return "v1.LabelSelector{MatchLabels:" + _gomap((sel or {}).get("matchLabels") or {}) + ", MatchExpressions:[]v1.LabelSelectorRequirement(nil)}"


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


def _managed_sets(obj: dict | None) -> dict[tuple[str, str, str], set]:
    out: dict[tuple[str, str, str], set] = {}
    for e in (obj or {}).get("metadata", {}).get("managedFields") or []:
        if not isinstance(e, dict) or not e.get("manager"):
            continue
        key = (e["manager"], e.get("operation", "Update"), e.get("subresource", ""))
        out[key] = out.get(key, set()) | P.fields_v1_to_paths(e.get("fieldsV1") or {})
    return out


def _managed_entries(sets: dict, r: Resource, prev: list | None = None) -> list[dict]:
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


def _pod_spec_defaults(spec: dict) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    if "serviceAccountName" in spec or "serviceAccount" not in spec:
        spec.setdefault("serviceAccountName", "default")
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if not isinstance(c, dict):
            continue
        image = c.get("image") or ""
        tag = image.rsplit("/", 1)[-1]
        if "imagePullPolicy" not in c:
            c["imagePullPolicy"] = "Always" if (":" not in tag or tag.endswith(":latest")) and "@" not in tag \
                else "IfNotPresent"
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        c.setdefault("resources", {})
        for p in c.get("ports") or []:
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")


def _qos(spec: dict) -> str:
    res_ = [c.get("resources") or {} for c in spec.get("containers") or [] if isinstance(c, dict)]
    if not any(r.get("requests") or r.get("limits") for r in res_):
        return "BestEffort"
    if all((r.get("limits") or {}).get("cpu") and (r.get("limits") or {}).get("memory") and
           (not r.get("requests") or r.get("requests") == r.get("limits")) for r in res_):
        return "Guaranteed"
    return "Burstable"


def _validate_pod_spec(spec: Any, prefix: str, causes: list) -> None:
    if not isinstance(spec, dict):
        causes.append((prefix, "FieldValueRequired", "Required value"))
        return
    containers = spec.get("containers")
    if not containers:
        causes.append((f"{prefix}.containers", "FieldValueRequired", "Required value"))
        return
    seen = set()
    for field in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(field) or []):
            p = f"{prefix}.{field}[{i}]"
            if not isinstance(c, dict):
                causes.append((p, "FieldValueInvalid", "Invalid value: must be an object"))
                continue
            name = c.get("name")
            if not name:
                causes.append((f"{p}.name", "FieldValueRequired", "Required value"))
            elif not DNS1123_LABEL.match(name) or len(name) > 63:
                causes.append((f"{p}.name", "FieldValueInvalid", f'Invalid value: "{name}": {LABEL_MSG}'))
            elif name in seen:
                causes.append((f"{p}.name", "FieldValueDuplicate", f'Duplicate value: "{name}"'))
            seen.add(name)
            if not c.get("image"):
                causes.append((f"{p}.image", "FieldValueRequired", "Required value"))
            for j, port in enumerate(c.get("ports") or []):
                cp = port.get("containerPort") if isinstance(port, dict) else None
                if not isinstance(cp, int) or not 1 <= cp <= 65535:
                    causes.append((f"{p}.ports[{j}].containerPort", "FieldValueInvalid" if cp else
                                   "FieldValueRequired", f"Invalid value: {cp}: must be between 1 and 65535, "
                                   f"inclusive" if cp else "Required value"))
            for j, e in enumerate(c.get("env") or []):
                if not isinstance(e, dict) or not e.get("name"):
                    causes.append((f"{p}.env[{j}].name", "FieldValueRequired", "Required value"))
