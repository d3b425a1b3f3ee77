"""The Kubernetes objects of a canary rollout: reading which model version a Deployment or Pod
serves, the stable Deployment, the canary rendered from it, and the patch of the stable one.

How the version is identified, consistently with ``charts/ml-platform``: every model container has
the environment variables ``MODEL_URI`` and ``MODEL_VERSION`` (what the server loads), and the pod
template carries the annotations ``opsbook.io/model-uri`` and ``opsbook.io/model-version`` (what
people and this runbook read). The environment wins, because it is what the server actually loads;
a disagreement with the annotation is reported. The stable Deployment is the one labelled
``app.kubernetes.io/name=<model>`` and ``opsbook.io/track=stable``.

The canary is a Deployment ``<stable name>-canary``: the stable pod template with the new version's
pinned URI (``models:/<name>/<version>``, never an alias, so that moving an alias cannot change what a
running pod loads on restart) and ``opsbook.io/track: canary``; its pods keep the Service's selector
labels, so the Service sends them their share of traffic; the stable Deployment's selector includes
``opsbook.io/track: stable``, so it never adopts them (preflight refuses a stable Deployment whose
selector would).

The undo (``opsbook undo RUN_ID``): the canary's apply is journalled by ``deploy-canary`` (deleted if the
run created it, put back if it changed it); promote and roll back journal the stable Deployment around
their patch (put back as before) and the canary's deletion. The undo takes several changes of one object
as one: a canary the run created and deleted needs nothing, one that was there before is re-created.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, cast

from opsbook.clients.retry import retrying
from opsbook.errors import Conflict, NotFound, OpsbookError
from opsbook.ops.deploy_new_model.context import (
    CANARY_OF_KEY,
    CANARY_SUFFIX,
    ENV_URI,
    ENV_VERSION,
    FIELD_MANAGER,
    NAME_LABEL,
    TRACK_LABEL,
    URI_KEY,
    VERSION_KEY,
    Context,
)

_SERVER_FIELDS = ("uid", "resourceVersion", "managedFields", "creationTimestamp", "generation",
                  "ownerReferences", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds")


def _containers(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(((obj.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or [])


def _env_value(containers: list[dict[str, Any]], name: str) -> str | None:
    for c in containers:
        for e in c.get("env") or []:
            if e.get("name") == name and "value" in e:
                return str(e["value"])
    return None


def model_of(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    """(version, uri, found_by) a Deployment's pod template (or a Pod) serves: the container environment
    first, else the ``opsbook.io/model-*`` annotations."""
    if "template" not in (obj.get("spec") or {}):  # a Pod (list items carry no kind)
        containers = list((obj.get("spec") or {}).get("containers") or [])
        ann = (obj.get("metadata") or {}).get("annotations") or {}
    else:
        containers = _containers(obj)
        ann = (((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("annotations") or {}
    version, uri = _env_value(containers, ENV_VERSION), _env_value(containers, ENV_URI)
    if version is not None:
        how = f"container env {ENV_VERSION}"
        if ann.get(VERSION_KEY) not in (None, version):
            how += f" (annotation {VERSION_KEY} says {ann[VERSION_KEY]}!)"
        return version, uri or ann.get(URI_KEY, ""), how
    if VERSION_KEY in ann:
        return str(ann[VERSION_KEY]), str(ann.get(URI_KEY, uri or "")), f"annotation {VERSION_KEY}"
    return "", uri or "", "not found"


def set_model(template: dict[str, Any], *, version: str, uri: str, container: str | None = None) -> dict[str, Any]:
    """Point a pod template at a model version: ``MODEL_VERSION``/``MODEL_URI`` in every container that
    has them (else in ``container`` or the first one), and the ``opsbook.io/model-*`` annotations."""
    t = copy.deepcopy(template)
    meta = t.setdefault("metadata", {})
    meta.setdefault("annotations", {}).update({VERSION_KEY: str(version), URI_KEY: uri})
    containers = t.setdefault("spec", {}).setdefault("containers", [])
    having = [c for c in containers if any(e.get("name") in (ENV_VERSION, ENV_URI) for e in c.get("env") or [])]
    if not having and containers:
        having = [next((c for c in containers if c.get("name") == container), containers[0])]
    for c in having:
        env = c.setdefault("env", [])
        for key, value in ((ENV_URI, uri), (ENV_VERSION, str(version))):
            for e in env:
                if e.get("name") == key:
                    e.clear()
                    e.update({"name": key, "value": value})
                    break
            else:
                env.append({"name": key, "value": value})
    return t


def _clean_metadata(meta: Mapping[str, Any], *, name: str, namespace: str) -> dict[str, Any]:
    out = {k: copy.deepcopy(v) for k, v in meta.items() if k not in _SERVER_FIELDS}
    out["name"], out["namespace"] = name, namespace
    ann = {k: v for k, v in (out.get("annotations") or {}).items()
           if not k.startswith(("deployment.kubernetes.io/", "meta.helm.sh/", "kubectl.kubernetes.io/"))}
    if ann:
        out["annotations"] = ann
    else:
        out.pop("annotations", None)
    return out


def render_canary(stable: Mapping[str, Any], *, version: str, uri: str, model: str = "") -> dict[str, Any]:
    """The canary Deployment: the stable one's pod template with the new version, one replica,
    ``opsbook.io/track: canary`` in its labels and selector (the Service's labels kept)."""
    meta = stable.get("metadata") or {}
    name = meta["name"] + CANARY_SUFFIX
    labels = {**(meta.get("labels") or {}), TRACK_LABEL: "canary", "app.kubernetes.io/managed-by": "opsbook"}
    labels.pop("helm.sh/chart", None)
    spec = stable.get("spec") or {}
    template = copy.deepcopy(spec.get("template") or {})
    tmeta = template.setdefault("metadata", {})
    tlabels = {**(tmeta.get("labels") or {}), TRACK_LABEL: "canary", "app.kubernetes.io/managed-by": "opsbook"}
    tlabels.pop("helm.sh/chart", None)
    tmeta["labels"] = tlabels
    for k in ("creationTimestamp",):
        tmeta.pop(k, None)
    template = set_model(template, version=version, uri=uri, container=model or None)
    selector = {**(((spec.get("selector") or {}).get("matchLabels")) or {}), TRACK_LABEL: "canary"}
    out_meta = _clean_metadata(meta, name=name, namespace=meta.get("namespace", ""))
    out_meta["labels"] = labels
    out_meta["annotations"] = {CANARY_OF_KEY: meta["name"], VERSION_KEY: str(version), URI_KEY: uri}
    out_spec: dict[str, Any] = {"replicas": 1, "selector": {"matchLabels": selector}, "template": template}
    for k in ("progressDeadlineSeconds", "minReadySeconds", "revisionHistoryLimit", "strategy"):
        if k in spec:
            out_spec[k] = copy.deepcopy(spec[k])
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": out_meta, "spec": out_spec}


def find_stable(ctx: Context) -> dict[str, Any]:
    """The stable Deployment: by name (``deployment``) or by labels (name=<model>, track=stable)."""
    s = ctx.settings
    if s.deployment:
        return ctx.kube.get(kind="Deployment", name=s.deployment, namespace=s.namespace)
    sel = f"{NAME_LABEL}={s.model},{TRACK_LABEL}=stable"
    found = ctx.kube.list_objects(kind="Deployment", namespace=s.namespace, selector=sel)
    if not found:
        raise NotFound(f"no Deployment labelled {sel} in namespace {s.namespace} (give deployment=NAME)")
    if len(found) > 1:
        names = ", ".join(d["metadata"]["name"] for d in found)
        raise OpsbookError(f"{len(found)} Deployments labelled {sel} in {s.namespace} ({names}): name one with "
                           "deployment=NAME")
    return found[0]


def standin_stable(ctx: Context) -> dict[str, Any] | None:
    """Without a cluster: the stable Deployment as the ml-platform chart renders it (``helm template``),
    so that the plan still shows the canary it would create."""
    s = ctx.settings
    chart = ctx.project_dir / "charts" / "ml-platform"
    if not chart.is_dir():
        return None
    sets: dict[str, Any] = {"ingress.enabled": False}
    if s.serving_version:
        sets[f"services.{s.model}.model.version"] = s.serving_version
        sets[f"services.{s.model}.model.uri"] = f"models:/{ctx.registry_name}/{s.serving_version}"
    ms = ctx.clients.helm(s.namespace).template("ml-platform", str(chart), set_values=sets, namespace=s.namespace)
    for m in ms:
        labels = (m.get("metadata") or {}).get("labels") or {}
        if m.get("kind") == "Deployment" and labels.get(NAME_LABEL) == s.model:
            m["metadata"].setdefault("namespace", s.namespace)
            return m
    return None


def existing_canary(ctx: Context) -> dict[str, Any] | None:
    """The canary Deployment on the cluster, or None (none there, or no cluster)."""
    if ctx.kube is None:
        return None
    try:
        return ctx.kube.get(kind="Deployment", name=ctx.canary_name,
                            namespace=ctx.settings.namespace)
    except NotFound:
        return None


def canary_action(ctx: Context) -> str:
    """What applying the canary does: create it, keep it (already on the version), or update it."""
    existing = existing_canary(ctx)
    if existing is None:
        return "create"
    v, _, _ = model_of(existing)
    return f"keep (already running v{v})" if v == ctx.target_version else f"update (running v{v})"


def delete_canary(ctx: Context) -> bool:
    """Delete the canary (False: it was not there), journalled: the undo re-creates a canary that was
    there before the run; one the run created and deletes is no change at all (``undo`` merges the two)."""
    return ctx.journal.delete(ctx.kube, kind="Deployment", name=ctx.canary_name, namespace=ctx.settings.namespace)


def patch_stable(ctx: Context, *, version: str, uri: str, dry_run: bool = False,
                 attempts: int = 5) -> dict[str, Any]:
    """Strategic-merge patch of the stable Deployment's pod template (containers and env merged by name).

    The patch carries the resourceVersion it was computed from, so a change made in between (by a
    person, or the Deployment controller's own status update) is never overwritten blindly: on 409
    Conflict the Deployment is read again and the patch recomputed, as client-go's RetryOnConflict does."""
    ns = ctx.settings.namespace
    path = ctx.kube.resource(kind="Deployment").path(namespace=ns, name=ctx.stable_name)
    def attempt() -> dict[str, Any]:
        stable = ctx.kube.get(kind="Deployment", name=ctx.stable_name, namespace=ns)
        template = set_model(stable["spec"]["template"], version=version, uri=uri, container=ctx.settings.model)
        patch = {"metadata": {"resourceVersion": stable["metadata"]["resourceVersion"]},
                 "spec": {"template": {"metadata": {"annotations": template["metadata"]["annotations"]},
                                       "spec": {"containers": [{"name": c["name"], "env": c.get("env") or []}
                                                               for c in template["spec"]["containers"]]}}}}
        return cast(dict[str, Any], ctx.kube.request(
            "PATCH", path, body=patch, content_type="application/strategic-merge-patch+json",
            query={"fieldManager": FIELD_MANAGER, "dryRun": "All" if dry_run else None}))

    return retrying(attempt, attempts=attempts, backoff=0.1, max_backoff=1.0,
                    when=lambda exc: isinstance(exc, Conflict))
