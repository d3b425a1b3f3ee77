"""The object store and the API verbs over it: create / get / list / update / patch / delete, resource
versions, generation, finalizers, and the watch history. What a verb checks or fills in lives in the
modules named after it: validation, defaults, apply (server-side apply, managedFields), deletion,
subresources, crds, events."""

from __future__ import annotations

import builtins
import copy
import json
import threading
import time
import uuid
from typing import Any

from . import deletion
from . import patch as P
from .apply import server_side_apply, track_managers
from .crds import CRDS, remove_crd, sync_crd
from .defaults import set_defaults
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
from .events import EVENTS_CORE, EVENTS_NEW, as_core_event, as_new_event
from .meta import now_iso, rand_suffix
from .resources import RESOURCES, Resource, res
from .subresources import REVIEWS, review, scale_of, write_scale
from .validation import check_fields, check_type, validate

NS_RES = res("v1", "namespaces")
SERVICE_ACCOUNTS = res("v1", "serviceaccounts")
CONFIG_MAPS = res("v1", "configmaps")
NO_FAULTS = {"api_error_rate": 0.0, "paths": None, "methods": None}
HISTORY_MAX = 20000  # watch history kept (older resourceVersions get 410 Expired)


def _has_status(r: Resource) -> bool:
    return "status" in r.subresources


