"""`opsbook.ops.initial_kubernetes_deployment` against a Kubernetes API (the ``kube`` fixture) with the real helm: the unhappy
paths of a first install (image that never pulls, release already there, logs with errors, ingress not
answering, rollout timeout, unreachable cluster) and the values/manifests steps."""

from __future__ import annotations

from pathlib import Path

import pytest
from opsbook.clients.helm import Helm
from opsbook.clients.kube import Kube
from opsbook.errors import Invalid
from opsbook.ops import initial_kubernetes_deployment as deploy
from opsbook.targets import LOCAL, Target
from opsbook.testing.kube import requires_test_server

from .conftest import CHART, values_for

PARAMS = {"release": "ml", "namespace": "ml-platform", "chart": str(CHART), "repo_name": "ml-platform",
          "repo_url": "", "chart_version": "", "values_overrides": "", "db_secret_name": "ml-platform-db",
          "db_user": "u", "db_password": "", "kube_context": "", "timeout_seconds": 60, "ingress_base_url": "",
          "mode": "plan", "target": "local"}


@pytest.fixture
def make(kube, tmp_path):
    """A Deployment on the kube fixture's namespace, with its database Secret in place."""
    k = Kube(kubeconfig=kube.kubeconfig, context=kube.context)
    k.apply([{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ml-platform-db"},
              "stringData": {"username": "u", "password": "p4ssw0rd-test"}}], namespace=kube.namespace)

    def build(*, overrides: str = "", mode: str = "apply", **kw) -> deploy.Deployment:
        d = deploy.Deployment(release="ml", namespace=kube.namespace, chart=str(CHART), mode=mode,
                              helm=Helm(kubeconfig=kube.kubeconfig, kube_context=kube.context,
                                        namespace=kube.namespace),
                              kube=k, values_overrides=values_for(kube, overrides), timeout_seconds=60,
                              workdir=tmp_path / "work", **kw)
        deploy.write_values(d)
        deploy.render_manifests(d)
        return d

    yield build
    k.close()


def test_happy_path_installs_and_every_verification_passes(make, ingress):
    d = make(overrides="services:\n  critic:\n    replicas: 1\n", ingress_base_url=ingress.url)
    assert all(c.passed for c in deploy.preflight(d)), deploy.preflight(d)
    assert all(c.passed for c in deploy.access_checks(d))
    assert deploy.server_dry_run(d).outcome == "ok"
    assert deploy.install(d).outcome == "changed"
    pods = deploy.verify_pods(d)
    assert pods.outcome == "ok" and len(pods.rows) == 3
    logs = deploy.service_logs(d)
    assert logs.outcome == "ok" and {r["service"] for r in logs.rows} == {"ml-ml-platform-proposer",
                                                                        "ml-ml-platform-critic"}
    probe = deploy.probe_ingress(d)
    assert probe.outcome == "ok", probe.summary
    assert {("ml.example.com", "/proposer"), ("ml.example.com", "/critic")} <= set(ingress.seen)
    assert deploy.events_not_ready(d).summary == "everything is Ready: no events to show"


def test_image_that_never_pulls_fails_verification_naming_the_pod_and_reason(make):
    d = make(overrides="services:\n  critic:\n    enabled: false\n"
                       "  proposer:\n    replicas: 1\n    image:\n      registry: registry.invalid\n")
    deploy.install(d)
    res = deploy.verify_pods(d)
    assert res.outcome == "failed"
    (row,) = res.rows
    assert row["pod"].startswith("ml-ml-platform-proposer-") and row["reason"] in ("ErrImagePull", "ImagePullBackOff")
    assert row["pod"] in res.summary and row["reason"] in res.summary and "kubectl" in res.summary
    events = deploy.events_not_ready(d)
    assert any(e["type"] == "Warning" and "registry.invalid" in e["message"] for e in events.rows)


