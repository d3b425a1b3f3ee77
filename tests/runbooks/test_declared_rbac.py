"""Every runbook applies with exactly the RBAC its notebook declares (metadata ``opsbook.rbac``), as
``opsbook run --on-cluster`` grants it (``rbac.py``: the ServiceAccount and rules ``opsbook.oncluster.job``
renders, a TokenRequest token, a kubeconfig that holds only that token). Each runbook's own end-to-end
CLI test runs its plan and approved apply that way (``APPLIED_AS_DECLARED`` names them; the first test
checks every declaring runbook has one); environment-check, which has no cluster CLI test of its own, is
applied here. A rule the runbook needs but does not declare fails with the API server's 403: the
missing-rule test proves it by dropping one declared rule. Last, the pod of an ``--on-cluster`` Job holds
its ServiceAccount's token and only its rules.

Runs unchanged against a real cluster (``OPSBOOK_TEST_KUBECONFIG``): the admin sets up, the runbook
runs as its ServiceAccount."""

from __future__ import annotations

import dataclasses
import importlib
import inspect

import pytest
from opsbook.catalog import RbacSpec
from opsbook.clients.kube import Kube
from opsbook.ids import new_run_id
from opsbook.oncluster import job
from opsbook.targets import Target
from opsbook.testing.kube import requires_test_server, wait_until

from .conftest import ROOT
from .rbac import DECLARED, assert_applied, cli_env, granted, plan_and_apply, problems, runbook
from .test_deploy_new_model import HEALTHY, stable  # noqa: F401  (a fixture: the stable Deployment)

pytestmark = [pytest.mark.kube, pytest.mark.slow]  # each runbook: a plan and an apply through the CLI

# runbook id -> the test that runs its plan and approved apply through the CLI with exactly its declared
# RBAC (its ``declared_rbac`` grant), in the runbook's own module where it has one
APPLIED_AS_DECLARED = {
    "environment-check": "tests/runbooks/test_declared_rbac.py::test_environment_check",
    "deploy-new-model": "tests/runbooks/test_deploy_new_model.py::"
                        "test_plan_then_approved_apply_on_a_cluster_canaries_promotes_and_verifies",
    "initial-kubernetes-deployment": "tests/runbooks/test_initial_deployment.py::"
                                     "test_plan_then_approved_apply_installs_and_verifies",
    "mlflow-tracking-server": "tests/runbooks/test_mlflow_tracking.py::"
                              "test_cluster_mode_plan_then_approved_apply_as_its_service_account",
    "centralized-logging": "tests/runbooks/test_centralized_logging.py::"
                           "test_apply_with_an_absent_marker_leaves_a_failed_record_that_keeps_the_reason",
    "security-incident-response": "tests/runbooks/test_security_incident.py::"
                                  "test_contain_then_recover_through_the_cli_with_approvals_and_a_verified_bundle",
}


# ----------------------------------------------------------------------------------------- the runbooks


def test_every_declaring_runbook_is_covered():
    """A new runbook with ``opsbook.rbac`` needs a test here: an end-to-end CLI test that runs it as its
    ``declared_rbac`` grant, named in ``APPLIED_AS_DECLARED``."""
    assert sorted(APPLIED_AS_DECLARED) == DECLARED, "declaring runbooks without a test named here: " + \
        ", ".join(sorted(set(DECLARED) - set(APPLIED_AS_DECLARED)))
    for runbook_id, nodeid in APPLIED_AS_DECLARED.items():
        path, name = nodeid.split("::")
        assert (ROOT / path).is_file(), nodeid
        module = importlib.import_module(f"{__package__}.{path.rsplit('/', 1)[1].removesuffix('.py')}")
        test = getattr(module, name, None)
        assert inspect.isfunction(test), f"{runbook_id}: no test {nodeid}"
        assert "declared_rbac" in inspect.signature(test).parameters, f"{nodeid} does not run as its grant"
        source = inspect.getsource(test)
        assert '"--mode", "apply"' in source or "plan_and_apply(" in source, f"{nodeid}: no apply through the CLI"


def test_environment_check(kube, opsbook_run, tmp_path, declared_rbac):
    grant = declared_rbac("environment-check", {})
    assert [o["kind"] for o in grant.objects] == ["ServiceAccount"]  # it declares no rule at all
    m = plan_and_apply(opsbook_run, "environment-check", {}, cli_env(grant.targets(tmp_path / "targets.yaml", kube)))
    assert_applied(m)


# ----------------------------------------------------------------------------------------- a rule missing


