"""What an apply changed, kept so that it can be taken back (``opsbook undo RUN_ID``).

A change step declares its undo next to its plan (``@change(..., plan=..., undo=JOURNAL)``) and makes
its changes through ``ctx.journal``, which reads each object before and after and keeps both::

    ctx.journal.apply(ctx.kube, manifests, namespace=ns)       # server-side apply, object by object
    with ctx.journal.helm(ctx.helm, release, namespace=ns):   # the release's revision before and after
        ctx.helm.install(...)
    ctx.journal.alias(registry, model=..., alias=..., version=...)

The notebook API gives every change a fresh journal in apply mode and records its entries with the
step (``undo`` in the step's record, redacted like the rest), also when the step fails halfway: what
it did change is in the record. A step whose change cannot be taken back declares
``undo=irreversible("why")``; one that declares nothing is recorded as ``undo: none`` with that reason.

The undo runbook (:mod:`opsbook.ops.undo`) reverses the entries, newest first, through the
:class:`Undoer` each step's record names: :data:`JOURNAL` (this module's, for objects, Helm releases
and registry aliases) or one a runbook registers for its own entries (incident response restores
disabled accounts through ``restore_item``). Before it touches anything it checks that each thing is
still what the apply left (resourceVersion, Helm revision, alias target) and refuses with the
difference otherwise.

Secrets: a Secret's values are never recorded (``dataSha256`` instead, as in incident evidence). A
Secret the apply created can be deleted; one it changed or deleted cannot be put back, and the undo
says so (a service-account token Secret is re-created empty: the cluster mints a new token).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from opsbook.errors import Conflict, NotFound, OpsbookError

#: metadata the API server sets: left out of every copy kept for an undo, and of every comparison
SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation", "selfLink",
                 "deletionTimestamp", "deletionGracePeriodSeconds")
#: annotations the server or kubectl maintain (not a difference an operator made)
SERVER_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration", "deployment.kubernetes.io/revision")
TOKEN_TYPE = "kubernetes.io/service-account-token"
#: what the redactor writes in place of a secret value (``opsbook.secrets.MASK``; ops import no engine
#: module): a copy that holds it is not put back
REDACTED = "[REDACTED]"


def clean(obj: Mapping[str, Any], *, keep_status: bool = False) -> dict[str, Any]:
    """An object without the fields the server sets (uid, resourceVersion, managedFields...), so
    that a saved copy can be created again."""
    out = copy.deepcopy(dict(obj))
    meta = out.get("metadata") or {}
    for k in SERVER_FIELDS:
        meta.pop(k, None)
    if not keep_status:
        out.pop("status", None)
    return out


def secret_copy(sec: Mapping[str, Any]) -> dict[str, Any]:
    """A Secret without its values: metadata, type and the sha256 of each key's (base64) value. A
    credential is never written to the record, nor put back."""
    c = clean(sec)
    if "dataSha256" in c and "data" not in c:
        return c  # a copy already
    data = c.pop("data", None) or {}
    c.pop("stringData", None)
    c["dataSha256"] = {k: hashlib.sha256(str(v).encode()).hexdigest() for k, v in sorted(data.items())}
    return c


def kept_copy(obj: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What the record keeps of an object: :func:`clean`, a Secret without its values."""
    if obj is None:
        return None
    return secret_copy(obj) if obj.get("kind") == "Secret" else clean(obj)


def comparable(obj: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """An object as two states of it are compared: no server-set fields, no status, no annotations
    the server maintains, a Secret by the digests of its values."""
    if obj is None:
        return None
    c = kept_copy(obj) or {}
    meta = c.get("metadata") or {}
    ann = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in SERVER_ANNOTATIONS}
    if ann:
        meta["annotations"] = ann
    else:
        meta.pop("annotations", None)
    for k in ("labels",):
        if not meta.get(k):
            meta.pop(k, None)
    return c


