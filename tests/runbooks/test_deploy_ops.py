"""`opsbook.ops.initial_kubernetes_deployment` against a Kubernetes API (the ``kube`` fixture) with the real helm: the unhappy
paths of a first install (image that never pulls, release already there, logs with errors, ingress not
answering, rollout timeout, unreachable cluster) and the values/manifests steps. Each test builds the
runbook's context as the notebook API does (``make_context``), with the fixture's clients."""

from __future__ import annotations

from pathlib import Path

import pytest
from opsbook.clients import Clients
from opsbook.clients.helm import Helm
from opsbook.clients.http import Http
from opsbook.clients.kube import Kube
from opsbook.errors import ClientError, Invalid, TimedOut, Unreachable
from opsbook.ops import initial_kubernetes_deployment as deploy
from opsbook.ops.base import declaration, skip_reason
from opsbook.targets import LOCAL, Target
from opsbook.testing.kube import requires_test_server, wait_until
from opsbook.testing.runbook import make_context

from .conftest import CHART, ROOT, values_for

RUNBOOK = "initial-kubernetes-deployment"
STEPS = (deploy.connect, deploy.preflight, deploy.add_repo, deploy.write_values, deploy.ensure_db_secret,
         deploy.render_manifests, deploy.access_checks, deploy.server_dry_run, deploy.install, deploy.verify_pods,
         deploy.service_logs, deploy.probe_ingress, deploy.events_not_ready)


def context(*, mode: str = "plan", target: Target = LOCAL, clients: Clients | None = None, workdir: Path | None = None,
            **values) -> deploy.Context:
    ctx = make_context(RUNBOOK, mode=mode, target=target, clients=clients, **{"chart": str(CHART), **values})
    assert isinstance(ctx, deploy.Context)
    if workdir is not None:
        ctx.workdir = workdir
    return ctx


def kubeconfig_for(tmp_path: Path, server: str, name: str = "c") -> Path:
    kc = tmp_path / "kubeconfig"
    kc.write_text("apiVersion: v1\nkind: Config\n"
                  f"current-context: {name}\nclusters: [{{name: {name}, cluster: {{server: '{server}'}}}}]\n"
                  f"users: [{{name: {name}, user: {{token: t}}}}]\n"
                  f"contexts: [{{name: {name}, context: {{cluster: {name}, user: {name}}}}}]\n")
    return kc


@pytest.fixture
def make(kube, tmp_path):
    """The runbook's context on the kube fixture's namespace, with its database Secret in place."""
    k = Kube(kubeconfig=kube.kubeconfig, context=kube.context)
    k.apply([{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ml-platform-db"},
              "stringData": {"username": "u", "password": "p4ssw0rd-test"}}], namespace=kube.namespace)
    target = Target(name="kubetest", kubeconfig=kube.kubeconfig, kube_context=kube.context, namespace=kube.namespace)

    def build(*, overrides: str = "", mode: str = "apply", prepare: bool = True, **values) -> deploy.Context:
        ctx = context(mode=mode, target=target, clients=Clients(target, kube=k), workdir=tmp_path / "work",
                      release="ml", namespace=kube.namespace, values_overrides=values_for(kube, overrides),
                      timeout_seconds=60, **values)
        if prepare:
            deploy.write_values(ctx)
            deploy.render_manifests(ctx)
        return ctx

    yield build
    k.close()


def test_every_step_is_declared_once_with_a_stable_id():
    decls = [declaration(fn) for fn in STEPS]
    assert all(d is not None for d in decls)
    ids = [d.id for d in decls if d is not None]
    assert len(set(ids)) == len(ids) == 13
    assert {d.kind for d in decls if d is not None and d.id in ("db-secret", "install")} == {"change"}
    assert declaration(deploy.install).plan is deploy.plan_install
    assert declaration(deploy.ensure_db_secret).plan is deploy.plan_db_secret


