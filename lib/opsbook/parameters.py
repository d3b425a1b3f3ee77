"""Runbook parameters: the spec read from the ``parameters`` cell, and strict validation.

A parameters cell holds one parameter per line, papermill style::

    mode: str = "plan"  # plan records what would change; apply changes it [choices: plan, apply]
    namespace: str = "ml-platform"  # namespace to deploy into [k8s-name]
    db_password: str = "env:DB_PASSWORD"  # database password [secret]
    replicas: int = 2  # instances per model [min: 1]

Types: ``str``, ``int``, ``float``, ``bool``, ``list``, ``dict``. Markers at the end of the help:

* ``[choices: a, b]``   the value must be one of these
* ``[k8s-name]``        a DNS-1123 label (implied for ``namespace`` and ``*_namespace``)
* ``[secret]``          a secret reference (``env:``, ``file:``, ``k8s:``), never a value; may be empty
* ``[min: N]`` / ``[max: N]``  numeric bounds

Validation refuses, before a kernel starts: unknown names (with a suggestion), values that do not
parse as the declared type, values outside the choices or bounds, invalid Kubernetes names, and
literal secret values. Each problem names the parameter, the value (masked when it may be secret)
and what was expected.
"""

from __future__ import annotations

import ast
import difflib
import io
import re
import tokenize
from dataclasses import dataclass, field
from typing import Any

from opsbook.errors import ParameterError, Problem, RunbookError
from opsbook.secrets import SECRETISH_NAME, looks_secret, mask, parse_ref

TYPES = ("str", "int", "float", "bool", "list", "dict")
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_MARKER = re.compile(r"\[(?P<key>choices|k8s-name|secret|min|max)(?::\s*(?P<arg>[^\]]*))?\]\s*")
MODES = ("plan", "apply")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    default: Any
    help: str = ""
    choices: tuple[str, ...] | None = None
    k8s_name: bool = False
    secret: bool = False
    minimum: float | None = None
    maximum: float | None = None

    @property
    def masked(self) -> bool:
        return self.secret or bool(SECRETISH_NAME.search(self.name))

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.secret:
            return "a secret reference (env:NAME, file:PATH or k8s:NAMESPACE/SECRET/KEY)"
        if self.k8s_name:
            return "a Kubernetes name (DNS-1123 label: lowercase letters, digits and '-', at most 63)"
        bounds = ""
        if self.minimum is not None:
            bounds += f" >= {self.minimum:g}"
        if self.maximum is not None:
            bounds += f" <= {self.maximum:g}"
        return {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
                "list": "a list (YAML or JSON)", "dict": "a mapping (YAML or JSON)"}[self.type] + bounds


@dataclass
class ParameterSpec:
    params: dict[str, ParamSpec] = field(default_factory=dict)

    def __iter__(self):
        return iter(self.params.values())

    def __contains__(self, name: str) -> bool:
        return name in self.params

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params.values()}


def _split_help(comment: str) -> tuple[str, dict[str, str]]:
    text = comment.lstrip("#").strip()
    markers: dict[str, str] = {}
    for m in list(_MARKER.finditer(text)):
        markers[m.group("key")] = (m.group("arg") or "").strip()
    help_text = _MARKER.sub("", text).strip()
    return help_text, markers


