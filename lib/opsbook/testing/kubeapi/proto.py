"""Decoding of `application/vnd.kubernetes.protobuf` request bodies.

kubectl's typed clients (`kubectl create namespace|configmap|secret|deployment|...`) send protobuf, not
JSON. This module decodes the envelope (`k8s\\x00` + runtime.Unknown) and the object inside it into the
JSON form, for the kinds those generators create. The field table below is a subset written for this
server: fields not listed are dropped (see README, Known gaps)."""

from __future__ import annotations

import base64
import datetime as _dt
import json
from typing import Any

MAGIC = b"k8s\x00"


class ProtoError(ValueError):
    pass


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ProtoError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) in order."""
    out: list[tuple[int, int, Any]] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        v: Any
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 1:
            v = int.from_bytes(buf[i:i + 8], "little")
            i += 8
        elif wt == 2:
            n, i = _varint(buf, i)
            v = buf[i:i + n]
            i += n
        elif wt == 5:
            v = int.from_bytes(buf[i:i + 4], "little")
            i += 4
        else:
            raise ProtoError(f"unsupported wire type {wt}")
        out.append((num, wt, v))
    return out


def _is_zero(wt: int, v: Any) -> bool:
    """A zero value: 0, an empty string, or a message whose fields are all zero values."""
    if wt in (0, 1, 5):
        return v == 0
    if v == b"":
        return True
    try:
        return all(_is_zero(w, x) for _, w, x in fields(v))
    except (ProtoError, IndexError):
        return False


def _signed(v: int, bits: int = 64) -> int:
    return v - (1 << bits) if v >= 1 << (bits - 1) else v


# message -> {field number: (json name, type, repeated)}
# types: str, int, bool, bytes, time, ios (IntOrString), qty (Quantity), raw (RawExtension),
#        map:str, map:bytes, map:qty, or a message name
S: dict[str, dict[int, tuple[str, str, bool]]] = {
    "TypeMeta": {1: ("apiVersion", "str", False), 2: ("kind", "str", False)},
    "ObjectMeta": {1: ("name", "str", False), 2: ("generateName", "str", False), 3: ("namespace", "str", False),
                   5: ("uid", "str", False), 6: ("resourceVersion", "str", False), 7: ("generation", "int", False),
                   11: ("labels", "map:str", False), 12: ("annotations", "map:str", False),
                   13: ("ownerReferences", "OwnerReference", True), 14: ("finalizers", "str", True)},
    "OwnerReference": {1: ("kind", "str", False), 3: ("name", "str", False), 4: ("uid", "str", False),
                       5: ("apiVersion", "str", False), 6: ("controller", "bool", False),
                       7: ("blockOwnerDeletion", "bool", False)},
    "LabelSelector": {1: ("matchLabels", "map:str", False), 2: ("matchExpressions", "LabelSelectorRequirement", True)},
    "LabelSelectorRequirement": {1: ("key", "str", False), 2: ("operator", "str", False), 3: ("values", "str", True)},
    "Namespace": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "NamespaceSpec", False)},
    "NamespaceSpec": {1: ("finalizers", "str", True)},
    "ConfigMap": {1: ("metadata", "ObjectMeta", False), 2: ("data", "map:str", False),
                  3: ("binaryData", "map:bytes", False), 4: ("immutable", "bool", False)},
    "Secret": {1: ("metadata", "ObjectMeta", False), 2: ("data", "map:bytes", False), 3: ("type", "str", False),
               4: ("stringData", "map:str", False), 5: ("immutable", "bool", False)},
    "ServiceAccount": {1: ("metadata", "ObjectMeta", False), 2: ("secrets", "ObjectReference", True),
                       3: ("imagePullSecrets", "LocalObjectReference", True),
                       4: ("automountServiceAccountToken", "bool", False)},
    "ObjectReference": {1: ("kind", "str", False), 2: ("namespace", "str", False), 3: ("name", "str", False),
                        4: ("uid", "str", False), 5: ("apiVersion", "str", False)},
    "LocalObjectReference": {1: ("name", "str", False)},
    "Deployment": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "DeploymentSpec", False)},
    "DeploymentSpec": {1: ("replicas", "int", False), 2: ("selector", "LabelSelector", False),
                       3: ("template", "PodTemplateSpec", False), 4: ("strategy", "DeploymentStrategy", False),
                       5: ("minReadySeconds", "int", False), 6: ("revisionHistoryLimit", "int", False),
                       7: ("paused", "bool", False), 9: ("progressDeadlineSeconds", "int", False)},
    "DeploymentStrategy": {1: ("type", "str", False), 2: ("rollingUpdate", "RollingUpdateDeployment", False)},
    "RollingUpdateDeployment": {1: ("maxUnavailable", "ios", False), 2: ("maxSurge", "ios", False)},
    "PodTemplateSpec": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "PodSpec", False)},
    "Pod": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "PodSpec", False)},
    "PodSpec": {1: ("volumes", "Volume", True), 2: ("containers", "Container", True), 3: ("restartPolicy", "str", False),
                4: ("terminationGracePeriodSeconds", "int", False), 5: ("activeDeadlineSeconds", "int", False),
                6: ("dnsPolicy", "str", False), 7: ("nodeSelector", "map:str", False),
                8: ("serviceAccountName", "str", False), 9: ("serviceAccount", "str", False),
                10: ("nodeName", "str", False), 11: ("hostNetwork", "bool", False),
                15: ("imagePullSecrets", "LocalObjectReference", True), 16: ("hostname", "str", False),
                17: ("subdomain", "str", False), 19: ("schedulerName", "str", False),
                20: ("initContainers", "Container", True), 22: ("tolerations", "Toleration", True),
                24: ("priorityClassName", "str", False), 30: ("enableServiceLinks", "bool", False)},
    "Volume": {1: ("name", "str", False), 2: ("__inline__", "VolumeSource", False)},
    "VolumeSource": {1: ("hostPath", "HostPathVolumeSource", False), 2: ("emptyDir", "EmptyDirVolumeSource", False),
                     6: ("secret", "SecretVolumeSource", False),
                     10: ("persistentVolumeClaim", "PersistentVolumeClaimVolumeSource", False),
                     19: ("configMap", "ConfigMapVolumeSource", False)},
    "HostPathVolumeSource": {1: ("path", "str", False), 2: ("type", "str", False)},
    "EmptyDirVolumeSource": {1: ("medium", "str", False), 2: ("sizeLimit", "qty", False)},
    "SecretVolumeSource": {1: ("secretName", "str", False), 2: ("items", "KeyToPath", True),
                           3: ("defaultMode", "int", False), 4: ("optional", "bool", False)},
    "ConfigMapVolumeSource": {1: ("__inline__", "LocalObjectReference", False), 2: ("items", "KeyToPath", True),
                              3: ("defaultMode", "int", False), 4: ("optional", "bool", False)},
    "KeyToPath": {1: ("key", "str", False), 2: ("path", "str", False), 3: ("mode", "int", False)},
    "PersistentVolumeClaimVolumeSource": {1: ("claimName", "str", False), 2: ("readOnly", "bool", False)},
    "VolumeMount": {1: ("name", "str", False), 2: ("readOnly", "bool", False), 3: ("mountPath", "str", False),
                    4: ("subPath", "str", False)},
    "Toleration": {1: ("key", "str", False), 2: ("operator", "str", False), 3: ("value", "str", False),
                   4: ("effect", "str", False), 5: ("tolerationSeconds", "int", False)},
    "Container": {1: ("name", "str", False), 2: ("image", "str", False), 3: ("command", "str", True),
                  4: ("args", "str", True), 5: ("workingDir", "str", False), 6: ("ports", "ContainerPort", True),
                  7: ("env", "EnvVar", True), 8: ("resources", "ResourceRequirements", False),
                  9: ("volumeMounts", "VolumeMount", True),
                  13: ("terminationMessagePath", "str", False), 14: ("imagePullPolicy", "str", False),
                  16: ("stdin", "bool", False), 17: ("stdinOnce", "bool", False), 18: ("tty", "bool", False),
                  20: ("terminationMessagePolicy", "str", False)},
    "ContainerPort": {1: ("name", "str", False), 2: ("hostPort", "int", False), 3: ("containerPort", "int", False),
                      4: ("protocol", "str", False), 5: ("hostIP", "str", False)},
    "EnvVar": {1: ("name", "str", False), 2: ("value", "str", False)},
    "ResourceRequirements": {1: ("limits", "map:qty", False), 2: ("requests", "map:qty", False)},
    "Service": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "ServiceSpec", False)},
    "ServiceSpec": {1: ("ports", "ServicePort", True), 2: ("selector", "map:str", False), 3: ("clusterIP", "str", False),
                    4: ("type", "str", False), 5: ("externalIPs", "str", True), 7: ("sessionAffinity", "str", False),
                    10: ("externalName", "str", False), 18: ("clusterIPs", "str", True)},
    "ServicePort": {1: ("name", "str", False), 2: ("protocol", "str", False), 3: ("port", "int", False),
                    4: ("targetPort", "ios", False), 5: ("nodePort", "int", False), 6: ("appProtocol", "str", False)},
    "Job": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "JobSpec", False)},
    "JobSpec": {1: ("parallelism", "int", False), 2: ("completions", "int", False),
                3: ("activeDeadlineSeconds", "int", False), 4: ("selector", "LabelSelector", False),
                5: ("manualSelector", "bool", False), 6: ("template", "PodTemplateSpec", False),
                7: ("backoffLimit", "int", False), 8: ("ttlSecondsAfterFinished", "int", False),
                9: ("completionMode", "str", False), 10: ("suspend", "bool", False)},
    "CronJob": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "CronJobSpec", False)},
    "CronJobSpec": {1: ("schedule", "str", False), 2: ("startingDeadlineSeconds", "int", False),
                    3: ("concurrencyPolicy", "str", False), 4: ("suspend", "bool", False),
                    5: ("jobTemplate", "JobTemplateSpec", False), 6: ("successfulJobsHistoryLimit", "int", False),
                    7: ("failedJobsHistoryLimit", "int", False), 8: ("timeZone", "str", False)},
    "JobTemplateSpec": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "JobSpec", False)},
    "Role": {1: ("metadata", "ObjectMeta", False), 2: ("rules", "PolicyRule", True)},
    "ClusterRole": {1: ("metadata", "ObjectMeta", False), 2: ("rules", "PolicyRule", True)},
    "PolicyRule": {1: ("verbs", "str", True), 2: ("apiGroups", "str", True), 3: ("resources", "str", True),
                   4: ("resourceNames", "str", True), 5: ("nonResourceURLs", "str", True)},
    "RoleBinding": {1: ("metadata", "ObjectMeta", False), 2: ("subjects", "Subject", True),
                    3: ("roleRef", "RoleRef", False)},
    "ClusterRoleBinding": {1: ("metadata", "ObjectMeta", False), 2: ("subjects", "Subject", True),
                           3: ("roleRef", "RoleRef", False)},
    "Subject": {1: ("kind", "str", False), 2: ("apiGroup", "str", False), 3: ("name", "str", False),
                4: ("namespace", "str", False)},
    "RoleRef": {1: ("apiGroup", "str", False), 2: ("kind", "str", False), 3: ("name", "str", False)},
    "Ingress": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "IngressSpec", False)},
    "IngressSpec": {1: ("defaultBackend", "IngressBackend", False), 2: ("tls", "IngressTLS", True),
                    3: ("rules", "IngressRule", True), 4: ("ingressClassName", "str", False)},
    "IngressTLS": {1: ("hosts", "str", True), 2: ("secretName", "str", False)},
    "IngressRule": {1: ("host", "str", False), 2: ("__inline__", "IngressRuleValue", False)},
    "IngressRuleValue": {1: ("http", "HTTPIngressRuleValue", False)},
    "HTTPIngressRuleValue": {1: ("paths", "HTTPIngressPath", True)},
    "HTTPIngressPath": {1: ("path", "str", False), 2: ("backend", "IngressBackend", False),
                        3: ("pathType", "str", False)},
    "IngressBackend": {4: ("service", "IngressServiceBackend", False)},
    "IngressServiceBackend": {1: ("name", "str", False), 2: ("port", "ServiceBackendPort", False)},
    "ServiceBackendPort": {1: ("name", "str", False), 2: ("number", "int", False)},
    "PodDisruptionBudget": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "PodDisruptionBudgetSpec", False)},
    "PodDisruptionBudgetSpec": {1: ("minAvailable", "ios", False), 2: ("selector", "LabelSelector", False),
                                3: ("maxUnavailable", "ios", False)},
    "SelfSubjectAccessReview": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "SelfSubjectAccessReviewSpec", False)},
    "SelfSubjectAccessReviewSpec": {1: ("resourceAttributes", "ResourceAttributes", False),
                                    2: ("nonResourceAttributes", "NonResourceAttributes", False)},
    "ResourceAttributes": {1: ("namespace", "str", False), 2: ("verb", "str", False), 3: ("group", "str", False),
                           4: ("version", "str", False), 5: ("resource", "str", False),
                           6: ("subresource", "str", False), 7: ("name", "str", False)},
    "NonResourceAttributes": {1: ("path", "str", False), 2: ("verb", "str", False)},
    "SelfSubjectRulesReview": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "SelfSubjectRulesReviewSpec", False)},
    "SelfSubjectRulesReviewSpec": {1: ("namespace", "str", False)},
    "SelfSubjectReview": {1: ("metadata", "ObjectMeta", False)},
    # authentication/v1 generated.proto: what `kubectl create token` sends
    "TokenRequest": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "TokenRequestSpec", False)},
    "TokenRequestSpec": {1: ("audiences", "str", True), 3: ("boundObjectRef", "BoundObjectReference", False),
                         4: ("expirationSeconds", "int", False)},
    "BoundObjectReference": {1: ("kind", "str", False), 2: ("apiVersion", "str", False), 3: ("name", "str", False),
                             4: ("uid", "str", False)},
    "HorizontalPodAutoscaler": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "HorizontalPodAutoscalerSpec", False)},
    "HorizontalPodAutoscalerSpec": {1: ("scaleTargetRef", "CrossVersionObjectReference", False),
                                    2: ("minReplicas", "int", False), 3: ("maxReplicas", "int", False),
                                    4: ("metrics", "MetricSpec", True)},
    "CrossVersionObjectReference": {1: ("kind", "str", False), 2: ("name", "str", False),
                                    3: ("apiVersion", "str", False)},
    "MetricSpec": {1: ("type", "str", False), 4: ("resource", "ResourceMetricSource", False)},
    "ResourceMetricSource": {1: ("name", "str", False), 2: ("target", "MetricTarget", False)},
    "MetricTarget": {1: ("type", "str", False), 2: ("value", "qty", False), 3: ("averageValue", "qty", False),
                     4: ("averageUtilization", "int", False)},
    "DeleteOptions": {1: ("gracePeriodSeconds", "int", False), 2: ("preconditions", "Preconditions", False),
                      3: ("orphanDependents", "bool", False), 4: ("propagationPolicy", "str", False),
                      5: ("dryRun", "str", True)},
    "Preconditions": {1: ("uid", "str", False), 2: ("resourceVersion", "str", False)},
}


def _scalar(typ: str, wt: int, v: Any) -> Any:
    if typ == "str":
        return v.decode("utf-8") if isinstance(v, bytes) else str(v)
    if typ == "int":
        return _signed(v) if isinstance(v, int) else 0
    if typ == "bool":
        return bool(v)
    if typ == "bytes":
        return base64.b64encode(v).decode()
    if typ == "time":
        f = dict((n, val) for n, _, val in fields(v))
        return _dt.datetime.fromtimestamp(_signed(f.get(1, 0)), _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if typ == "qty":
        f = dict((n, val) for n, _, val in fields(v))
        return f.get(1, b"").decode()
    if typ == "ios":
        f = dict((n, val) for n, _, val in fields(v))
        if f.get(1, 0) == 1:
            return f.get(3, b"").decode()
        return _signed(f.get(2, 0), 64)
    if typ == "raw":
        f = dict((n, val) for n, _, val in fields(v))
        return json.loads(f.get(1, b"null") or b"null")
    raise ProtoError(f"unknown scalar type {typ}")


_POINTER_BOOLS = {"automountServiceAccountToken", "immutable", "suspend", "manualSelector", "enableServiceLinks",
                  "controller", "blockOwnerDeletion", "orphanDependents"}
_ZERO_INTS = {"hostPort", "minReadySeconds", "nodePort", "generation"}


def decode_message(msg: str, buf: bytes) -> dict:
    schema = S.get(msg)
    out: dict = {}
    if schema is None:
        return out
    for num, wt, v in fields(buf):
        spec = schema.get(num)
        if spec is None:
            # gogo-protobuf writes zero values of non-pointer fields: those we may ignore; anything
            # else would be dropped silently, so refuse it
            if _is_zero(wt, v):
                continue
            raise ProtoError(f"field {num} of {msg} in this protobuf body is not supported by the opsbook "
                             f"test server (send JSON, e.g. kubectl create -f / apply -f)")
        name, typ, repeated = spec
        if typ.startswith("map:"):
            entry = dict((n, val) for n, _, val in fields(v))
            key = entry.get(1, b"").decode()
            out.setdefault(name, {})[key] = _scalar(typ[4:], 2, entry.get(2, b""))
            continue
        if typ in S:
            val = decode_message(typ, v)
            if name == "__inline__":
                out.update(val)
                continue
        else:
            val = _scalar(typ, wt, v)
            # gogo-protobuf writes every non-pointer scalar; JSON (omitempty) leaves the empty ones out
            if val == "" and not repeated:
                continue
            if val is False and name not in _POINTER_BOOLS:
                continue
            if val == 0 and typ == "int" and name in _ZERO_INTS:
                continue
        if repeated:
            out.setdefault(name, []).append(val)
        else:
            out[name] = val
    return out


def decode(body: bytes) -> dict:
    """A protobuf-encoded request body to its JSON form."""
    if not body.startswith(MAGIC):
        raise ProtoError("missing the k8s protobuf magic prefix")
    unknown = fields(body[4:])
    tm: dict = {}
    raw: Any = b""
    for num, _, v in unknown:
        if num == 1:
            tm = decode_message("TypeMeta", v)
        elif num == 2:
            raw = v
    kind = tm.get("kind", "")
    if kind not in S:
        raise ProtoError(f"protobuf bodies of kind {kind!r} are not supported by the opsbook test server; "
                         f"send JSON")
    obj = decode_message(kind, raw)
    if kind != "DeleteOptions":
        obj = {"apiVersion": tm.get("apiVersion"), "kind": kind, **obj}
    return obj
