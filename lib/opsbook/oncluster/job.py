"""The on-cluster Job: the request, the Job and its RBAC as objects, launch and clean-up."""

from __future__ import annotations

import getpass
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opsbook.catalog import RbacRule, Runbook
from opsbook.clients.kube import FATAL_WAITING_REASONS
from opsbook.errors import ClientError, UsageError
from opsbook.secrets import SecretRef, looks_secret, parse_ref
from opsbook.targets import Target

IMAGE_REPO = "ghcr.io/opsbook/opsbook"
ENV_IMAGE = "OPSBOOK_IMAGE"
CONFIG_DIR = "/etc/opsbook"
CONTAINER = "opsbook"
RUN_AS_USER = 10001  # the numeric USER of the Dockerfile (runAsNonRoot can only check a numeric user)
IN_CLUSTER_CONTEXT = "in-cluster"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
RBAC_API = "rbac.authorization.k8s.io/v1"
LABEL_NAME, LABEL_RUNBOOK, LABEL_RUN = "app.kubernetes.io/name", "opsbook.io/runbook", "opsbook.io/run-id"
TIMEOUT_GRACE = 10.0  # seconds the CLI waits past --job-timeout for the cluster's own DeadlineExceeded
# keys of the --s3-secret Secret: (env var, required)
S3_KEYS = (("AWS_ACCESS_KEY_ID", True), ("AWS_SECRET_ACCESS_KEY", True), ("AWS_ENDPOINT_URL_S3", False))
# waiting reasons that end the wait at once: the pod will not start by itself (CrashLoopBackOff cannot
# happen with restartPolicy Never)
FATAL_REASONS = frozenset(FATAL_WAITING_REASONS) - {"CrashLoopBackOff"}
EXIT_MEANING = {1: "the runbook failed", 2: "invalid input, refused before the run", 130: "interrupted",
                137: "killed (SIGKILL: out of memory, or the deadline)", 143: "terminated (SIGTERM)"}
_ANNOTATION_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                             r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


# -------------------------------------------------------------------------------------- the request

@dataclass(frozen=True)
class JobRequest:
    """One on-cluster run: what ``runner.prepare`` validated, plus where and how the Job runs."""

    runbook: Runbook
    params: Mapping[str, Any]  # validated by runner.prepare: secret parameters hold references only
    target: Target
    run_id: str
    namespace: str  # of the Job, its ServiceAccount and ConfigMap
    image: str
    outputs: str  # s3://BUCKET/PREFIX
    operator: str = field(default_factory=lambda: os.environ.get("OPSBOOK_OPERATOR") or getpass.getuser())
    s3_secret: str | None = None
    env_secrets: tuple[str, ...] = ()
    approve: str | None = None
    cell_timeout: int | None = None
    job_timeout: int = 3600
    pod_annotations: Mapping[str, str] = field(default_factory=dict)
    ttl_seconds: int = 86400

    @property
    def name(self) -> str:
        """Every object of the run is called this (kinds differ); a DNS-1123 label of 31 characters."""
        return f"opsbook-{self.run_id.lower()}"

    @property
    def mode(self) -> str:
        return str(self.params.get("mode", "plan"))

    @property
    def runbook_namespace(self) -> str:
        """Where the runbook acts (its ``namespace`` parameter, else the target's): its Role goes there."""
        return str(self.params.get("namespace") or self.target.namespace)

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL_NAME: "opsbook", LABEL_RUNBOOK: self.runbook.id, LABEL_RUN: self.run_id}

    @property
    def selector(self) -> str:
        return f"{LABEL_RUN}={self.run_id}"


def default_image(env: Mapping[str, str] | None = None) -> str:
    """``$OPSBOOK_IMAGE``, else ``ghcr.io/opsbook/opsbook:<this package's version>``: the image whose
    notebooks are the ones validated here (an approval checks the notebook's sha256)."""
    env = os.environ if env is None else env
    if env.get(ENV_IMAGE):
        return env[ENV_IMAGE]
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{IMAGE_REPO}:{version('opsbook')}"
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return f"{IMAGE_REPO}:latest"