def test_plan_on_local_skips_what_needs_a_cluster_or_an_install_with_the_reason():
    ctx = context()
    reasons = {declaration(fn).id: skip_reason(declaration(fn), ctx) for fn in STEPS}
    assert reasons["helm-repo"] == f"chart is a local path ({CHART}): no repository needed"
    assert reasons["access"] == "no cluster: access not checked (plan only)"
    assert reasons["server-dry-run"] == "no cluster: rendered and validated client-side by helm only"
    for step_id in ("pods-ready", "service-logs", "ingress", "events"):
        assert reasons[step_id] == "plan mode: nothing was installed, nothing to verify"
    assert {k for k, v in reasons.items() if v is None} == {"connect", "preflight", "values", "db-secret", "render",
                                                            "install"}


def test_chart_a_name_stays_a_name_and_a_relative_path_is_resolved(monkeypatch):
    ctx = context(chart="ml-platform", repo_name="platform", chart_version="0.1.0")
    assert (ctx.chart, ctx.chart_ref, ctx.chart_pin, ctx.chart_is_path) == ("ml-platform", "platform/ml-platform",
                                                                           "0.1.0", False)
    assert context(chart="other/ml-platform").chart_ref == "other/ml-platform"
    monkeypatch.chdir(ROOT)
    given = context(chart="./charts/ml-platform", chart_version="0.1.0")  # a value given: from the working folder
    assert given.chart == given.chart_ref == str(CHART) and given.chart_pin is None


def test_happy_path_installs_and_every_verification_passes(make, ingress):
    ctx = make(overrides="services:\n  critic:\n    replicas: 1\n", ingress_base_url=ingress.url)
    assert deploy.connect(ctx).summary.startswith("cluster ")
    assert all(c.passed for c in deploy.preflight(ctx)), deploy.preflight(ctx)
    assert all(c.passed for c in deploy.access_checks(ctx))
    assert deploy.server_dry_run(ctx).outcome == "ok"
    assert deploy.install(ctx).outcome == "changed"
    pods = deploy.verify_pods(ctx)
    assert pods.outcome == "ok" and len(pods.rows) == 3
    logs = deploy.service_logs(ctx)
    assert logs.outcome == "ok" and {r["service"] for r in logs.rows} == {"ml-ml-platform-proposer",
                                                                          "ml-ml-platform-critic"}
    assert skip_reason(declaration(deploy.probe_ingress), ctx) is None
    probe = deploy.probe_ingress(ctx)
    assert probe.outcome == "ok", probe.summary
    assert {("ml.example.com", "/proposer"), ("ml.example.com", "/critic")} <= set(ingress.seen)
    assert deploy.events_not_ready(ctx).summary == "everything is Ready: no events to show"


def test_image_that_never_pulls_fails_verification_naming_the_pod_and_reason(make):
    ctx = make(overrides="services:\n  critic:\n    enabled: false\n"
                         "  proposer:\n    replicas: 1\n    image:\n      registry: registry.invalid\n")
    deploy.install(ctx)
    res = deploy.verify_pods(ctx)
    assert res.outcome == "failed"
    (row,) = res.rows
    assert row["pod"].startswith("ml-ml-platform-proposer-") and row["reason"] in ("ErrImagePull", "ImagePullBackOff")
    assert row["pod"] in res.summary and row["reason"] in res.summary and "kubectl" in res.summary
    events = deploy.events_not_ready(ctx)
    assert any(e["type"] == "Warning" and "registry.invalid" in e["message"] for e in events.rows)


def test_release_already_there_stops_the_preflight_saying_how_to_upgrade(make):
    ctx = make()
    ctx.helm.install("ml", str(CHART), namespace=ctx.settings.namespace, wait=False)
    checks = {c.name: c for c in deploy.preflight(ctx)}
    assert not checks["release absent"].passed
    assert "already exists" in checks["release absent"].reason
    assert "deploy-new-model" in checks["release absent"].reason and "helm upgrade" in checks["release absent"].reason