def _view(obj: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What the undo compares of an object: :func:`comparable`; of a Pod only its name, labels and
    annotations (what its undo puts back: the scheduler and the kubelet set its node and status)."""
    c = comparable(obj)
    if c is not None and c.get("kind") == "Pod":
        meta = c.get("metadata") or {}
        return {"kind": "Pod", "metadata": {k: meta[k] for k in ("name", "namespace", "labels", "annotations")
                                            if meta.get(k)}}
    return c


def differences(before: Any, after: Any, path: str = "") -> list[str]:
    """Where two JSON values differ, as ``path: before -> after`` lines (the first 20)."""
    out: list[str] = []

    def walk(a: Any, b: Any, p: str) -> None:
        if len(out) >= 20:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k, _ABSENT), b.get(k, _ABSENT), f"{p}.{k}" if p else str(k))
        elif a != b:
            out.append(f"{p or '(object)'}: {_short(a)} -> {_short(b)}")

    walk(before, after, path)
    return out


_ABSENT = "(absent)"


def _short(v: Any) -> str:
    text = v if v == _ABSENT else json.dumps(v, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _ref(kind: str, name: str, namespace: str | None) -> str:
    return f"{kind}/{namespace + '/' if namespace else ''}{name}"


# ----------------------------------------------------------------------------------------- declaring


@dataclass(frozen=True)
class Irreversible:
    """The undo declaration of a change that cannot be taken back, and why."""

    why: str


def irreversible(why: str) -> Irreversible:
    """``@change(..., undo=irreversible("why"))``: recorded as ``undo: none`` with the reason."""
    return Irreversible(why)


State = Literal["as-left", "restored", "drifted", "cannot"]


@dataclass(frozen=True)
class Status:
    """Where one entry stands now: ``as-left`` (what the apply left: to be reversed), ``restored``
    (already as before the apply: nothing to do), ``drifted`` (changed since: refused, ``detail`` says
    how) or ``cannot`` (never reversible, ``detail`` says why)."""

    state: State
    detail: str = ""


class Undoer:
    """How a change's entries are described, checked and reversed. Subclasses register an instance
    under a stable name with :func:`register`; the record names it (``undo.by``)."""

    name = ""

    def describe(self, entry: Mapping[str, Any]) -> tuple[str, str]:
        """(the thing, what undoing it does) for the plan's table."""
        raise NotImplementedError

    def status(self, ctx: Any, entry: Mapping[str, Any]) -> Status:
        raise NotImplementedError

    def reverse(self, ctx: Any, entry: Mapping[str, Any]) -> str:
        """Take the entry back; returns what was done."""
        raise NotImplementedError

    def key(self, entry: Mapping[str, Any]) -> str | None:
        """What the entry changed (an object, a release...), so that several changes of one thing in an
        apply are taken back as one (:meth:`merge`); None: each entry on its own."""
        return None

    def merge(self, older: Mapping[str, Any], newer: Mapping[str, Any]) -> dict[str, Any] | None:
        """Two changes of one thing as one: before as the older found it, after as the newer left it
        (None: they cancel out, e.g. created then deleted)."""
        return dict(newer)

    def back_as_before(self, ctx: Any, entry: Mapping[str, Any]) -> Status:
        """After the undo: ``restored`` if the thing is as before the apply (compared ignoring the
        fields the server sets), else ``drifted`` with the difference."""
        st = self.status(ctx, entry)
        return st if st.state in ("restored", "cannot") else Status("drifted", st.detail or "not back as before")


_UNDOERS: dict[str, Undoer] = {}


def register(undoer: Undoer) -> Undoer:
    """Register an undoer under ``undoer.name`` (``module:name``, its module under ``opsbook.ops``)."""
    _UNDOERS[undoer.name] = undoer
    return undoer


def undoer_named(name: str) -> Undoer:
    """The undoer a record names: its module (under ``opsbook.ops`` only) is imported, which registers it."""
    if name not in _UNDOERS:
        module = name.partition(":")[0]
        if not (module == "opsbook.ops" or module.startswith("opsbook.ops.")):
            raise OpsbookError(f"undo by {name!r}: not an opsbook.ops undoer")
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise OpsbookError(f"undo by {name!r}: {exc}") from None
    if name not in _UNDOERS:
        raise OpsbookError(f"undo by {name!r}: no such undoer (the runbook's code changed since the apply?)")
    return _UNDOERS[name]


def undo_record(declared: Any, entries: list[dict[str, Any]], *, changed: bool) -> dict[str, Any] | None:
    """What a change's record says about its undo (``None``: it changed nothing, there is nothing to undo)."""
    if isinstance(declared, Irreversible):
        return {"none": declared.why} if (changed or entries) else None
    if declared is None:
        return {"none": "the step declares no undo"} if (changed or entries) else None
    if not entries:
        return None
    return {"by": declared.name, "entries": entries}


# ------------------------------------------------------------------------------------------ journal


@dataclass
class Journal:
    """The entries of one change, in the order it made them (see the module docstring)."""

    entries: list[dict[str, Any]] = field(default_factory=list)

    def record(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)

    # -- Kubernetes objects -----------------------------------------------------------------------
    @contextlib.contextmanager
    def object(self, kube: Any, *, kind: str, name: str, namespace: str | None = None,
               api_version: str | None = None) -> Iterator[None]:
        """Around a change of one object: its state before and after is kept (also when the change
        raises: what it did is in the record). Nothing is kept when it did not change."""
        before = read(kube, kind=kind, name=name, namespace=namespace, api_version=api_version)
        try:
            yield
        finally:
            after = read(kube, kind=kind, name=name, namespace=namespace, api_version=api_version)
            self._object(kind, name, namespace, api_version, before, after)

    def _object(self, kind: str, name: str, namespace: str | None, api_version: str | None,
                before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
        if comparable(before) == comparable(after) and (before is None) == (after is None):
            return
        ref = after or before or {}
        self.record({"type": "object", "kind": kind, "apiVersion": ref.get("apiVersion") or api_version,
                     "namespace": namespace, "name": name, "before": kept_copy(before), "after": kept_copy(after),
                     "resourceVersion": ((after or {}).get("metadata") or {}).get("resourceVersion")})

    def apply(self, kube: Any, manifests: Iterable[Mapping[str, Any]], *, namespace: str | None = None,
              **kw: Any) -> list[dict[str, Any]]:
        """``kube.apply`` (server-side apply), one object at a time, each kept before and after."""
        out = []
        for m in manifests:
            if not m:
                continue
            meta = m.get("metadata") or {}
            info = kube.resource(kind=m["kind"], api_version=m.get("apiVersion"))
            ns = (meta.get("namespace") or namespace) if info.namespaced else None
            where = {"kind": m["kind"], "name": meta["name"], "namespace": ns, "api_version": m.get("apiVersion")}
            before = read(kube, **where)
            try:
                applied = kube.apply([m], namespace=namespace, **kw)
            except BaseException:
                self._object(m["kind"], meta["name"], ns, m.get("apiVersion"), before, read(kube, **where))
                raise
            # the server's answer is the object as it now is: no second read
            self._object(m["kind"], meta["name"], ns, m.get("apiVersion"), before, applied[0] if applied else None)
            out.extend(applied)
        return out

    def create(self, kube: Any, manifest: Mapping[str, Any], *, namespace: str | None = None) -> dict[str, Any]:
        meta = manifest.get("metadata") or {}
        info = kube.resource(kind=manifest["kind"], api_version=manifest.get("apiVersion"))
        ns = (meta.get("namespace") or namespace) if info.namespaced else None
        with self.object(kube, kind=manifest["kind"], name=meta["name"], namespace=ns,
                         api_version=manifest.get("apiVersion")):
            return dict(kube.create(manifest, namespace=namespace))

    def delete(self, kube: Any, *, kind: str, name: str, namespace: str | None = None, **kw: Any) -> bool:
        with self.object(kube, kind=kind, name=name, namespace=namespace):
            return bool(kube.delete(kind=kind, name=name, namespace=namespace, **kw))

    def namespace(self, kube: Any, name: str, *, labels: Mapping[str, str] | None = None) -> bool:
        """``kube.ensure_namespace``; a namespace it creates is deleted by the undo (last, and only if
        it holds nothing the apply did not create)."""
        with self.object(kube, kind="Namespace", name=name, api_version="v1"):
            return bool(kube.ensure_namespace(name=name, labels=labels))

    # -- Helm releases ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def helm(self, helm: Any, release: str, *, namespace: str) -> Iterator[None]:
        """Around ``helm install/upgrade/rollback``: the release's revision before (none: the undo
        uninstalls it) and after (the undo refuses if it moved since)."""
        before = _revision(helm, release, namespace)
        try:
            yield
        finally:
            after = _revision(helm, release, namespace)
            if after is not None and after != before:
                self.record({"type": "helm", "release": release, "namespace": namespace,
                             "before": before, "after": after})

    # -- the model registry -----------------------------------------------------------------------
    def alias(self, registry: Any, *, model: str, alias: str, version: str) -> None:
        """Point ``model@alias`` at ``version``; the undo points it back (or deletes it if it was not set)."""
        was = registry.by_alias(model, alias)
        before = was.version if was is not None else None
        registry.set_alias(model, alias, version)
        if before != str(version):
            self.record({"type": "alias", "tracking_uri": registry.tracking_uri, "model": model, "alias": alias,
                         "before": before, "after": str(version)})

    def irreversible(self, what: str, why: str) -> None:
        """A change this step made that cannot be taken back (listed by the undo, not reversed)."""
        self.record({"type": "none", "what": what, "why": why})


def read(kube: Any, *, kind: str, name: str, namespace: str | None,
         api_version: str | None = None) -> dict[str, Any] | None:
    """The object as it is now; None when it is absent or being deleted."""
    try:
        obj = dict(kube.get(kind=kind, name=name, namespace=namespace, api_version=api_version))
    except NotFound:
        return None
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return None  # being deleted: gone, as far as an undo is concerned
    return obj


def _history(helm: Any, release: str, namespace: str) -> dict[int, dict[str, Any]]:
    """The release's revisions by number (empty: not installed)."""
    from opsbook.clients.helm import HelmNotFound

    try:
        hist = helm.history(release, namespace=namespace)
    except HelmNotFound:
        return {}
    return {int(h["revision"]): h for h in hist or [] if str(h.get("revision", "")).isdigit()}


def _revision(helm: Any, release: str, namespace: str) -> int | None:
    return max(_history(helm, release, namespace), default=None)


# ------------------------------------------------------------------------------------- the reversal


class JournalUndoer(Undoer):
    """The undo of :class:`Journal` entries: objects put back (or deleted, or re-created), Helm
    releases rolled back (or uninstalled), aliases pointed back (or deleted). ``ctx`` gives
    ``ctx.kube``, ``ctx.helm_for(namespace)`` and ``ctx.registry_for(tracking_uri)``."""

    name = "opsbook.ops.journal:journal"

    def key(self, entry: Mapping[str, Any]) -> str | None:
        t = entry.get("type")
        if t == "object":
            return f"object:{entry['kind']}:{entry.get('namespace') or ''}:{entry['name']}"
        if t == "helm":
            return f"helm:{entry['namespace']}:{entry['release']}"
        if t == "alias":
            return f"alias:{entry['tracking_uri']}:{entry['model']}:{entry['alias']}"
        return None

    def merge(self, older: Mapping[str, Any], newer: Mapping[str, Any]) -> dict[str, Any] | None:
        out = {**newer, "before": older.get("before")}
        if out["type"] == "object":
            same = comparable(out["before"]) == comparable(out.get("after"))
            return None if same and (out["before"] is None) == (out.get("after") is None) else out
        return None if out.get("before") == out.get("after") else out

    # -- describe
    def describe(self, entry: Mapping[str, Any]) -> tuple[str, str]:
        t = entry.get("type")
        if t == "object":
            ref = _ref(entry["kind"], entry["name"], entry.get("namespace"))
            if entry.get("before") is None:
                return ref, "delete (the apply created it)"
            if entry.get("after") is None:
                return ref, "re-create from the copy taken before the apply deleted it"
            return ref, "put back as it was before the apply: " + "; ".join(
                differences(comparable(entry["after"]), comparable(entry["before"]))[:3])
        if t == "helm":
            ref = f"helm release {entry['namespace']}/{entry['release']}"
            if entry.get("before") is None:
                return ref, f"helm uninstall (the apply installed it: revision {entry['after']})"
            return ref, f"helm rollback to revision {entry['before']} (the apply made revision {entry['after']})"
        if t == "alias":
            ref = f"registry alias {entry['model']}@{entry['alias']}"
            if entry.get("before") is None:
                return ref, f"delete the alias (the apply set it to v{entry['after']})"
            return ref, f"point it back at v{entry['before']} (the apply moved it to v{entry['after']})"
        return str(entry.get("what", "?")), f"cannot be undone: {entry.get('why', '')}"

    # -- status
    def status(self, ctx: Any, entry: Mapping[str, Any]) -> Status:
        t = entry.get("type")
        if t == "object":
            return self._object_status(ctx, entry)
        if t == "helm":
            hist = _history(ctx.helm_for(entry["namespace"]), entry["release"], entry["namespace"])
            now = max(hist, default=None)
            if now == entry["after"]:
                return Status("as-left", f"revision {now}")
            if entry.get("before") is None and now is None:
                return Status("restored", "not installed")
            if entry.get("before") is not None and now is not None and now > entry["after"] and \
                    str(hist[now].get("description", "")).strip() == f"Rollback to {entry['before']}":
                return Status("restored", f"revision {now} is a rollback to {entry['before']}")
            return Status("drifted", f"the release is at revision {now if now is not None else '(none)'}, "
                          f"not the apply's {entry['after']}: changed since")
        if t == "alias":
            reg = ctx.registry_for(entry["tracking_uri"])
            cur = reg.by_alias(entry["model"], entry["alias"])
            now = cur.version if cur is not None else None
            if now == entry["after"]:
                return Status("as-left", f"v{now}")
            if now == entry.get("before"):
                return Status("restored", f"v{now}" if now else "not set")
            return Status("drifted", f"{entry['model']}@{entry['alias']} points at "
                          f"{'v' + now if now else '(nothing)'}, not the apply's v{entry['after']}: moved since")
        return Status("cannot", str(entry.get("why", "")))

    def _object_status(self, ctx: Any, entry: Mapping[str, Any]) -> Status:
        cur = read(ctx.kube, kind=entry["kind"], name=entry["name"], namespace=entry.get("namespace"),
                    api_version=entry.get("apiVersion"))
        before, after = entry.get("before"), entry.get("after")
        if before is not None and entry["kind"] == "Secret" and (before.get("type") != TOKEN_TYPE) and (
                after is None or before.get("dataSha256") != after.get("dataSha256")):
            if cur is not None and _view(cur) == _view(before):
                return Status("restored", "as before")
            return Status("cannot", "a Secret's values are never recorded: the apply changed or deleted it, "
                          "so it cannot be put back (restore it from where its values are kept)")
        if same_state(cur, before):
            return Status("restored", "absent, as before" if cur is None else "as before")
        if before is not None and REDACTED in json.dumps(before):
            return Status("cannot", "its copy in the record was redacted (it held a secret value): "
                          "put it back by hand")
        if after is None:
            if cur is None:
                return Status("as-left", "absent (the apply deleted it)")
            return Status("drifted", "the apply deleted it, and it exists again: " + "; ".join(
                differences(_view(before), _view(cur))[:5]))
        if cur is None:
            if entry["kind"] == "Pod":
                return Status("restored", "the pod no longer exists: nothing to put back")
            return Status("drifted", "it was deleted since the apply")
        rv = (cur.get("metadata") or {}).get("resourceVersion")
        if rv == entry.get("resourceVersion") or _view(cur) == _view(after):
            return Status("as-left", f"resourceVersion {rv}")
        return Status("drifted", f"changed since the apply (resourceVersion {entry.get('resourceVersion')} -> {rv}): "
                      + "; ".join(differences(_view(after), _view(cur))[:5]))

    # -- reverse
    def reverse(self, ctx: Any, entry: Mapping[str, Any]) -> str:
        t = entry.get("type")
        if t == "object":
            return self._object_reverse(ctx, entry)
        if t == "helm":
            helm = ctx.helm_for(entry["namespace"])
            if entry.get("before") is None:
                helm.uninstall(entry["release"], namespace=entry["namespace"], wait=False)
                return "uninstalled"
            helm.rollback(entry["release"], int(entry["before"]), namespace=entry["namespace"], wait=False)
            return f"rolled back to revision {entry['before']}"
        if t == "alias":
            reg = ctx.registry_for(entry["tracking_uri"])
            if entry.get("before") is None:
                reg.delete_alias(entry["model"], entry["alias"])
                return "alias deleted"
            reg.set_alias(entry["model"], entry["alias"], entry["before"])
            return f"pointed back at v{entry['before']}"
        raise OpsbookError(f"cannot undo: {entry.get('why', '')}")

    def _object_reverse(self, ctx: Any, entry: Mapping[str, Any]) -> str:
        kube, ns = ctx.kube, entry.get("namespace")
        before = copy.deepcopy(entry.get("before"))
        if before is None:
            if entry["kind"] == "Namespace":
                left = ctx.namespace_leftovers(entry["name"])
                if left:
                    raise OpsbookError(f"namespace {entry['name']} holds objects the apply did not create: "
                                       f"{', '.join(left[:10])}; not deleted (delete it by hand if they can go)")
            kube.delete(kind=entry["kind"], name=entry["name"], namespace=ns, api_version=entry.get("apiVersion"))
            return "deleted"
        if before.get("kind") == "Secret":
            before.pop("dataSha256", None)  # a token Secret: re-created empty, the cluster mints a new token
        info = kube.resource(kind=entry["kind"], api_version=entry.get("apiVersion"))
        for attempt in range(3):  # a controller updating the status in between: read again and retry
            cur = read(kube, kind=entry["kind"], name=entry["name"], namespace=ns, api_version=entry.get("apiVersion"))
            try:
                if cur is None:
                    kube.request("POST", info.path(namespace=ns), body=before)
                    return "re-created"
                if attempt and _view(cur) != _view(entry.get("after")):
                    raise OpsbookError("changed while being put back: "
                                       + "; ".join(differences(_view(entry.get("after")), _view(cur))[:3]))
                if entry["kind"] in ("Pod", "Secret"):  # a pod's spec is immutable, a Secret's values unknown:
                    # put back its labels and annotations (a Secret whose values changed is never restored)
                    meta_b, meta_c = before.get("metadata") or {}, cur.get("metadata") or {}
                    patch: dict[str, Any] = {"metadata": {}}
                    for k in ("labels", "annotations"):
                        want, have = meta_b.get(k) or {}, meta_c.get(k) or {}
                        if want != have:
                            patch["metadata"][k] = {**{x: None for x in have if x not in want}, **want}
                    kube.request("PATCH", info.path(namespace=ns, name=entry["name"]), body=patch,
                                 content_type="application/merge-patch+json")
                    return "labels and annotations put back"
                body = copy.deepcopy(before)
                body.setdefault("metadata", {})["resourceVersion"] = (cur.get("metadata") or {}).get("resourceVersion")
                kube.request("PUT", info.path(namespace=ns, name=entry["name"]), body=body)
                return "put back as before"
            except Conflict:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def same_state(cur: Mapping[str, Any] | None, before: Mapping[str, Any] | None) -> bool:
    """Two states of an object (None: absent) are the same, ignoring what the server sets (see
    :func:`_view`); a token Secret whatever its token (a re-created one gets a new token)."""
    if cur is None or before is None:
        return cur is None and before is None
    a, b = _view(cur) or {}, _view(before) or {}
    if before.get("kind") == "Secret" and before.get("type") == TOKEN_TYPE:
        a.pop("dataSha256", None)  # a token Secret re-created gets a new token: the same account, new value
        b.pop("dataSha256", None)
    return a == b


#: how ops name the undo of their changes: ``@change(..., undo=JOURNAL)``
JOURNAL = register(JournalUndoer())

__all__ = ["JOURNAL", "Irreversible", "Journal", "JournalUndoer", "Status", "Undoer", "clean", "comparable",
           "differences", "irreversible", "kept_copy", "read", "register", "same_state", "secret_copy", "undo_record",
           "undoer_named"]

UndoDecl = Undoer | Irreversible | None
