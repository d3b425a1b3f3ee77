"""The `security-incident-response` runbook's logic, in the five phases of the handbook.

=================  ==================================================================================
phase              what it does (each function returns a :class:`~opsbook.results.Result`)
=================  ==================================================================================
identification     firing alerts (Prometheus ``/api/v1/alerts``), affected pods with images and image
                   digests, recent events, recent changes (helm history, ReplicaSet revisions), the
                   severity from :data:`SEVERITY_MATRIX`, the responders
evidence           before anything changes: pod specs, container logs (current and previous), events,
                   RBAC bindings and token Secrets of the compromised accounts, NetworkPolicies in
                   force; each one a file of the record (``evidence(...)``), sha256 in the manifest
containment        quarantine label on the affected pods + a deny-all ingress/egress NetworkPolicy
                   selecting it (the pods keep running, for forensics); compromised accounts
                   disabled: their subjects removed from RoleBindings/ClusterRoleBindings (a binding
                   whose only subjects they are is deleted) and their token Secrets deleted, a copy of
                   everything removed kept in the record; optionally the workload scaled to zero
eradication        ``helm rollback`` to a named revision, or a known-good image digest redeployed;
                   a PostgreSQL database restored from a dump, then row counts confirmed
recovery           isolation lifted, accounts re-enabled from the saved copy (this run's, else the
                   latest records of the same incident), replicas restored, health verified
post-incident      the runs of this incident so far (``opsbook incident``), the bundle command
=================  ==================================================================================

Every change has a ``plan_*`` twin that shows what it would do (a server-side dry run where a cluster
is reachable), and every change is idempotent: applied twice, the second run changes nothing.

Token Secrets of a compromised ServiceAccount are **not** copied with their data: the record keeps
their metadata and the sha256 of each data key. Re-enabling re-creates them empty, and Kubernetes'
token controller mints a new token: a credential that leaked is never put back, nor written to disk.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from opsbook.errors import ClientError, Invalid, NotFound, OpsbookError
from opsbook.results import Check, Result
from opsbook.text import shorten

PHASES = ("identification", "evidence", "containment", "eradication", "recovery", "post-incident")
SEVERITIES = ("sev1", "sev2", "sev3", "sev4")
QUARANTINE_LABEL = "opsbook.io/quarantine"
POLICY_PREFIX = "opsbook-quarantine-"
TOKEN_TYPE = "kubernetes.io/service-account-token"
SA_ANNOTATION = "kubernetes.io/service-account.name"
ACCOUNTS_EVIDENCE = "containment/accounts-removed.json"
SCALE_EVIDENCE = "containment/scaled-down.json"
QUARANTINE_EVIDENCE = "containment/quarantine.json"
SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation", "selfLink",
                 "deletionTimestamp", "deletionGracePeriodSeconds")

#: The severity matrix, first matching row wins (shown in the notebook and recorded).
SEVERITY_MATRIX: list[tuple[str, str]] = [
    ("sev1", "a compromised account is bound cluster-wide (ClusterRoleBinding), or a critical alert fires "
             "on a production target"),
    ("sev2", "compromised accounts are named, or a critical alert fires"),
    ("sev3", "a warning alert fires, or affected pods are running"),
    ("sev4", "nothing observed yet (no alert, no affected pod, no account)"),
]

EvidenceFn = Callable[..., dict[str, Any]]
SecretFn = Callable[..., str]


# ------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class Account:
    """A compromised RBAC subject: a ServiceAccount (with its namespace), a User or a Group."""

    kind: str
    name: str
    namespace: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.namespace}/{self.name}" if self.namespace else f"{self.kind}:{self.name}"


_SA_FULL = re.compile(r"^system:serviceaccount:(?P<ns>[^:]+):(?P<name>[^:]+)$")


def parse_account(text: str, default_namespace: str) -> Account:
    """``NS/NAME`` or ``NAME`` (a ServiceAccount), ``system:serviceaccount:NS:NAME``,
    ``ServiceAccount:NS/NAME``, ``User:NAME``, ``Group:NAME``."""
    t = str(text).strip()
    if not t:
        raise Invalid("an empty account name")
    m = _SA_FULL.match(t)
    if m:
        return Account("ServiceAccount", m.group("name"), m.group("ns"))
    kind, sep, rest = t.partition(":")
    if sep and kind.lower() in ("user", "group"):
        return Account(kind.capitalize(), rest)
    if sep and kind.lower() in ("serviceaccount", "sa"):
        t = rest
    elif sep:
        raise Invalid(f"account {text!r}: expected NS/NAME, system:serviceaccount:NS:NAME, User:NAME or Group:NAME")
    ns, _, name = t.rpartition("/")
    return Account("ServiceAccount", name, ns or default_namespace)


def subject_matches(subject: Mapping[str, Any], account: Account) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if account.kind == "ServiceAccount":
        if kind == "ServiceAccount":
            return name == account.name and (subject.get("namespace") or "") == account.namespace
        return kind == "User" and name == f"system:serviceaccount:{account.namespace}:{account.name}"
    return kind == account.kind and name == account.name


def label_value(text: str) -> str:
    """``text`` as a valid label value (<= 63 chars of ``[A-Za-z0-9._-]``, alphanumeric at both ends)."""
    v = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:63].strip("._-")
    return v or "incident"


@dataclass(frozen=True)
class Settings:
    incident_id: str = "INC-0000"
    severity: str = "auto"
    summary: str = ""
    namespace: str = "ml-platform"
    selector: str = ""
    compromised_accounts: tuple[str, ...] = ()
    responders: tuple[str, ...] = ()
    phases: tuple[str, ...] = PHASES
    isolate: bool = True
    disable_accounts: bool = True
    scale_down: bool = False
    release: str = ""
    rollback_revision: int = 0
    known_good_image: str = ""
    backup_file: str = ""
    db_host: str = ""
    db_port: int = 5432
    db_name: str = ""
    db_user: str = "postgres"
    db_password: str = ""
    expected_rows: Mapping[str, int] = field(default_factory=dict)
    lift_isolation: bool = False
    reenable_accounts: bool = False
    prometheus_url: str = ""
    error_rate_query: str = ""
    error_rate_max: float = 0.01
    monitor_seconds: int = 60
    events_since_minutes: int = 60
    log_lines: int = 500
    timeout: float = 120.0
    # derived
    target: str = "local"
    production: bool = False
    has_cluster: bool = False
    applying: bool = False

    @property
    def quarantine_value(self) -> str:
        return label_value(self.incident_id)

    @property
    def policy_name(self) -> str:
        base = re.sub(r"[^a-z0-9-]+", "-", self.incident_id.lower()).strip("-") or "incident"
        return (POLICY_PREFIX + base)[:63].rstrip("-")

    def accounts(self) -> list[Account]:
        return [parse_account(a, self.namespace) for a in self.compromised_accounts]


def settings_from(params: Mapping[str, Any], target: Any = None, *, applying: bool | None = None) -> Settings:
    """:class:`Settings` from the validated parameters and the target (``opsbook.targets.Target``)."""
    known = {f for f in Settings.__dataclass_fields__ if f not in ("target", "production", "has_cluster", "applying")}
    values: dict[str, Any] = {k: params[k] for k in known if k in params and params[k] is not None}
    for k in ("compromised_accounts", "responders", "phases"):
        if k in values:
            v = values[k]
            values[k] = tuple(str(x) for x in ([v] if isinstance(v, str) else v))
    phases = values.get("phases") or PHASES
    bad = [p for p in phases if p not in PHASES and p != "all"]
    if bad:
        raise Invalid(f"phases {bad}: expected some of {', '.join(PHASES)} (or all)")
    values["phases"] = PHASES if "all" in phases else tuple(p for p in PHASES if p in phases)
    if values.get("severity", "auto") not in ("auto", *SEVERITIES):
        raise Invalid(f"severity {values['severity']!r}: expected auto or one of {', '.join(SEVERITIES)}")
    values["prometheus_url"] = (values.get("prometheus_url") or getattr(target, "prometheus_url", None) or "").rstrip("/")
    if "namespace" not in params and target is not None and getattr(target, "namespace", None):
        values["namespace"] = target.namespace
    return Settings(**values, target=getattr(target, "name", "local"),
                    production=bool(getattr(target, "production", False)),
                    has_cluster=bool(getattr(target, "has_cluster", False)),
                    applying=bool(params.get("mode") == "apply") if applying is None else applying)


@dataclass
class Incident:
    """Settings plus the clients the runbook talks through and what the phases learnt so far."""

    settings: Settings
    kube: Any = None  # clients.kube.Kube, None without a cluster
    helm: Any = None  # clients.helm.Helm
    prometheus: Any = None  # clients.prometheus.Prometheus, None without a URL
    evidence: EvidenceFn | None = None  # run.evidence
    secret: SecretFn | None = None  # run.secret
    archive: Any = None  # opsbook.records.disk.Archive: earlier records of this incident
    state: dict[str, Any] = field(default_factory=dict)

    def wants(self, phase: str) -> bool:
        return phase in self.settings.phases

    def save(self, name: str, content: Any, description: str) -> dict[str, Any]:
        if self.evidence is None:
            return {"name": name, "bytes": 0, "sha256": "", "description": description + " (not saved: no record)"}
        return self.evidence(name, content, description=description)


def configure(params: Mapping[str, Any], target: Any, *, evidence: EvidenceFn | None = None,
              secret: SecretFn | None = None, archive: Any = None, kube: Any = None, helm: Any = None) -> Result:
    """The incident's settings and clients (the settings cell)."""
    s = settings_from(params, target)
    if kube is None and s.has_cluster:
        from opsbook.clients.kube import Kube

        kube = Kube(kubeconfig=getattr(target, "kubeconfig", None), context=getattr(target, "kube_context", None))
    if helm is None and (kube is not None) and s.release:
        from opsbook.clients.helm import Helm

        helm = Helm(kubeconfig=getattr(target, "kubeconfig", None), kube_context=getattr(target, "kube_context", None),
                    namespace=s.namespace)
    prom = None
    if s.prometheus_url:
        from opsbook.clients.prometheus import Prometheus

        prom = Prometheus(s.prometheus_url, timeout=min(30.0, s.timeout))
    inc = Incident(settings=s, kube=kube, helm=helm, prometheus=prom, evidence=evidence, secret=secret, archive=archive)
    accounts = [str(a) for a in s.accounts()]
    rows = [
        {"setting": "incident", "value": s.incident_id},
        {"setting": "severity (given)", "value": s.severity},
        {"setting": "phases", "value": ", ".join(s.phases)},
        {"setting": "affected workloads", "value": f"namespace {s.namespace}, selector {s.selector or '(every pod)'}"},
        {"setting": "compromised accounts", "value": ", ".join(accounts) or "(none named)"},
        {"setting": "responders", "value": ", ".join(s.responders) or "(none recorded)"},
        {"setting": "cluster", "value": "yes" if kube is not None else "no: Kubernetes steps plan only"},
        {"setting": "prometheus", "value": s.prometheus_url or "(none: alerts and error rate not read)"},
        {"setting": "known-good state", "value": "; ".join(x for x in (
            f"helm {s.release} revision {s.rollback_revision}" if s.release and s.rollback_revision else "",
            f"image {s.known_good_image}" if s.known_good_image else "",
            f"database {s.db_name} from {s.backup_file}" if s.backup_file else "") if x) or "(none given)"},
    ]
    return Result(summary=f"incident {s.incident_id}: phases {', '.join(s.phases)}", rows=rows, value=inc,
                  details={"incident_id": s.incident_id, "phases": list(s.phases), "accounts": accounts})