def test_missing_database_secret_fails_apply_preflight_unless_a_reference_is_given(make, kube):
    checks = {c.name: c for c in deploy.preflight(make(db_secret_name="absent-db", prepare=False))}
    assert not checks["database Secret"].passed and "kubectl" in checks["database Secret"].reason
    with_ref = make(db_secret_name="absent-db", db_password="env:SOME_PASSWORD", prepare=False)
    assert {c.name: c for c in deploy.preflight(with_ref)}["database Secret"].passed
    assert "would create Secret" in deploy.plan_db_secret(with_ref).summary
    plan = make(db_secret_name="absent-db", mode="plan", prepare=False)
    assert {c.name: c for c in deploy.preflight(plan)}["database Secret"].passed  # plan mode: noted only


def test_ensure_db_secret_creates_it_from_the_reference(make, kube, monkeypatch):
    monkeypatch.setenv("IKD_TEST_DB_PASSWORD", "resolved-pass-1234")
    ctx = make(db_secret_name="new-db", db_password="env:IKD_TEST_DB_PASSWORD", prepare=False)
    res = deploy.ensure_db_secret(ctx)
    assert res.outcome == "changed" and "resolved-pass-1234" not in res.summary
    assert ctx.kube.read_secret_key(kube.namespace, "new-db", "password") == "resolved-pass-1234"
    monkeypatch.delenv("IKD_TEST_DB_PASSWORD")  # the reference no longer resolves: it must not be read again
    assert deploy.ensure_db_secret(ctx).outcome == "ok"  # exists: not resolved again
    assert deploy.plan_db_secret(ctx).summary.endswith("exists: nothing to do")


@requires_test_server
def test_error_lines_in_a_service_log_are_flagged_and_fail_the_check(make, kube):
    ctx = make(overrides="services:\n  critic:\n    enabled: false\n  proposer:\n    replicas: 1\n")
    deploy.install(ctx)
    assert deploy.verify_pods(ctx).outcome == "ok"
    (pod,) = ctx.kube.pods(namespace=kube.namespace, selector="app.kubernetes.io/instance=ml")
    kube.feed_logs(pod["pod"], "proposer", "loading model models:/proposer@production\n"
                                           "ERROR could not connect to database: connection refused\n")
    res = deploy.service_logs(ctx)
    assert res.outcome == "failed" and res.summary.startswith("1 error line(s) flagged")
    (flagged,) = [r for r in res.rows if r["flag"]]
    assert "could not connect to database" in flagged["line"] and flagged["pod"] == pod["pod"]


def test_ingress_path_that_does_not_answer_fails_the_probe(make, ingress):
    ingress.paths = {"/proposer"}
    ctx = make(ingress_base_url=ingress.url)
    res = deploy.probe_ingress(ctx, retry_for=0)  # one look
    assert res.outcome == "failed"
    assert "1 of 2 endpoint(s) answered" in res.summary and "/critic (404)" in res.summary
    assert {r["path"]: r["answer"] for r in res.rows}["/critic"] == "Not Found"


def test_ingress_that_cannot_be_reached_fails_the_probe_saying_why(make):
    from opsbook.testing.services import free_port

    ctx = make(ingress_base_url=f"http://127.0.0.1:{free_port()}")
    res = deploy.probe_ingress(ctx, retry_for=1.0)
    assert res.outcome == "failed" and "0 of 2 endpoint(s) answered" in res.summary
    assert all(r["status"] == "-" and r["answer"].startswith("ConnectionError: ") for r in res.rows)
    assert "set ingress_base_url" in res.summary


def test_ingress_probe_uses_the_http_client_a_test_gives(make, kube):
    class Recorder:
        def __init__(self):
            self.calls = []

        def get(self, url, *, headers=None, timeout=None, follow_redirects=False):
            self.calls.append((url, dict(headers or {}), timeout, follow_redirects))
            raise TimedOut(f"ReadTimeout: {url} no answer")

    http = Recorder()
    ctx = make(ingress_base_url="http://ingress.invalid")
    ctx.clients = Clients(ctx.target, kube=ctx.kube, http=http)
    res = deploy.probe_ingress(ctx, timeout=2.5, retry_for=2.0)
    per_url = {u: sum(c[0] == u for c in http.calls) for u, *_ in http.calls}
    assert len(per_url) == 2 and all(n >= 2 for n in per_url.values())  # each path tried again, a second apart
    assert ("http://ingress.invalid/proposer", {"Host": "ml.example.com"}, 2.5, False) in http.calls
    assert res.outcome == "failed" and all(r["answer"].startswith("ReadTimeout: ") for r in res.rows)


