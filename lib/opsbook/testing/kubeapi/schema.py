"""The API's types, from the real OpenAPI schema of Kubernetes 1.37, and what decoding a request
body into them finds: wrong field types (400 on a real server) and unknown fields (server-side
field validation, ``fieldValidation`` Strict / Warn / Ignore).

The schema is the one the ``kubernetes-validate`` package ships (its non-strict ``-local`` JSON
schemas: every field and its type; which fields are required is left to validation.py, as the real
server checks that after decoding, with 422). Each (apiVersion, kind) is compiled once, on first
use, into a small tree of :class:`T` shared between kinds; the walks over it (here and in typed.py)
touch every value of a body once. Kinds the schema does not know (custom resources) are not checked.

:func:`decode` is encoding/json decoding the body into the Go type, as the API server does for a
create, an update and the result of a JSON or merge patch: the vendored decoder of sigs.k8s.io/json
(internal/golang/encoding/json/decode.go) keeps the first type error (``UnmarshalTypeError`` with
``Struct.Field`` context, the field path without list indexes), stops at the first error of a custom
decoder (IntOrString, Quantity, Time: ``literalStore`` returns it), accepts ``null`` anywhere, and
reports unknown fields only when the body has no other error (kubernetes_patch.go: their paths
have ``[i]`` for list items and ``.key`` for map keys)."""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
import threading
from pathlib import Path
from typing import Any

from . import gotext

# the Kubernetes version this server emulates (discovery.py answers /version with it)
SCHEMA_DIR = "v1.37.0-local"

STRUCT, LIST, MAP, STR, INT32, INT64, FLOAT, BOOL, BYTES, INTSTR, QTY, TIME, ANY = range(13)
_INT_RANGE = {INT32: (-(2 ** 31), 2 ** 31 - 1), INT64: (-(2 ** 63), 2 ** 63 - 1)}
# types with their own JSON decoding in Go: names in the schema -> what they are here
_SPECIAL = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": INTSTR,
    "io.k8s.apimachinery.pkg.api.resource.Quantity": QTY,
    "io.k8s.apimachinery.pkg.apis.meta.v1.Time": TIME,
    "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime": TIME,
    "io.k8s.apimachinery.pkg.runtime.RawExtension": ANY,
    "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1": ANY,
    "io.k8s.apimachinery.pkg.apis.meta.v1.Patch": ANY,
}
_GO = {STR: "string", INT32: "int32", INT64: "int64", FLOAT: "float64", BOOL: "bool", BYTES: "[]uint8",
       INTSTR: "intstr.IntOrString", QTY: "resource.Quantity", TIME: "v1.Time", ANY: "interface {}"}


class T:
    """One type. ``go`` is its Go name as messages print it (``reflect.Type.String()``); named
    string types (``v1.RestartPolicy``) are not in the schema and print as ``string``."""

    __slots__ = ("kind", "go", "name", "fields", "item", "keys", "assoc")

    def __init__(self, kind: int, go: str = "", name: str = ""):
        self.kind = kind
        self.go = go or _GO.get(kind, "")
        self.name = name  # a struct's own name, for "Go struct field <name>.<path>"
        self.fields: dict[str, T] = {}
        self.item: T | None = None
        self.keys: tuple[str, ...] = ()  # list map keys (x-kubernetes-list-map-keys)
        self.assoc = False  # a list merged by key or as a set (structured-merge-diff "associative")


@functools.cache
def _definitions() -> dict[str, Any] | None:
    # found, not imported: the package's own module pulls in jsonschema, which this does not need
    spec = importlib.util.find_spec("kubernetes_validate")
    try:
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("the package kubernetes-validate is not installed")
        path = Path(next(iter(spec.submodule_search_locations)), "kubernetes-json-schema", SCHEMA_DIR)
        return dict(json.loads((path / "_definitions.json").read_text())["$defs"])
    except (ImportError, OSError) as e:  # the test extras are not installed
        print(f"kubeapi: no OpenAPI schema ({e}); field types and names are not checked", file=sys.stderr)
        return None


def preload() -> None:
    """Read the schema now (some 0.05 s) rather than on the first write; safe from any thread."""
    _gvk_index()


@functools.cache
def _gvk_index() -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for name, d in (_definitions() or {}).items():
        for g in d.get("x-kubernetes-group-version-kind") or ():
            av = f"{g['group']}/{g['version']}" if g.get("group") else g["version"]
            out.setdefault((av, g["kind"]), name)
    return out


