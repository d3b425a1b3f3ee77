"""After the install: pods Ready, service logs clean, ingress endpoints answering, and the events of
anything that is not Ready. In plan mode nothing was installed, so none of them runs."""

from __future__ import annotations

import re
from typing import Any

from opsbook.clients.retry import Pending, wait_until
from opsbook.errors import ClientError, TimedOut
from opsbook.ops.base import Result, check, step

from .context import Context

ERROR_LINE = re.compile(r"\b(ERROR|FATAL|CRITICAL|PANIC|Traceback|Exception)\b|level=(error|fatal)|\bpanic:",
                        re.IGNORECASE)
PLAN_ONLY = "plan mode: nothing was installed, nothing to verify"


def _plan_only(ctx: Context) -> str | None:
    return None if ctx.applying else PLAN_ONLY


def _unreachable(ctx: Context) -> Result | None:
    """An apply that got this far has a cluster (the preflight checked it); one that stopped answering fails."""
    return None if ctx.cluster_reachable else Result(summary="no reachable cluster", outcome="failed")


def _selector(ctx: Context) -> str:
    return f"app.kubernetes.io/instance={ctx.settings.release}"


@check("pods-ready", "Pods are Ready", skip_if=_plan_only)
def verify_pods(ctx: Context) -> Result:
    """Wait for every Deployment's rollout (by its conditions), then show every pod: Ready or why not.
    Fails fast on a pod that cannot start (ImagePullBackOff, CrashLoopBackOff...) and names it."""
    from opsbook.clients.kube import RolloutFailed

    if (failed := _unreachable(ctx)) is not None:
        return failed
    s = ctx.settings
    problems = []
    for name in ctx.deployments():
        try:
            ctx.kube.wait_rollout(namespace=s.namespace, name=name, timeout=s.timeout_seconds)
        except RolloutFailed as exc:
            problems.append(f"{exc}")
        except TimedOut as exc:
            problems.append(str(exc))
    rows = ctx.kube.pods(namespace=s.namespace, selector=_selector(ctx))
    not_ready = [r for r in rows if r["ready"].split("/")[0] != r["ready"].split("/")[1] or r["reason"]]
    if problems or not rows:
        pods = ", ".join(f"{r['pod']} ({r['reason'] or r['phase']})" for r in not_ready) or "no pods"
        hint = (f"look further: `kubectl -n {s.namespace} describe pod POD`, `kubectl -n {s.namespace} get events "
                f"--sort-by=.lastTimestamp`; fix the values (image, Secret) and start over with `helm uninstall "
                f"{s.release} -n {s.namespace}`")
        return Result(summary="; ".join(problems or ["no pods found"]) + f". Not Ready: {pods}. {hint}",
                      rows=rows, outcome="failed", details={"problems": problems, "hint": hint, "pods": rows})
    return Result(summary=f"{len(rows)} pod(s) Ready in {len(ctx.deployments())} Deployment(s)", rows=rows,
                  outcome="ok", details={"pods": rows})


@check("service-logs", "Service logs have no errors", skip_if=_plan_only)
def service_logs(ctx: Context, *, tail: int = 20) -> Result:
    """The last lines of each service's log (one pod per Deployment, every container), error lines
    flagged; the check fails if any is found."""
    if (failed := _unreachable(ctx)) is not None:
        return failed
    namespace = ctx.settings.namespace
    rows, errors = [], 0
    for m in ctx.manifests:
        if m.get("kind") != "Deployment":
            continue
        labels = m["spec"]["selector"].get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        pods = ctx.kube.pods(namespace=namespace, selector=selector)
        if not pods:
            rows.append({"service": m["metadata"]["name"], "pod": "-", "container": "-", "flag": "⚠",
                         "line": "no pod"})
            errors += 1
            continue
        pod = pods[0]["pod"]
        for ctr in m["spec"]["template"]["spec"].get("containers") or []:
            try:
                lines = ctx.kube.logs(namespace=namespace, pod=pod, container=ctr["name"], tail=tail)
            except ClientError as exc:
                lines, errors = [f"(cannot read the log: {exc})"], errors + 1
            for line in lines or ["(empty log)"]:
                bad = bool(ERROR_LINE.search(line))
                errors += bad
                rows.append({"service": m["metadata"]["name"], "pod": pod, "container": ctr["name"],
                             "flag": "✗ ERROR" if bad else "", "line": line[:200]})
    flagged = sum(1 for r in rows if r["flag"])
    return Result(summary=(f"{flagged} error line(s) flagged" if errors else "no error lines")
                  + f" in the last {tail} lines of each service", rows=rows, outcome="failed" if errors else "ok",
                  details={"flagged": [r for r in rows if r["flag"]]})