def test_http_client_answers_any_status_and_raises_ours_without_an_answer(ingress):
    from opsbook.testing.services import free_port

    http = Http(timeout=5)
    try:
        ok = http.get(ingress.url + "/proposer", headers={"Host": "ml.test"})
        missing = http.get(ingress.url + "/nowhere")
        assert (ok.status, ok.reason, missing.status, missing.reason) == (200, "OK", 404, "Not Found")
        assert ("ml.test", "/proposer") in ingress.seen
        with pytest.raises(Unreachable, match=r"^ConnectionError: ") as err:
            http.get(f"http://127.0.0.1:{free_port()}/")
        assert err.value.temporary
        with pytest.raises(ClientError, match=r"^(InvalidURL|MissingSchema): "):
            http.get("no-scheme-here")
    finally:
        http.close()


def test_rollout_that_does_not_finish_in_time_fails_with_the_timeout(make):
    ctx = make(overrides="services:\n  critic:\n    enabled: false\n")
    # below the parameter's floor (10 s), so that the test does not wait: set on the model, not validated
    ctx.settings = ctx.settings.model_copy(update={"timeout_seconds": 0})
    deploy.install(ctx)
    res = deploy.verify_pods(ctx)
    assert res.outcome == "failed" and "not rolled out after 0 s" in res.summary


def test_unreachable_cluster_fails_the_preflight(tmp_path):
    from opsbook.testing.services import free_port

    kc = kubeconfig_for(tmp_path, f"http://127.0.0.1:{free_port()}", name="gone")
    ctx = context(mode="apply", target=Target(name="gone", kubeconfig=str(kc), kube_context="gone"))
    assert not ctx.cluster_reachable and "cannot reach the Kubernetes API" in ctx.cluster_error
    assert deploy.connect(ctx).summary.startswith("cluster unreachable: ")
    checks = {c.name: c for c in deploy.preflight(ctx)}
    assert not checks["cluster reachable"].passed and "kubectl cluster-info" in checks["cluster reachable"].reason
    assert skip_reason(declaration(deploy.server_dry_run), ctx) is not None


def test_kube_context_setting_overrides_the_targets(kube):
    target = Target(name="ctx-less", kubeconfig=kube.kubeconfig)  # the kubeconfig's current context
    ctx = context(target=target, kube_context=kube.context, namespace=kube.namespace)
    assert ctx.kube_context == kube.context and ctx.helm.kube_context == kube.context
    assert ctx.cluster_reachable and ctx.server_version
    assert f"context {kube.context} at " in deploy.connect(ctx).rows[1]["value"]


def test_local_target_plans_only_and_refuses_apply():
    ctx = context()
    assert ctx.kube is None and not ctx.has_cluster
    assert deploy.connect(ctx).summary == "no cluster on this target: Kubernetes steps plan only"
    assert all(c.passed for c in deploy.preflight(ctx))
    assert not {c.name: c for c in deploy.preflight(context(mode="apply"))}["cluster reachable"].passed