def test_release_already_there_stops_the_preflight_saying_how_to_upgrade(make):
    d = make()
    d.helm.install("ml", str(CHART), namespace=d.namespace, wait=False)
    checks = {c.name: c for c in deploy.preflight(d)}
    assert not checks["release absent"].passed
    assert "already exists" in checks["release absent"].reason
    assert "deploy-new-model" in checks["release absent"].reason and "helm upgrade" in checks["release absent"].reason


def test_missing_database_secret_fails_apply_preflight_unless_a_reference_is_given(make, kube):
    d = make(db_secret_name="absent-db")
    checks = {c.name: c for c in deploy.preflight(d)}
    assert not checks["database Secret"].passed and "kubectl" in checks["database Secret"].reason
    d.db_password_ref = "env:SOME_PASSWORD"
    assert {c.name: c for c in deploy.preflight(d)}["database Secret"].passed
    d.mode = "plan"
    d.db_password_ref = ""
    assert {c.name: c for c in deploy.preflight(d)}["database Secret"].passed  # plan mode: noted only


def test_ensure_db_secret_creates_it_from_the_resolver(make, kube):
    d = make(db_secret_name="new-db", db_password_ref="env:X")
    res = deploy.ensure_db_secret(d, lambda name: "resolved-pass-1234")
    assert res.outcome == "changed" and "resolved-pass-1234" not in res.summary
    assert d.kube.read_secret_key(kube.namespace, "new-db", "password") == "resolved-pass-1234"
    assert deploy.ensure_db_secret(d, lambda name: 1 / 0).outcome == "ok"  # exists: not resolved again


@requires_test_server
def test_error_lines_in_a_service_log_are_flagged_and_fail_the_check(make, kube):
    d = make(overrides="services:\n  critic:\n    enabled: false\n  proposer:\n    replicas: 1\n")
    deploy.install(d)
    assert deploy.verify_pods(d).outcome == "ok"
    (pod,) = d.kube.pods(namespace=kube.namespace, selector="app.kubernetes.io/instance=ml")
    kube.feed_logs(pod["pod"], "proposer", "loading model models:/proposer@production\n"
                                           "ERROR could not connect to database: connection refused\n")
    res = deploy.service_logs(d)
    assert res.outcome == "failed" and res.summary.startswith("1 error line(s) flagged")
    (flagged,) = [r for r in res.rows if r["flag"]]
    assert "could not connect to database" in flagged["line"] and flagged["pod"] == pod["pod"]


def test_ingress_path_that_does_not_answer_fails_the_probe(make, ingress):
    ingress.paths = {"/proposer"}
    d = make(ingress_base_url=ingress.url)
    d.installed = True
    res = deploy.probe_ingress(d, attempts=1)
    assert res.outcome == "failed"
    assert "1 of 2 endpoint(s) answered" in res.summary and "/critic (404)" in res.summary


def test_rollout_that_does_not_finish_in_time_fails_with_the_timeout(make):
    d = make(overrides="services:\n  critic:\n    enabled: false\n")
    d.timeout_seconds = 0
    deploy.install(d)
    res = deploy.verify_pods(d)
    assert res.outcome == "failed" and "not rolled out after 0 s" in res.summary


def test_unreachable_cluster_fails_the_preflight(tmp_path):
    from opsbook.testing.services import free_port

    kc = tmp_path / "kubeconfig"
    kc.write_text("apiVersion: v1\nkind: Config\ncurrent-context: gone\n"
                  f"clusters: [{{name: gone, cluster: {{server: 'http://127.0.0.1:{free_port()}'}}}}]\n"
                  "users: [{name: gone, user: {token: x}}]\n"
                  "contexts: [{name: gone, context: {cluster: gone, user: gone}}]\n")
    target = Target(name="gone", kubeconfig=str(kc), kube_context="gone")
    d = deploy.connect(target, {**PARAMS, "mode": "apply"}).value
    assert not d.cluster_reachable and "cannot reach the Kubernetes API" in d.cluster_error
    checks = {c.name: c for c in deploy.preflight(d)}
    assert not checks["cluster reachable"].passed and "kubectl cluster-info" in checks["cluster reachable"].reason


