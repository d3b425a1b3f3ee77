"""What every runbook's undo test needs: a snapshot of the cluster (object by object, without the
fields the server sets), of Helm releases and of registry aliases, to compare before an apply with
after its undo; and ``opsbook undo`` plan + approved apply through the real CLI. Runs unchanged
against a real cluster (``OPSBOOK_TEST_KUBECONFIG``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from opsbook.clients.kube import Kube
from opsbook.errors import NotFound
from opsbook.ops.journal import comparable

from .conftest import NOTEBOOKS, manifests_of

#: what a snapshot compares: the objects runbooks create or change. Pods, ReplicaSets, Events and
#: Endpoints belong to their controllers (new names after any rollout) and are left out, as are
#: Helm's own release Secrets (the release is compared through helm instead).
NAMESPACED = ("ConfigMap", "Secret", "Service", "ServiceAccount", "Deployment", "StatefulSet", "DaemonSet",
              "Role", "RoleBinding", "NetworkPolicy", "Ingress", "PersistentVolumeClaim")
CLUSTER = ("ClusterRole", "ClusterRoleBinding", "Namespace")


def snapshot(kube: Any, namespaces: Iterable[str], *, cluster_names: Iterable[str] = (),
             kinds: Iterable[str] = NAMESPACED) -> dict[str, Any]:
    """Every object of ``kinds`` in ``namespaces``, and the cluster-scoped objects named in
    ``cluster_names`` (``Kind/name``: present or absent), each as :func:`opsbook.ops.journal.comparable`."""
    admin = Kube(kubeconfig=kube.kubeconfig, context=kube.context)
    out: dict[str, Any] = {}
    try:
        for ns in namespaces:
            for kind in kinds:
                for o in admin.list_objects(kind=kind, namespace=ns):
                    name = o["metadata"]["name"]
                    if kind == "Secret" and (name.startswith("sh.helm.release.")
                                             or o.get("type") == "kubernetes.io/service-account-token"):
                        continue
                    if (kind, name) in (("ConfigMap", "kube-root-ca.crt"), ("ServiceAccount", "default")):
                        continue
                    out[f"{kind}/{ns}/{name}"] = comparable(o)
        for ref in cluster_names:
            kind, _, name = ref.partition("/")
            try:
                o = admin.get(kind=kind, name=name)
            except NotFound:
                o = None
            out[ref] = comparable(o) if o and not o["metadata"].get("deletionTimestamp") else None
    finally:
        admin.close()
    return out


def helm_state(kube: Any, release: str, namespace: str, env: dict[str, str] | None = None) -> dict[str, Any] | None:
    """A Helm release as an operator sees it: its deployed manifest and values (None: not installed)."""
    from opsbook.clients.helm import Helm, HelmNotFound, parse_manifests

    helm = Helm(kubeconfig=kube.kubeconfig, kube_context=kube.context, env=env)
    try:
        status = helm.status(release, namespace=namespace)
    except HelmNotFound:
        return None
    return {"status": (status.get("info") or {}).get("status"),
            "manifest": parse_manifests(helm.run("get", "manifest", release, namespace=namespace)),
            "values": helm.get_values(release, namespace=namespace)}


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs between two snapshots, one line per object."""
    from opsbook.ops.journal import differences as diff

    out = []
    for k in sorted(set(before) | set(after)):
        if before.get(k, "(absent)") != after.get(k, "(absent)"):
            out.append(f"{k}: " + "; ".join(diff(before.get(k, "(absent)"), after.get(k, "(absent)"))[:5]))
    return out


def undo_cli(outputs: Path, cwd: Path, *args: str, env: dict[str, str] | None = None,
             timeout: float = 240) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "opsbook", "undo", *args, "--notebooks", str(NOTEBOOKS), "--outputs", str(outputs)]
    return subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=timeout, cwd=cwd)


def undo(opsbook_run: Any, run_id: str, env: dict[str, str], *, cwd: Path) -> tuple[dict, dict]:
    """``opsbook undo RUN_ID`` (the plan), then ``--mode apply --approve`` that plan: both manifests,
    each with its process under ``_proc``; the failure message has the failed steps."""
    outputs = opsbook_run.outputs
    plan = undo_cli(outputs, cwd, run_id, env=env)
    pm = manifests_of(outputs, "undo")[-1]
    pm["_proc"] = plan
    assert plan.returncode == 0 and pm["status"] == "succeeded", (
        f"undo plan {pm['status']}:\n{_failed(pm)}\n{plan.stdout[-3000:]}{plan.stderr[-3000:]}")
    apply = undo_cli(outputs, cwd, run_id, "--mode", "apply", "--approve", pm["run_id"], env=env)
    am = [m for m in manifests_of(outputs, "undo") if m["mode"] == "apply"][-1]
    am["_proc"] = apply
    return pm, am


def _failed(m: dict) -> str:
    return "\n".join(f"  {s['id']}: {s['outcome']}: {s.get('summary')}" for s in m["steps"] if s["outcome"] == "failed")


def assert_undone(am: dict, run_id: str) -> None:
    """The undo apply succeeded, names the apply it reverses, and its last check found everything back."""
    r = am["_proc"]
    assert r.returncode == 0 and am["status"] == "succeeded", (
        f"undo apply {am['status']}:\n{_failed(am)}\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
    assert am["undoes"] == run_id and am["parameters"]["undo_of"] == run_id
    steps = {s["id"]: s for s in am["steps"]}
    assert steps["reverse"]["outcome"] == "changed" and steps["back-as-before"]["outcome"] == "ok"


def assert_second_undo_refused(opsbook_run: Any, run_id: str, env: dict[str, str], undo_run: str, *, cwd: Path) -> None:
    """A second ``opsbook undo`` of the same apply stops at its preflight, naming the first undo."""
    again = undo_cli(opsbook_run.outputs, cwd, run_id, env=env)
    assert again.returncode == 1, again.stdout + again.stderr
    m = manifests_of(opsbook_run.outputs, "undo")[-1]
    pre = next(s for s in m["steps"] if s["kind"] == "preflight")
    assert pre["outcome"] == "failed" and f"already undone by {undo_run}" in pre["summary"], pre["summary"]