def test_values_overrides_from_a_file_and_the_diff_against_the_defaults(tmp_path):
    f = tmp_path / "prod-values.yaml"
    f.write_text("services:\n  proposer:\n    replicas: 4\n    resources:\n      limits: {cpu: '2', memory: 2Gi}\n")
    ctx = context(release="ml", namespace="ml", values_overrides=str(f), db_secret_name="prod-db",
                  workdir=tmp_path / "w")
    res = deploy.write_values(ctx)
    changed = {r["value"]: (r["chart default"], r["this deployment"]) for r in res.rows}
    assert changed == {"database.existingSecret": ("ml-platform-db", "prod-db"),
                       "services.proposer.replicas": ("2", "4"),
                       "services.proposer.resources.limits.cpu": ("1", "2"),
                       "services.proposer.resources.limits.memory": ("1Gi", "2Gi")}
    assert Path(res.details["values_file"]).read_text() == res.details["values_yaml"]
    assert Path(res.details["values_file"]).parent == tmp_path / "w"
    assert res.show and res.show[0].lang == "yaml" and "replicas: 4" in res.show[0].text  # shown, not displayed
    docs = deploy.render_manifests(ctx)
    assert "replicas: 4" in docs.details["manifests"] and docs.show[0].text == docs.details["manifests"]
    assert f"--values {tmp_path / 'w' / 'values.yaml'}" in deploy.plan_install(ctx).summary


@pytest.mark.parametrize("text,needle", [("[1, 2]", "mapping"), ("a: [", "not valid YAML"),
                                         ("/no/such/values.yaml", "does not exist")])
def test_bad_values_overrides_are_invalid(text, needle):
    with pytest.raises(Invalid, match=needle):
        deploy.parse_overrides(text)


def test_schema_violation_in_overrides_fails_the_render_with_helms_message(tmp_path):
    ctx = context(release="ml", namespace="ml", values_overrides="services:\n  proposer:\n    replicas: -1\n",
                  workdir=tmp_path / "w")
    with pytest.raises(Invalid) as err:
        deploy.write_values(ctx)
        deploy.render_manifests(ctx)
    assert "services.proposer.replicas: Must be greater than or equal to 0" in str(err.value)


@pytest.mark.kube
def test_forbidden_by_rbac_fails_the_access_checks_naming_what_is_denied(kube, tmp_path):
    """A ServiceAccount bound only to the built-in read-only ClusterRole ``view`` in the namespace: the
    access reviews (answered by the API server's RBAC) pass the reads and fail every write, by name."""
    from kubernetes import client

    admin = kube.api_client()
    try:
        client.CoreV1Api(admin).create_namespaced_service_account(kube.namespace, {"metadata": {"name": "viewer"}})
        client.RbacAuthorizationV1Api(admin).create_namespaced_role_binding(kube.namespace, {
            "metadata": {"name": "viewer-view"},
            "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": kube.namespace}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}})
        token = client.CoreV1Api(admin).create_namespaced_service_account_token("viewer", kube.namespace, {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}).status.token
    finally:
        admin.close()
    kc = kube.api.kubeconfig_with_token(token, tmp_path / "viewer.kubeconfig", kube.namespace, name="c")
    target = Target(name="viewer", kubeconfig=str(kc), kube_context="c")
    ctx = context(mode="apply", target=target, clients=Clients(target, helm=Helm()), release="ml",
                  namespace=kube.namespace, workdir=tmp_path / "w")
    deploy.write_values(ctx)
    deploy.render_manifests(ctx)
    assert skip_reason(declaration(deploy.access_checks), ctx) is None

    def read_only() -> bool:  # a real cluster's authorizer sees a new binding a moment later
        checks = deploy.access_checks(ctx)
        return all(c.passed for c in checks if c.name.startswith("can-i get ")) and checks

    checks = wait_until(read_only, timeout=15, message="the viewer's binding in effect")
    ns = kube.namespace
    denied = {c.name for c in checks if not c.passed}
    assert f"can-i create deployments.apps in {ns}" in denied
    assert f"can-i patch ingresses.networking.k8s.io in {ns}" in denied
    assert f"can-i create secrets in {ns}" in denied
    assert f"can-i get deployments.apps in {ns}" not in denied and f"can-i list events in {ns}" not in denied
    # RBAC's own answer to a denied review has no reason: the check says whose answer it is
    assert {c.reason for c in checks if not c.passed} == {"denied by RBAC"}
    assert {c.name.split()[1] for c in checks if not c.passed} == {"create", "patch"}
