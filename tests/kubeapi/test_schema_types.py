"""Field types, checked against the API's OpenAPI schema as a real API server decodes a body: a wrongly
typed field is refused on create, update, every kind of patch and server-side apply, each with the
message and status shape of the real server's decoder (the texts are quoted with their sources in
lib/opsbook/testing/kubeapi/validation.py, schema.py and typed.py). YAML 1.1, which kubectl speaks,
reads a bare ``Y`` as ``true``: the classic way to send a boolean where a string belongs."""

from __future__ import annotations

import json

import pytest

from .conftest import PAUSE, deployment

pytestmark = pytest.mark.kube

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSONPATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"

ENV_NAME_BOOL = ("json: cannot unmarshal bool into Go struct field EnvVar.spec.template.spec.containers.env.name "
                 "of type string")
CANNOT_HANDLE = 'Deployment in version "v1" cannot be handled as a Deployment: '


DEPLOYMENTS = "/apis/apps/v1/namespaces/{ns}/deployments"
CONFIGMAPS = "/api/v1/namespaces/{ns}/configmaps"


def _send(kube, method: str, path: str, body=None, content_type: str = "application/json",
          **query: str) -> tuple[int, dict]:
    """(status, parsed body) of one request: raw, as the typed client refuses to send wrong types."""
    api = kube.api_client()
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type
    m, url, headers, body, _ = api.param_serialize(method, path.format(ns=kube.namespace), header_params=headers,
                                                   body=body, query_params=list(query.items()),
                                                   auth_settings=["BearerToken"])
    resp = api.call_api(m, url, header_params=headers, body=body)
    data = resp.read()
    return resp.status, json.loads(data) if data else {}


def _ok(kube, method: str, path: str, body=None, content_type: str = "application/json", **query: str) -> dict:
    code, out = _send(kube, method, path, body, content_type, **query)
    assert code in (200, 201), out
    return out


def _bad_env(name: str) -> dict:
    return deployment(name, env=[{"name": True, "value": "1"}])


def test_create_refuses_a_wrongly_typed_field(kube):
    code, st = _send(kube, "POST", DEPLOYMENTS, _bad_env("create-bool"))
    assert (code, st["reason"], st["message"]) == (400, "BadRequest", CANNOT_HANDLE + ENV_NAME_BOOL)
    assert _send(kube, "GET", DEPLOYMENTS + "/create-bool")[0] == 404


@pytest.mark.parametrize(("kind", "field", "value", "message"), [
    ("Deployment", ("spec", "replicas"), "2",
     "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"),
    ("Deployment", ("spec", "replicas"), 1.5,
     "json: cannot unmarshal number 1.5 into Go struct field DeploymentSpec.spec.replicas of type int32"),
    ("Deployment", ("spec", "template", "spec", "containers"), {"name": "app"},
     "json: cannot unmarshal object into Go struct field PodSpec.spec.template.spec.containers of type "
     "[]v1.Container"),
    ("ConfigMap", ("data",), {"port": 8080},
     "json: cannot unmarshal number into Go struct field ConfigMap.data of type string"),
    ("ConfigMap", ("metadata", "labels"), {"on": True},
     "json: cannot unmarshal bool into Go struct field ObjectMeta.metadata.labels of type string"),
])
def test_type_errors_name_the_go_field_and_type(kube, kind, field, value, message):
    body = deployment("types") if kind == "Deployment" else {"apiVersion": "v1", "kind": "ConfigMap",
                                                              "metadata": {"name": "types"}}
    at = body
    for f in field[:-1]:
        at = at[f]
    at[field[-1]] = value
    code, st = _send(kube, "POST", DEPLOYMENTS if kind == "Deployment" else CONFIGMAPS, body)
    assert code == 400
    assert st["message"] == f'{kind} in version "v1" cannot be handled as a {kind}: {message}'


