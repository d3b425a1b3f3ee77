"""The Kubernetes client: one small layer over the official ``kubernetes`` package.

    kube = Kube(kubeconfig="~/.kube/config", context="staging")     # or Kube(in_cluster=True)
    kube.apply(manifests, namespace="ml-platform", dry_run=True)    # server-side apply, dryRun=All
    kube.wait_rollout(namespace="ml-platform", name="ml-proposer", timeout=300)
    rows = kube.pods(namespace="ml-platform", selector="app.kubernetes.io/name=proposer")

Objects go in and come out as plain dicts (the JSON the API server speaks), so that any kind works
the same way (resources are found by API discovery) and results go straight into run records.
Requests are made through ``ApiClient.call_api`` and the replies parsed here: the generated typed
models are not needed and cannot model every reply.

Errors are ours, with the original (``ApiException`` or the urllib3 error) chained::

    ClientError
    ├── NotFound        404
    ├── Conflict        409
    ├── Forbidden       401, 403 (RBAC)
    ├── Invalid         400, 422 (the Status message says which field)
    ├── Unreachable     connection refused / reset, DNS, TLS; 429, 502, 503, 504 (temporary)
    ├── TimedOut        a request or a wait ran out of time (temporary)
    └── RolloutFailed   a Deployment cannot become available: ProgressDeadlineExceeded, or a pod
                        stuck in ImagePullBackOff, CrashLoopBackOff... (``pods`` names them)

The side-effect seam is the constructor: pass ``api_client=`` to talk to anything that speaks the
Kubernetes API (the test server in ``opsbook.testing`` or a real cluster).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from opsbook.clients.kube_events import event_summary, format_instant, sort_key
from opsbook.clients.kubeconfig import quiet_insecure_warning
from opsbook.clients.retry import Pending, wait_until
from opsbook.errors import ClientError, Conflict, Forbidden, Invalid, NotFound, TimedOut, Unreachable

__all__ = ["Kube", "RolloutFailed", "Rollout", "ResourceInfo", "FATAL_WAITING_REASONS", "pod_row"]

# container waiting reasons that will not fix themselves: a rollout stuck on one fails fast
FATAL_WAITING_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CrashLoopBackOff",
                                   "CreateContainerConfigError", "CreateContainerError", "RunContainerError"})

# apiVersion of the kinds runbooks name most, so ``get(kind="Deployment", ...)`` needs no apiVersion
_KNOWN_API_VERSIONS = {
    "Pod": "v1", "Service": "v1", "ConfigMap": "v1", "Secret": "v1", "Namespace": "v1", "Node": "v1",
    "ServiceAccount": "v1", "PersistentVolumeClaim": "v1", "Event": "v1", "Endpoints": "v1",
    "Deployment": "apps/v1", "ReplicaSet": "apps/v1", "DaemonSet": "apps/v1", "StatefulSet": "apps/v1",
    "Job": "batch/v1", "CronJob": "batch/v1", "Ingress": "networking.k8s.io/v1",
    "NetworkPolicy": "networking.k8s.io/v1", "Role": "rbac.authorization.k8s.io/v1",
    "RoleBinding": "rbac.authorization.k8s.io/v1", "ClusterRole": "rbac.authorization.k8s.io/v1",
    "ClusterRoleBinding": "rbac.authorization.k8s.io/v1", "HorizontalPodAutoscaler": "autoscaling/v2",
    "PodDisruptionBudget": "policy/v1",
}


class RolloutFailed(ClientError):
    """A Deployment will not become available. ``pods`` holds the rows of the pods that say why."""

    def __init__(self, message: str, *, deployment: str, reason: str, pods: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.deployment = deployment
        self.reason = reason
        self.pods = pods or []


@dataclass(frozen=True)
class ResourceInfo:
    """What discovery says about a kind: its REST name, group/version and scope."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def path(self, *, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        if self.namespaced:
            if not namespace:
                raise Invalid(f"{self.kind} is namespaced: a namespace is required")
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        return base + (f"/{quote(name, safe='')}" if name else "")