def _skip(why: str, **details: Any) -> Result:
    return Result(summary=why, outcome="skipped", details=details)


def _no_phase(phase: str) -> Result:
    return _skip(f"phase {phase} not selected")


def _no_cluster() -> Result:
    return _skip("no cluster on this target: nothing to read or change")


def preflight(inc: Incident) -> list[Check]:
    s = inc.settings
    out = [Check("incident id", bool(re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", s.incident_id)),
                 f"{s.incident_id!r} links every run of this incident")]
    if s.applying:
        out.append(Check("incident id is real", s.incident_id != "INC-0000",
                         "an apply must name the real incident (the default INC-0000 is for plans only)"))
    try:
        accounts = s.accounts()
        out.append(Check("accounts parse", True, f"{len(accounts)} account(s)"))
    except Invalid as exc:
        out.append(Check("accounts parse", False, str(exc)))
    if inc.kube is not None:
        try:
            v = inc.kube.version()
            out.append(Check("Kubernetes API", True, f"reachable, {v.get('gitVersion', '?')}"))
        except ClientError as exc:
            out.append(Check("Kubernetes API", False, str(exc)))
    if inc.prometheus is not None:
        out.append(Check("Prometheus", bool(_safe(inc.prometheus.ready)), f"{s.prometheus_url} ready"))
    if s.backup_file and inc.wants("eradication"):
        p = Path(s.backup_file)
        out.append(Check("backup file", p.exists(), f"{p} " + ("exists" if p.exists() else "does not exist")))
        out.append(Check("database named", bool(s.db_host and s.db_name), "db_host and db_name name the restore target"))
    if s.applying and inc.wants("containment") and not inc.wants("evidence"):
        earlier = _earlier_evidence(inc)
        out.append(Check("evidence before containment", earlier > 0,
                         f"{earlier} evidence file(s) in earlier runs of {s.incident_id}" if earlier else
                         "no evidence captured yet for this incident: add phase evidence (or run a plan first)"))
    if s.reenable_accounts and inc.wants("recovery") and inc.archive is None:
        out.append(Check("archive", False, "re-enabling needs the archive of earlier runs"))
    return out


def _earlier_evidence(inc: Incident) -> int:
    if inc.archive is None:
        return 0
    from opsbook.records.bundle import incident_runs

    return sum(len(r.manifest.get("evidence") or []) for r in incident_runs(inc.archive, inc.settings.incident_id))


def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ClientError:
        return None


# ------------------------------------------------------------------------------------ identification


def alerts(inc: Incident) -> Result:
    """Firing and pending alerts from Prometheus's alerts API (saved as evidence too)."""
    if not inc.wants("identification"):
        return _no_phase("identification")
    if inc.prometheus is None:
        inc.state["alerts"] = []
        return _skip("no Prometheus URL (parameter prometheus_url or the target's): alerts not read")
    rows = inc.prometheus.alerts()
    inc.state["alerts"] = rows
    inc.save("identification/alerts.json", rows, "Prometheus /api/v1/alerts at identification")
    firing = [r for r in rows if r["state"] == "firing"]
    table = [{"alert": r["alertname"], "state": r["state"], "severity": r["severity"], "since": r["active_at"],
              "summary": shorten(r["annotations"].get("summary") or r["annotations"].get("description") or "", 120)}
             for r in rows]
    return Result(summary=f"{len(firing)} firing, {len(rows) - len(firing)} pending", rows=table,
                  details={"firing": [r["alertname"] for r in firing]})


def _pod_rows(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for p in pods:
        meta, spec, status = p.get("metadata") or {}, p.get("spec") or {}, p.get("status") or {}
        digests = {c.get("name"): c.get("imageID") or "" for c in status.get("containerStatuses") or []}
        for c in spec.get("containers") or []:
            rows.append({"pod": meta.get("name", ""), "container": c.get("name", ""), "image": c.get("image", ""),
                         "digest": digests.get(c.get("name"), "") or "(not reported)",
                         "phase": status.get("phase", ""), "node": spec.get("nodeName") or "",
                         "service account": spec.get("serviceAccountName") or "default",
                         "quarantined": (meta.get("labels") or {}).get(QUARANTINE_LABEL, "")})
    return rows


def affected_pods(inc: Incident) -> Result:
    """The pods the selector names, one row per container: image and the digest the kubelet reports."""
    if not inc.wants("identification") and not inc.wants("evidence"):
        return _no_phase("identification")
    if inc.kube is None:
        inc.state["pods"] = []
        return _no_cluster()
    s = inc.settings
    pods = inc.kube.pod_objects(namespace=s.namespace, selector=s.selector or None)
    pods.sort(key=lambda p: p["metadata"]["name"])
    inc.state["pods"] = pods
    return Result(summary=f"{len(pods)} pod(s) in {s.namespace} match {s.selector or '(every pod)'}",
                  rows=_pod_rows(pods), details={"pods": [p["metadata"]["name"] for p in pods]})


def _event_time(e: Mapping[str, Any]) -> str:
    return str(e.get("lastTimestamp") or e.get("eventTime") or (e.get("metadata") or {}).get("creationTimestamp") or "")


def recent_events(inc: Incident) -> Result:
    """Events of the namespace in the last ``events_since_minutes`` minutes, oldest first."""
    if not inc.wants("identification"):
        return _no_phase("identification")
    if inc.kube is None:
        return _no_cluster()
    s = inc.settings
    since = datetime.now(UTC) - timedelta(minutes=s.events_since_minutes)
    items = inc.kube.list_objects(kind="Event", namespace=s.namespace)
    rows = []
    for e in items:
        t = _event_time(e)
        try:
            when = datetime.fromisoformat(t.replace("Z", "+00:00"))
        except ValueError:
            when = None
        if when is not None and when < since:
            continue
        inv = e.get("involvedObject") or {}
        rows.append({"time": t, "type": e.get("type", ""), "reason": e.get("reason", ""),
                     "object": f"{inv.get('kind', '')}/{inv.get('name', '')}", "message": shorten(e.get("message") or "", 200)})
    rows.sort(key=lambda r: r["time"])
    warnings = sum(1 for r in rows if r["type"] == "Warning")
    return Result(summary=f"{len(rows)} event(s) in the last {s.events_since_minutes} min, {warnings} warning(s)",
                  rows=rows)


def recent_changes(inc: Incident) -> Result:
    """What changed lately: the helm release's history and the ReplicaSet revisions of the namespace."""
    if not inc.wants("identification"):
        return _no_phase("identification")
    if inc.kube is None:
        return _no_cluster()
    s = inc.settings
    rows: list[dict[str, Any]] = []
    if s.release and inc.helm is not None:
        for h in inc.helm.history(s.release, namespace=s.namespace):
            rows.append({"what": f"helm {s.release}", "revision": h.get("revision"), "when": h.get("updated", ""),
                         "status": h.get("status", ""), "detail": f"{h.get('chart', '')} {h.get('description', '')}"})
    for rs in inc.kube.list_objects(kind="ReplicaSet", namespace=s.namespace, selector=s.selector or None):
        meta = rs.get("metadata") or {}
        owner = next((o.get("name") for o in meta.get("ownerReferences") or [] if o.get("kind") == "Deployment"), "")
        images = ", ".join(c.get("image", "") for c in (((rs.get("spec") or {}).get("template") or {}).get("spec")
                                                        or {}).get("containers") or [])
        rows.append({"what": f"deployment {owner or '?'} / {meta.get('name')}",
                     "revision": (meta.get("annotations") or {}).get("deployment.kubernetes.io/revision", ""),
                     "when": meta.get("creationTimestamp", ""),
                     "status": f"{(rs.get('spec') or {}).get('replicas', 0)} replica(s)", "detail": images})
    inc.state["changes"] = rows
    return Result(summary=f"{len(rows)} change(s) found", rows=rows)


def _bindings(inc: Incident) -> list[dict[str, Any]]:
    """Every RoleBinding and ClusterRoleBinding naming a compromised account: the binding, and which
    subjects match. Cached in ``state`` for the phases that follow."""
    accounts = inc.settings.accounts()
    if not accounts or inc.kube is None:
        return []
    found = []
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        for b in inc.kube.list_objects(kind=kind):
            subjects = b.get("subjects") or []
            hits = [i for i, sub in enumerate(subjects) if any(subject_matches(sub, a) for a in accounts)]
            if hits:
                b.setdefault("kind", kind)
                b.setdefault("apiVersion", "rbac.authorization.k8s.io/v1")
                found.append({"binding": b, "matching": hits})
    found.sort(key=lambda x: (x["binding"]["kind"], x["binding"]["metadata"].get("namespace", ""),
                              x["binding"]["metadata"]["name"]))
    return found


def _token_secrets(inc: Incident) -> list[dict[str, Any]]:
    if inc.kube is None:
        return []
    out = []
    for a in inc.settings.accounts():
        if a.kind != "ServiceAccount":
            continue
        for sec in inc.kube.list_objects(kind="Secret", namespace=a.namespace):
            if sec.get("type") == TOKEN_TYPE and (sec["metadata"].get("annotations") or {}).get(SA_ANNOTATION) == a.name:
                sec.setdefault("kind", "Secret")
                sec.setdefault("apiVersion", "v1")
                out.append(sec)
    return sorted(out, key=lambda x: (x["metadata"]["namespace"], x["metadata"]["name"]))


def assess_severity(inc: Incident) -> Result:
    """The severity from :data:`SEVERITY_MATRIX` on what identification found; a given severity wins."""
    s = inc.settings
    al = inc.state.get("alerts") or []
    firing = [a for a in al if a.get("state") == "firing"]
    critical = [a for a in firing if str(a.get("severity", "")).lower() in ("critical", "page", "sev1")]
    try:
        bindings = _bindings(inc)
    except ClientError as exc:
        bindings = []
        inc.state["bindings_error"] = str(exc)
    inc.state["bindings"] = bindings
    cluster_wide = [b for b in bindings if b["binding"]["kind"] == "ClusterRoleBinding"]
    facts = {"firing alerts": len(firing), "critical alerts": len(critical), "accounts": len(s.compromised_accounts),
             "cluster-wide bindings": len(cluster_wide), "affected pods": len(inc.state.get("pods") or []),
             "production target": s.production}
    if cluster_wide or (critical and s.production):
        assessed = "sev1"
    elif s.compromised_accounts or critical:
        assessed = "sev2"
    elif firing or inc.state.get("pods"):
        assessed = "sev3"
    else:
        assessed = "sev4"
    chosen = assessed if s.severity == "auto" else s.severity
    inc.state["severity"] = chosen
    rows = [{"severity": sev, "when": when, "matches": "<= assessed" if sev == assessed else ""}
            for sev, when in SEVERITY_MATRIX]
    why = "" if s.severity == "auto" else f" (given {s.severity}; the matrix says {assessed})"
    return Result(summary=f"severity {chosen}{why}", rows=rows,
                  details={"severity": chosen, "assessed": assessed, "given": s.severity, "facts": facts})


def record_responders(inc: Incident) -> Result:
    s = inc.settings
    rows = [{"responder": r, "incident": s.incident_id} for r in s.responders]
    if not rows:
        return Result(summary="no responders named (parameter responders): record them before applying", rows=[],
                      details={"responders": []})
    return Result(summary=f"{len(rows)} responder(s) on {s.incident_id}", rows=rows,
                  details={"responders": list(s.responders), "severity": inc.state.get("severity", s.severity)})


# ------------------------------------------------------------------------------------------ evidence


def clean(obj: Mapping[str, Any], *, keep_status: bool = False) -> dict[str, Any]:
    """An object without the fields the server sets (uid, resourceVersion, managedFields...)."""
    out = copy.deepcopy(dict(obj))
    meta = out.get("metadata") or {}
    for k in SERVER_FIELDS:
        meta.pop(k, None)
    if not keep_status:
        out.pop("status", None)
    return out


def _log_text(inc: Incident, pod: str, container: str, previous: bool) -> str | None:
    s = inc.settings
    try:
        return inc.kube.request(
            "GET", f"/api/v1/namespaces/{quote(s.namespace, safe='')}/pods/{quote(pod, safe='')}/log",
            query={"container": container, "tailLines": s.log_lines or None,
                   "previous": "true" if previous else None}, raw=True)
    except (NotFound, Invalid, ClientError):
        return None


def capture_evidence(inc: Incident) -> Result:
    """Save, before anything changes: each affected pod's spec and status, its containers' logs (current
    and previous), the namespace's events, the RBAC bindings and token Secrets (metadata and digests
    only) of the compromised accounts, their ServiceAccounts, and the NetworkPolicies in force."""
    if not inc.wants("evidence"):
        return _no_phase("evidence")
    if inc.kube is None:
        return _no_cluster()
    s = inc.settings
    saved: list[dict[str, Any]] = []
    pods = inc.state.get("pods")
    if pods is None:
        pods = inc.kube.pod_objects(namespace=s.namespace, selector=s.selector or None)
        inc.state["pods"] = pods
    for p in pods:
        name = p["metadata"]["name"]
        saved.append(inc.save(f"pods/{name}.json", {"apiVersion": "v1", "kind": "Pod", **p},
                              f"Pod {s.namespace}/{name} as the API returned it"))
        for c in (p.get("spec") or {}).get("containers") or []:
            for previous in (False, True):
                text = _log_text(inc, name, c["name"], previous)
                if text is None:
                    continue
                which = "previous" if previous else "current"
                saved.append(inc.save(f"logs/{name}/{c['name']}{'.previous' if previous else ''}.log", text,
                                      f"log of container {c['name']} in pod {name} ({which} instance)"))
    events = inc.kube.list_objects(kind="Event", namespace=s.namespace)
    saved.append(inc.save("events.json", events, f"every Event of namespace {s.namespace}"))
    bindings = inc.state.get("bindings")
    if bindings is None:
        bindings = _bindings(inc)
        inc.state["bindings"] = bindings
    if s.compromised_accounts:
        saved.append(inc.save("rbac/bindings.json", [b["binding"] for b in bindings],
                              "RoleBindings and ClusterRoleBindings naming a compromised account"))
        sas = []
        for a in s.accounts():
            if a.kind == "ServiceAccount":
                try:
                    sas.append(inc.kube.get(kind="ServiceAccount", name=a.name, namespace=a.namespace))
                except NotFound:
                    sas.append({"kind": "ServiceAccount", "metadata": {"name": a.name, "namespace": a.namespace},
                                "missing": True})
        saved.append(inc.save("rbac/serviceaccounts.json", sas, "the compromised ServiceAccounts"))
        saved.append(inc.save("rbac/token-secrets.json", [_secret_copy(x) for x in _token_secrets(inc)],
                              "token Secrets of the compromised ServiceAccounts (metadata, sha256 of each key)"))
    policies = inc.kube.list_objects(kind="NetworkPolicy", namespace=s.namespace)
    saved.append(inc.save("networkpolicies.json", policies, f"NetworkPolicies in force in {s.namespace}"))
    rows = [{"file": e["name"], "bytes": e["bytes"], "sha256": (e["sha256"] or "")[:16], "what": e["description"]}
            for e in saved]
    inc.state["evidence"] = saved
    return Result(summary=f"{len(saved)} evidence file(s) saved before any change", rows=rows,
                  details={"files": [e["name"] for e in saved]})


def _secret_copy(sec: Mapping[str, Any]) -> dict[str, Any]:
    """A Secret without its values: metadata, type and the sha256 of each key's (base64) value."""
    c = clean(sec)
    data = c.pop("data", None) or {}
    c.pop("stringData", None)
    c["dataSha256"] = {k: hashlib.sha256(str(v).encode()).hexdigest() for k, v in sorted(data.items())}
    return c


# --------------------------------------------------------------------------------------- containment


def quarantine_policy(s: Settings) -> dict[str, Any]:
    """Deny every ingress and egress of the pods carrying the quarantine label of this incident."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": s.policy_name, "namespace": s.namespace,
                         "labels": {"app.kubernetes.io/managed-by": "opsbook", QUARANTINE_LABEL: s.quarantine_value},
                         "annotations": {"opsbook.io/incident": s.incident_id}},
            "spec": {"podSelector": {"matchLabels": {QUARANTINE_LABEL: s.quarantine_value}},
                     "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}}


def _targets(inc: Incident) -> list[dict[str, Any]]:
    s = inc.settings
    pods = inc.kube.pod_objects(namespace=s.namespace, selector=s.selector or None)
    return sorted(pods, key=lambda p: p["metadata"]["name"])


def plan_isolate(inc: Incident) -> Result:
    if not inc.wants("containment"):
        return _no_phase("containment")
    s = inc.settings
    if not s.isolate:
        return _skip("isolate is false: the pods are not quarantined")
    policy = quarantine_policy(s)
    rows: list[dict[str, Any]] = []
    details: dict[str, Any] = {"policy": policy}
    if inc.kube is not None:
        for p in _targets(inc):
            has = (p["metadata"].get("labels") or {}).get(QUARANTINE_LABEL) == s.quarantine_value
            rows.append({"object": f"Pod/{p['metadata']['name']}", "action": "already labelled" if has else
                         f"label {QUARANTINE_LABEL}={s.quarantine_value}"})
        dry = inc.kube.apply([policy], namespace=s.namespace, dry_run=True)
        details["dry_run"] = "accepted by the server" if dry else ""
    rows.append({"object": f"NetworkPolicy/{s.policy_name}", "action": "apply: deny all ingress and egress"})
    pods = f"{len(rows) - 1} pod(s)" if inc.kube is not None else \
        f"the pods matching {s.selector or '(every pod)'} (no cluster: not listed)"
    return Result(summary=f"would quarantine {pods} behind NetworkPolicy {s.policy_name}",
                  outcome="planned", rows=rows, details=details)


def isolate(inc: Incident) -> Result:
    """Label the affected pods and apply the deny-all policy (both idempotent). Pods keep running."""
    if not inc.wants("containment"):
        return _no_phase("containment")
    s = inc.settings
    if not s.isolate:
        return _skip("isolate is false: the pods are not quarantined")
    if inc.kube is None:
        return _no_cluster()
    rows, changed = [], 0
    for p in _targets(inc):
        name = p["metadata"]["name"]
        if (p["metadata"].get("labels") or {}).get(QUARANTINE_LABEL) == s.quarantine_value:
            rows.append({"object": f"Pod/{name}", "action": "already labelled"})
            continue
        _patch_labels(inc, name, {QUARANTINE_LABEL: s.quarantine_value})
        changed += 1
        rows.append({"object": f"Pod/{name}", "action": f"labelled {QUARANTINE_LABEL}={s.quarantine_value}"})
    try:
        before = clean(inc.kube.get(kind="NetworkPolicy", name=s.policy_name, namespace=s.namespace))
    except NotFound:
        before = None
    policy = quarantine_policy(s)
    after = inc.kube.apply([policy], namespace=s.namespace)[0]
    same = before is not None and before.get("spec") == after.get("spec")
    changed += 0 if same else 1
    rows.append({"object": f"NetworkPolicy/{s.policy_name}", "action": "unchanged" if same else "applied"})
    inc.save(QUARANTINE_EVIDENCE, {"pods": [r["object"] for r in rows[:-1]], "policy": policy},
             "the quarantine applied: pods labelled and the deny-all NetworkPolicy")
    return Result(summary=f"{len(rows) - 1} pod(s) quarantined behind {s.policy_name}" +
                  ("" if changed else " (already in force: nothing changed)"),
                  outcome="changed" if changed else "ok", rows=rows, details={"changed": changed})


def _patch_labels(inc: Incident, pod: str, labels: Mapping[str, str | None]) -> dict[str, Any]:
    s = inc.settings
    return inc.kube.request("PATCH", f"/api/v1/namespaces/{quote(s.namespace, safe='')}/pods/{quote(pod, safe='')}",
                            body={"metadata": {"labels": dict(labels)}}, content_type="application/merge-patch+json")


def isolation_in_force(inc: Incident) -> Result:
    """Check: the policy selects the quarantine label, denies both directions, and the labelled pods run."""
    if not inc.wants("containment") or not inc.settings.isolate:
        return _skip("containment (isolate) not selected")
    if inc.kube is None:
        return _no_cluster()
    s = inc.settings
    try:
        pol = inc.kube.get(kind="NetworkPolicy", name=s.policy_name, namespace=s.namespace)
    except NotFound:
        if not s.applying:
            return _skip("plan mode: the quarantine is not applied")
        return Result(summary=f"NetworkPolicy {s.policy_name} is missing", outcome="failed")
    spec = pol.get("spec") or {}
    ok_sel = (spec.get("podSelector") or {}).get("matchLabels") == {QUARANTINE_LABEL: s.quarantine_value}
    ok_types = sorted(spec.get("policyTypes") or []) == ["Egress", "Ingress"]
    ok_rules = not spec.get("ingress") and not spec.get("egress")
    pods = inc.kube.pod_objects(namespace=s.namespace, selector=f"{QUARANTINE_LABEL}={s.quarantine_value}")
    rows = [{"pod": p["metadata"]["name"], "phase": (p.get("status") or {}).get("phase", "")} for p in pods]
    ok = ok_sel and ok_types and ok_rules
    return Result(summary=(f"deny-all in force for {len(pods)} quarantined pod(s)" if ok else
                           f"policy {s.policy_name} does not deny all: selector {ok_sel}, types {ok_types}, "
                           f"no rules {ok_rules}"), outcome="ok" if ok else "failed", rows=rows)


def _disable_plan(inc: Incident) -> list[dict[str, Any]]:
    bindings = _bindings(inc)
    items: list[dict[str, Any]] = []
    for b in bindings:
        obj = b["binding"]
        subjects = obj.get("subjects") or []
        removed = [subjects[i] for i in b["matching"]]
        action = "delete" if len(removed) == len(subjects) else "remove_subjects"
        items.append({"kind": obj["kind"], "namespace": obj["metadata"].get("namespace", ""),
                      "name": obj["metadata"]["name"], "action": action, "removed_subjects": removed,
                      "object": clean(obj)})
    for sec in _token_secrets(inc):
        items.append({"kind": "Secret", "namespace": sec["metadata"]["namespace"], "name": sec["metadata"]["name"],
                      "action": "delete", "removed_subjects": [], "object": _secret_copy(sec)})
    return items


def _item_rows(items: list[dict[str, Any]], verb: str = "") -> list[dict[str, Any]]:
    rows = []
    for it in items:
        role = (it["object"].get("roleRef") or {}).get("name", "")
        what = ("delete the binding (only compromised subjects)" if it["action"] == "delete" and it["kind"] != "Secret"
                else "delete the token Secret" if it["kind"] == "Secret"
                else "remove " + ", ".join(f"{x.get('kind')}:{x.get('name')}" for x in it["removed_subjects"]))
        rows.append({"object": f"{it['kind']}/{it['namespace'] + '/' if it['namespace'] else ''}{it['name']}",
                     "role": role, "action": (verb + what) if verb else what})
    return rows


def plan_disable_accounts(inc: Incident) -> Result:
    if not inc.wants("containment"):
        return _no_phase("containment")
    s = inc.settings
    if not s.disable_accounts or not s.compromised_accounts:
        return _skip("no compromised account to disable (compromised_accounts empty or disable_accounts false)")
    if inc.kube is None:
        return Result(summary=f"would disable {len(s.compromised_accounts)} account(s): remove them from every "
                      "RoleBinding/ClusterRoleBinding and delete their token Secrets (no cluster: not listed)",
                      outcome="planned", rows=[{"account": str(a)} for a in s.accounts()])
    items = _disable_plan(inc)
    return Result(summary=f"would change {len(items)} object(s); a copy of each goes into the record",
                  outcome="planned", rows=_item_rows(items), details={"items": items})


def disable_accounts(inc: Incident) -> Result:
    """Remove the compromised subjects from their bindings (delete a binding left without subjects) and
    delete their token Secrets, saving a copy of each object as it was into the record first."""
    if not inc.wants("containment"):
        return _no_phase("containment")
    s = inc.settings
    if not s.disable_accounts or not s.compromised_accounts:
        return _skip("no compromised account to disable (compromised_accounts empty or disable_accounts false)")
    if inc.kube is None:
        return _no_cluster()
    items = _disable_plan(inc)
    if not items:
        return Result(summary="nothing to disable: no binding or token Secret names these accounts (already "
                      "disabled?)", outcome="ok", rows=[])
    saved = inc.save(ACCOUNTS_EVIDENCE, {"incident_id": s.incident_id, "items": items},
                     "copy of every binding and token Secret removed to disable the compromised accounts")
    for it in items:
        ns = it["namespace"] or None
        if it["action"] == "delete":
            inc.kube.delete(kind=it["kind"], name=it["name"], namespace=ns)
        else:
            cur = inc.kube.get(kind=it["kind"], name=it["name"], namespace=ns)
            cur["subjects"] = [x for x in cur.get("subjects") or [] if x not in it["removed_subjects"]]
            _put(inc, cur)
    inc.state.setdefault("disabled", []).extend(items)
    return Result(summary=f"{len(items)} object(s) changed; copy saved as {saved['name']}", outcome="changed",
                  rows=_item_rows(items), details={"copy": saved["name"], "sha256": saved["sha256"]})


def _put(inc: Incident, obj: dict[str, Any]) -> dict[str, Any]:
    info = inc.kube.resource(kind=obj["kind"], api_version=obj.get("apiVersion"))
    ns = obj["metadata"].get("namespace") if info.namespaced else None
    return inc.kube.request("PUT", info.path(namespace=ns, name=obj["metadata"]["name"]), body=obj)


def _create(inc: Incident, obj: dict[str, Any]) -> dict[str, Any]:
    info = inc.kube.resource(kind=obj["kind"], api_version=obj.get("apiVersion"))
    ns = obj["metadata"].get("namespace") if info.namespaced else None
    return inc.kube.request("POST", info.path(namespace=ns), body=obj)


def plan_scale_down(inc: Incident) -> Result:
    if not inc.wants("containment") or not inc.settings.scale_down:
        return _skip("scale_down is false (the quarantined pods keep running for forensics)")
    if inc.kube is None:
        return Result(summary="would scale the affected Deployments to 0 (no cluster: not listed)", outcome="planned")
    deps = _owning_deployments(inc)
    return Result(summary=f"would scale {len(deps)} Deployment(s) to 0", outcome="planned",
                  rows=[{"deployment": d, "replicas now": r} for d, r in deps.items()])


def _owning_deployments(inc: Incident) -> dict[str, int]:
    s = inc.settings
    rs_names = {o["name"] for p in _targets(inc) for o in p["metadata"].get("ownerReferences") or []
                if o.get("kind") == "ReplicaSet"}
    out: dict[str, int] = {}
    for rs in rs_names:
        try:
            obj = inc.kube.get(kind="ReplicaSet", name=rs, namespace=s.namespace)
        except NotFound:
            continue
        for o in obj["metadata"].get("ownerReferences") or []:
            if o.get("kind") == "Deployment":
                dep = inc.kube.get(kind="Deployment", name=o["name"], namespace=s.namespace)
                out[o["name"]] = int((dep.get("spec") or {}).get("replicas", 1))
    return out


def scale_down(inc: Incident) -> Result:
    """Scale the Deployments owning the affected pods to zero, saving their replica counts."""
    if not inc.wants("containment") or not inc.settings.scale_down:
        return _skip("scale_down is false (the quarantined pods keep running for forensics)")
    if inc.kube is None:
        return _no_cluster()
    deps = {d: r for d, r in _owning_deployments(inc).items() if r > 0}
    if not deps:
        return Result(summary="nothing to scale down (already at 0)", outcome="ok")
    inc.save(SCALE_EVIDENCE, {"namespace": inc.settings.namespace, "replicas": deps},
             "replica counts before the scale-down, for recovery")
    for d in deps:
        _scale(inc, d, 0)
    inc.state["scaled"] = deps
    return Result(summary=f"{len(deps)} Deployment(s) scaled to 0", outcome="changed",
                  rows=[{"deployment": d, "replicas before": r} for d, r in deps.items()])


def _scale(inc: Incident, name: str, replicas: int) -> None:
    ns = inc.settings.namespace
    inc.kube.request("PATCH", f"/apis/apps/v1/namespaces/{quote(ns, safe='')}/deployments/{quote(name, safe='')}",
                     body={"spec": {"replicas": replicas}}, content_type="application/merge-patch+json")


# --------------------------------------------------------------------------------------- eradication


def _revision_manifest(inc: Incident, revision: int | None) -> list[dict[str, Any]]:
    from opsbook.clients.helm import parse_manifests

    s = inc.settings
    args = ["get", "manifest", s.release] + (["--revision", str(revision)] if revision else [])
    return parse_manifests(inc.helm.run(*args, namespace=s.namespace))


def plan_rollback(inc: Incident) -> Result:
    if not inc.wants("eradication"):
        return _no_phase("eradication")
    s = inc.settings
    if not s.release or not s.rollback_revision:
        return _skip("no helm rollback asked (release and rollback_revision)")
    if inc.helm is None:
        return Result(summary=f"would run helm rollback {s.release} {s.rollback_revision} (no cluster)", outcome="planned")
    hist = inc.helm.history(s.release, namespace=s.namespace)
    revs = {int(h["revision"]): h for h in hist}
    if s.rollback_revision not in revs:
        return Result(summary=f"revision {s.rollback_revision} of {s.release} is not in its history "
                      f"({', '.join(map(str, sorted(revs)))})", outcome="failed")
    current = max(revs)
    rows = [{"revision": r, "status": h.get("status"), "chart": h.get("chart"), "updated": h.get("updated"),
             "": "<- roll back to" if r == s.rollback_revision else ("current" if r == current else "")}
            for r, h in sorted(revs.items())]
    return Result(summary=f"would roll {s.release} back from revision {current} to {s.rollback_revision}",
                  outcome="planned", rows=rows)


def rollback(inc: Incident) -> Result:
    """``helm rollback RELEASE REVISION`` (idempotent: not repeated when that revision's manifest is live)."""
    if not inc.wants("eradication"):
        return _no_phase("eradication")
    s = inc.settings
    if not s.release or not s.rollback_revision:
        return _skip("no helm rollback asked (release and rollback_revision)")
    if inc.helm is None:
        return _no_cluster()
    if _revision_manifest(inc, None) == _revision_manifest(inc, s.rollback_revision):
        return Result(summary=f"{s.release} already runs the manifest of revision {s.rollback_revision}", outcome="ok")
    inc.helm.rollback(s.release, s.rollback_revision, namespace=s.namespace, wait=True, timeout=s.timeout)
    hist = inc.helm.history(s.release, namespace=s.namespace)
    last = hist[-1] if hist else {}
    return Result(summary=f"{s.release} rolled back to revision {s.rollback_revision} (now revision "
                  f"{last.get('revision')})", outcome="changed",
                  rows=[{"revision": h.get("revision"), "status": h.get("status"), "description": h.get("description")}
                        for h in hist[-5:]])


def rollback_verified(inc: Incident) -> Result:
    """Check: the release is deployed and its live manifest is the known-good revision's."""
    s = inc.settings
    if not inc.wants("eradication") or not s.release or not s.rollback_revision:
        return _skip("no helm rollback asked")
    if inc.helm is None:
        return _no_cluster()
    if not s.applying:
        return _skip("plan mode: nothing was rolled back")
    same = _revision_manifest(inc, None) == _revision_manifest(inc, s.rollback_revision)
    status = inc.helm.status(s.release, namespace=s.namespace)
    state = (status.get("info") or {}).get("status")
    return Result(summary=f"revision {status.get('version')} is {state}; manifest "
                  f"{'equals' if same else 'DIFFERS FROM'} revision {s.rollback_revision}",
                  outcome="ok" if same and state == "deployed" else "failed")


_IMAGE_RE = re.compile(r"^(?P<dep>[a-z0-9.-]+)(?:/(?P<container>[a-z0-9.-]+))?=(?P<image>\S+@sha256:[0-9a-f]{64})$")


def _image_target(s: Settings) -> tuple[str, str | None, str]:
    m = _IMAGE_RE.match(s.known_good_image.strip())
    if not m:
        raise Invalid(f"known_good_image {s.known_good_image!r}: expected DEPLOYMENT[/CONTAINER]=IMAGE@sha256:<64 hex>")
    return m.group("dep"), m.group("container"), m.group("image")


def plan_redeploy_image(inc: Incident) -> Result:
    if not inc.wants("eradication"):
        return _no_phase("eradication")
    s = inc.settings
    if not s.known_good_image:
        return _skip("no known-good image digest given")
    dep, container, image = _image_target(s)
    if inc.kube is None:
        return Result(summary=f"would set {dep}/{container or '*'} to {image} (no cluster)", outcome="planned")
    obj = inc.kube.get(kind="Deployment", name=dep, namespace=s.namespace)
    rows = [{"container": c["name"], "image now": c.get("image"), "image after": image}
            for c in obj["spec"]["template"]["spec"]["containers"] if container in (None, c["name"])]
    return Result(summary=f"would redeploy {dep} with {image}", outcome="planned", rows=rows)


def redeploy_image(inc: Incident) -> Result:
    if not inc.wants("eradication"):
        return _no_phase("eradication")
    s = inc.settings
    if not s.known_good_image:
        return _skip("no known-good image digest given")
    if inc.kube is None:
        return _no_cluster()
    dep, container, image = _image_target(s)
    obj = inc.kube.get(kind="Deployment", name=dep, namespace=s.namespace)
    changed = []
    for c in obj["spec"]["template"]["spec"]["containers"]:
        if container in (None, c["name"]) and c.get("image") != image:
            changed.append({"container": c["name"], "image before": c.get("image"), "image after": image})
            c["image"] = image
    if not changed:
        return Result(summary=f"{dep} already runs {image}", outcome="ok")
    obj.setdefault("kind", "Deployment")
    obj.setdefault("apiVersion", "apps/v1")
    _put(inc, obj)
    return Result(summary=f"{dep}: {len(changed)} container(s) set to {image}", outcome="changed", rows=changed)


def _db(inc: Incident) -> Any:
    from opsbook.clients.pgbackup import PgBackup

    s = inc.settings
    password = None
    if s.db_password and inc.secret is not None:
        password = inc.secret("db_password", k8s=inc.kube.read_secret_key if inc.kube is not None else None)
    return PgBackup(host=s.db_host, port=s.db_port, user=s.db_user, password=password, timeout=max(60.0, s.timeout))


def plan_restore_database(inc: Incident) -> Result:
    if not inc.wants("eradication"):
        return _no_phase("eradication")
    s = inc.settings
    if not s.backup_file:
        return _skip("no backup_file given: no database restore")
    db = _db(inc)
    toc = db.contents(s.backup_file)
    tables = sorted({f"{r['schema']}.{r['name']}" for r in toc if r["type"] == "TABLE DATA"})
    try:
        now = db.row_counts(s.db_name, tables)
    except ClientError as exc:
        now = {t: f"unknown ({str(exc).splitlines()[0][:60]})" for t in tables}
    rows = [{"table": t, "rows now (replaced)": now.get(t, ""), "expected after": s.expected_rows.get(t, "")}
            for t in tables]
    return Result(summary=f"would restore {len(tables)} table(s) of {Path(s.backup_file).name} into "
                  f"{s.db_name} on {s.db_host}:{s.db_port}", outcome="planned", rows=rows,
                  details={"backup_sha256": _sha256_file(s.backup_file), "toc_entries": len(toc)})


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def restore_database(inc: Incident) -> Result:
    """Restore the database from the dump (``pg_restore`` or ``psql``), counting rows before and after."""
    if not inc.wants("eradication"):
        return _no_phase("eradication")
    s = inc.settings
    if not s.backup_file:
        return _skip("no backup_file given: no database restore")
    db = _db(inc)
    toc = db.contents(s.backup_file)
    tables = sorted({f"{r['schema']}.{r['name']}" for r in toc if r["type"] == "TABLE DATA"})
    before = db.row_counts(s.db_name, tables)
    digest = _sha256_file(s.backup_file)
    how = db.restore(s.db_name, s.backup_file)
    after = db.row_counts(s.db_name, tables)
    inc.state["restored"] = {"tables": tables, "after": after}
    inc.save("eradication/database-restore.json",
             {"backup_file": s.backup_file, "backup_sha256": digest, "database": s.db_name, "how": how,
              "rows_before": before, "rows_after": after}, "the database restore: row counts before and after")
    rows = [{"table": t, "rows before": before.get(t), "rows after": after.get(t)} for t in tables]
    return Result(summary=f"{s.db_name} restored from {Path(s.backup_file).name} ({how['tool']})", outcome="changed",
                  rows=rows, details={"backup_sha256": digest, **how})


def restore_verified(inc: Incident) -> Result:
    """Check: every table of the dump is back, with the expected row counts where they were given."""
    s = inc.settings
    if not inc.wants("eradication") or not s.backup_file:
        return _skip("no database restore asked")
    if not s.applying:
        return _skip("plan mode: nothing was restored")
    db = _db(inc)
    toc = db.contents(s.backup_file)
    tables = sorted({f"{r['schema']}.{r['name']}" for r in toc if r["type"] == "TABLE DATA"} | set(s.expected_rows))
    counts = db.row_counts(s.db_name, tables)
    bad = [t for t in tables if counts.get(t, -1) < 0 or (t in s.expected_rows and counts[t] != int(s.expected_rows[t]))]
    rows = [{"table": t, "rows": counts.get(t), "expected": s.expected_rows.get(t, "(any)"),
             "ok": "yes" if t not in bad else "NO"} for t in tables]
    return Result(summary=(f"{len(tables)} table(s) restored as expected" if not bad else
                           f"{len(bad)} table(s) wrong: {', '.join(bad)}"), outcome="failed" if bad else "ok", rows=rows)


# ------------------------------------------------------------------------------------------- recovery


def plan_lift_isolation(inc: Incident) -> Result:
    if not inc.wants("recovery") or not inc.settings.lift_isolation:
        return _skip("lift_isolation is false (set it to lift the quarantine) or phase recovery not selected")
    s = inc.settings
    if inc.kube is None:
        return Result(summary=f"would remove label {QUARANTINE_LABEL} and NetworkPolicy {s.policy_name} (no cluster)",
                      outcome="planned")
    pods = inc.kube.pod_objects(namespace=s.namespace, selector=f"{QUARANTINE_LABEL}={s.quarantine_value}")
    rows = [{"object": f"Pod/{p['metadata']['name']}", "action": f"remove label {QUARANTINE_LABEL}"} for p in pods]
    rows.append({"object": f"NetworkPolicy/{s.policy_name}", "action": "delete"})
    return Result(summary=f"would release {len(pods)} pod(s) from quarantine", outcome="planned", rows=rows)


def lift_isolation(inc: Incident) -> Result:
    """Remove the quarantine label from the pods of this incident and delete the policy (idempotent)."""
    if not inc.wants("recovery") or not inc.settings.lift_isolation:
        return _skip("lift_isolation is false (set it to lift the quarantine) or phase recovery not selected")
    if inc.kube is None:
        return _no_cluster()
    s = inc.settings
    pods = inc.kube.pod_objects(namespace=s.namespace, selector=f"{QUARANTINE_LABEL}={s.quarantine_value}")
    rows = []
    for p in pods:
        _patch_labels(inc, p["metadata"]["name"], {QUARANTINE_LABEL: None})
        rows.append({"object": f"Pod/{p['metadata']['name']}", "action": "label removed"})
    deleted = inc.kube.delete(kind="NetworkPolicy", name=s.policy_name, namespace=s.namespace)
    rows.append({"object": f"NetworkPolicy/{s.policy_name}", "action": "deleted" if deleted else "already gone"})
    changed = bool(pods) or deleted
    return Result(summary=f"{len(pods)} pod(s) released" + ("" if changed else " (nothing was isolated)"),
                  outcome="changed" if changed else "ok", rows=rows)


def saved_copies(inc: Incident, name: str) -> list[dict[str, Any]]:
    """Every copy of evidence ``name`` saved by earlier runs of this incident (oldest first), each
    checked against its record's manifest before it is trusted; then this run's own."""
    out: list[dict[str, Any]] = []
    if inc.archive is not None:
        from opsbook.records.bundle import incident_runs

        for r in incident_runs(inc.archive, inc.settings.incident_id):
            rel = f"evidence/{name}"
            digest = (r.manifest.get("files") or {}).get(rel)
            path = r.path / rel
            if not digest or not path.is_file():
                continue
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != digest:
                raise OpsbookError(f"{r.record}/{rel} does not match its manifest: not trusted for a restore")
            out.append({"run_id": r.run_id, **json.loads(data)})
    return out


def _copies_to_restore(inc: Incident) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for copy_ in saved_copies(inc, ACCOUNTS_EVIDENCE):
        items.extend(copy_.get("items") or [])
    items.extend(inc.state.get("disabled") or [])
    return items


def plan_reenable_accounts(inc: Incident) -> Result:
    if not inc.wants("recovery") or not inc.settings.reenable_accounts:
        return _skip("reenable_accounts is false: the compromised accounts stay disabled")
    items = _copies_to_restore(inc)
    return Result(summary=f"would restore {len(items)} object(s) from the saved copies", outcome="planned",
                  rows=_item_rows(items, "undo: "))


def reenable_accounts(inc: Incident) -> Result:
    """Put back what containment removed, from the saved copies: deleted bindings re-created, removed
    subjects re-added, token Secrets re-created empty (a new token is minted). Idempotent."""
    if not inc.wants("recovery") or not inc.settings.reenable_accounts:
        return _skip("reenable_accounts is false: the compromised accounts stay disabled")
    if inc.kube is None:
        return _no_cluster()
    rows, changed = [], 0
    for it in _copies_to_restore(inc):
        ns = it["namespace"] or None
        obj = copy.deepcopy(it["object"])
        try:
            cur = inc.kube.get(kind=it["kind"], name=it["name"], namespace=ns)
        except NotFound:
            cur = None
        label = f"{it['kind']}/{it['namespace'] + '/' if it['namespace'] else ''}{it['name']}"
        if it["kind"] == "Secret":
            if cur is None:
                obj.pop("dataSha256", None)
                _create(inc, obj)
                changed += 1
                rows.append({"object": label, "action": "re-created (a new token is minted)"})
            else:
                rows.append({"object": label, "action": "present"})
            continue
        if cur is None:
            _create(inc, obj)
            changed += 1
            rows.append({"object": label, "action": "re-created"})
            continue
        subjects = list(cur.get("subjects") or [])
        missing = [x for x in it["removed_subjects"] if x not in subjects]
        if missing:
            # put them back where they were, in the saved order
            want = obj.get("subjects") or []
            cur["subjects"] = [x for x in want if x in subjects or x in missing] + \
                              [x for x in subjects if x not in want]
            _put(inc, cur)
            changed += 1
            rows.append({"object": label, "action": f"{len(missing)} subject(s) re-added"})
        else:
            rows.append({"object": label, "action": "present"})
    return Result(summary=f"{changed} object(s) restored" + ("" if changed else " (nothing to restore)"),
                  outcome="changed" if changed else "ok", rows=rows)


def scale_back(inc: Incident) -> Result:
    """Restore the replica counts saved by the scale-down (this run's or an earlier run's of the incident)."""
    if not inc.wants("recovery"):
        return _no_phase("recovery")
    wanted: dict[str, int] = {}
    for c in saved_copies(inc, SCALE_EVIDENCE):
        wanted.update(c.get("replicas") or {})
    wanted.update(inc.state.get("scaled") or {})
    if not wanted:
        return _skip("nothing was scaled down")
    if inc.kube is None:
        return _no_cluster()
    if not inc.settings.applying:
        return Result(summary=f"would scale {len(wanted)} Deployment(s) back", outcome="planned",
                      rows=[{"deployment": d, "replicas": r} for d, r in wanted.items()])
    for d, r in wanted.items():
        _scale(inc, d, r)
    return Result(summary=f"{len(wanted)} Deployment(s) scaled back", outcome="changed",
                  rows=[{"deployment": d, "replicas": r} for d, r in wanted.items()])


def pods_ready(inc: Incident, *, poll: float = 1.0) -> Result:
    """Check: every affected pod is Running and Ready (waits up to ``timeout``)."""
    if not inc.wants("recovery"):
        return _no_phase("recovery")
    if inc.kube is None:
        return _no_cluster()
    s = inc.settings
    deadline = time.monotonic() + s.timeout
    while True:
        pods = inc.kube.pod_objects(namespace=s.namespace, selector=s.selector or None)
        rows = [{"pod": p["metadata"]["name"], "phase": (p.get("status") or {}).get("phase", ""),
                 "ready": any(c.get("type") == "Ready" and c.get("status") == "True"
                              for c in (p.get("status") or {}).get("conditions") or [])} for p in pods]
        if rows and all(r["ready"] for r in rows):
            return Result(summary=f"{len(rows)} pod(s) Ready", outcome="ok", rows=rows)
        if time.monotonic() >= deadline or not s.applying:
            return Result(summary=f"{sum(r['ready'] for r in rows)}/{len(rows)} pod(s) Ready",
                          outcome="failed" if s.applying else "ok", rows=rows)
        time.sleep(poll)


def error_rate(inc: Incident) -> Result:
    """Check: the error rate (``error_rate_query``) stayed at or below ``error_rate_max`` over the last
    ``monitor_seconds`` seconds."""
    if not inc.wants("recovery"):
        return _no_phase("recovery")
    s = inc.settings
    if inc.prometheus is None or not s.error_rate_query:
        return _skip("no Prometheus URL or error_rate_query: error rate not checked")
    end = time.time()
    data = inc.prometheus.query_range(s.error_rate_query, end - s.monitor_seconds, end,
                                      max(1, s.monitor_seconds // 30))
    # the client's DataFrame: one row per series and step, column ``value``
    values = [float(v) for v in data["value"].tolist() if v == v] if len(data) else []  # v == v: not NaN
    if not values:
        return Result(summary=f"no samples for {s.error_rate_query} over {s.monitor_seconds} s", outcome="failed")
    worst = max(values)
    return Result(summary=f"max error rate {worst:g} over {s.monitor_seconds} s (limit {s.error_rate_max:g})",
                  outcome="ok" if worst <= s.error_rate_max else "failed",
                  details={"max": worst, "samples": len(values)})


# -------------------------------------------------------------------------------------- post-incident


def incident_so_far(inc: Incident) -> Result:
    """The runs of this incident already archived, and the commands that export the evidence bundle."""
    if not inc.wants("post-incident"):
        return _no_phase("post-incident")
    s = inc.settings
    rows: list[dict[str, Any]] = []
    if inc.archive is not None:
        from opsbook.records.bundle import incident_runs

        for r in incident_runs(inc.archive, s.incident_id):
            m = r.manifest
            rows.append({"run": r.run_id, "started": m.get("started"), "mode": m.get("mode"),
                         "status": m.get("status"), "operator": m.get("operator"),
                         "phases": ", ".join((m.get("parameters") or {}).get("phases") or [])})
    return Result(summary=f"{len(rows)} earlier run(s) of {s.incident_id}; this one is archived when it ends. "
                  f"Then: opsbook incident {s.incident_id}; opsbook evidence {s.incident_id} --out "
                  f"{s.incident_id}.tar.gz", rows=rows)