def require_s3_outputs(given: str | None, env: Mapping[str, str] | None = None) -> str:
    """The S3 archive URL (``--outputs`` else ``$OPSBOOK_OUTPUTS``); anything else is refused: a record
    written inside a pod's filesystem is lost when the pod goes."""
    env = os.environ if env is None else env
    url = (given or env.get("OPSBOOK_OUTPUTS") or "").strip()
    if not url.lower().startswith("s3://") or len(url) <= len("s3://"):
        raise UsageError("--on-cluster needs an S3 archive: give --outputs s3://BUCKET/PREFIX or set "
                         "OPSBOOK_OUTPUTS=s3://... (a record written in the pod would be lost with it)"
                         + (f"; got {url!r}" if url else ""))
    return url


def parse_annotations(items: Iterable[str]) -> dict[str, str]:
    """``--pod-annotation KEY=VALUE`` (repeatable) into a mapping; a bad key is refused."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not _ANNOTATION_KEY.match(key) or len(key.rpartition("/")[2]) > 63:
            raise UsageError(f"--pod-annotation {item!r}: expected KEY=VALUE with KEY an annotation key "
                             "([prefix/]name, e.g. sidecar.istio.io/inject=false)")
        out[key] = value
    return out


def secret_refs(req: JobRequest) -> list[SecretRef]:
    """The ``k8s:`` references among the secret parameters (they need a ``get`` rule). ``env:`` ones are
    accepted when ``--env-secret`` maps a Secret into the container's environment; ``file:`` ones are
    refused: no file of this machine exists in the pod."""
    out: list[SecretRef] = []
    for p in req.runbook.spec:
        value = req.params.get(p.name)
        if not p.secret or not isinstance(value, str) or not value:
            continue
        ref = parse_ref(value)  # validated already: a secret parameter holds a reference
        if ref.scheme == "file":
            raise UsageError(f"parameter {p.name} is {ref}: a file of this machine does not exist in the Job's pod; "
                             "use k8s:NAMESPACE/SECRET/KEY, or env:NAME with --env-secret SECRET")
        if ref.scheme == "env" and not req.env_secrets:
            raise UsageError(f"parameter {p.name} is {ref}: inside the Job, {ref.target} must come from a "
                             f"Kubernetes Secret: add --env-secret SECRET (a Secret with key {ref.target}), or use "
                             "k8s:NAMESPACE/SECRET/KEY")
        if ref.scheme == "k8s":
            out.append(ref)
    return out


# ------------------------------------------------------------------------------------------- render

def _rule_dicts(rules: Iterable[RbacRule]) -> list[dict[str, Any]]:
    return [r.as_k8s() for r in rules]


def _grants_secret_get(rules: list[dict[str, Any]]) -> bool:
    return any("" in r["apiGroups"] and "secrets" in r["resources"] and "get" in r["verbs"]
               and not r.get("resourceNames") for r in rules)


def role_rules(req: JobRequest) -> dict[str, list[dict[str, Any]]]:
    """Namespace -> rules of the Role there: the runbook's rules in its namespace, plus ``get`` on each
    Secret a ``k8s:`` parameter names (in that Secret's namespace)."""
    rbac = req.runbook.rbac
    if rbac is None:
        raise UsageError(f"runbook {req.runbook.id} declares no RBAC (notebook metadata opsbook.rbac): it "
                         "cannot run --on-cluster until it says which API calls it makes")
    out: dict[str, list[dict[str, Any]]] = {}
    if rbac.rules:
        out[req.runbook_namespace] = _rule_dicts(rbac.rules)
    wanted: dict[str, set[str]] = {}
    for ref in secret_refs(req):
        ns, secret, _ = ref.k8s_parts
        wanted.setdefault(ns, set()).add(secret)
    for ns, names in sorted(wanted.items()):
        rules = out.setdefault(ns, [])
        if not _grants_secret_get(rules):
            rules.append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
                          "resourceNames": sorted(names)})
    return out


