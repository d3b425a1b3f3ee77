"""Create / get / list / replace / delete, resource versions, Status bodies, validation, dry runs."""

from __future__ import annotations

import json

import pytest
from kubernetes.client import ApiException

from .conftest import PAUSE, deployment, pod

pytestmark = pytest.mark.kube


def _status(e: ApiException) -> dict:
    return json.loads(e.body)


def test_create_sets_uid_resource_version_and_timestamp(kube, core):
    cm = core.create_namespaced_config_map(kube.namespace, {"metadata": {"name": "c1"}, "data": {"a": "1"}})
    assert cm.metadata.uid and cm.metadata.creation_timestamp
    assert isinstance(cm.metadata.resource_version, str) and cm.metadata.resource_version
    got = core.read_namespaced_config_map("c1", kube.namespace)
    assert got.metadata.uid == cm.metadata.uid
    assert got.data == {"a": "1"}


def test_list_has_kind_and_resource_version(kube, core):
    for i in range(3):
        core.create_namespaced_config_map(kube.namespace, {"metadata": {"name": f"c{i}"}})
    lst = core.list_namespaced_config_map(kube.namespace)
    assert lst.kind == "ConfigMapList"
    assert lst.metadata.resource_version
    names = {c.metadata.name for c in lst.items}
    assert {"c0", "c1", "c2"} <= names


def test_replace_bumps_resource_version_and_stale_update_conflicts(kube, core):
    ns = kube.namespace
    first = core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"v": "1"}})
    fresh = core.read_namespaced_config_map("c", ns)
    fresh.data = {"v": "2"}
    second = core.replace_namespaced_config_map("c", ns, fresh)
    assert second.metadata.resource_version != first.metadata.resource_version
    first.data = {"v": "3"}
    with pytest.raises(ApiException) as ei:
        core.replace_namespaced_config_map("c", ns, first)
    assert ei.value.status == 409
    st = _status(ei.value)
    assert st["kind"] == "Status" and st["status"] == "Failure" and st["reason"] == "Conflict"
    assert core.read_namespaced_config_map("c", ns).data == {"v": "2"}


def test_not_found_is_a_status_with_reason(kube, core):
    with pytest.raises(ApiException) as ei:
        core.read_namespaced_config_map("missing", kube.namespace)
    assert ei.value.status == 404
    st = _status(ei.value)
    assert st["kind"] == "Status" and st["apiVersion"] == "v1"
    assert st["reason"] == "NotFound" and st["code"] == 404
    assert st["details"]["name"] == "missing" and st["details"]["kind"] == "configmaps"


def test_already_exists(kube, core):
    core.create_namespaced_config_map(kube.namespace, {"metadata": {"name": "dup"}})
    with pytest.raises(ApiException) as ei:
        core.create_namespaced_config_map(kube.namespace, {"metadata": {"name": "dup"}})
    assert ei.value.status == 409 and _status(ei.value)["reason"] == "AlreadyExists"


def test_invalid_name_and_missing_fields_are_422(kube, core, apps):
    with pytest.raises(ApiException) as ei:
        core.create_namespaced_config_map(kube.namespace, {"metadata": {"name": "Bad_Name"}})
    st = _status(ei.value)
    assert ei.value.status == 422 and st["reason"] == "Invalid"
    assert any(c["field"] == "metadata.name" for c in st["details"]["causes"])
    bad = pod("nocontainers")
    bad["spec"]["containers"] = []
    with pytest.raises(ApiException) as ei:
        core.create_namespaced_pod(kube.namespace, bad)
    assert ei.value.status == 422
    d = deployment("mismatch")
    d["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    with pytest.raises(ApiException) as ei:
        apps.create_namespaced_deployment(kube.namespace, d)
    assert ei.value.status == 422 and _status(ei.value)["reason"] == "Invalid"


def test_create_in_missing_namespace_is_404(kube, core):
    with pytest.raises(ApiException) as ei:
        core.create_namespaced_config_map("no-such-namespace-x1", {"metadata": {"name": "c"}})
    assert ei.value.status == 404 and _status(ei.value)["reason"] == "NotFound"


def test_generate_name(kube, core):
    a = core.create_namespaced_config_map(kube.namespace, {"metadata": {"generateName": "gen-"}})
    b = core.create_namespaced_config_map(kube.namespace, {"metadata": {"generateName": "gen-"}})
    assert a.metadata.name.startswith("gen-") and len(a.metadata.name) > len("gen-")
    assert a.metadata.name != b.metadata.name


def test_generation_bumps_on_spec_change_only(kube, apps):
    ns = kube.namespace
    d = apps.create_namespaced_deployment(ns, deployment("gen"))
    assert d.metadata.generation == 1
    apps.patch_namespaced_deployment("gen", ns, {"metadata": {"labels": {"extra": "x"}}})
    assert apps.read_namespaced_deployment("gen", ns).metadata.generation == 1
    apps.patch_namespaced_deployment("gen", ns, {"spec": {"replicas": 2}})
    assert apps.read_namespaced_deployment("gen", ns).metadata.generation == 2


def test_delete_and_delete_collection(kube, core):
    ns = kube.namespace
    for i in range(3):
        core.create_namespaced_config_map(ns, {"metadata": {"name": f"d{i}", "labels": {"grp": "x"}}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "keep", "labels": {"grp": "y"}}})
    core.delete_namespaced_config_map("d0", ns)
    with pytest.raises(ApiException) as ei:
        core.read_namespaced_config_map("d0", ns)
    assert ei.value.status == 404
    core.delete_collection_namespaced_config_map(ns, label_selector="grp=x")
    left = {c.metadata.name for c in core.list_namespaced_config_map(ns, label_selector="grp").items}
    assert left == {"keep"}