def test_update_refuses_a_wrongly_typed_field(kube):
    body = _ok(kube, "POST", DEPLOYMENTS, deployment("update-bool", env=[{"name": "A", "value": "1"}]))
    body["spec"]["template"]["spec"]["containers"][0]["env"][0]["name"] = True
    code, st = _send(kube, "PUT", DEPLOYMENTS + "/update-bool", body)
    assert (code, st["reason"], st["message"]) == (400, "BadRequest", CANNOT_HANDLE + ENV_NAME_BOOL)
    live = _ok(kube, "GET", DEPLOYMENTS + "/update-bool")
    assert live["spec"]["template"]["spec"]["containers"][0]["env"][0]["name"] == "A"


@pytest.mark.parametrize("content_type", [MERGE, JSONPATCH])
def test_merge_and_json_patch_results_that_do_not_decode_are_invalid(kube, content_type):
    """The patch handler decodes the patched JSON: 422 with the whole object as the invalid value."""
    _ok(kube, "POST", DEPLOYMENTS, deployment("jp-bool", env=[{"name": "A", "value": "1"}]))
    patch = ({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": PAUSE,
                                                             "env": [{"name": True}]}]}}}}
             if content_type == MERGE else
             [{"op": "replace", "path": "/spec/template/spec/containers/0/env/0/name", "value": True}])
    code, st = _send(kube, "PATCH", DEPLOYMENTS + "/jp-bool", patch, content_type)
    assert (code, st["reason"]) == (422, "Invalid")
    assert st["message"].startswith(' "" is invalid: patch: Invalid value: "{')
    assert st["message"].endswith('}": ' + ENV_NAME_BOOL)
    (cause,) = st["details"]["causes"]
    assert cause["field"] == "patch" and cause["reason"] == "FieldValueInvalid"
    assert cause["message"].endswith(ENV_NAME_BOOL) and "name" not in st["details"]


def test_strategic_merge_patch_results_that_do_not_convert_are_invalid(kube):
    """A strategic merge patch is converted from a map: the converter's message, the patch as Go prints it."""
    _ok(kube, "POST", DEPLOYMENTS, deployment("smp-bool", env=[{"name": "A", "value": "1"}]))
    code, st = _send(kube, "PATCH", DEPLOYMENTS + "/smp-bool", {"spec": {"replicas": "3"}}, STRATEGIC)
    assert (code, st["reason"]) == (422, "Invalid")
    assert st["message"] == ' "" is invalid: patch: Invalid value: "map[spec:map[replicas:3]]": unrecognized type: int32'
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "env": [{"name": "B", "value": 5}]}]}}}}
    code, st = _send(kube, "PATCH", DEPLOYMENTS + "/smp-bool", patch, STRATEGIC)
    assert code == 422 and st["message"] == (
        ' "" is invalid: patch: Invalid value: "map[spec:map[template:map[spec:map[containers:[map[env:[map[name:B '
        'value:5]] name:app]]]]]]": cannot convert int64 to string')


def test_server_side_apply_refuses_a_wrongly_typed_field(kube):
    """structured-merge-diff validates an apply configuration: a 500 without a reason, every error with its path."""
    ns = kube.namespace
    body = _bad_env("ssa-bool")
    body["metadata"]["namespace"] = ns
    code, st = _send(kube, "PATCH", DEPLOYMENTS + "/ssa-bool", body, APPLY, fieldManager="t")
    assert code == 500 and "reason" not in st and "details" not in st
    assert st["message"] == (
        f'failed to create typed patch object ({ns}/ssa-bool; apps/v1, Kind=Deployment): '
        '.spec.template.spec.containers[name="app"].env[name=true].name: expected string, got '
        '&value.valueUnstructured{Value:true}')
    body = deployment("ssa-two", env=[{"name": "A", "value": 1}])
    body["spec"]["replicas"] = "2"
    code, st = _send(kube, "PATCH", DEPLOYMENTS + "/ssa-two", body, APPLY, fieldManager="t")
    assert code == 500
    assert st["message"].startswith("failed to create typed patch object (/ssa-two; apps/v1, Kind=Deployment): "
                                    "errors:\n  ")
    assert sorted(st["message"].split("\n")[1:]) == [
        '  .spec.replicas: expected numeric (int or float), got string',
        '  .spec.template.spec.containers[name="app"].env[name="A"].value: expected string, got '
        '&value.valueUnstructured{Value:1}']