def test_local_target_plans_only_and_refuses_apply():
    d = deploy.connect(LOCAL, PARAMS).value
    assert d.kube is None
    assert all(c.passed for c in deploy.preflight(d))
    d.mode = "apply"
    assert not {c.name: c for c in deploy.preflight(d)}["cluster reachable"].passed


def test_values_overrides_from_a_file_and_the_diff_against_the_defaults(tmp_path):
    f = tmp_path / "prod-values.yaml"
    f.write_text("services:\n  proposer:\n    replicas: 4\n    resources:\n      limits: {cpu: '2', memory: 2Gi}\n")
    d = deploy.Deployment(release="ml", namespace="ml", chart=str(CHART), helm=Helm(), values_overrides=str(f),
                          db_secret_name="prod-db", workdir=tmp_path / "w")
    res = deploy.write_values(d)
    changed = {r["value"]: (r["chart default"], r["this deployment"]) for r in res.rows}
    assert changed == {"database.existingSecret": ("ml-platform-db", "prod-db"),
                       "services.proposer.replicas": ("2", "4"),
                       "services.proposer.resources.limits.cpu": ("1", "2"),
                       "services.proposer.resources.limits.memory": ("1Gi", "2Gi")}
    assert Path(res.details["values_file"]).read_text() == res.details["values_yaml"]
    docs = deploy.render_manifests(d)
    assert "replicas: 4" in docs.details["manifests"]


@pytest.mark.parametrize("text,needle", [("[1, 2]", "mapping"), ("a: [", "not valid YAML"),
                                         ("/no/such/values.yaml", "does not exist")])
def test_bad_values_overrides_are_invalid(text, needle):
    with pytest.raises(Invalid, match=needle):
        deploy.parse_overrides(text)


def test_schema_violation_in_overrides_fails_the_render_with_helms_message(tmp_path):
    d = deploy.Deployment(release="ml", namespace="ml", chart=str(CHART), helm=Helm(),
                          values_overrides="services:\n  proposer:\n    replicas: -1\n", workdir=tmp_path / "w")
    with pytest.raises(Invalid) as err:
        deploy.write_values(d)
        deploy.render_manifests(d)
    assert "services.proposer.replicas: Must be greater than or equal to 0" in str(err.value)


def test_forbidden_by_rbac_fails_the_access_checks_naming_what_is_denied(tmp_path):
    """The test server allows everything (no RBAC), so a small API on loopback answers the access
    reviews the way a real API server does for a user bound only to read-only roles."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # noqa: ANN002
            pass

        def _send(self, obj):
            body = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802 - namespace lookups: it exists
            self._send({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "ml"}})

        def do_POST(self):  # noqa: N802 - SelfSubjectAccessReview: read verbs only
            review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            verb = review["spec"]["resourceAttributes"]["verb"]
            allowed = verb in ("get", "list", "watch")
            self._send({**review, "status": {"allowed": allowed, "reason": "" if allowed else
                                             'RBAC: user "viewer" has no binding that allows it'}})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        kc = tmp_path / "kubeconfig"
        kc.write_text("apiVersion: v1\nkind: Config\ncurrent-context: c\n"
                      f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{server.server_address[1]}'}}}}]\n"
                      "users: [{name: c, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: c}}]\n")
        d = deploy.Deployment(release="ml", namespace="ml", chart=str(CHART), helm=Helm(),
                              kube=Kube(kubeconfig=kc, context="c"), workdir=tmp_path / "w", mode="apply")
        deploy.write_values(d)
        deploy.render_manifests(d)
        checks = deploy.access_checks(d)
        denied = {c.name for c in checks if not c.passed}
        assert "can-i create deployments.apps in ml" in denied and "can-i patch ingresses.networking.k8s.io in ml" in denied
        assert "can-i get deployments.apps in ml" not in denied
        assert all("no binding" in c.reason for c in checks if not c.passed)
    finally:
        server.shutdown()
        server.server_close()