def test_dry_run_creates_nothing(kube, core, apps):
    ns = kube.namespace
    out = core.create_namespaced_config_map(ns, {"metadata": {"name": "dry"}, "data": {"a": "b"}}, dry_run="All")
    assert out.metadata.name == "dry"
    with pytest.raises(ApiException) as ei:
        core.read_namespaced_config_map("dry", ns)
    assert ei.value.status == 404
    core.create_namespaced_config_map(ns, {"metadata": {"name": "real"}, "data": {"a": "b"}})
    core.patch_namespaced_config_map("real", ns, {"data": {"a": "changed"}}, dry_run="All")
    core.delete_namespaced_config_map("real", ns, dry_run="All")
    assert core.read_namespaced_config_map("real", ns).data == {"a": "b"}
    kube.kubectl("create", "deployment", "dr", f"--image={PAUSE}",
                 "--dry-run=server")
    with pytest.raises(ApiException):
        apps.read_namespaced_deployment("dr", ns)


def test_secret_string_data_is_encoded(kube, core):
    s = core.create_namespaced_secret(kube.namespace, {"metadata": {"name": "s"}, "stringData": {"k": "v"}})
    assert s.data == {"k": "dg=="} and s.type == "Opaque"


def test_kubectl_create_generators(kube):
    kube.kubectl("create", "configmap", "gen-cm", "--from-literal=a=b")
    kube.kubectl("create", "secret", "generic", "gen-secret", "--from-literal=p=q")
    kube.kubectl("create", "serviceaccount", "gen-sa")
    kube.kubectl("create", "role", "gen-role", "--verb=get", "--resource=pods")
    kube.kubectl("create", "rolebinding", "gen-rb", "--role=gen-role", "--serviceaccount", f"{kube.namespace}:gen-sa")
    out = json.loads(kube.kubectl("get", "configmap", "gen-cm", "-o", "json").stdout)
    assert out["data"] == {"a": "b"}
    rb = json.loads(kube.kubectl("get", "rolebinding", "gen-rb", "-o", "json").stdout)
    assert rb["roleRef"]["name"] == "gen-role" and rb["subjects"][0]["name"] == "gen-sa"


def test_unknown_fields_strict_with_kubectl_warned_otherwise(kube, tmp_path, apps):
    import yaml

    d = deployment("typo")
    d["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Always"
    f = tmp_path / "typo.yaml"
    f.write_text(yaml.safe_dump(d))
    out = kube.kubectl("apply", "-f", str(f), check=False)
    assert out.returncode != 0
    assert 'unknown field "spec.template.spec.containers[0].imagePulPolicy"' in out.stderr
    out = kube.kubectl("apply", "--validate=warn", "-f", str(f))
    assert "unknown field" in out.stderr
    assert apps.read_namespaced_deployment("typo", kube.namespace).metadata.name == "typo"


def test_pod_with_missing_service_account_is_forbidden(kube, core, apps):
    p = pod("nosa")
    p["spec"]["serviceAccountName"] = "does-not-exist"
    with pytest.raises(ApiException) as ei:
        core.create_namespaced_pod(kube.namespace, p)
    assert ei.value.status == 403 and _status(ei.value)["reason"] == "Forbidden"
    assert "does-not-exist" in _status(ei.value)["message"]