_compiled: dict[str, T] = {}


def _named(name: str) -> T:
    t = _compiled.get(name)
    if t is not None:
        return t
    if name in _SPECIAL:
        t = _compiled[name] = T(_SPECIAL[name])
        return t
    d = (_definitions() or {}).get(name) or {}
    if not d.get("type") and not d.get("properties"):  # JSON, JSONSchemaPropsOrArray, ...: anything
        t = _compiled[name] = T(ANY)
        return t
    pkg, _, short = name.rpartition(".")
    t = _compiled[name] = T(STRUCT, f"{pkg.rpartition('.')[2]}.{short}", short)  # before the fields: cycles
    t.fields = {k: _inline(p) for k, p in (d.get("properties") or {}).items()}
    return t


def _inline(p: dict) -> T:
    ref = p.get("$ref")
    if ref:
        return _named(ref.rpartition("/")[2])
    typ = p.get("type")
    if isinstance(typ, list):
        typ = next((x for x in typ if x != "null"), None)
    if typ == "string":
        return T(BYTES if p.get("format") == "byte" else STR)
    if typ == "integer":
        return T(INT64 if p.get("format") == "int64" else INT32)
    if typ == "number":
        return T(FLOAT)
    if typ == "boolean":
        return T(BOOL)
    if typ == "array":
        item = _inline(p.get("items") or {})
        t = T(LIST, "[]" + item.go)
        t.item = item
        _list_kind(t, p)
        return t
    if typ == "object" and isinstance(p.get("additionalProperties"), dict):
        item = _inline(p["additionalProperties"])
        t = T(MAP, "v1.ResourceList" if item.kind == QTY else "map[string]" + item.go)
        t.item = item
        return t
    return T(ANY)


def _list_kind(t: T, p: dict) -> None:
    """structured-merge-diff's reading of a list (kube-openapi pkg/schemaconv/smd.go,
    getListElementRelationship): list-type map/set, else the patch strategy, else atomic."""
    lt = p.get("x-kubernetes-list-type")
    if lt is not None:
        t.assoc = lt in ("map", "set")
        t.keys = tuple(p.get("x-kubernetes-list-map-keys") or ()) if lt == "map" else ()
    elif p.get("x-kubernetes-patch-strategy") in ("merge", "merge,retainKeys"):
        t.assoc = True
        key = p.get("x-kubernetes-patch-merge-key")
        t.keys = (key,) if key else ()


_compiling = threading.Lock()


@functools.cache
def root(api_version: str, kind: str) -> T | None:
    """The compiled type of a kind (None when the schema does not know it); safe from any thread."""
    name = _gvk_index().get((api_version, kind))
    if not name:
        return None
    with _compiling:  # a type is in _compiled before its fields are: nobody may see it half done
        return _named(name)


# ---------------------------------------------------------------- encoding/json


class _Fatal(Exception):
    pass


# what a null becomes once decoded and encoded again: an optional field (a pointer, or omitempty) is
# gone; a map value or list item is its type's zero value; a Time or a RawExtension stays null
_DROP = object()
_ZERO: dict[int, Any] = {STR: "", INT32: 0, INT64: 0, FLOAT: 0, BOOL: False, QTY: "0", INTSTR: 0, STRUCT: {}}


