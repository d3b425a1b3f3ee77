"""Unknown-field detection (server-side field validation) from the official client's models.

The `kubernetes` Python client (a project dependency) carries one pydantic model per API type, with
the JSON name of every field. Walking a request body along those models finds the fields the real
API server would call unknown: with `fieldValidation=Strict` (kubectl's default) that is a 400, with
`Warn` (the server's default) a `Warning` header, with `Ignore` nothing. Types are not checked."""

from __future__ import annotations

import functools
import types
import typing
from typing import Any

_MISSING_MODELS = object()


@functools.lru_cache(maxsize=1)
def _models() -> Any:
    try:
        from kubernetes.client import models
    except ImportError:  # the client is not installed: no field validation
        return _MISSING_MODELS
    return models


def model_for(api_version: str, kind: str) -> type | None:
    models = _models()
    if models is _MISSING_MODELS:
        return None
    group = api_version.rpartition("/")[0]
    version = api_version.rpartition("/")[2].capitalize()
    names = []
    if kind == "Event":
        names = ["CoreV1Event"] if not group else ["EventsV1Event"]
    names.append(f"{version}{kind}")
    for n in names:
        cls = getattr(models, n, None)
        if cls is not None:
            return cls
    return None


@functools.cache
def _fields(model: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, f in getattr(model, "model_fields", {}).items():
        va = f.validation_alias
        key = None
        choices = getattr(va, "choices", None)
        if choices:
            key = choices[0]
        elif isinstance(va, str):
            key = va
        elif f.alias:
            key = f.alias
        out[key or name] = f.annotation
    return out


def _unwrap(ann: Any) -> Any:
    """Optional[X] / Annotated[X, ...] / X | None -> X."""
    while True:
        origin = typing.get_origin(ann)
        if origin is typing.Annotated:
            ann = typing.get_args(ann)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if len(args) == 1:
                ann = args[0]
                continue
            return None  # a real union (int or string): a scalar
        return ann


def _is_model(ann: Any) -> bool:
    return isinstance(ann, type) and hasattr(ann, "model_fields")


def unknown_fields(model: type, value: Any, path: str = "") -> list[str]:
    out: list[str] = []
    if not isinstance(value, dict):
        return out
    known = _fields(model)
    for k, v in value.items():
        p = f"{path}.{k}" if path else k
        if k not in known:
            out.append(p)
            continue
        out += _walk(known[k], v, p)
    return out


def _walk(ann: Any, value: Any, path: str) -> list[str]:
    ann = _unwrap(ann)
    if ann is None:
        return []
    if _is_model(ann):
        return unknown_fields(ann, value, path)
    origin = typing.get_origin(ann)
    if origin in (list, typing.List) and isinstance(value, list):  # noqa: UP006
        (item,) = typing.get_args(ann) or (None,)
        out = []
        for i, v in enumerate(value):
            out += _walk(item, v, f"{path}[{i}]")
        return out
    if origin in (dict, typing.Dict) and isinstance(value, dict):  # noqa: UP006
        args = typing.get_args(ann)
        item = args[1] if len(args) == 2 else None
        out = []
        for k, v in value.items():
            out += _walk(item, v, f"{path}[{k}]")
        return out
    return []


def check(api_version: str, kind: str, obj: dict) -> list[str]:
    """Unknown field paths of ``obj`` (empty when the kind has no model)."""
    model = model_for(api_version, kind)
    if model is None:
        return []
    return unknown_fields(model, obj)