def _spec_of(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class Cluster:
    """The cluster's state. ``lock`` guards everything; ``cond`` (on the same lock) wakes watchers,
    log followers and the controllers whenever something is written."""

    def __init__(self, nodes: int = 3, ready_delay: float = 0.3, root_ca_pem: str | None = None):
        self.root_ca_pem = root_ca_pem  # the CA that signed the server's certificate: kube-root-ca.crt
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.rv = 0
        self.data: dict[Resource, dict[tuple[str, str], dict]] = {r: {} for r in RESOURCES}
        self.history: list[tuple] = []
        self.history_floor = 0  # events with rv <= floor are no longer available
        self.node_count = nodes
        self.ready_delay = ready_delay
        self.logs: dict[tuple[str, str, str], list[tuple[float, str]]] = {}
        self.prev_logs: dict[tuple[str, str, str], list[tuple[float, str]]] = {}
        self.faults: dict[str, Any] = dict(NO_FAULTS)
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

    def field_check(self, r: Resource, body: dict, mode: str | None, patch_type: str | None = None,
                    patch: Any = None) -> None:
        check_fields(r, body, mode, getattr(self.tl, "warnings", None), patch_type, patch)

    # ------------------------------------------------------------ raw storage

    def _emit(self, typ: str, r: Resource, obj: dict, prev: dict | None = None) -> None:
        self.history.append((self.rv, typ, r, obj, prev))
        if len(self.history) > HISTORY_MAX:
            cut = len(self.history) // 2
            self.history_floor = self.history[cut - 1][0]
            del self.history[:cut]
        self.cond.notify_all()

    def store(self, r: Resource, obj: dict, typ: str) -> dict:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        m = obj["metadata"]
        key = (m.get("namespace", ""), m["name"])
        prev = self.data[r].get(key)
        self.data[r][key] = obj
        self._emit(typ, r, obj, prev)
        return obj

    def drop(self, r: Resource, obj: dict) -> dict:
        if r is CRDS:
            remove_crd(self, obj)
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
        return as_new_event(obj) if r is EVENTS_NEW else obj

    def unview(self, r: Resource, body: dict) -> dict:
        if r in self.aliases and isinstance(body, dict):
            return {**body, "apiVersion": self.aliases[r].api_version}
        return as_core_event(body) if r is EVENTS_NEW else body

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
            check_type(r, body)
            self.field_check(r, body, validation)
            if r in REVIEWS:
                return review(r, body)
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
            set_defaults(self, sr, obj, None)
            validate(sr, obj, None)
            if sr.kind == "Pod" and not sr.group:
                sa = (obj.get("spec") or {}).get("serviceAccountName") or "default"
                if (ns, sa) not in self.data[SERVICE_ACCOUNTS]:
                    shown = meta.get("name") if not body.get("metadata", {}).get("generateName") or \
                        body.get("metadata", {}).get("name") else body["metadata"]["generateName"]
                    raise forbidden(f'pods "{shown}" is forbidden: error looking up service account {ns}/{sa}: '
                                    f'serviceaccount "{sa}" not found', r, meta.get("name"))
            if manager and not internal:
                track_managers(sr, None, obj, manager, None)
            if _managed:
                meta["managedFields"] = _managed
            if dry_run:
                return self.view(r, obj)
            self.store(sr, obj, "ADDED")
            self._after_create(sr, obj)
            if sr is CRDS:
                obj = sync_crd(self, obj)
            return self.view(r, obj)

    # ------------------------------------------------------------ update

    def update(self, r: Resource, ns: str, name: str, body: Any, *, subresource: str | None = None,
               dry_run: bool = False, manager: str | None = None, internal: bool = False,
               _managed: builtins.list | None = None, validation: str | None = None) -> dict:
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
                check_type(r, body)
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
            set_defaults(self, sr, new, old)
            validate(sr, new, old)
            if r.has_spec and _spec_of(new) != _spec_of(old) and not (internal and sr.kind == "Pod"):
                meta["generation"] = int(ometa.get("generation", 1)) + 1
            if meta.get("deletionTimestamp") and not ometa.get("deletionTimestamp"):
                meta.pop("deletionTimestamp")
            # finalizers cannot be added to an object being deleted
            if ometa.get("deletionTimestamp") and set(meta.get("finalizers") or []) - set(ometa.get("finalizers") or []):
                raise forbidden(f"{r.qualified} \"{name}\" is forbidden: no new finalizers can be added if the "
                                f"object is being deleted", r, name)
            if manager and not internal:
                track_managers(sr, old, new, manager, subresource)
            if _managed is not None:
                meta["managedFields"] = _managed
            if not meta.get("managedFields"):
                meta.pop("managedFields", None)
            if new == old:
                return self.view(r, old)
            if dry_run:
                return self.view(r, new)
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                gone = self.drop(sr, new)
                return self.view(r, gone)
            self.store(sr, new, "MODIFIED")
            if sr is CRDS and subresource != "status" and new.get("spec") != old.get("spec"):
                new = sync_crd(self, new)
            return self.view(r, new)

    # ------------------------------------------------------------ patch

    def patch(self, r: Resource, ns: str, name: str, content_type: str, raw: bytes, *,
              subresource: str | None = None, dry_run: bool = False, manager: str | None = None,
              force: bool = False, validation: str | None = None) -> tuple[dict, bool]:
        """Returns (object, created)."""
        ct = content_type.split(";")[0].strip().lower()
        with self.lock:
            if ct == "application/apply-patch+yaml":
                return server_side_apply(self, r, ns, name, raw, subresource=subresource, dry_run=dry_run,
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
                self.field_check(r, newdoc, validation, ct, doc)
            if newdoc.get("metadata", {}).get("resourceVersion") == current["metadata"].get("resourceVersion"):
                # the patch did not set a precondition
                newdoc["metadata"].pop("resourceVersion", None)
            return self.write_sub(r, ns, name, newdoc, subresource, dry_run, manager), False

    def _current_for(self, r: Resource, ns: str, name: str, subresource: str | None) -> dict:
        obj = self.raw(r, ns, name)
        if obj is None:
            raise not_found(r, name)
        if subresource == "scale":
            return scale_of(r, obj)
        return self.view(r, obj)

    def write_sub(self, r: Resource, ns: str, name: str, newdoc: dict, subresource: str | None, dry_run: bool,
                  manager: str | None, managed: builtins.list | None = None) -> dict:
        """Write ``newdoc`` as the object, its status or its scale (``subresource``)."""
        if subresource == "scale":
            return write_scale(self, r, ns, name, newdoc, dry_run=dry_run, manager=manager)
        return self.update(r, ns, name, newdoc, subresource=subresource, dry_run=dry_run, manager=manager,
                           _managed=managed)

    # ------------------------------------------------------------ delete

    def delete(self, r: Resource, ns: str, name: str, options: dict | None = None, *,
               dry_run: bool = False, internal: bool = False) -> tuple[dict, int]:
        return deletion.delete(self, r, ns, name, options, dry_run=dry_run, internal=internal)

    def delete_collection(self, r: Resource, ns: str | None, label_match, field_match, options: dict,
                          dry_run: bool = False) -> builtins.list[dict]:
        return deletion.delete_collection(self, r, ns, label_match, field_match, options, dry_run=dry_run)

    # ------------------------------------------------------------ hooks

    def _after_create(self, r: Resource, obj: dict) -> None:
        if r.kind == "Pod" and not r.group:
            self.sim.setdefault(obj["metadata"]["uid"], {"created": time.time()})
        if r is NS_RES:
            self.namespace_defaults(obj["metadata"]["name"])

    def namespace_defaults(self, ns: str) -> None:
        """What the service-account and root-CA controllers put into every namespace."""
        sa, cm = SERVICE_ACCOUNTS, CONFIG_MAPS
        if (ns, "default") not in self.data[sa]:
            self.create(sa, ns, {"metadata": {"name": "default"}}, internal=True)
        if (ns, "kube-root-ca.crt") not in self.data[cm]:
            self.create(cm, ns, {"metadata": {"name": "kube-root-ca.crt", "annotations": {
                "kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver "
                                             "when using internal endpoints such as the internal service IP or "
                                             "kubernetes.default.svc. No other usage is guaranteed across "
                                             "distributions of Kubernetes clusters."}},
                "data": {"ca.crt": self.root_ca_pem or "-----BEGIN CERTIFICATE-----\nopsbook-test-server\n"
                                                         "-----END CERTIFICATE-----\n"}},
                internal=True)

    # ------------------------------------------------------------ logs

    def append_log(self, ns: str, pod: str, container: str, text: str, previous: bool = False) -> None:
        with self.lock:
            kept = self.prev_logs if previous else self.logs
            lines = kept.setdefault((ns, pod, container), [])
            now = time.time()
            for line in text.splitlines():
                lines.append((now, line))
            self.cond.notify_all()