class _Decoder:
    __slots__ = ("saved", "unknown", "nulls")

    def __init__(self) -> None:
        self.saved: str | None = None
        self.unknown: list[str] = []
        self.nulls: list[tuple[Any, Any, Any]] = []  # (map or list, key or index, what replaces the null)

    def _type_error(self, what: str, go: str, owner: str, fields: list[str]) -> str:
        # decode.go UnmarshalTypeError.Error(): "json: cannot unmarshal " + e.Value + " into Go struct field "
        # + e.Struct + "." + e.Field + " of type " + e.Type.String(), Field the joined FieldStack (addErrorContext)
        return f"json: cannot unmarshal {what} into Go struct field {owner}.{'.'.join(fields)} of type {go}"

    def save(self, what: str, go: str, owner: str, fields: list[str]) -> None:
        if self.saved is None:
            self.saved = self._type_error(what, go, owner, fields)

    def walk(self, t: T, val: Any, owner: str, fields: list[str], spath: list) -> None:
        if val is None:
            return
        k = t.kind
        vt = type(val)
        if k == STRUCT:
            if vt is not dict:
                return self.save(gotext.json_kind(val), t.go, owner, fields)
            props = t.fields
            for key, sub in val.items():
                ft = props.get(key)
                if ft is None:
                    self.unknown.append(_strict_path(spath, key))
                    continue
                if sub is None:
                    if ft.kind not in (TIME, ANY):
                        self.nulls.append((val, key, _DROP))
                    continue
                fields.append(key)
                spath.append(key)
                self.walk(ft, sub, t.name, fields, spath)
                fields.pop()
                spath.pop()
        elif k == STR:
            if vt is not str:
                self.save(gotext.json_kind(val), "string", owner, fields)
        elif k in (LIST, MAP):
            if vt is not (list if k == LIST else dict):
                return self.save(gotext.json_kind(val), t.go, owner, fields)
            item = t.item
            assert item is not None
            for i, sub in (enumerate(val) if k == LIST else val.items()):
                if sub is not None:
                    spath.append(i)
                    self.walk(item, sub, owner, fields, spath)
                    spath.pop()
                elif item.kind in _ZERO:
                    self.nulls.append((val, i, _ZERO[item.kind]))
        elif k in (INT32, INT64, FLOAT, BOOL):
            self._scalar(k, val, owner, fields)
        else:
            self._special(k, val, owner, fields)

    def _scalar(self, k: int, val: Any, owner: str, fields: list[str]) -> None:
        vt = type(val)
        if k == BOOL:
            if vt is not bool:
                self.save(gotext.json_kind(val), "bool", owner, fields)
        elif vt is int or (vt is float and k == FLOAT):
            lo_hi = _INT_RANGE.get(k)
            if lo_hi and not lo_hi[0] <= val <= lo_hi[1]:
                self.save(f"number {val}", _GO[k], owner, fields)
        elif vt is float:
            self.save(f"number {gotext.number_text(val)}", _GO[k], owner, fields)
        else:
            self.save(gotext.json_kind(val), _GO[k], owner, fields)

    def _special(self, k: int, val: Any, owner: str, fields: list[str]) -> None:
        vt = type(val)
        if k == INTSTR:  # intstr.go UnmarshalJSON: a string, else json.Unmarshal into int32
            if vt is int and -(2 ** 31) <= val < 2 ** 31 or vt is str:
                return
            what = f"number {gotext.number_text(val)}" if vt in (int, float) else gotext.json_kind(val)
            raise _Fatal(self._type_error(what, "int32", owner, fields))
        if k == QTY:  # quantity.go UnmarshalJSON: ParseQuantity of the JSON text, quotes removed
            text = val if vt is str else gotext.number_text(val) if vt in (int, float) else "{"
            err = gotext.quantity_error(text)
            if err:
                raise _Fatal(err)
        elif k == TIME:  # time.go UnmarshalJSON: json.Unmarshal into a string, then RFC 3339
            if vt is not str:
                raise _Fatal(self._type_error(gotext.json_kind(val), "string", owner, fields))
        elif k == BYTES:  # []byte: a base64 string (or a JSON array of bytes)
            if vt is str:
                err = gotext.base64_error(val)
                if err and self.saved is None:
                    self.saved = err
            elif vt is list:
                for b in val:
                    if b is not None and not (type(b) is int and 0 <= b < 256):
                        what = f"number {gotext.number_text(b)}" if type(b) in (int, float) else gotext.json_kind(b)
                        self.save(what, "uint8", owner, fields)
            else:
                self.save(gotext.json_kind(val), "[]uint8", owner, fields)


def _strict_path(spath: list, key: str) -> str:
    """kubernetes_patch.go's path: ``.name`` for fields and map keys, ``[i]`` for list items."""
    out: list[str] = []
    for p in [*spath, key]:
        out.append(f"[{p}]" if type(p) is int else f".{p}" if out else p)
    return "".join(out)


def decode(t: T, body: dict) -> tuple[str | None, list[str]]:
    """(the decoding error, the unknown field paths) of ``body`` decoded into ``t``. When it decodes,
    its nulls become what the server would store (the object's defaults then apply, as on a real
    server: a ``revisionHistoryLimit: null`` is 10, not null)."""
    d = _Decoder()
    try:
        d.walk(t, body, t.name, [], [])
    except _Fatal as e:
        return str(e), d.unknown
    if d.saved is None:
        for holder, key, new in d.nulls:
            if new is _DROP:
                del holder[key]
            else:
                holder[key] = {} if type(new) is dict else new
    return d.saved, d.unknown