def parse_parameters_cell(source: str, *, where: str = "parameters cell") -> ParameterSpec:
    """Read the spec from a parameters cell's source. Raises RunbookError on anything else."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise RunbookError(f"{where}: not valid Python: {exc}") from None
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string
    spec = ParameterSpec()
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name = node.target.id
            ann = node.annotation
            type_name = ann.id if isinstance(ann, ast.Name) else (
                ann.value if isinstance(ann, ast.Constant) and isinstance(ann.value, str) else None)
            value_node = node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, type_name, value_node = node.targets[0].id, None, node.value
        else:
            raise RunbookError(f"{where}, line {node.lineno}: only `name: type = default  # help` lines "
                               "are allowed in a parameters cell")
        try:
            default = ast.literal_eval(value_node)
        except ValueError:
            raise RunbookError(f"{where}, line {node.lineno}: the default of {name!r} must be a literal") from None
        if type_name is None:
            type_name = {bool: "bool", int: "int", float: "float", list: "list", dict: "dict"}.get(
                type(default), "str")
        if type_name not in TYPES:
            raise RunbookError(f"{where}, line {node.lineno}: {name!r} has type {type_name!r}; "
                               f"expected one of {', '.join(TYPES)}")
        help_text, markers = _split_help(comments.get(node.lineno, ""))
        choices = tuple(c.strip() for c in markers["choices"].split(",")) if "choices" in markers else None
        if name == "mode" and choices is None:
            choices = MODES
        p = ParamSpec(
            name=name, type=type_name, default=default, help=help_text, choices=choices,
            k8s_name="k8s-name" in markers or name == "namespace" or name.endswith("_namespace"),
            secret="secret" in markers,
            minimum=float(markers["min"]) if "min" in markers else None,
            maximum=float(markers["max"]) if "max" in markers else None,
        )
        if name in spec.params:
            raise RunbookError(f"{where}: parameter {name!r} is declared twice")
        spec.params[name] = p
    # the defaults themselves must be valid and safe
    problems = _check_values(spec, spec.defaults(), from_text=False)
    if problems:
        raise RunbookError(f"{where}: invalid default(s): " + "; ".join(str(p) for p in problems))
    if "mode" in spec.params and spec.params["mode"].default != "plan":
        raise RunbookError(f"{where}: the default mode must be 'plan' (no change is made by default)")
    return spec


def _show(p: ParamSpec | None, name: str, value: Any) -> str:
    if (p is not None and p.masked) or SECRETISH_NAME.search(name) or looks_secret(value):
        return mask(value)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _coerce(p: ParamSpec, value: Any, *, from_text: bool) -> Any:
    """Convert a value to the declared type or raise ValueError(expected)."""
    expected = p.describe()
    t = p.type
    if t == "str":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(expected)
        return str(value)
    if t == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(expected)
    if t == "int":
        if isinstance(value, bool):
            raise ValueError(expected)
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"[-+]?\d+", value.strip()):
            return int(value)
        raise ValueError(expected)
    if t == "float":
        if isinstance(value, bool):
            raise ValueError(expected)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise ValueError(expected) from None
        raise ValueError(expected)
    # list / dict: from text, parse YAML (a superset of JSON)
    if isinstance(value, str) and from_text:
        from opsbook import safeyaml

        try:  # a value over a size, nesting or alias limit is refused outright (YamlLimitExceeded)
            value = safeyaml.load(value, where=f"parameter {p.name}") if value.strip() else (
                [] if t == "list" else {})
        except safeyaml.YamlLimitExceeded:
            raise
        except safeyaml.YamlInputError:
            raise ValueError(expected + ": does not parse as YAML/JSON") from None
    if t == "list" and isinstance(value, list):
        return value
    if t == "dict" and isinstance(value, dict):
        return value
    raise ValueError(expected)


def _check_one(p: ParamSpec, raw: Any, *, from_text: bool) -> tuple[Any, Problem | None]:
    try:
        value = _coerce(p, raw, from_text=from_text)
    except ValueError as exc:
        return None, Problem(p.name, _show(p, p.name, raw), f"expected {exc}")
    if p.choices is not None and str(value) not in p.choices:
        return None, Problem(p.name, _show(p, p.name, raw), "expected one of " + ", ".join(p.choices))
    if p.minimum is not None and isinstance(value, (int, float)) and value < p.minimum:
        return None, Problem(p.name, _show(p, p.name, raw), f"expected a value >= {p.minimum:g}")
    if p.maximum is not None and isinstance(value, (int, float)) and value > p.maximum:
        return None, Problem(p.name, _show(p, p.name, raw), f"expected a value <= {p.maximum:g}")
    if p.k8s_name and isinstance(value, str) and value and (len(value) > 63 or not DNS_1123_LABEL.match(value)):
        return None, Problem(p.name, _show(p, p.name, raw), "expected " + ParamSpec(
            p.name, "str", "", k8s_name=True).describe())
    if p.secret and isinstance(value, str) and value:
        try:
            parse_ref(value)
        except ValueError as exc:
            return None, Problem(p.name, mask(value),
                                 "expected a secret reference (env:NAME, file:PATH or k8s:NAMESPACE/SECRET/KEY), "
                                 f"never a literal value: {exc}")
    elif isinstance(value, str) and looks_secret(value):
        return None, Problem(p.name, mask(value), "looks like a literal secret value; pass a secret "
                             "reference (env:NAME, file:PATH or k8s:NAMESPACE/SECRET/KEY) in a [secret] parameter")
    return value, None


def _check_values(spec: ParameterSpec, values: dict[str, Any], *, from_text: bool) -> list[Problem]:
    problems: list[Problem] = []
    for name, raw in values.items():
        p = spec.params.get(name)
        if p is not None:
            problems.extend(x for x in [_check_one(p, raw, from_text=from_text)[1]] if x)
    return problems


def validate(spec: ParameterSpec, given: dict[str, Any], *, text_values: set[str] | None = None) -> dict[str, Any]:
    """Merge ``given`` over the defaults and validate everything.

    ``text_values`` names the given parameters that arrived as command-line text (``-p NAME VALUE``)
    and may therefore be parsed (``"3"`` for an int, YAML for lists). Raises ParameterError listing
    every problem at once.
    """
    text_values = text_values or set()
    problems: list[Problem] = []
    for name in given:
        if name not in spec.params:
            close = difflib.get_close_matches(name, list(spec.params), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            known = ", ".join(sorted(spec.params)) or "none"
            problems.append(Problem(name, _show(None, name, given[name]),
                                    f"unknown parameter{hint} (known: {known})"))
    result: dict[str, Any] = {}
    for p in spec:
        raw = given.get(p.name, p.default)
        value, problem = _check_one(p, raw, from_text=p.name in text_values)
        if problem:
            problems.append(problem)
        else:
            result[p.name] = value
    if problems:
        raise ParameterError(problems)
    return result


def load_params_file(path: str) -> dict[str, Any]:
    """Read ``-f params.yaml`` (a YAML mapping), within ``opsbook.safeyaml``'s size, nesting and alias limits."""
    from opsbook import safeyaml
    from opsbook.errors import UsageError

    data = safeyaml.load_file(path, where=f"parameters file {path}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"parameters file {path}: expected a mapping of name: value, got {type(data).__name__}")
    return {str(k): v for k, v in data.items()}
