"""The helm client against the real ``helm`` binary: lint, template, package, a chart repository on
loopback, schema violations and unreachable repositories mapped to our errors (stderr verbatim)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from opsbook.clients.helm import Helm, HelmInvalid, HelmNotFound, HelmUnreachable, classify
from opsbook.errors import CommandFailed, Conflict, Invalid, NotFound, TimedOut, Unreachable

CHART = Path(__file__).resolve().parents[2] / "charts" / "ml-platform"


@pytest.fixture
def client(tmp_path: Path) -> Helm:
    """A helm client whose repository config and cache are private to the test."""
    return Helm(repository_config=tmp_path / "repositories.yaml", repository_cache=tmp_path / "cache")


def test_version_is_helm_3(client):
    assert client.version().startswith("v3.")


def test_lint_is_clean(client):
    report = client.lint(CHART, strict=True)
    assert "1 chart(s) linted, 0 chart(s) failed" in report


def test_lint_failure_is_invalid_with_helms_report(client, tmp_path):
    broken = tmp_path / "ml-platform"
    shutil.copytree(CHART, broken)
    (broken / "templates" / "broken.yaml").write_text("kind: ConfigMap\nmetadata:\n  name: {{ .Values.nope.deeper }}\n")
    with pytest.raises(HelmInvalid) as err:
        client.lint(broken)
    assert "nil pointer" in err.value.stdout + err.value.stderr
    assert isinstance(err.value, CommandFailed) and isinstance(err.value, Invalid)


def test_template_renders_both_services_and_the_ingress(client):
    docs = client.template("ml", CHART, namespace="team-a",
                           set_values={"services.proposer.replicas": 3, "ingress.className": "traefik"})
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert kinds == [("Deployment", "ml-ml-platform-critic"), ("Deployment", "ml-ml-platform-proposer"),
                     ("Ingress", "ml-ml-platform"), ("Service", "ml-ml-platform-critic"),
                     ("Service", "ml-ml-platform-proposer")]
    deps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    proposer = deps["ml-ml-platform-proposer"]
    assert proposer["spec"]["replicas"] == 3
    labels = proposer["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "proposer" and labels["app.kubernetes.io/component"] == "proposer"
    assert labels["opsbook.io/track"] == "stable"
    (ctr,) = proposer["spec"]["template"]["spec"]["containers"]
    assert ctr["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert ctr["resources"]["limits"] and ctr["resources"]["requests"]
    env = {e["name"]: e for e in ctr["env"]}
    assert env["MODEL_URI"]["value"] == "models:/proposer@production"
    # credentials only by reference to an existing Secret, never as a value
    assert env["DB_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "ml-platform-db", "key": "password"}
    assert "value" not in env["DB_PASSWORD"] and "value" not in env["DB_USER"]
    ingress = next(d for d in docs if d["kind"] == "Ingress")
    assert ingress["spec"]["ingressClassName"] == "traefik"
    paths = {p["path"] for p in ingress["spec"]["rules"][0]["http"]["paths"]}
    assert paths == {"/proposer", "/critic"}


def test_show_values_are_the_chart_defaults(client):
    values = client.show_values(CHART)
    assert values["services"]["critic"]["replicas"] == 2
    assert values["database"]["existingSecret"] == "ml-platform-db"


@pytest.mark.parametrize("overrides,needle", [
    ({"services.proposer.replicas": -1}, "services.proposer.replicas: Must be greater than or equal to 0"),
    ({"services.critic.image.repository": ""}, "services.critic.image.repository"),
    ({"database.password": "plaintext"}, "database"),
])
def test_schema_violation_is_rejected_with_helms_message(client, tmp_path, overrides, needle):
    with pytest.raises(HelmInvalid) as err:
        client.template("ml", CHART, set_values=overrides)
    assert "values don't meet the specifications of the schema" in err.value.stderr
    assert needle in err.value.stderr and needle in str(err.value)


def test_values_file_missing_image_is_rejected(client, tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text("services:\n  proposer:\n    image: null\n")
    with pytest.raises(HelmInvalid) as err:
        client.template("ml", CHART, values_files=[values])
    assert "image" in err.value.stderr


def test_package_then_repo_add_then_template_from_the_repo(chart_repo, tmp_path):
    client = Helm(repository_config=tmp_path / "repositories.yaml", repository_cache=tmp_path / "cache")
    tgz = client.package(CHART, destination=tmp_path)
    assert tgz.name == "ml-platform-0.1.0.tgz" and tgz.is_file()
    chart_repo.add_chart(CHART)
    client.repo_add("platform", chart_repo.url)
    assert [r["name"] for r in client.repo_list()] == ["platform"]
    client.repo_update("platform")
    found = client.search_repo("platform/ml-platform")
    assert [(c["name"], c["version"]) for c in found] == [("platform/ml-platform", "0.1.0")]
    docs = client.template("fromrepo", "platform/ml-platform", version="0.1.0")
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"} == {
        "fromrepo-ml-platform-proposer", "fromrepo-ml-platform-critic"}
    assert client.show_values("platform/ml-platform")["ingress"]["paths"]["critic"] == "/critic"


def test_missing_chart_version_in_repo_is_not_found(chart_repo, tmp_path):
    client = Helm(repository_config=tmp_path / "repositories.yaml", repository_cache=tmp_path / "cache")
    chart_repo.add_chart(CHART)
    client.repo_add("platform", chart_repo.url)
    with pytest.raises(HelmNotFound) as err:
        client.template("x", "platform/ml-platform", version="9.9.9")
    assert isinstance(err.value, NotFound) and "9.9.9" in err.value.stderr


def test_repo_add_of_a_closed_port_is_unreachable(client):
    from opsbook.testing.services import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(HelmUnreachable) as err:
        client.repo_add("nowhere", url)
    assert isinstance(err.value, Unreachable) and err.value.temporary
    assert "connection refused" in err.value.stderr and url in err.value.stderr


def test_repo_add_of_a_server_that_is_no_chart_repo_is_not_found(client, chart_repo):
    with pytest.raises(HelmNotFound) as err:
        client.repo_add("wrong", chart_repo.url + "/no/such/path")
    assert isinstance(err.value, NotFound) and "404" in err.value.stderr
    assert "is not a valid chart repository" in err.value.stderr


def test_cluster_unreachable_when_the_kubeconfig_points_at_a_closed_port(tmp_path):
    from opsbook.testing.services import free_port

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: gone\n"
        f"clusters: [{{name: gone, cluster: {{server: 'http://127.0.0.1:{free_port()}'}}}}]\n"
        "users: [{name: gone, user: {token: x}}]\n"
        "contexts: [{name: gone, context: {cluster: gone, user: gone}}]\n")
    client = Helm(kubeconfig=kubeconfig, kube_context="gone", namespace="default")
    with pytest.raises(HelmUnreachable) as err:
        client.list_releases()
    assert "Kubernetes cluster unreachable" in err.value.stderr


@pytest.mark.parametrize("stderr,expected", [
    ("Error: INSTALLATION FAILED: cannot re-use a name that is still in use", Conflict),
    ("Error: release: not found", NotFound),
    ('Error: releases is forbidden: User "dev" cannot list resource "secrets"', CommandFailed),
    ("Error: INSTALLATION FAILED: context deadline exceeded", TimedOut),
    ('Error: Kubernetes cluster unreachable: Get "https://10.0.0.1/version": dial tcp: i/o timeout', Unreachable),
])
def test_helm_messages_map_to_our_errors(stderr, expected):
    assert issubclass(classify(stderr), expected)
    assert issubclass(classify(stderr), CommandFailed)


def test_forbidden_message_maps_to_forbidden():
    from opsbook.errors import Forbidden

    assert issubclass(classify('Error: secrets is forbidden: User "dev" cannot list resource "secrets"'), Forbidden)


def test_release_lifecycle_against_a_cluster(kube):
    """install (server dry run first), status, upgrade, history, rollback, values, list, uninstall."""
    client = Helm(kubeconfig=kube.kubeconfig, kube_context=kube.context, namespace=kube.namespace)
    single = {"services.critic.enabled": False, "services.proposer.replicas": 1}
    planned = client.install("life", CHART, set_values=single, dry_run="server")
    assert planned["info"]["status"] == "pending-install" and "kind: Deployment" in planned["manifest"]
    assert not client.release_exists("life")

    release = client.install("life", CHART, set_values=single, wait=False)
    assert release["name"] == "life" and release["version"] == 1 and release["info"]["status"] == "deployed"
    assert client.status("life")["info"]["status"] == "deployed"
    with pytest.raises(Conflict):
        client.install("life", CHART, set_values=single, wait=False)

    client.upgrade("life", CHART, set_values={**single, "services.proposer.replicas": 2}, wait=False)
    assert client.get_values("life")["services"]["proposer"]["replicas"] == 2
    client.rollback("life", 1, wait=False)
    assert [h["revision"] for h in client.history("life")] == [1, 2, 3]
    assert client.get_values("life")["services"]["proposer"]["replicas"] == 1
    assert {d["kind"] for d in client.get_manifest("life")} == {"Deployment", "Service", "Ingress"}
    assert [r["name"] for r in client.list_releases()] == ["life"]

    client.uninstall("life", wait=False)
    with pytest.raises(HelmNotFound) as err:
        client.status("life")
    assert "not found" in err.value.stderr
