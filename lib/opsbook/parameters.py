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
* ``[path]``, ``[path: file]``, ``[path: dir]``  a local path (empty: not given) that must exist (as a
  file, a folder); see "Paths" below
* ``[path-or-yaml]``    inline YAML, or the path of a YAML file: a path when it is one line, does not
  start with ``{`` and ends in ``.yaml``/``.yml`` or names an existing file
* ``[path-or-name]``    a path (``/x``, ``./x``, ``../x``, ``~/x``, ``x.tgz`` or an existing folder) or a
  name looked up elsewhere (a chart in a repository): checked only when it is a path
* ``[required]``        must not be empty
* ``[required-unless: NAME, target.FIELD]``  must not be empty unless one of these is: another
  parameter, or a field of the run's target (``opsbook.targets.Target``)

Validation refuses, before a kernel starts: unknown names (with a suggestion), values that do not
parse as the declared type, values outside the choices or bounds, invalid Kubernetes names, and
literal secret values. Each problem names the parameter, the value (masked when it may be secret)
and what was expected.

Paths (``resolve_paths``): a relative path a caller gives is taken from the caller's working folder
(where ``opsbook run`` was started); a relative default, as written in the parameters cell, from the
notebook's own folder (``chart = "../charts/ml-platform"``). Both are made absolute, and a missing
path is refused, before a kernel starts. In a kernel without the runner (papermill, JupyterLab)
``opsbook.start`` does the same, with the kernel's working folder for values that differ from the
default.
"""

from __future__ import annotations

import ast
import difflib
import io
import os
import re
import tokenize
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsbook.errors import ParameterError, Problem, RunbookError
from opsbook.secrets import SECRETISH_NAME, looks_secret, mask, parse_ref

TYPES = ("str", "int", "float", "bool", "list", "dict")
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_MARKER = re.compile(r"\[(?P<key>choices|k8s-name|secret|min|max|path-or-yaml|path-or-name|path|required-unless|"
                     r"required)(?::\s*(?P<arg>[^\]]*))?\]\s*")
PATH_KINDS = ("any", "file", "dir", "yaml", "name")  # [path], [path: file], [path: dir], [path-or-yaml], [path-or-name]
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
    path: str | None = None  # one of PATH_KINDS: the value (when not empty) is a local path
    required: bool = False
    required_unless: tuple[str, ...] = ()  # other parameters, or target.FIELD, any of which stands in

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
        if self.path:
            return {"any": "the path of an existing file or folder", "file": "the path of an existing file",
                    "dir": "the path of an existing folder",
                    "yaml": "inline YAML, or the path of an existing YAML file",
                    "name": "a name, or the path of an existing folder or .tgz"}[self.path]
        if self.required:
            return "a string, not empty"
        if self.required_unless:
            alts = ", ".join(f"the target's {a[7:]}" if a.startswith("target.") else a for a in self.required_unless)
            return f"a string; required unless one of {alts} is set"
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

    def settings_model(self, name: str = "Settings") -> type[Any]:
        """The typed, frozen settings model of these parameters (pydantic): one field per parameter,
        its type and default as the parameters cell declares them. What ops receive as
        ``ctx.settings``; built once per spec."""
        cached = _MODELS.get(id(self))
        if cached is not None and cached[0] is self:
            return cached[1]
        from typing import Literal

        from pydantic import ConfigDict, Field, create_model

        fields: dict[str, Any] = {}
        for p in self.params.values():  # the cell's type, choices and bounds; its help as the description
            kind: Any = Literal[p.choices] if p.choices and p.type == "str" else _PY_TYPES[p.type]
            fields[p.name] = (kind, Field(p.default, description=p.help or None, ge=p.minimum, le=p.maximum))
        model = create_model(name, __config__=ConfigDict(frozen=True, extra="forbid"), **fields)
        model.__doc__ = "Settings built from the runbook's parameters cell (the only declaration)."
        _MODELS[id(self)] = (self, model)
        return model

    def settings(self, values: dict[str, Any], name: str = "Settings") -> Any:
        """``values`` (already validated) as an instance of :meth:`settings_model`."""
        return self.settings_model(name).model_validate(values)


_PY_TYPES: dict[str, Any] = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict}
_MODELS: dict[int, tuple[ParameterSpec, type[Any]]] = {}


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
            path=_path_kind(markers, where=f"{where}, line {node.lineno}"),
            required="required" in markers,
            required_unless=tuple(x.strip() for x in markers.get("required-unless", "").split(",") if x.strip()),
        )
        if (p.path or p.required or p.required_unless) and type_name != "str":
            raise RunbookError(f"{where}, line {node.lineno}: {name!r}: [path...] and [required...] markers "
                               "apply to str parameters")
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


def _path_kind(markers: dict[str, str], *, where: str) -> str | None:
    if "path-or-yaml" in markers:
        return "yaml"
    if "path-or-name" in markers:
        return "name"
    if "path" not in markers:
        return None
    kind = markers["path"] or "any"
    if kind not in ("any", "file", "dir"):
        raise RunbookError(f"{where}: [path: {kind}]: expected [path], [path: file] or [path: dir]")
    return kind


def path_of(p: ParamSpec, value: Any, base: Path) -> Path | None:
    """The absolute path a ``[path...]`` parameter's value names, taken from ``base`` when relative; None
    when the value is empty, or is inline YAML (``[path-or-yaml]``) or a name (``[path-or-name]``)."""
    if not p.path or not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if p.path == "yaml" and ("\n" in text or text.startswith("{")):
        return None
    candidate = base / Path(text).expanduser()
    try:
        if p.path == "yaml" and candidate.suffix not in (".yaml", ".yml") and not candidate.is_file():
            return None  # a one-line mapping such as `a: 1`
        if p.path == "name" and not (text.startswith(("/", "./", "../", "~")) or text.endswith(".tgz")
                                     or candidate.is_dir()):
            return None  # a chart name in the repository
    except OSError:  # a value longer than a file name may be
        return None
    return Path(os.path.normpath(candidate))


def _path_problem(p: ParamSpec, value: Any, path: Path, base_note: str) -> Problem | None:
    try:
        ok = {"file": path.is_file, "yaml": path.is_file, "dir": path.is_dir}.get(p.path or "", path.exists)()
    except OSError:
        ok = False
    if ok:
        return None
    what = "does not exist" if not path.exists() else "is not a file" if p.path in ("file", "yaml") else \
        "is not a folder"
    return Problem(p.name, _show(p, p.name, value), f"expected {p.describe()}: {path} {what}{base_note}")


def resolve_path(p: ParamSpec, value: Any, *, mine: bool, cwd: Path, notebook_dir: Path) -> tuple[Any, Problem | None]:
    """Before a kernel starts, one ``[path...]`` parameter: what it names must exist. A value the caller
    gave (``mine``) is taken from ``cwd`` (the caller's working folder) and returned absolute, so that
    the kernel (whose working folder is the notebook's) and the record see which file; a default, as
    written in the parameters cell, from ``notebook_dir`` and returned as written (the kernel resolves
    it the same way, ``opsbook.notebook.path_base``; records and approvals compare it as written).
    Returns (the value to use, the problem or None)."""
    mine = mine and value != p.default
    path = path_of(p, value, cwd if mine else notebook_dir)
    if path is None:
        return value, None
    note = "" if os.path.isabs(os.path.expanduser(str(value).strip())) else (
        f" (a relative path is taken from the folder opsbook runs in, {cwd})" if mine else
        f" (the default, relative to the runbook's folder {notebook_dir})")
    problem = _path_problem(p, value, path, note)
    return (str(path) if mine and problem is None else value), problem


def refuse(problems: list[Problem]) -> None:
    """Raise ParameterError listing ``problems``, if there are any."""
    if problems:
        raise ParameterError(problems)


def resolve_paths(spec: ParameterSpec, params: dict[str, Any], *, given: Iterable[str], cwd: Path,
                  notebook_dir: Path) -> dict[str, Any]:
    """``resolve_path`` for every parameter; raises ParameterError listing every missing path."""
    given = set(given)
    out, problems = dict(params), []
    for p in spec:
        out[p.name], problem = resolve_path(p, params.get(p.name), mine=p.name in given, cwd=cwd,
                                            notebook_dir=notebook_dir)
        problems += [problem] if problem else []
    if problems:
        raise ParameterError(problems)
    return out


def check_paths(spec: ParameterSpec, params: dict[str, Any], base_for: Callable[[str, Any], Path]) -> None:
    """In a kernel: every ``[path...]`` parameter names something that exists, relative paths taken
    from ``base_for(name, value)`` (``opsbook.notebook.path_base``). Raises ParameterError."""
    problems = []
    for p in spec:
        value = params.get(p.name)
        path = path_of(p, value, base_for(p.name, value)) if p.path else None
        if path is not None and (problem := _path_problem(p, value, path, "")):
            problems.append(problem)
    if problems:
        raise ParameterError(problems)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def check_required(spec: ParameterSpec, params: dict[str, Any], target: Any) -> None:
    """``[required]`` parameters are not empty; a ``[required-unless: A, target.F]`` one is not empty
    unless parameter A or the target's field F is set. ``target`` is the run's target, or a callable
    returning it (looked up only when needed). Raises ParameterError, before a kernel starts."""
    problems: list[Problem] = []
    for p in spec:
        if not (p.required or p.required_unless) or not _empty(params.get(p.name)):
            continue
        if p.required_unless:
            tgt = target() if callable(target) else target
            if any(not _empty(getattr(tgt, alt[7:], None) if alt.startswith("target.") else params.get(alt))
                   for alt in p.required_unless):
                continue
            alts = " nor ".join(f"the target's {a[7:]}" if a.startswith("target.") else a for a in p.required_unless)
            why = f"required when neither {alts} is set" if len(p.required_unless) > 1 else (
                f"required when {alts} is not set")
        else:
            why = "required"
        problems.append(Problem(p.name, _show(p, p.name, params.get(p.name)), why))
    if problems:
        raise ParameterError(problems)


def assigned_with_parameters(spec: ParameterSpec, history: Any) -> list[str]:
    """The names assigned in the cells the kernel ran alongside the parameters since the last
    ``opsbook.start`` (IPython's input history ``In``, a list of cell sources; the last is the cell
    running now): cells of nothing but ``name = value`` / ``name: type = value`` lines, at least one of
    which sets a declared parameter (the parameters cell as edited, papermill's injected cell). A name
    there that is not a parameter is a typo (``namespace_typo = 3``) or an unsupported one. Empty
    without a history (plain Python)."""
    if not isinstance(history, list) or len(history) < 2:
        return []
    cells = [c for c in history[:-1] if isinstance(c, str)]
    last_start = max((i for i, c in enumerate(cells) if "opsbook.start(" in c), default=-1)
    names: list[str] = []
    for src in cells[last_start + 1:]:
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        assigned = []
        for node in tree.body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                assigned.append(node.target.id)
            elif isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
                assigned.extend(t.id for t in node.targets if isinstance(t, ast.Name))
            else:
                assigned = []
                break
        if any(n in spec for n in assigned):
            names.extend(n for n in assigned if n not in names)
    return names