def in_cluster_kubeconfig(namespace: str) -> str:
    """A kubeconfig for the pod's own ServiceAccount: it names the token file, it holds no credential.
    helm, kubectl and the Python client all read it, so the runbook's clients work unchanged."""
    import yaml

    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": IN_CLUSTER_CONTEXT,
        "clusters": [{"name": IN_CLUSTER_CONTEXT, "cluster": {"server": "https://kubernetes.default.svc",
                                                              "certificate-authority": f"{SA_DIR}/ca.crt"}}],
        "users": [{"name": IN_CLUSTER_CONTEXT, "user": {"tokenFile": f"{SA_DIR}/token"}}],
        "contexts": [{"name": IN_CLUSTER_CONTEXT, "context": {"cluster": IN_CLUSTER_CONTEXT,
                                                              "user": IN_CLUSTER_CONTEXT, "namespace": namespace}}],
    }, sort_keys=False)


def target_file(target: Target) -> str:
    """The target as the pod sees it: the same name and settings, the cluster reached in-cluster."""
    import yaml

    fields = target.model_dump(exclude={"name", "source"})
    fields.update(kubeconfig=f"{CONFIG_DIR}/kubeconfig", kube_context=IN_CLUSTER_CONTEXT,
                  description=(target.description + " " if target.description else "") + "(in-cluster, opsbook Job)")
    return yaml.safe_dump({target.name: fields}, sort_keys=False)


def parameters_file(req: JobRequest) -> str:
    """The validated parameters bar mode and target (given as flags, so they show in the Job's args)."""
    return json.dumps({k: v for k, v in req.params.items() if k not in ("mode", "target")}, indent=1,
                      sort_keys=True) + "\n"


def container_args(req: JobRequest) -> list[str]:
    args = ["run", req.runbook.id, "--mode", req.mode, "--target", req.target.name,
            "--parameters-file", f"{CONFIG_DIR}/parameters.json", "--outputs", req.outputs, "--run-id", req.run_id]
    if req.approve:
        args += ["--approve", req.approve]
    if req.cell_timeout:
        args += ["--cell-timeout", str(req.cell_timeout)]
    return args