def test_server_side_apply_refuses_unknown_fields_and_duplicate_keys_whatever_field_validation_says(kube):
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa-unknown"}, "data": {"a": "1"},
            "dta": {"b": "2"}}
    code, st = _send(kube, "PATCH", CONFIGMAPS + "/ssa-unknown", body, APPLY, fieldManager="t",
                     fieldValidation="Ignore")
    assert code == 500 and st["message"] == (
        "failed to create typed patch object (/ssa-unknown; /v1, Kind=ConfigMap): .dta: field not declared in schema")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ssa-dup"},
           "spec": {"containers": [{"name": "app", "image": PAUSE, "env": [{"name": "A"}, {"name": "A"}]}]}}
    code, st = _send(kube, "PATCH", "/api/v1/namespaces/{ns}/pods/ssa-dup", pod, APPLY, fieldManager="t")
    assert code == 500 and st["message"] == (
        'failed to create typed patch object (/ssa-dup; /v1, Kind=Pod): .spec.containers[name="app"].env: '
        'duplicate entries for key [name="A"]')


def test_values_the_real_decoder_accepts_and_quantities_it_refuses(kube):
    """null for optional fields (gone once decoded: the defaults apply), IntOrString as either,
    quantities as numbers or strings; a quantity that does not parse is refused by its own decoder,
    before any other check."""
    d = deployment("accepts", env=[{"name": "A", "value": None}])
    d["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "50%", "maxUnavailable": 0}}
    d["spec"]["revisionHistoryLimit"] = None
    d["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"cpu": 0.5, "memory": "64Mi"},
                                                                   "limits": {"cpu": 1}}
    made = _ok(kube, "POST", DEPLOYMENTS, d)
    assert made["spec"]["revisionHistoryLimit"] == 10
    assert made["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "A"}]
    bad = deployment("bad-qty")
    bad["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"memory": "12MB"}}
    code, st = _send(kube, "POST", DEPLOYMENTS, bad)
    assert (code, st["message"]) == (400, CANNOT_HANDLE + "quantities must match the regular expression "
                                          "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
    code, st = _send(kube, "POST", "/api/v1/namespaces/{ns}/secrets",
                     {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bad64"}, "data": {"k": "dg="}})
    assert (code, st["message"]) == (400, 'Secret in version "v1" cannot be handled as a Secret: '
                                          'illegal base64 data at input byte 3')


YAML_Y = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: app
        image: {image}
        env:
        - name: Y
          value: "1"
"""


def test_kubectl_create_shows_the_servers_message(kube, tmp_path):
    f = tmp_path / "y.yaml"
    f.write_text(YAML_Y.format(name="kc-y", image=PAUSE))
    out = kube.kubectl("create", "-f", str(f), check=False)
    assert out.returncode != 0
    assert "Error from server (BadRequest)" in out.stderr
    assert CANNOT_HANDLE + ENV_NAME_BOOL in out.stderr


def test_kubectl_apply_server_side_shows_the_servers_message(kube, tmp_path):
    f = tmp_path / "y.yaml"
    f.write_text(YAML_Y.format(name="ka-y", image=PAUSE))
    out = kube.kubectl("apply", "--server-side", "-f", str(f), check=False)
    assert out.returncode != 0
    assert (f"Error from server: failed to create typed patch object ({kube.namespace}/ka-y; apps/v1, "
            'Kind=Deployment): .spec.template.spec.containers[name="app"].env[name=true].name: expected string, '
            "got &value.valueUnstructured{Value:true}") in out.stderr
