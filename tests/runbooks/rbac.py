"""A runbook run with exactly the RBAC its notebook declares (metadata ``opsbook.rbac``), as
``opsbook run --on-cluster`` grants it: a ServiceAccount, its Role and RoleBinding and its ClusterRole
and ClusterRoleBinding rendered by ``opsbook.oncluster.job`` (the same code, not a copy of the rules),
a token from TokenRequest, and a kubeconfig that holds only that token. The runbook tests point the CLI's
target at that kubeconfig while their own set-up and assertions stay the admin's, so each end-to-end
apply also proves the declaration: a rule the runbook needs but does not declare fails it with the API
server's 403. Runs unchanged against a real cluster (``OPSBOOK_TEST_KUBECONFIG``)."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from opsbook import catalog
from opsbook.catalog import Runbook
from opsbook.clients.kube import Kube
from opsbook.ids import new_run_id
from opsbook.oncluster import job
from opsbook.targets import Target

from .conftest import NOTEBOOKS, manifests_of

CONTEXT = "declared-rbac"  # the kubeconfig context of a grant's token
DECLARED = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")
                  if "rbac" in (json.loads(p.read_text())["metadata"].get("opsbook") or {}))


def runbook(runbook_id: str) -> Runbook:
    return catalog.load(NOTEBOOKS / f"{runbook_id}.ipynb")


@dataclass
class Grant:
    """What ``--on-cluster`` would create for one run, created: the objects, and a kubeconfig whose only
    credential is the ServiceAccount's token."""

    objects: list[dict[str, Any]]
    kubeconfig: Path
    user: str
    clients: list[Kube] = field(default_factory=list)

    def kube(self) -> Kube:
        """A client that acts as the ServiceAccount, for a runbook's ops called in process (closed when
        the grant is revoked)."""
        k = Kube(kubeconfig=str(self.kubeconfig), context=CONTEXT)
        self.clients.append(k)
        return k

    def targets(self, path: Path, kube, name: str = "kt", **extra: Any) -> Path:
        """A targets file at ``path`` with one target ``name`` that reaches the cluster as this grant
        (``extra``: more of the target's fields), for ``OPSBOOK_TARGETS``."""
        path.write_text(yaml.safe_dump({name: {"kubeconfig": str(self.kubeconfig), "kube_context": CONTEXT,
                                               "namespace": kube.namespace, **extra}}))
        return path


@contextlib.contextmanager
def granted(kube, rb: Runbook, params: dict[str, Any], tmp_path: Path) -> Iterator[Grant]:
    """The run's ServiceAccount and RBAC as ``job.render`` makes them from the run's ``params`` (its
    ``namespace`` and its ``k8s:`` Secret references), created by the admin; revoked afterwards with
    ``job.revoke``."""
    ns = kube.namespace
    target = Target(name="kt", kubeconfig=kube.kubeconfig, kube_context=kube.context, namespace=ns)
    req = job.JobRequest(runbook=rb, params={"mode": "apply", **{k: str(v) for k, v in params.items()}},
                         target=target, run_id=new_run_id(), namespace=ns, image="registry.example/opsbook:test",
                         outputs="s3://unused/rbac")
    objs = [o for o in job.render(req) if o["kind"] in ("ServiceAccount", "Role", "RoleBinding", "ClusterRole",
                                                         "ClusterRoleBinding")]
    admin = Kube(kubeconfig=kube.kubeconfig, context=kube.context)
    grant: Grant | None = None
    try:
        for o in objs:
            admin.create(o)
        token = client.CoreV1Api(admin.api).create_namespaced_service_account_token(req.name, ns, {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}).status.token
        path = kube.api.kubeconfig_with_token(token, tmp_path / f"{req.name}.kubeconfig", ns, name=CONTEXT)
        grant = Grant(objs, path, f"system:serviceaccount:{ns}:{req.name}")
        yield grant
    finally:
        for k in grant.clients if grant else ():
            k.close()
        job.revoke(admin, objs)
        admin.close()


def problems(m: dict) -> str:
    """The failed steps of a run's manifest, one a line: a missing rule shows as the API's 403."""
    return "\n".join(f"  {s['id']}: {s['outcome']}: {s.get('summary')}" for s in m["steps"]
                     if s["outcome"] in ("failed", "error"))


def assert_not_forbidden(m: dict) -> None:
    """No step of the run was refused by the API server."""
    summaries = json.dumps([s.get("summary") for s in m["steps"]]).lower()
    assert "forbidden" not in summaries, problems(m) or summaries


def assert_applied(m: dict, proc: subprocess.CompletedProcess[str] | None = None) -> None:
    """The apply succeeded, and nothing in it was forbidden."""
    r = proc if proc is not None else m["_proc"]
    assert r.returncode == 0 and m["status"] == "succeeded", (
        f"apply {m['status']}:\n{problems(m)}\n{r.stdout[-4000:]}{r.stderr[-4000:]}")
    assert_not_forbidden(m)


def plan_and_apply(opsbook_run, runbook_id: str, params: dict[str, str], env: dict[str, str], *extra: str,
                   apply_env: dict[str, str] | None = None) -> dict:
    """Plan (high-risk runbooks), then the approved apply (with ``apply_env`` if given) on target ``kt``;
    returns the apply's manifest, its process under ``_proc``. The failure message lists the failed steps."""
    args = ["--target", "kt", *[x for k, v in params.items() for x in ("-p", k, v)], *extra]
    approve: list[str] = []
    if runbook(runbook_id).high_risk:
        plan = opsbook_run(runbook_id, *args, env=env)
        pm = manifests_of(opsbook_run.outputs, runbook_id)[-1]
        assert plan.returncode == 0, f"plan failed:\n{problems(pm)}\n{plan.stdout[-3000:]}{plan.stderr[-3000:]}"
        approve = ["--approve", pm["run_id"]]
    r = opsbook_run(runbook_id, *args, "--mode", "apply", *approve, env=apply_env or env)
    m = [x for x in manifests_of(opsbook_run.outputs, runbook_id) if x["mode"] == "apply"][-1]
    m["_proc"] = r
    return m


def cli_env(targets: Path, **more: str) -> dict[str, str]:
    return {"OPSBOOK_TARGETS": str(targets), "OPSBOOK_OPERATOR": "rbac-test", **more}