def test_a_rule_the_runbook_needs_but_does_not_declare_fails_the_apply_with_a_403(kube, stable, opsbook_run,  # noqa: F811
                                                                                   tmp_path):
    """deploy-new-model without its ``pods list`` rule: the apply's verification lists the pods and
    the API server refuses, naming the permission."""
    rb = runbook("deploy-new-model")
    assert rb.rbac is not None
    kept = tuple(r for r in rb.rbac.rules if r.resources != ("pods",))
    assert len(kept) == len(rb.rbac.rules) - 1
    less = dataclasses.replace(rb, rbac=RbacSpec(rules=kept, cluster_rules=rb.rbac.cluster_rules))
    params = {"namespace": kube.namespace, "version": "2", "metrics_file": str(HEALTHY), "timeout": "60"}
    (tmp_path / "full").mkdir()
    with granted(kube, rb, params, tmp_path / "full") as full, granted(kube, less, params, tmp_path) as g:
        m = plan_and_apply(opsbook_run, "deploy-new-model", params,
                           cli_env(full.targets(tmp_path / "full" / "targets.yaml", kube)),
                           apply_env=cli_env(g.targets(tmp_path / "targets.yaml", kube)))
    r = m["_proc"]
    assert r.returncode == 1 and m["status"] == "failed", r.stdout + r.stderr
    refusal = (f'pods is forbidden: User "{g.user}" cannot list resource "pods" in API group "" in the namespace '
               f'"{kube.namespace}"')
    failed = [s for s in m["steps"] if s["outcome"] == "failed"]
    assert failed and refusal in failed[0]["summary"], problems(m)


# ----------------------------------------------------------------------------------------- the Job's pod


@requires_test_server
@pytest.mark.services  # a test server of its own, in this process, to see the credentials its kubelet mounted
def test_an_on_cluster_jobs_pod_holds_its_service_accounts_token_and_only_its_rbac(tmp_path):
    """What ``--on-cluster`` launches (``job.render`` + ``job.launch``): the Job's pod gets a token of the
    run's ServiceAccount from the kubelet, never the admin's, and with it the runbook's declared rules."""
    from opsbook.testing.kubeapi import authz, start
    from opsbook.testing.kubeapi.__main__ import write_kubeconfig

    srv = start(port=0, nodes=1, ready_delay=0.1)
    admin_kc = tmp_path / "admin.kubeconfig"
    write_kubeconfig(str(admin_kc), srv.url, srv.ca_pem, context="admin")
    admin = Kube(kubeconfig=str(admin_kc), context="admin")
    try:
        admin.ensure_namespace(name="ops")
        rb = runbook("deploy-new-model")
        req = job.JobRequest(runbook=rb, params={"mode": "plan", "namespace": "ops", "version": "2"},
                             target=Target(name="kt", kubeconfig=str(admin_kc), kube_context="admin", namespace="ops"),
                             run_id=new_run_id(), namespace="ops", image="registry.example/opsbook:test",
                             outputs="s3://unused/rbac", pod_annotations={"opsbook.test/run-seconds": "30"})
        job.launch(admin, job.render(req))

        def mounted() -> dict | None:
            pods = admin.pod_objects(namespace="ops", selector=req.selector)
            sim = srv.cluster.sim.get(pods[0]["metadata"]["uid"]) if pods else None
            return (sim or {}).get("serviceaccount")
        creds = wait_until(mounted, timeout=15, message="the Job's pod started with its credentials")
        assert creds["token"] != authz.ADMIN_TOKEN and creds["namespace"] == "ops"
        kc = tmp_path / "pod.kubeconfig"
        write_kubeconfig(str(kc), srv.url, srv.ca_pem, context="pod", namespace="ops")
        kc.write_text(kc.read_text().replace(authz.ADMIN_TOKEN, creds["token"]))
        pod_kube = Kube(kubeconfig=str(kc), context="pod")
        try:
            who = pod_kube.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body={
                "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})["status"]["userInfo"]
            assert who["username"] == f"system:serviceaccount:ops:{req.name}"
            for rule in rb.rbac.rules if rb.rbac else ():
                for verb in rule.verbs:
                    assert pod_kube.can_i(verb=verb, resource=rule.resources[0], group=rule.api_groups[0],
                                          namespace="ops"), (verb, rule)
            assert not pod_kube.can_i(verb="list", resource="secrets", namespace="ops")
            assert not pod_kube.can_i(verb="list", resource="deployments", group="apps", namespace="default")
        finally:
            pod_kube.close()
    finally:
        admin.close()
        srv.stop()