@dataclass
class Rollout:
    """A finished rollout: how long it took and the Deployment's final status."""

    name: str
    namespace: str
    seconds: float
    replicas: int
    status: dict[str, Any] = field(default_factory=dict)


def _status_message(body: str) -> str:
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return (body or "").strip()[:500]
    if isinstance(data, dict):
        return str(data.get("message") or data.get("reason") or body)[:1000]
    return str(body)[:500]


def _error_for(status: int, message: str) -> ClientError:
    if status == 404:
        return NotFound(message)
    if status == 409:
        return Conflict(message)
    if status in (401, 403):
        return Forbidden(message)
    if status in (400, 422):
        return Invalid(message)
    if status in (429, 502, 503, 504):
        return Unreachable(message)
    return ClientError(message)


def pod_row(pod: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the pod table: name, ready x/y, phase, restarts, node, reason (why not Ready)."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    total = len(spec.get("containers") or []) or len(statuses)
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(int(c.get("restartCount") or 0) for c in statuses)
    reason, message = "", ""
    for c in [*(status.get("initContainerStatuses") or []), *statuses]:
        state = c.get("state") or {}
        if state.get("waiting"):
            reason, message = state["waiting"].get("reason") or "Waiting", state["waiting"].get("message") or ""
            break
        term = state.get("terminated")
        if term and term.get("exitCode"):
            reason, message = term.get("reason") or "Error", term.get("message") or ""
            break
    if not reason:
        if meta.get("deletionTimestamp"):
            reason = "Terminating"
        elif status.get("reason"):
            reason, message = status["reason"], status.get("message") or ""
        else:
            for cond in status.get("conditions") or []:
                if cond.get("type") in ("PodScheduled", "Ready") and cond.get("status") == "False":
                    reason, message = cond.get("reason") or "NotReady", cond.get("message") or ""
                    break
    return {"pod": meta.get("name", ""), "ready": f"{ready}/{total}", "phase": status.get("phase", "Unknown"),
            "restarts": restarts, "node": spec.get("nodeName") or "", "reason": reason, "message": message[:200]}


def _is_pod_ready(pod: Mapping[str, Any]) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def _cond(obj: Mapping[str, Any], typ: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == typ:
            return c
    return {}


class Kube:
    """A Kubernetes API server, reached through a kubeconfig context or from inside a pod."""

    def __init__(self, *, kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None,
                 in_cluster: bool = False, api_client: Any = None, request_timeout: float = 30.0):
        from kubernetes import client, config

        self.request_timeout = request_timeout
        self.context = context
        self.kubeconfig = str(Path(kubeconfig).expanduser()) if kubeconfig else None
        if api_client is not None:
            self.api = api_client
        else:
            cfg = client.Configuration()
            try:
                if in_cluster:
                    config.load_incluster_config(client_configuration=cfg)
                else:
                    config.load_kube_config(config_file=self.kubeconfig, context=context,
                                            client_configuration=cfg, persist_config=False)
            except (config.ConfigException, OSError, TypeError, ValueError) as exc:
                where = "in-cluster config" if in_cluster else f"kubeconfig {self.kubeconfig or '(default)'}" + (
                    f" context {context}" if context else "")
                raise Unreachable(f"cannot load {where}: {exc}") from exc
            cfg.retries = 1  # fail fast on a dead endpoint; callers decide about retrying
            self.api = client.ApiClient(configuration=cfg)
        self._resources: dict[tuple[str, str], ResourceInfo] = {}
        self._discovered: set[str] = set()
        # insecure-skip-tls-verify: the run's banner says so once; urllib3 must not say it per request
        self._insecure_host = urlsplit(self.host).hostname if self.tls_verification_off else None

    @property
    def host(self) -> str:
        return str(self.api.configuration.host)

    @property
    def tls_verification_off(self) -> bool:
        """True when the kubeconfig says ``insecure-skip-tls-verify`` for an https API server: its
        identity is not checked (:func:`opsbook.clients.kubeconfig.insecure_cluster` tells before
        a client is made)."""
        return self.host.startswith("https://") and not getattr(self.api.configuration, "verify_ssl", True)

    def close(self) -> None:
        close = getattr(self.api, "close", None)
        if close:
            close()

    # -- transport -----------------------------------------------------------------------------
    def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None, body: Any = None,
                content_type: str = "application/json", timeout: float | None = None, raw: bool = False) -> Any:
        """One API call; the parsed JSON reply (``raw``: the text). Errors mapped to ours, chained."""
        import urllib3
        from kubernetes.client.exceptions import ApiException

        q = [(k, v) for k, v in (query or {}).items() if v is not None]
        headers = {"Accept": "application/json" if not raw else "*/*"}
        if body is not None:
            headers["Content-Type"] = content_type
        method, url, headers, body, _ = self.api.param_serialize(
            method, path, query_params=q or None, header_params=headers, body=body, auth_settings=["BearerToken"])
        limit = timeout or self.request_timeout
        what = f"{method} {path}"
        if self._insecure_host:
            quiet_insecure_warning(self._insecure_host)
        try:
            resp = self.api.call_api(method, url, header_params=headers, body=body,
                                     _request_timeout=(min(limit, 10.0), limit))
            data = resp.read()
        except urllib3.exceptions.HTTPError as exc:
            cause = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
            # NewConnectionError (refused, DNS) subclasses ConnectTimeoutError in urllib3: not a timeout
            if (isinstance(cause, (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.ReadTimeoutError))
                    and not isinstance(cause, urllib3.exceptions.NewConnectionError)):
                raise TimedOut(f"{what} on {self.host}: no answer in {limit:g} s") from exc
            raise Unreachable(f"cannot reach the Kubernetes API at {self.host}: {cause}") from exc
        except OSError as exc:
            raise Unreachable(f"cannot reach the Kubernetes API at {self.host}: {exc}") from exc
        except ApiException as exc:  # raised by the client for TLS problems (status 0)
            raise Unreachable(f"cannot reach the Kubernetes API at {self.host}: {exc.reason}") from exc
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data or "")
        if resp.status >= 400:
            api_exc = ApiException(status=resp.status, reason=resp.reason, body=text)
            raise _error_for(resp.status, f"{what}: {resp.status} {_status_message(text)}") from api_exc
        if raw:
            return text
        return json.loads(text) if text.strip() else {}

    # -- discovery -----------------------------------------------------------------------------
    def resource(self, *, kind: str, api_version: str | None = None) -> ResourceInfo:
        """REST name and scope of a kind (from API discovery, cached). NotFound if the server lacks it."""
        api_version = api_version or _KNOWN_API_VERSIONS.get(kind)
        if not api_version:
            raise Invalid(f"kind {kind}: give its apiVersion")
        key = (api_version, kind)
        if key not in self._resources and api_version not in self._discovered:
            path = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
            try:
                doc = self.request("GET", path)
            except NotFound as exc:
                raise NotFound(f"the cluster does not serve {api_version} (kind {kind})") from exc
            self._discovered.add(api_version)
            for r in doc.get("resources") or []:
                if "/" in r.get("name", ""):
                    continue  # subresources
                info = ResourceInfo(api_version, r["kind"], r["name"], bool(r.get("namespaced")))
                self._resources.setdefault((api_version, r["kind"]), info)
        if key not in self._resources:
            raise NotFound(f"the cluster does not serve kind {kind} in {api_version}")
        return self._resources[key]

    # -- cluster -------------------------------------------------------------------------------
    def version(self) -> dict[str, Any]:
        """The server's ``/version`` (``gitVersion``...). Unreachable if there is no server."""
        return self.request("GET", "/version", timeout=min(self.request_timeout, 10.0))

    def namespace_exists(self, *, name: str) -> bool:
        try:
            self.request("GET", f"/api/v1/namespaces/{quote(name, safe='')}")
        except NotFound:
            return False
        return True

    def ensure_namespace(self, *, name: str, labels: Mapping[str, str] | None = None,
                         dry_run: bool = False) -> bool:
        """Create the namespace unless it exists; True if it was (or, in a dry run, would be) created."""
        if self.namespace_exists(name=name):
            return False
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels or {})}}
        try:
            self.request("POST", "/api/v1/namespaces", body=body, query={"dryRun": "All" if dry_run else None})
        except Conflict:
            return False
        return True

    # -- objects -------------------------------------------------------------------------------
    def apply(self, manifests: Iterable[Mapping[str, Any]], *, namespace: str | None = None,
              field_manager: str = "opsbook", dry_run: bool = False, force: bool = True) -> list[dict[str, Any]]:
        """Server-side apply of every manifest (PATCH ``application/apply-patch+yaml``); with
        ``dry_run`` the server validates and defaults them (``dryRun=All``) and stores nothing.
        Returns the objects as the server has (or would have) them."""
        out = []
        for m in manifests:
            if not m:
                continue
            kind, api_version = m.get("kind"), m.get("apiVersion")
            name = (m.get("metadata") or {}).get("name")
            if not kind or not api_version or not name:
                raise Invalid(f"manifest without kind, apiVersion or metadata.name: {str(m)[:200]}")
            info = self.resource(kind=kind, api_version=api_version)
            ns = (m.get("metadata") or {}).get("namespace") or namespace if info.namespaced else None
            body = json.loads(json.dumps(m))
            if ns:
                body.setdefault("metadata", {})["namespace"] = ns
            query = {"fieldManager": field_manager, "force": "true" if force else None,
                     "dryRun": "All" if dry_run else None}
            out.append(self.request("PATCH", info.path(namespace=ns, name=name), query=query, body=body,
                                    content_type="application/apply-patch+yaml"))
        return out

    def get(self, *, kind: str, name: str, namespace: str | None = None,
            api_version: str | None = None) -> dict[str, Any]:
        info = self.resource(kind=kind, api_version=api_version)
        return self.request("GET", info.path(namespace=namespace, name=name))

    def list_objects(self, *, kind: str, namespace: str | None = None, selector: str | None = None,
             field_selector: str | None = None, api_version: str | None = None) -> list[dict[str, Any]]:
        info = self.resource(kind=kind, api_version=api_version)
        path = info.path(namespace=namespace) if (namespace or not info.namespaced) else (
            ResourceInfo(info.api_version, kind, info.plural, False).path())
        doc = self.request("GET", path, query={"labelSelector": selector, "fieldSelector": field_selector})
        return list(doc.get("items") or [])

    def delete(self, *, kind: str, name: str, namespace: str | None = None, api_version: str | None = None,
               missing_ok: bool = True, propagation: str = "Background") -> bool:
        """Delete an object; False if it was not there (and ``missing_ok``)."""
        info = self.resource(kind=kind, api_version=api_version)
        try:
            self.request("DELETE", info.path(namespace=namespace, name=name),
                         body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation})
        except NotFound:
            if missing_ok:
                return False
            raise
        return True

    # -- workloads -----------------------------------------------------------------------------
    def pods(self, *, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        """The pod table: one row per pod (see :func:`pod_row`), sorted by name."""
        return sorted((pod_row(p) for p in self.list_objects(kind="Pod", namespace=namespace, selector=selector)),
                      key=lambda r: r["pod"])

    def pod_objects(self, *, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        return self.list_objects(kind="Pod", namespace=namespace, selector=selector)

    def wait_rollout(self, *, namespace: str, name: str, timeout: float = 300.0, poll: float = 0.5,
                     fail_on: Iterable[str] = FATAL_WAITING_REASONS) -> Rollout:
        """Wait until the Deployment's rollout is complete: the controller has seen the latest
        generation (``observedGeneration``), every replica is updated and available, and condition
        Available is True. Raises RolloutFailed at once on ``ProgressDeadlineExceeded`` or when a pod
        waits for a reason in ``fail_on`` (ImagePullBackOff...), TimedOut after ``timeout`` s."""
        fatal = frozenset(fail_on)
        t0 = time.monotonic()

        def rolled_out() -> Rollout | Pending:
            dep = self.get(kind="Deployment", name=name, namespace=namespace)
            spec, status = dep.get("spec") or {}, dep.get("status") or {}
            want = int(spec.get("replicas", 1))
            gen, observed = int(dep["metadata"].get("generation") or 0), int(status.get("observedGeneration") or 0)
            progressing, available = _cond(dep, "Progressing"), _cond(dep, "Available")
            if progressing.get("reason") == "ProgressDeadlineExceeded" and progressing.get("status") == "False":
                raise RolloutFailed(f"deployment {namespace}/{name}: ProgressDeadlineExceeded: "
                                    f"{progressing.get('message', '')}", deployment=name,
                                    reason="ProgressDeadlineExceeded", pods=self._stuck(namespace, dep, fatal, True))
            updated = int(status.get("updatedReplicas") or 0)
            avail = int(status.get("availableReplicas") or 0)
            total = int(status.get("replicas") or 0)
            if (observed >= gen and updated == want and avail == want and total == want
                    and (want == 0 or available.get("status") == "True")):
                return Rollout(name, namespace, round(time.monotonic() - t0, 3), want, status)
            stuck = self._stuck(namespace, dep, fatal, False)
            if stuck:
                worst = stuck[0]
                raise RolloutFailed(f"deployment {namespace}/{name}: pod {worst['pod']} is {worst['reason']}"
                                    + (f" ({worst['message']})" if worst.get("message") else ""),
                                    deployment=name, reason=worst["reason"], pods=stuck)
            return Pending(f"observedGeneration {observed}/{gen}, updated {updated}/{want}, "
                           f"available {avail}/{want}, total {total}")

        return wait_until(rolled_out, timeout=timeout, interval=poll,
                          what=f"deployment {namespace}/{name} not rolled out")

    def _stuck(self, namespace: str, dep: Mapping[str, Any], fatal: frozenset[str], all_not_ready: bool
               ) -> list[dict[str, Any]]:
        labels = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if not labels:
            return []
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        rows = [pod_row(p) for p in self.list_objects(kind="Pod", namespace=namespace, selector=selector)
                if not _is_pod_ready(p)]
        return [r for r in rows if all_not_ready or r["reason"] in fatal]

    def logs(self, *, namespace: str, pod: str, container: str | None = None, tail: int | None = 50,
             previous: bool = False, timeout: float | None = None) -> list[str]:
        """The last ``tail`` lines of a container's log (None: all of it)."""
        text = self.request("GET", f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(pod, safe='')}/log",
                            query={"container": container, "tailLines": tail,
                                   "previous": "true" if previous else None}, raw=True, timeout=timeout)
        return text.splitlines()

    def events_for(self, *, kind: str, name: str, namespace: str) -> list[dict[str, Any]]:
        """Events about one object, oldest first: type, reason, message, count, last seen, source; the
        controllers' events (eventTime null) and the events.k8s.io ones (a series) alike."""
        fs = f"involvedObject.kind={kind},involvedObject.name={name}"
        items = self.request("GET", f"/api/v1/namespaces/{quote(namespace, safe='')}/events",
                             query={"fieldSelector": fs}).get("items") or []
        seen = [event_summary(e) for e in items]
        seen = sorted((s for s in seen if s["object"] == f"{kind}/{name}"), key=sort_key)  # a server may ignore fs
        return [{"last_seen": format_instant(s["last_seen"]), "type": s["type"], "reason": s["reason"],
                 "object": s["object"], "message": s["message"][:300], "count": s["count"], "source": s["source"]}
                for s in seen]

    # -- access --------------------------------------------------------------------------------
    def access_review(self, *, verb: str, resource: str, group: str = "", namespace: str | None = None,
                      name: str | None = None, subresource: str | None = None) -> dict[str, Any]:
        """A SelfSubjectAccessReview: the server's ``status`` (``allowed``, ``reason``...)."""
        attrs = {"verb": verb, "resource": resource, "group": group}
        for k, v in (("namespace", namespace), ("name", name), ("subresource", subresource)):
            if v:
                attrs[k] = v
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attrs}}
        out = self.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body=body)
        return out.get("status") or {}

    def can_i(self, *, verb: str, resource: str, group: str = "", namespace: str | None = None,
              name: str | None = None) -> bool:
        """Whether the current credentials may ``verb`` the ``resource`` (RBAC, as the server says)."""
        return bool(self.access_review(verb=verb, resource=resource, group=group, namespace=namespace,
                                       name=name).get("allowed"))

    # -- secrets -------------------------------------------------------------------------------
    def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        """The decoded value of ``key`` in Secret ``namespace/name`` (the ``k8s`` reader of
        :func:`opsbook.secrets.resolve`). The value is never put into an error message."""
        secret = self.get(kind="Secret", name=name, namespace=namespace)
        data = secret.get("data") or {}
        if key in data:
            return base64.b64decode(data[key]).decode("utf-8")
        if key in (secret.get("stringData") or {}):
            return str(secret["stringData"][key])
        raise NotFound(f"Secret {namespace}/{name} has no key {key!r} (keys: {', '.join(sorted(data)) or 'none'})")

    # -- jobs and log streams (opsbook run --on-cluster) ----------------------------------------
    def stream_logs(self, *, namespace: str, pod: str, container: str | None = None, since_time: str | None = None,
                    timestamps: bool = False, idle_timeout: float = 30.0) -> Iterator[str]:
        """Follow a container's log (``follow=true``): yield each line as the container writes it,
        until the server ends the stream (the container finished, the pod went, or the server's own
        limit) or no byte came for ``idle_timeout`` s; the caller decides whether to follow again
        (``since_time`` with ``timestamps`` lets it resume without repeating lines). Errors before
        the first byte are ours (NotFound, Invalid: e.g. 400 "waiting to start"), as for ``request``."""
        import urllib3
        from kubernetes.client.exceptions import ApiException

        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(pod, safe='')}/log"
        q = [(k, v) for k, v in (("follow", "true"), ("container", container), ("sinceTime", since_time),
                                 ("timestamps", "true" if timestamps else None)) if v is not None]
        method, url, headers, body, _ = self.api.param_serialize(
            "GET", path, query_params=q, header_params={"Accept": "*/*"}, auth_settings=["BearerToken"])
        what = f"GET {path} (follow)"
        if self._insecure_host:
            quiet_insecure_warning(self._insecure_host)
        try:
            resp = self.api.call_api(method, url, header_params=headers, body=body,
                                     _request_timeout=(min(idle_timeout, 10.0), idle_timeout))
        except urllib3.exceptions.HTTPError as exc:
            raise Unreachable(f"cannot reach the Kubernetes API at {self.host}: {exc}") from exc
        except OSError as exc:
            raise Unreachable(f"cannot reach the Kubernetes API at {self.host}: {exc}") from exc
        except ApiException as exc:
            raise Unreachable(f"cannot reach the Kubernetes API at {self.host}: {exc.reason}") from exc
        raw = resp.response  # not preloaded: read as it arrives
        if resp.status >= 400:
            text = resp.read()
            text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text or "")
            api_exc = ApiException(status=resp.status, reason=resp.reason, body=text)
            raise _error_for(resp.status, f"{what}: {resp.status} {_status_message(text)}") from api_exc
        buf = b""
        try:
            chunks = raw.read_chunked(decode_content=True) if getattr(raw, "chunked", False) else raw.stream(
                1024, decode_content=True)
            for chunk in chunks:
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    yield line.decode("utf-8", "replace")
            if buf:
                yield buf.decode("utf-8", "replace")
        except (urllib3.exceptions.HTTPError, OSError):
            return  # idle for too long, or the connection dropped: the caller may follow again
        finally:
            raw.close()  # a follow stream cut short must not go back to the pool half-read
            raw.release_conn()

    def job_pods(self, *, namespace: str, job: str) -> list[dict[str, Any]]:
        """The pods of a Job, oldest first (label ``batch.kubernetes.io/job-name``, or the older
        ``job-name`` that clusters before 1.27 set)."""
        pods = self.list_objects(kind="Pod", namespace=namespace, selector=f"batch.kubernetes.io/job-name={job}")
        if not pods:
            pods = self.list_objects(kind="Pod", namespace=namespace, selector=f"job-name={job}")
        return sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""))

    def wait_job(self, *, namespace: str, name: str, timeout: float, poll: float = 1.0,
                 on_status: Callable[[dict[str, Any], list[dict[str, Any]]], bool | None] | None = None
                 ) -> dict[str, Any]:
        """Wait until the Job has condition Complete or Failed; return it. ``on_status(job, pods)`` is
        called on every poll (to report progress, or to give up early: return True and the wait ends
        with the Job as it is). TimedOut after ``timeout`` s, NotFound if the Job is deleted."""
        def finished() -> dict[str, Any] | Pending:
            job = self.get(kind="Job", name=name, namespace=namespace)
            done = any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                       for c in (job.get("status") or {}).get("conditions") or [])
            if on_status is not None:
                pods = self.job_pods(namespace=namespace, job=name)
                if on_status(job, pods) and not done:
                    return job
            if done:
                return job
            st = job.get("status") or {}
            return Pending(f"active {st.get('active', 0)}, succeeded {st.get('succeeded', 0)}, "
                           f"failed {st.get('failed', 0)}")

        return wait_until(finished, timeout=timeout, interval=poll, what=f"Job {namespace}/{name} not finished")

    def create(self, manifest: Mapping[str, Any], *, namespace: str | None = None,
               dry_run: bool = False) -> dict[str, Any]:
        """Create one object (POST). Unlike :meth:`apply` it never takes over an object that is
        already there: Conflict. ``dry_run``: validated and defaulted by the server, not stored."""
        kind, api_version = manifest.get("kind"), manifest.get("apiVersion")
        if not kind or not api_version:
            raise Invalid(f"manifest without kind or apiVersion: {str(manifest)[:200]}")
        info = self.resource(kind=kind, api_version=api_version)
        ns = ((manifest.get("metadata") or {}).get("namespace") or namespace) if info.namespaced else None
        body = json.loads(json.dumps(manifest))
        if ns:
            body.setdefault("metadata", {})["namespace"] = ns
        return self.request("POST", info.path(namespace=ns), body=body,
                            query={"dryRun": "All" if dry_run else None})

    def patch(self, *, kind: str, name: str, patch: Mapping[str, Any], namespace: str | None = None,
              api_version: str | None = None, patch_type: str = "merge") -> dict[str, Any]:
        """A JSON merge patch (``patch_type="merge"``) or strategic merge patch (``"strategic"``)."""
        types = {"merge": "application/merge-patch+json", "strategic": "application/strategic-merge-patch+json"}
        if patch_type not in types:
            raise ValueError(f"patch_type={patch_type!r}: expected merge or strategic")
        info = self.resource(kind=kind, api_version=api_version)
        return self.request("PATCH", info.path(namespace=namespace if info.namespaced else None, name=name),
                            body=dict(patch), content_type=types[patch_type])