def _env(req: JobRequest) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "OPSBOOK_OUTPUTS", "value": req.outputs},
        {"name": "OPSBOOK_TARGETS", "value": f"{CONFIG_DIR}/targets.yaml"},
        {"name": "OPSBOOK_OPERATOR", "value": req.operator},
        {"name": "HOME", "value": "/tmp"},  # helm, jupyter and matplotlib write under HOME; the root fs is read-only
        {"name": "TMPDIR", "value": "/tmp"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if req.s3_secret:
        env += [{"name": var, "valueFrom": {"secretKeyRef": {"name": req.s3_secret, "key": var,
                                                             **({} if required else {"optional": True})}}}
                for var, required in S3_KEYS]
    return env


def render(req: JobRequest) -> list[dict[str, Any]]:
    """Every object of the run, in creation order (the Job last). Refuses a runbook without RBAC,
    ``file:`` references, ``env:`` references without ``--env-secret``, and any string that looks like
    a credential (a literal secret must never reach the cluster, whatever path it took)."""
    if not _K8S_NAME.match(req.namespace) or len(req.namespace) > 63:
        raise UsageError(f"--namespace {req.namespace!r}: not a Kubernetes namespace name")
    for name, what in [(req.s3_secret, "--s3-secret"), *((s, "--env-secret") for s in req.env_secrets)]:
        if name is not None and (not _K8S_NAME.match(name) or len(name) > 253):
            raise UsageError(f"{what} {name!r}: not a Kubernetes Secret name")
    if str(req.params.get("kube_context") or ""):
        raise UsageError("parameter kube_context names a context of your kubeconfig; inside the cluster the Job "
                         "uses its ServiceAccount: leave kube_context empty with --on-cluster")
    if req.job_timeout < 1:
        raise UsageError(f"--job-timeout {req.job_timeout}: expected at least 1 second")
    roles = role_rules(req)
    assert req.runbook.rbac is not None  # role_rules refused it otherwise
    cluster_rules = _rule_dicts(req.runbook.rbac.cluster_rules)
    name, labels = req.name, req.labels
    subject = {"kind": "ServiceAccount", "name": name, "namespace": req.namespace}

    def meta(namespace: str | None = None) -> dict[str, Any]:
        m: dict[str, Any] = {"name": name, "labels": dict(labels)}
        if namespace:
            m["namespace"] = namespace
        return m

    objs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(req.namespace),
         "automountServiceAccountToken": True},
    ]
    for ns, rules in roles.items():
        objs.append({"apiVersion": RBAC_API, "kind": "Role", "metadata": meta(ns), "rules": rules})
        objs.append({"apiVersion": RBAC_API, "kind": "RoleBinding", "metadata": meta(ns),
                     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                     "subjects": [subject]})
    if cluster_rules:
        objs.append({"apiVersion": RBAC_API, "kind": "ClusterRole", "metadata": meta(), "rules": cluster_rules})
        objs.append({"apiVersion": RBAC_API, "kind": "ClusterRoleBinding", "metadata": meta(),
                     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                     "subjects": [subject]})
    objs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(req.namespace),
                 "data": {"parameters.json": parameters_file(req), "targets.yaml": target_file(req.target),
                          "kubeconfig": in_cluster_kubeconfig(req.runbook_namespace)}})
    container: dict[str, Any] = {
        "name": CONTAINER, "image": req.image, "imagePullPolicy": "IfNotPresent",
        "args": container_args(req), "env": _env(req),
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    if req.env_secrets:
        container["envFrom"] = [{"secretRef": {"name": s}} for s in req.env_secrets]
    pod_meta: dict[str, Any] = {"labels": dict(labels)}
    if req.pod_annotations:
        pod_meta["annotations"] = dict(req.pod_annotations)
    job_meta = meta(req.namespace)
    job_meta["annotations"] = {"opsbook.io/source-sha256": req.runbook.sha256, "opsbook.io/operator": req.operator,
                               "opsbook.io/mode": req.mode, "opsbook.io/target": req.target.name}
    objs.append({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": job_meta,
        "spec": {
            "backoffLimit": 0,  # a runbook is never re-run automatically
            "activeDeadlineSeconds": int(req.job_timeout),
            "ttlSecondsAfterFinished": int(req.ttl_seconds),
            "template": {"metadata": pod_meta, "spec": {
                "serviceAccountName": name, "automountServiceAccountToken": True, "restartPolicy": "Never",
                "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER,
                                    "fsGroup": RUN_AS_USER, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [container],
                "volumes": [{"name": "config", "configMap": {"name": name, "defaultMode": 0o444}},
                            {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}],
            }},
        },
    })
    leaked = [path for path, value in _strings(objs) if looks_secret(value)]
    if leaked:
        raise UsageError("refused: a value that looks like a credential would be written to the cluster at "
                         + ", ".join(leaked[:5]) + "; pass secrets as references (k8s:NAMESPACE/SECRET/KEY, "
                         "env:NAME with --env-secret) and the archive credentials with --s3-secret")
    return objs


def _strings(obj: Any, path: str = "") -> Iterable[tuple[str, str]]:
    if isinstance(obj, str):
        yield path or "(value)", obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _strings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _strings(v, f"{path}[{i}]")


def summary_rows(objs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One row per RBAC rule (kind, namespace, rule), for the plan table."""
    rows = []
    for o in objs:
        if o["kind"] not in ("Role", "ClusterRole"):
            continue
        for r in o.get("rules") or []:
            groups = ",".join(g or "core" for g in r["apiGroups"])
            rows.append({"kind": o["kind"], "namespace": o["metadata"].get("namespace", "(cluster)"),
                         "apiGroups": groups, "resources": ",".join(r["resources"]), "verbs": ",".join(r["verbs"]),
                         "resourceNames": ",".join(r.get("resourceNames") or [])})
    return rows


# ------------------------------------------------------------------------------------------ cluster

def preflight(kube: Any, req: JobRequest, objs: list[dict[str, Any]]) -> None:
    """Every namespace the run puts an object in exists (a Role cannot be created in a missing one, and
    creating namespaces is not this command's business). UsageError naming the missing ones."""
    namespaces = sorted({o["metadata"]["namespace"] for o in objs if o["metadata"].get("namespace")})
    missing = [ns for ns in namespaces if not kube.namespace_exists(name=ns)]
    if missing:
        raise UsageError("namespace(s) " + ", ".join(missing) + " do not exist: create them first (the Job, its "
                         "ServiceAccount and the runbook's Role live there), e.g. `kubectl create namespace "
                         f"{missing[0]}`")


def server_dry_run(kube: Any, objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The API server validates and defaults every object (``dryRun=All``) and stores nothing."""
    return kube.apply(objs, dry_run=True)


def _owned(obj: dict[str, Any], job: Mapping[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(obj))
    jm = job["metadata"]
    if out["metadata"].get("namespace") == jm["namespace"]:
        out["metadata"]["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": jm["name"],
                                               "uid": jm["uid"]}]
    return out


def launch(kube: Any, objs: list[dict[str, Any]]) -> dict[str, Any]:
    """Create the run's objects: the Job suspended first, then the rest (owned by the Job where they
    share its namespace), then resume the Job. On a failure, whatever was created is deleted again."""
    job_manifest = json.loads(json.dumps(objs[-1]))
    assert job_manifest["kind"] == "Job"
    job_manifest["spec"]["suspend"] = True
    job = kube.create(job_manifest)
    created: list[dict[str, Any]] = []
    try:
        for o in objs[:-1]:
            created.append(kube.create(_owned(o, job)))
        return kube.patch(kind="Job", name=job["metadata"]["name"], namespace=job["metadata"]["namespace"],
                          patch={"spec": {"suspend": False}})
    except BaseException:
        for o in [job, *reversed(created)]:
            m = o.get("metadata") or {}
            try:
                kube.delete(kind=o.get("kind") or "Job", name=m["name"], namespace=m.get("namespace"),
                            api_version=o.get("apiVersion"))
            except ClientError:
                pass
        raise


def revoke(kube: Any, objs: list[dict[str, Any]]) -> list[str]:
    """Delete the run's Roles, ClusterRole and their bindings: the permissions end with the run.
    Returns what could not be deleted (to tell the operator); a missing object is fine."""
    problems = []
    for o in objs:
        if o["kind"] not in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"):
            continue
        m = o["metadata"]
        try:
            kube.delete(kind=o["kind"], name=m["name"], namespace=m.get("namespace"), api_version=o["apiVersion"])
        except ClientError as exc:
            problems.append(f"{o['kind']} {m.get('namespace', '')}/{m['name']}: {exc}")
    return problems


def stop(kube: Any, req: JobRequest, objs: list[dict[str, Any]]) -> list[str]:
    """Delete the Job (its pod gets SIGTERM: the in-pod run archives itself as aborted) and the RBAC."""
    problems = []
    try:
        kube.delete(kind="Job", name=req.name, namespace=req.namespace, propagation="Background")
    except ClientError as exc:
        problems.append(f"Job {req.namespace}/{req.name}: {exc}")
    return problems + revoke(kube, objs)


def kubectl_hints(req: JobRequest, objs: list[dict[str, Any]]) -> list[str]:
    """The exact commands to follow, inspect or delete the run's Job and its RBAC."""
    base = "kubectl"
    if req.target.kubeconfig:
        base += f" --kubeconfig {req.target.kubeconfig}"
    if req.target.kube_context:
        base += f" --context {req.target.kube_context}"
    ns = f"{base} -n {req.namespace}"
    out = [f"follow:  {ns} logs -f job/{req.name}",
           f"status:  {ns} get job/{req.name} pods -l {req.selector}",
           f"delete:  {ns} delete job/{req.name}"]
    for rns in sorted({o["metadata"]["namespace"] for o in objs
                       if o["kind"] in ("Role", "RoleBinding")}):
        out.append(f"         {base} -n {rns} delete role,rolebinding -l {req.selector}")
    if any(o["kind"] == "ClusterRole" for o in objs):
        out.append(f"         {base} delete clusterrole,clusterrolebinding -l {req.selector}")
    return out
