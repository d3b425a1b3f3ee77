"""The two other ways the API server meets a wrongly typed value, over the same compiled schema as
schema.py, each with its own messages:

- :func:`apply_errors`: a server-side apply configuration is validated by structured-merge-diff
  (sigs.k8s.io/structured-merge-diff/v6 typed/validate.go and typed/helpers.go): every error, each
  with its path (``.spec.template.spec.containers[name="c"].env[name=true].name``). It also refuses
  fields the schema does not declare, null items of keyed lists, items without their keys and
  duplicate keys, whatever ``fieldValidation`` says.
- :func:`convert_error`: the result of a strategic merge patch is converted from a map into the Go
  type by ``runtime.DefaultUnstructuredConverter`` (k8s.io/apimachinery/pkg/runtime/converter.go
  ``fromUnstructured``): the first error, without a path (``unrecognized type: string``).

Both treat ``null`` as absent, as the real ones do."""

from __future__ import annotations

import json
from typing import Any

from . import gotext
from .schema import ANY, BOOL, BYTES, FLOAT, INT32, INT64, INTSTR, LIST, MAP, QTY, STR, STRUCT, TIME, T

# Defaults of list map keys, which structured-merge-diff uses for items that leave a key out. The
# OpenAPI of a real server declares them (`+default="TCP"` on the ports' protocol; managedFields keys
# such as k:{"containerPort":80,"protocol":"TCP"}); the kubernetes-validate schemas drop defaults.
_KEY_DEFAULTS = {"protocol": "TCP"}


def _vu(val: Any) -> str:
    """``%v`` of a structured-merge-diff value (a ``*valueUnstructured``)."""
    return "&{" + gotext.v(val) + "}"


def _to_string(val: Any) -> str:
    """value.ToString (value/value.go): how a key value shows in a path element."""
    if val is None:
        return "null"
    if isinstance(val, str):
        return gotext.quote(val)
    if isinstance(val, list):
        return "[" + ",".join(_to_string(x) for x in val) + "]"
    if isinstance(val, dict):
        return "".join(f"{k}={_to_string(x)}" for k, x in val.items())
    return gotext.v(val)


def apply_errors(t: T, obj: Any) -> list[str]:
    """The validation errors of an apply configuration, as ``ValidationError.Error()`` prints them."""
    errs: list[tuple[str, str]] = []
    _smd(t, obj, "", errs)
    return [f"{p}: {m}" if p else m for p, m in errs]


def _smd(t: T, val: Any, path: str, errs: list[tuple[str, str]]) -> None:
    # the messages: typed/validate.go validateScalar ("%vexpected string, got %#v", "expected numeric
    # (int or float), got %T", "expected boolean, got %v", "expected any scalar, got %v") and visitMapItems
    # ("field not declared in schema"); typed/helpers.go listValue / mapValue ("expected list, got %v",
    # "expected map, got %v"). The values are *value.valueUnstructured: %v prints &{...}. As seen from
    # real clusters: '.spec.allowedWorkflows[0]: expected string, got &value.valueUnstructured{Value:
    # map[string]interface {}{"kind":"Workflow", ...}}' (openchoreo/openchoreo#2357), '.spec.ingress[0]._from:
    # field not declared in schema' (defenseunicorns/kubernetes-fluent-client#819)
    if val is None:
        return
    k = t.kind
    if k in (STRUCT, MAP):
        if type(val) is not dict:
            errs.append((path, f"expected map, got {_vu(val)}"))
            return
        if k == MAP or not t.fields:  # a map, or a struct without properties: any key
            for key, sub in val.items():
                _smd(t.item or T(ANY), sub, f"{path}.{key}", errs)
            return
        for key, sub in val.items():
            ft = t.fields.get(key)
            if ft is None:  # visitMapItems stops at the first undeclared field
                errs.append((f"{path}.{key}", "field not declared in schema"))
                return
            _smd(ft, sub, f"{path}.{key}", errs)
    elif k == LIST:
        if type(val) is not list:
            errs.append((path, f"expected list, got {_vu(val)}"))
            return
        _smd_list(t, val, path, errs)
    elif k in (STR, BYTES):
        if type(val) is not str:
            errs.append((path, f"expected string, got &value.valueUnstructured{{Value:{gotext.sharp_v(val)}}}"))
    elif k in (INT32, INT64, FLOAT):
        if type(val) not in (int, float):
            errs.append((path, f"expected numeric (int or float), got {gotext.type_of(val)}"))
    elif k == BOOL:
        if type(val) is not bool:
            errs.append((path, f"expected boolean, got {_vu(val)}"))
    elif k in (INTSTR, QTY, TIME):  # "untyped" scalars (kube-openapi schemaconv)
        if type(val) in (dict, list):
            errs.append((path, f"expected any scalar, got {_vu(val)}"))


