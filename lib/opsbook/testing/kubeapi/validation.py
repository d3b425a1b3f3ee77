"""Validation: the checks the API server makes before it stores an object, with the field paths,
reasons and messages a real server gives (clients and runbooks show them verbatim): field types and
server-side field validation (``fieldValidation`` Strict / Warn / Ignore) against the OpenAPI schema
(schema.py, typed.py) when the body is decoded, then the per-kind checks (422) on the object."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from . import gotext, schema, typed
from .errors import bad_request, invalid, invalid_patch, unknown_reason
from .resources import Resource

DNS1123_SUB = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

SUB_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and "
           "must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
           "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
             "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
             "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS1035_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
               "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex "
               "used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")


def _name_problem(r: Resource, name: str) -> str | None:
    if r.group == "rbac.authorization.k8s.io":
        if name in (".", "..") or "/" in name or "%" in name:
            return "may not contain '/' or '%'"
        return None
    if r.plural in ("namespaces",):
        if len(name) > 63:
            return "must be no more than 63 characters"
        return None if DNS1123_LABEL.match(name) else LABEL_MSG
    if r.plural == "services":
        if len(name) > 63:
            return "must be no more than 63 characters"
        return None if DNS1035_LABEL.match(name) else DNS1035_MSG
    if len(name) > 253:
        return "must be no more than 253 characters"
    return None if DNS1123_SUB.match(name) else SUB_MSG


def check_fields(r: Resource, body: dict, mode: str | None, warnings: list[str] | None,
                 patch_type: str | None = None, patch: Any = None) -> None:
    """Decode ``body`` (a request's object, or a patch's result: ``patch_type`` its content type,
    ``patch`` the patch) as the server does: a wrongly typed field fails the request whatever the
    mode; then unknown fields: Strict -> 400, Warn -> Warning headers, Ignore/None -> nothing."""
    t = schema.root(r.api_version, r.kind) if isinstance(body, dict) and not r.crd else None
    if t is None:
        return
    error, unknown = schema.decode(t, body)
    if patch_type == "application/strategic-merge-patch+json":
        # patch.go applyPatchToObject: the converter's error, the patch itself as the value (%+v)
        error = typed.convert_error(t, body)
        if error:
            raise invalid_patch(gotext.v(patch), error)
    elif error and patch_type:
        # patch.go jsonPatcher: runtime.DecodeInto of the patched JSON
        raise invalid_patch(json.dumps(body, separators=(",", ":")), error)
    elif error:
        # handlers/create.go and update.go, transformDecodeError: e.g. 'Deployment in version "v1" cannot
        # be handled as a Deployment: json: cannot unmarshal bool into Go struct field
        # EnvVar.spec.template.spec.containers.env.value of type string' (seen from real clusters in
        # helm and kubectl reports, e.g. provectus/kafka-ui-charts#19, timescale/tobs#264)
        raise bad_request(f'{r.kind} in version "{r.version}" cannot be handled as a {r.kind}: {error}')
    if not unknown or not mode or mode == "Ignore":
        return
    if mode == "Strict":
        raise bad_request(f'{r.kind} in version "{r.version}" cannot be handled as a {r.kind}: strict decoding '
                          f'error: ' + ", ".join(f'unknown field "{u}"' for u in unknown))
    if warnings is not None:
        warnings.extend(f'unknown field "{u}"' for u in unknown)


def check_apply(r: Resource, applied: dict) -> None:
    """An apply configuration must fit the schema (types and field names, keyed lists), whatever
    ``fieldValidation`` says: apimachinery managedfields/internal/structuredmerge.go ``Apply``,
    ``fmt.Errorf("failed to create typed patch object (%v): %v", objectGVKNN(patchObj), err)``, a plain
    error the server answers with 500. Seen from a real cluster: 'failed to create typed patch object
    (flux-system/network-config; /v1, Kind=ConfigMap): .data.service_ip_range: expected string, got
    &value.valueUnstructured{Value:[]interface {}{"10.10.102.1-10.10.102.254"}}'
    (allenporter/k8s-gitops#1651)."""
    t = schema.root(r.api_version, r.kind) if not r.crd else None
    errs = typed.apply_errors(t, applied) if t is not None else []
    if not errs:
        return
    meta = applied.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    group, _, version = str(applied.get("apiVersion") or "").rpartition("/")
    gvknn = f"{meta.get('namespace') or ''}/{meta.get('name') or ''}; {group}/{version}, Kind={applied.get('kind')}"
    text = errs[0] if len(errs) == 1 else "errors:\n" + "\n".join("  " + e for e in errs)
    raise unknown_reason(f"failed to create typed patch object ({gvknn}): {text}")


def check_type(r: Resource, body: dict) -> None:
    """The body's apiVersion and kind, where given, are the resource's."""
    av, kind = body.get("apiVersion"), body.get("kind")
    if kind and kind != r.kind:
        raise bad_request(f"the API version in the data ({av}) does not match the expected API version "
                          f"({r.api_version})" if av and av != r.api_version else
                          f"Object 'Kind' is {kind}, expected {r.kind}")
    if av and av != r.api_version:
        raise bad_request(f"the API version in the data ({av}) does not match the expected API version "
                          f"({r.api_version})")


def validate(r: Resource, obj: dict, old: dict | None) -> None:
    """Raise 422 Invalid with every problem of ``obj`` (being created when ``old`` is None)."""
    meta = obj["metadata"]
    name = meta.get("name", "")
    causes: list[tuple[str, str, str]] = []
    if old is None:
        prob = _name_problem(r, name)
        if prob:
            causes.append(("metadata.name", "FieldValueInvalid", f'Invalid value: "{name}": {prob}'))
    for k, v in (meta.get("labels") or {}).items():
        if not isinstance(v, str) or len(v) > 63 or not LABEL_VALUE.match(v):
            causes.append(("metadata.labels", "FieldValueInvalid",
                           f'Invalid value: "{v}": a valid label must be an empty string or consist of '
                           f"alphanumeric characters, '-', '_' or '.', and must start and end with an "
                           f"alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used "
                           f"for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"))
        key = k.rsplit("/", 1)[-1]
        if not key or len(key) > 63 or not QUALIFIED_NAME.match(key):
            causes.append(("metadata.labels", "FieldValueInvalid", f'Invalid value: "{k}": name part must '
                           f"consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
                           f"an alphanumeric character"))
    for k, v in (meta.get("annotations") or {}).items():  # custom resources: not decoded into a Go type
        if not isinstance(v, str):
            causes.append(("metadata.annotations", "FieldValueInvalid", f"Invalid value: {k}: must be a string"))
    check = _BY_KIND.get(r.kind)
    if check is not None:
        check(r.kind, obj, old, causes)
    if causes:
        raise invalid(r, name, causes)


# ---------------------------------------------------------------- per kind


def _pod(kind: str, obj: dict, old: dict | None, causes: list) -> None:
    spec = obj.get("spec")
    _validate_pod_spec(spec, "spec", causes)
    if old is not None and isinstance(spec, dict):
        os_ = old.get("spec") or {}
        for fld in ("nodeName",):
            if os_.get(fld) and spec.get(fld) != os_.get(fld):
                causes.append((f"spec.{fld}", "FieldValueForbidden",
                               "Forbidden: pod updates may not change fields other than "
                               "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                               "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
                               "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to "
                               "be set to 1 if it was previously negative)"))


def _workload(kind: str, obj: dict, old: dict | None, causes: list) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        causes.append(("spec", "FieldValueRequired", "Required value"))
    else:
        sel = spec.get("selector")
        tmpl = spec.get("template") if isinstance(spec.get("template"), dict) else None
        if not sel:
            causes.append(("spec.selector", "FieldValueRequired", "Required value"))
        elif not (sel.get("matchLabels") or sel.get("matchExpressions")):
            causes.append(("spec.selector", "FieldValueInvalid",
                           "Invalid value: \"null\": empty selector is invalid for deployment"))
        if tmpl is None:
            causes.append(("spec.template", "FieldValueRequired", "Required value"))
        else:
            from .selectors import match_selector_object
            labels = (tmpl.get("metadata") or {}).get("labels") or {}
            if sel and not match_selector_object(sel, labels):
                causes.append(("spec.template.metadata.labels", "FieldValueInvalid",
                               f"Invalid value: {_gomap(labels)}: `selector` does not match template "
                               f"`labels`"))
            _validate_pod_spec(tmpl.get("spec"), "spec.template.spec", causes)
            rp = (tmpl.get("spec") or {}).get("restartPolicy")
            if kind == "Job" and rp not in ("OnFailure", "Never"):
                causes.append(("spec.template.spec.restartPolicy", "FieldValueNotSupported",
                               f'Unsupported value: "{rp}": supported values: "OnFailure", "Never"'))
            elif kind != "Job" and rp not in (None, "Always"):
                causes.append(("spec.template.spec.restartPolicy", "FieldValueNotSupported",
                               f'Unsupported value: "{rp}": supported values: "Always"'))
        rep = spec.get("replicas")
        if rep is not None and (not isinstance(rep, int) or rep < 0):
            causes.append(("spec.replicas", "FieldValueInvalid",
                           f"Invalid value: {rep}: must be greater than or equal to 0"))
        if old is not None and kind != "Job":
            if (old.get("spec") or {}).get("selector") != sel:
                causes.append(("spec.selector", "FieldValueInvalid",
                               f"Invalid value: {_golabelsel(sel)}: field is immutable"))
        if old is not None and kind == "Job":
            if json.dumps((old.get("spec") or {}).get("template"), sort_keys=True) != json.dumps(
                    tmpl, sort_keys=True):
                causes.append(("spec.template", "FieldValueInvalid",
                               "Invalid value: ...: field is immutable"))


def _service(kind: str, obj: dict, old: dict | None, causes: list) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = {}
    ports = spec.get("ports")
    if not ports and spec.get("clusterIP") != "None" and spec.get("type") != "ExternalName":
        causes.append(("spec.ports", "FieldValueRequired", "Required value"))
    for i, p in enumerate(ports or []):
        port = p.get("port") if isinstance(p, dict) else None
        if not isinstance(port, int) or not 1 <= port <= 65535:
            causes.append((f"spec.ports[{i}].port", "FieldValueInvalid",
                           f"Invalid value: {port}: must be between 1 and 65535, inclusive"))
        if len(ports or []) > 1 and isinstance(p, dict) and not p.get("name"):
            causes.append((f"spec.ports[{i}].name", "FieldValueRequired", "Required value"))
    if old is not None and (old.get("spec") or {}).get("clusterIP") not in (None, "") and \
            spec.get("clusterIP") != old["spec"]["clusterIP"]:
        causes.append(("spec.clusterIPs[0]", "FieldValueInvalid",
                       f"Invalid value: []string{{\"{spec.get('clusterIP')}\"}}: may not change once set"))


def _config(kind: str, obj: dict, old: dict | None, causes: list) -> None:
    for fld in ("data", "binaryData"):  # their types (strings, base64) were checked when decoding
        d = obj.get(fld)
        for k in d if isinstance(d, dict) else ():
            if not re.match(r"^[-._a-zA-Z0-9]+$", k):
                causes.append((f"{fld}[{k}]", "FieldValueInvalid",
                               f"Invalid value: \"{k}\": a valid config key must consist of alphanumeric "
                               f"characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or "
                               f"'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"))
    if kind == "Secret" and old is not None and old.get("type") != obj.get("type"):
        causes.append(("type", "FieldValueInvalid", f'Invalid value: "{obj.get("type")}": field is immutable'))
    if old is not None and old.get("immutable") and (old.get("data") != obj.get("data")):
        causes.append(("data", "FieldValueForbidden",
                       "Forbidden: field is immutable when `immutable` is set"))


def _binding(kind: str, obj: dict, old: dict | None, causes: list) -> None:
    if not obj.get("roleRef"):
        causes.append(("roleRef.name", "FieldValueRequired", "Required value"))
    elif old is not None and old.get("roleRef") != obj.get("roleRef"):
        causes.append(("roleRef", "FieldValueInvalid", "Invalid value: cannot change roleRef"))


def _ingress(kind: str, obj: dict, old: dict | None, causes: list) -> None:
    spec = obj.get("spec")
    if isinstance(spec, dict):
        if not spec.get("rules") and not spec.get("defaultBackend"):
            causes.append(("spec.rules", "FieldValueRequired",
                           "Required value: either `defaultBackend` or `rules` must be specified"))


def _crd(kind: str, obj: dict, old: dict | None, causes: list) -> None:
    name = obj["metadata"].get("name", "")
    spec = obj.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    names = spec.get("names") or {}
    for fld in ("group",):
        if not spec.get(fld):
            causes.append((f"spec.{fld}", "FieldValueRequired", "Required value"))
    for fld in ("plural", "kind"):
        if not names.get(fld):
            causes.append((f"spec.names.{fld}", "FieldValueRequired", "Required value"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(("spec.scope", "FieldValueNotSupported",
                       f'Unsupported value: "{spec.get("scope")}": supported values: "Cluster", "Namespaced"'))
    versions = spec.get("versions") or []
    if not versions:
        causes.append(("spec.versions", "FieldValueInvalid", "Invalid value: must have exactly one version "
                                                             "marked as storage version"))
    elif sum(1 for v in versions if v.get("storage")) != 1:
        causes.append(("spec.versions", "FieldValueInvalid",
                       "Invalid value: must have exactly one version marked as storage version"))
    if names.get("plural") and spec.get("group") and name != f"{names['plural']}.{spec['group']}":
        causes.append(("metadata.name", "FieldValueInvalid",
                       f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group'))
    if old is not None and (old.get("spec") or {}).get("group") != spec.get("group"):
        causes.append(("spec.group", "FieldValueInvalid", "Invalid value: field is immutable"))


def _claim(kind: str, obj: dict, old: dict | None, causes: list) -> None:
    spec = obj.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    if not spec.get("accessModes"):
        causes.append(("spec.accessModes", "FieldValueRequired", "Required value: at least 1 access mode "
                                                                  "is required"))
    if not ((spec.get("resources") or {}).get("requests") or {}).get("storage"):
        causes.append(("spec.resources[storage]", "FieldValueRequired", "Required value"))
    if old is not None and old.get("spec", {}).get("volumeName") and \
            spec.get("volumeName") != old["spec"]["volumeName"]:
        causes.append(("spec", "FieldValueForbidden", "Forbidden: spec is immutable after creation except "
                                                      "resources.requests and volumeAttributesClassName for "
                                                      "bound claims"))


_BY_KIND: dict[str, Callable[[str, dict, dict | None, list], None]] = {
    "Pod": _pod, "Deployment": _workload, "ReplicaSet": _workload, "DaemonSet": _workload,
    "StatefulSet": _workload, "Job": _workload, "Service": _service, "ConfigMap": _config, "Secret": _config,
    "RoleBinding": _binding, "ClusterRoleBinding": _binding, "Ingress": _ingress,
    "CustomResourceDefinition": _crd, "PersistentVolumeClaim": _claim,
}


def _gomap(d: dict) -> str:
    return "map[string]string{" + ", ".join(f'"{k}":"{v}"' for k, v in sorted(d.items())) + "}"


def _golabelsel(sel: Any) -> str:
    return "v1.LabelSelector{MatchLabels:" + _gomap((sel or {}).get("matchLabels") or {}) + ", MatchExpressions:[]v1.LabelSelectorRequirement(nil)}"


def _validate_pod_spec(spec: Any, prefix: str, causes: list) -> None:
    if not isinstance(spec, dict):
        causes.append((prefix, "FieldValueRequired", "Required value"))
        return
    containers = spec.get("containers")
    if not containers:
        causes.append((f"{prefix}.containers", "FieldValueRequired", "Required value"))
        return
    seen = set()
    for field in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(field) or []):
            p = f"{prefix}.{field}[{i}]"
            if not isinstance(c, dict):
                causes.append((p, "FieldValueInvalid", "Invalid value: must be an object"))
                continue
            name = c.get("name")
            if not name:
                causes.append((f"{p}.name", "FieldValueRequired", "Required value"))
            elif not DNS1123_LABEL.match(name) or len(name) > 63:
                causes.append((f"{p}.name", "FieldValueInvalid", f'Invalid value: "{name}": {LABEL_MSG}'))
            elif name in seen:
                causes.append((f"{p}.name", "FieldValueDuplicate", f'Duplicate value: "{name}"'))
            seen.add(name)
            if not c.get("image"):
                causes.append((f"{p}.image", "FieldValueRequired", "Required value"))
            for j, port in enumerate(c.get("ports") or []):
                cp = port.get("containerPort") if isinstance(port, dict) else None
                if not isinstance(cp, int) or not 1 <= cp <= 65535:
                    causes.append((f"{p}.ports[{j}].containerPort", "FieldValueInvalid" if cp else
                                   "FieldValueRequired", f"Invalid value: {cp}: must be between 1 and 65535, "
                                   f"inclusive" if cp else "Required value"))
            for j, e in enumerate(c.get("env") or []):
                if not isinstance(e, dict) or not e.get("name"):
                    causes.append((f"{p}.env[{j}].name", "FieldValueRequired", "Required value"))