def ingress_urls(ctx: Context) -> list[dict[str, str]]:
    """Every host/path of the rendered Ingresses, as the URL to probe and the Host header to send."""
    base_url = ctx.settings.ingress_base_url
    out = []
    for m in ctx.manifests:
        if m.get("kind") != "Ingress":
            continue
        tls_hosts = {h for t in (m["spec"].get("tls") or []) for h in (t.get("hosts") or [])}
        for rule in m["spec"].get("rules") or []:
            host = rule.get("host") or ""
            for p in (rule.get("http") or {}).get("paths") or []:
                path = p.get("path") or "/"
                if base_url:
                    url = base_url.rstrip("/") + path
                else:
                    url = f"{'https' if host in tls_hosts else 'http'}://{host}{path}"
                out.append({"ingress": m["metadata"]["name"], "host": host, "path": path, "url": url,
                            "backend": ((p.get("backend") or {}).get("service") or {}).get("name", "")})
    return out


def _nothing_to_probe(ctx: Context) -> str | None:
    if not ctx.applying:
        return PLAN_ONLY
    return None if ingress_urls(ctx) else "the chart renders no Ingress (ingress.enabled is false)"


def _probe(ctx: Context, url: str, headers: dict[str, str], *, timeout: float,
           retry_for: float) -> tuple[int | None, str]:
    """The status and reason of the first answer below 400 (or of the last answer, or the last error
    when nothing answered), looking again once a second for ``retry_for`` seconds."""
    seen: dict[str, Any] = {"status": None, "note": ""}

    def answer() -> Any:
        try:
            got = ctx.http.get(url, headers=headers, timeout=timeout, follow_redirects=False)
        except ClientError as exc:
            if not exc.temporary:
                raise
            return Pending(str(exc))
        seen.update(status=got.status, note=got.reason)
        return got if got.status < 400 else Pending(f"HTTP {got.status} {got.reason}")

    try:
        wait_until(answer, timeout=retry_for, interval=1.0, what=f"{url} did not answer below 400")
    except ClientError as exc:
        if seen["status"] is None:  # nothing answered: the last error, as the client worded it
            seen["note"] = str(exc).split(": ", 1)[-1] if isinstance(exc, TimedOut) else str(exc)
    return seen["status"], seen["note"]


@check("ingress", "Ingress endpoints answer", skip_if=_nothing_to_probe)
def probe_ingress(ctx: Context, *, timeout: float = 10.0, retry_for: float = 3.0) -> Result:
    """HTTP GET every ingress host/path (through ``ingress_base_url`` with the Host header, for a
    cluster without external DNS). An answer below 400 passes; an error status or no answer is tried
    again, once a second, for ``retry_for`` seconds (an ingress controller that has just picked the
    Ingress up answers 404/503 for a moment); a permanent client error is not retried."""
    if (failed := _unreachable(ctx)) is not None:
        return failed
    via_base = bool(ctx.settings.ingress_base_url)
    rows: list[dict[str, Any]] = []
    for t in ingress_urls(ctx):
        headers = {"Host": t["host"]} if via_base and t["host"] else {}
        status, note = _probe(ctx, t["url"], headers, timeout=timeout, retry_for=retry_for)
        rows.append({"host": t["host"], "path": t["path"], "url": t["url"], "backend": t["backend"],
                     "status": status if status is not None else "-", "answer": note,
                     "ok": "✓" if status is not None and status < 400 else "✗"})
    bad = [r for r in rows if r["ok"] != "✓"]
    failing = ", ".join(f"{r['url']} ({r['status'] if r['status'] != '-' else r['answer']})" for r in bad)
    summary = f"{len(rows) - len(bad)} of {len(rows)} endpoint(s) answered" + (
        f"; failing: {failing}; without external DNS set ingress_base_url to the ingress controller's address"
        if bad else "")
    return Result(summary=summary, rows=rows, outcome="failed" if bad else "ok", details={"endpoints": rows})


@step("events", "Events of anything not Ready", skip_if=_plan_only)
def events_not_ready(ctx: Context) -> Result:
    """Events of every pod and Deployment of the release that is not Ready: the first place to look."""
    if (failed := _unreachable(ctx)) is not None:
        return failed
    namespace = ctx.settings.namespace
    rows: list[dict[str, Any]] = []
    pods = ctx.kube.pods(namespace=namespace, selector=_selector(ctx))
    bad_pods = [r["pod"] for r in pods if r["reason"] or r["ready"].split("/")[0] != r["ready"].split("/")[1]]
    for name in bad_pods:
        rows += ctx.kube.events_for(kind="Pod", name=name, namespace=namespace)
    for name in ctx.deployments():
        dep = ctx.kube.get(kind="Deployment", name=name, namespace=namespace)
        st = dep.get("status") or {}
        if int(st.get("availableReplicas") or 0) < int((dep.get("spec") or {}).get("replicas", 1)):
            rows += ctx.kube.events_for(kind="Deployment", name=name, namespace=namespace)
    if not bad_pods and not rows:
        return Result(summary="everything is Ready: no events to show", outcome="ok")
    warnings = sum(1 for r in rows if r.get("type") == "Warning")
    return Result(summary=f"{len(bad_pods)} pod(s) not Ready; {len(rows)} event(s), {warnings} warning(s)",
                  rows=rows, outcome="ok")
