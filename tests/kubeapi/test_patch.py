"""Patches: JSON merge, strategic merge (lists merged by key), JSON patch, server-side apply,
client-side `kubectl apply` and `kubectl diff`."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from kubernetes.client import ApiException

from .conftest import BUSYBOX, PAUSE, deployment

pytestmark = pytest.mark.kube

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSONPATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"


def _two_containers(name: str) -> dict:
    d = deployment(name, env=[{"name": "A", "value": "1"}], ports=[{"containerPort": 80, "name": "http"}])
    d["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": BUSYBOX,
                                                        "command": ["sleep", "3600"]})
    return d


def test_strategic_merge_merges_containers_and_env_by_name(kube, apps):
    ns = kube.namespace
    apps.create_namespaced_deployment(ns, _two_containers("smp"))
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "env": [{"name": "B", "value": "2"}, {"name": "A", "value": "changed"}]}]}}}}
    out = apps.patch_namespaced_deployment("smp", ns, patch, _content_type=STRATEGIC)
    cs = {c.name: c for c in out.spec.template.spec.containers}
    assert set(cs) == {"app", "side"}
    assert {e.name: e.value for e in cs["app"].env} == {"A": "changed", "B": "2"}
    assert cs["app"].image == PAUSE and cs["app"].ports[0].container_port == 80


def test_strategic_merge_delete_directive(kube, apps):
    ns = kube.namespace
    apps.create_namespaced_deployment(ns, _two_containers("smpdel"))
    out = apps.patch_namespaced_deployment("smpdel", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "side", "$patch": "delete"}]}}}}, _content_type=STRATEGIC)
    assert [c.name for c in out.spec.template.spec.containers] == ["app"]


def test_merge_patch_replaces_lists(kube, apps, core):
    ns = kube.namespace
    apps.create_namespaced_deployment(ns, _two_containers("mp"))
    out = apps.patch_namespaced_deployment("mp", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "only", "image": PAUSE}]}}}}, _content_type=MERGE)
    assert [c.name for c in out.spec.template.spec.containers] == ["only"]
    core.create_namespaced_config_map(ns, {"metadata": {"name": "m"}, "data": {"a": "1", "b": "2"}})
    cm = core.patch_namespaced_config_map("m", ns, {"data": {"a": None, "c": "3"}}, _content_type=MERGE)
    assert cm.data == {"b": "2", "c": "3"}


def test_json_patch(kube, core):
    ns = kube.namespace
    core.create_namespaced_config_map(ns, {"metadata": {"name": "jp"}, "data": {"a": "1"}})
    cm = core.patch_namespaced_config_map("jp", ns, [
        {"op": "add", "path": "/data/b", "value": "2"},
        {"op": "replace", "path": "/data/a", "value": "x"},
        {"op": "add", "path": "/metadata/labels", "value": {"l": "v"}},
    ], _content_type=JSONPATCH)
    assert cm.data == {"a": "x", "b": "2"} and cm.metadata.labels == {"l": "v"}
    with pytest.raises(ApiException) as ei:
        core.patch_namespaced_config_map("jp", ns, [{"op": "test", "path": "/data/a", "value": "nope"}],
                                         _content_type=JSONPATCH)
    assert ei.value.status == 422


def test_kubectl_patch_types(kube, core):
    core.create_namespaced_config_map(kube.namespace, {"metadata": {"name": "kp"}, "data": {"a": "1"}})
    kube.kubectl("patch", "configmap", "kp", "--type=merge", "-p", '{"data":{"b":"2"}}')
    kube.kubectl("patch", "configmap", "kp", "--type=json", "-p", '[{"op":"remove","path":"/data/a"}]')
    assert core.read_namespaced_config_map("kp", kube.namespace).data == {"b": "2"}


def test_server_side_apply_creates_records_managers_and_conflicts(kube, core):
    ns = kube.namespace
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"x": "1", "y": "1"}}
    cm = core.patch_namespaced_config_map("ssa", ns, body, field_manager="alice", _content_type=APPLY)
    assert cm.data == {"x": "1", "y": "1"}
    managers = {m.manager: m for m in cm.metadata.managed_fields}
    assert managers["alice"].operation == "Apply"
    assert "f:x" in json.dumps(managers["alice"].fields_v1)
    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"x": "2"}}
    with pytest.raises(ApiException) as ei:
        core.patch_namespaced_config_map("ssa", ns, other, field_manager="bob", _content_type=APPLY)
    assert ei.value.status == 409 and json.loads(ei.value.body)["reason"] == "Conflict"
    cm = core.patch_namespaced_config_map("ssa", ns, other, field_manager="bob", force=True, _content_type=APPLY)
    assert cm.data["x"] == "2"
    # alice re-applies without y: her field y goes away, x now belongs to bob
    core.patch_namespaced_config_map("ssa", ns, {"apiVersion": "v1", "kind": "ConfigMap",
                                                 "metadata": {"name": "ssa"}, "data": {}},
                                     field_manager="alice", _content_type=APPLY)
    assert core.read_namespaced_config_map("ssa", ns).data == {"x": "2"}


def test_server_side_apply_requires_field_manager(kube, core):
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "nofm"}, "data": {"x": "1"}}
    with pytest.raises(ApiException) as ei:
        core.patch_namespaced_config_map("nofm", kube.namespace, body, _content_type=APPLY)
    assert ei.value.status in (400, 422)


def test_kubectl_apply_server_side(kube, tmp_path, apps):
    f = tmp_path / "d.yaml"
    d = deployment("ssa-deploy", replicas=2)
    f.write_text(yaml.safe_dump(d))
    kube.kubectl("apply", "--server-side", "-f", str(f))
    live = apps.read_namespaced_deployment("ssa-deploy", kube.namespace)
    assert live.spec.replicas == 2
    assert any(m.manager == "kubectl" and m.operation == "Apply" for m in live.metadata.managed_fields)
    kube.kubectl("scale", "deployment", "ssa-deploy", "--replicas=3")
    conflict = kube.kubectl("apply", "--server-side", "-f", str(f), check=False)
    assert conflict.returncode != 0 and "conflict" in conflict.stderr.lower()
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(f))
    assert apps.read_namespaced_deployment("ssa-deploy", kube.namespace).spec.replicas == 2


def test_kubectl_apply_then_diff(kube, tmp_path, apps):
    f = tmp_path / "d.yaml"
    d = deployment("csa", replicas=1, env=[{"name": "A", "value": "1"}])
    f.write_text(yaml.safe_dump(d))
    kube.kubectl("apply", "-f", str(f))
    assert kube.kubectl("diff", "-f", str(f), check=False).returncode == 0
    d["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "A", "value": "2"}]
    f.write_text(yaml.safe_dump(d))
    diff = kube.kubectl("diff", "-f", str(f), check=False)
    assert diff.returncode == 1, diff.stderr
    assert '+          value: "2"' in diff.stdout
    kube.kubectl("apply", "-f", str(f))
    assert kube.kubectl("diff", "-f", str(f), check=False).returncode == 0
    live = apps.read_namespaced_deployment("csa", kube.namespace)
    assert live.spec.template.spec.containers[0].env[0].value == "2"
    assert "kubectl.kubernetes.io/last-applied-configuration" in live.metadata.annotations


def test_kubectl_apply_dry_run_server(kube, tmp_path, apps):
    f = tmp_path / "d.yaml"
    f.write_text(yaml.safe_dump(deployment("dry-apply")))
    out = kube.kubectl("apply", "--dry-run=server", "-f", str(f))
    assert "server dry run" in out.stdout
    with pytest.raises(ApiException) as ei:
        apps.read_namespaced_deployment("dry-apply", kube.namespace)
    assert ei.value.status == 404


def test_scale_subresource(kube, apps):
    ns = kube.namespace
    apps.create_namespaced_deployment(ns, deployment("sc"))
    scale = apps.read_namespaced_deployment_scale("sc", ns)
    assert scale.spec.replicas == 1
    apps.patch_namespaced_deployment_scale("sc", ns, {"spec": {"replicas": 3}})
    assert apps.read_namespaced_deployment("sc", ns).spec.replicas == 3
    _ = subprocess  # noqa


def test_server_side_apply_removes_what_the_manager_stops_applying(kube, tmp_path, apps):
    first = deployment("prune", env=[{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}])
    first["metadata"]["labels"].update({"a": "1", "b": "2"})
    first["spec"]["template"]["spec"]["containers"].append(
        {"name": "side", "image": BUSYBOX, "command": ["sleep", "3600"]})
    second = deployment("prune", image=BUSYBOX, env=[{"name": "X", "value": "1"}],
                        command=["sleep", "3600"])
    second["metadata"]["labels"]["a"] = "1"
    f1, f2 = tmp_path / "1.yaml", tmp_path / "2.yaml"
    # JSON, not yaml.safe_dump: PyYAML leaves the env name Y unquoted, and kubectl's YAML 1.1 reads a bare
    # Y as true (a real server then refuses the boolean name)
    f1.write_text(json.dumps(first))
    f2.write_text(json.dumps(second))
    kube.kubectl("apply", "--server-side", "-f", str(f1))
    kube.kubectl("label", "deployment", "prune", "c=3")
    kube.kubectl("apply", "--server-side", "-f", str(f2))
    live = apps.read_namespaced_deployment("prune", kube.namespace)
    assert live.metadata.labels == {"app": "prune", "a": "1", "c": "3"}
    cs = live.spec.template.spec.containers
    assert [c.name for c in cs] == ["app"]
    assert cs[0].image == BUSYBOX and [(e.name, e.value) for e in cs[0].env] == [("X", "1")]