def _smd_list(t: T, val: list, path: str, errs: list[tuple[str, str]]) -> None:
    item_t = t.item
    assert item_t is not None
    seen: set[str] = set()
    for i, item in enumerate(val):
        if not t.assoc:
            pe = f"[{i}]"
        elif t.keys:  # keyedAssociativeListItemToPathElement
            if item is None:
                errs.append((path, f"element {i}: associative list with keys may not have a null element"))
                return
            if type(item) is not dict:
                errs.append((path, f"element {i}: associative list with keys may not have non-map elements"))
                return
            kv = sorted((key, item[key] if key in item else _KEY_DEFAULTS[key]) for key in t.keys
                        if key in item or key in _KEY_DEFAULTS)
            if not kv:
                keys = "[" + " ".join(gotext.quote(k) for k in t.keys) + "]"
                errs.append((path, f"element {i}: associative list with keys has an element that omits all key "
                                   f"fields {keys} (and doesn't have default values for any key fields)"))
                return
            pe = "[" + ",".join(f"{key}={_to_string(x)}" for key, x in kv) + "]"
        else:  # setItemToPathElement
            problem = ("associative list without keys has an element that's a map type" if type(item) is dict
                       else "not supported: associative list with lists as elements" if type(item) is list
                       else "associative list without keys has an element that's an explicit null"
                       if item is None else None)
            if problem:
                errs.append((path, f"element {i}: {problem}"))
                return
            pe = f"[={_to_string(item)}]"
        if t.assoc:
            if pe in seen:
                errs.append((path, f"duplicate entries for key {pe}"))
            seen.add(pe)
        _smd(item_t, item, path + pe, errs)


# ---------------------------------------------------------------- runtime.DefaultUnstructuredConverter


def convert_error(t: T, val: Any) -> str | None:
    """The error of converting ``val`` (a strategic-merge-patched object) into the Go type."""
    if val is None:
        return None
    k = t.kind
    st = gotext.kind_of(val)
    if k == STRUCT:
        if st != "map":
            return f"cannot restore struct from: {st}"
        for name, ft in t.fields.items():
            if name in val:
                err = convert_error(ft, val[name])
                if err:
                    return err
        return None
    if k in (LIST, MAP):
        if st != ("slice" if k == LIST else "map"):
            return f"cannot restore {'slice' if k == LIST else 'map'} from {st}"
        item = t.item
        assert item is not None
        for sub in (val if k == LIST else val.values()):
            err = convert_error(item, sub)
            if err:
                return err
        return None
    if k == STR:
        return None if st == "string" else "cannot convert int64 to string" if st == "int64" \
            else "unrecognized type: string"
    if k in (INT32, INT64):
        if st == "int64" or (st == "float64" and float(val).is_integer()):
            return None
        return f"cannot convert float64 to {t.go}" if st == "float64" else f"unrecognized type: {t.go}"
    if k == FLOAT:
        return None if st in ("int64", "float64") else "unrecognized type: float64"
    if k == BOOL:
        return None if st == "bool" else "unrecognized type: bool"
    return _convert_custom(k, val, st)


def _convert_custom(k: int, val: Any, st: str) -> str | None:
    """Types with their own JSON decoding get the JSON of the value (reflectcache.go FromUnstructured)."""
    if k == INTSTR:
        if st == "string" or (st in ("int64", "float64") and float(val).is_integer()
                              and -(2 ** 31) <= val < 2 ** 31):
            return None
        what = f"number {json.dumps(val)}" if st in ("int64", "float64") else gotext.json_kind(val)
        return f"json: cannot unmarshal {what} into Go value of type int32"
    if k == QTY:
        return gotext.quantity_error(val if st == "string" else json.dumps(val) if st in ("int64", "float64")
                                     else "{")
    if k == TIME:
        return None if st == "string" else f"json: cannot unmarshal {gotext.json_kind(val)} into Go value of type string"
    if k == BYTES:
        if st == "string":
            err = gotext.base64_error(val)
            return f"error decoding from json: {err}" if err else None
        if st != "slice":
            return f"cannot restore slice from {st}"
        for b in val:  # each into a uint8: ints convert (and wrap), whole floats too
            bt = gotext.kind_of(b) if b is not None else "int64"
            if bt == "float64" and not float(b).is_integer():
                return "cannot convert float64 to uint8"
            if bt not in ("int64", "float64"):
                return "unrecognized type: uint8"
    return None
