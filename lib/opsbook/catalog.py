"""The runbook catalogue: the notebooks in ``notebooks/``; a runbook's id is its file stem.

Each notebook carries metadata ``opsbook`` (title, version, objective, risk) and exactly one cell
tagged ``parameters``. Reading the catalogue parses JSON only: no kernel, no papermill.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opsbook.errors import RunbookError, RunbookNotFound
from opsbook.parameters import ParameterSpec, parse_parameters_cell

RISKS = ("low", "high")
ENV_NOTEBOOKS = "OPSBOOK_NOTEBOOKS"
ENV_OUTPUTS = "OPSBOOK_OUTPUTS"


# A runbook id (a notebook's file stem): a DNS-1123 label, so that it is also a valid archive folder
# name and Kubernetes label value (on-cluster runs label their Job with it).
RUNBOOK_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
RUNBOOK_ID_RULE = "lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63"


def check_id(runbook_id: str, *, path: Path | None = None) -> str:
    """``runbook_id`` if it is a valid runbook id, else InvalidRunbookId (a UsageError: exit 2).
    ``path``: the notebook it is the stem of, named in the error."""
    from opsbook.errors import InvalidRunbookId

    if not isinstance(runbook_id, str) or not RUNBOOK_ID.match(runbook_id):
        where = f"{path}: " if path is not None else ""
        raise InvalidRunbookId(f"{where}{runbook_id!r} is not a valid runbook id ({RUNBOOK_ID_RULE})"
                               + ("; rename the notebook" if path is not None else ""))
    return runbook_id


def _is_path(runbook_id: str) -> bool:
    return any(c in runbook_id for c in "/\\") or ".." in runbook_id or runbook_id.endswith(".ipynb")


def project_root(start: Path | None = None) -> Path:
    """The nearest folder (from ``start``, default the cwd, upwards) that has a ``notebooks/`` folder;
    failing that, the source tree opsbook is installed from (editable install); failing that, cwd."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "notebooks").is_dir():
            return d
    src = Path(__file__).resolve().parents[2]
    if (src / "notebooks").is_dir():
        return src
    return here


def catalogue_dir() -> Path:
    """The catalogue: the ``notebooks/`` of the opsbook source tree (the repository, for an editable
    install), else of the project found from the working folder (the image's ``/app``). Risk, RBAC
    and approval rules are taken from the notebooks here as declared. Any other folder
    (``--notebooks``, ``$OPSBOOK_NOTEBOOKS``, a path) is outside it: its notebooks are high-risk
    whatever their metadata says, and one that reuses a catalogue runbook's id is refused."""
    src = Path(__file__).resolve().parents[2] / "notebooks"
    return src if src.is_dir() else project_root() / "notebooks"


def catalogue_root() -> Path:
    """The project the catalogue belongs to (its ``allowed_signers``, ``targets.yaml``)."""
    return catalogue_dir().resolve().parent


def trusted_dirs() -> list[Path]:
    """The catalogue, plus the folders the project's own ``pyproject.toml`` lists under
    ``[tool.opsbook] trusted-notebooks`` (paths relative to it: reviewed like code, e.g. test
    fixtures). No environment variable adds to this list."""
    root = catalogue_root()
    out = [catalogue_dir().resolve()]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        import tomllib

        try:
            extra = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {}).get("opsbook", {}).get(
                "trusted-notebooks", [])
        except (OSError, ValueError):
            extra = []
        out += [(root / rel).resolve() for rel in extra if isinstance(rel, str)]
    return out


def in_catalogue(path: Path) -> bool:
    return path.resolve().parent in trusted_dirs()


def notebooks_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit)
    if os.environ.get(ENV_NOTEBOOKS):
        return Path(os.environ[ENV_NOTEBOOKS])
    return project_root() / "notebooks"


def outputs_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit)
    if os.environ.get(ENV_OUTPUTS):
        return Path(os.environ[ENV_OUTPUTS])
    return project_root() / "outputs"


def cell_source(cell: dict[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


# The Kubernetes verbs a runbook's RBAC may name (``opsbook.rbac``); "*" is refused: least privilege
# means saying which verbs.
RBAC_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "bind",
              "escalate", "impersonate")


@dataclass(frozen=True)
class RbacRule:
    """One RBAC PolicyRule a runbook needs (``apiGroups``, ``resources``, ``verbs``, optional
    ``resourceNames``), as declared in the notebook metadata ``opsbook.rbac``."""

    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    resource_names: tuple[str, ...] = ()

    def as_k8s(self) -> dict[str, Any]:
        out: dict[str, Any] = {"apiGroups": list(self.api_groups), "resources": list(self.resources),
                               "verbs": list(self.verbs)}
        if self.resource_names:
            out["resourceNames"] = list(self.resource_names)
        return out


@dataclass(frozen=True)
class RbacSpec:
    """What a runbook may do on a cluster when it runs there (``opsbook run --on-cluster``):
    ``rules`` are granted in the namespace the runbook acts on (a Role), ``cluster_rules`` cluster-wide
    (a ClusterRole: namespaces, nodes, cluster roles and bindings, reads across namespaces)."""

    rules: tuple[RbacRule, ...] = ()
    cluster_rules: tuple[RbacRule, ...] = ()


def parse_rbac(data: Any, *, where: str) -> RbacSpec:
    """Validate metadata ``opsbook.rbac``: ``{"rules": [RULE...], "cluster_rules": [RULE...]}``, each RULE
    ``{"apiGroups": [...], "resources": [...], "verbs": [...], "resourceNames": [...]?}``. Wildcards
    are refused, so that the declaration stays a reviewable least-privilege list."""
    if not isinstance(data, dict):
        raise RunbookError(f"{where}: opsbook.rbac must be a mapping with 'rules' and 'cluster_rules' lists")
    unknown = sorted(set(data) - {"rules", "cluster_rules"})
    if unknown:
        raise RunbookError(f"{where}: opsbook.rbac has unknown key(s) {', '.join(unknown)} "
                           "(expected rules, cluster_rules)")
    out: dict[str, tuple[RbacRule, ...]] = {}
    for key in ("rules", "cluster_rules"):
        items = data.get(key, [])
        if not isinstance(items, list):
            raise RunbookError(f"{where}: opsbook.rbac.{key} must be a list of rules")
        rules = []
        for i, r in enumerate(items):
            at = f"{where}: opsbook.rbac.{key}[{i}]"
            if not isinstance(r, dict):
                raise RunbookError(f"{at}: a rule is a mapping of apiGroups, resources, verbs")
            extra = sorted(set(r) - {"apiGroups", "resources", "verbs", "resourceNames"})
            if extra:
                raise RunbookError(f"{at}: unknown field(s) {', '.join(extra)}")
            fields: dict[str, tuple[str, ...]] = {}
            for name in ("apiGroups", "resources", "verbs", "resourceNames"):
                v = r.get(name, [])
                if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                    raise RunbookError(f"{at}: {name} must be a list of strings")
                if "*" in v:
                    raise RunbookError(f"{at}: {name} contains '*'; name what the runbook needs")
                fields[name] = tuple(v)
            if not fields["apiGroups"] or not fields["resources"] or not fields["verbs"]:
                raise RunbookError(f"{at}: apiGroups, resources and verbs must each name at least one entry "
                                   "(the core group is \"\")")
            bad = sorted(set(fields["verbs"]) - set(RBAC_VERBS))
            if bad:
                raise RunbookError(f"{at}: unknown verb(s) {', '.join(bad)} (known: {', '.join(RBAC_VERBS)})")
            rules.append(RbacRule(fields["apiGroups"], fields["resources"], fields["verbs"], fields["resourceNames"]))
        out[key] = tuple(rules)
    return RbacSpec(rules=out["rules"], cluster_rules=out["cluster_rules"])


def parse_timeouts(data: Any, *, where: str) -> tuple[int | None, int | None]:
    """Validate metadata ``opsbook.timeouts``: ``{"cell": SECONDS, "run": SECONDS}``, both optional,
    whole numbers of at least 1. A target's timeouts and --cell-timeout/--run-timeout win over these."""
    if not isinstance(data, dict):
        raise RunbookError(f"{where}: opsbook.timeouts must be a mapping like {{\"cell\": 1800, \"run\": 14400}}")
    unknown = sorted(set(data) - {"cell", "run"})
    if unknown:
        raise RunbookError(f"{where}: opsbook.timeouts has unknown key(s) {', '.join(map(str, unknown))} "
                           "(expected cell, run)")
    out: list[int | None] = []
    for key in ("cell", "run"):
        v = data.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise RunbookError(f"{where}: opsbook.timeouts.{key} is {v!r}; expected whole seconds, at least 1")
        out.append(v)
    return out[0], out[1]


@dataclass(frozen=True)
class Runbook:
    id: str
    path: Path
    title: str
    version: str
    objective: str
    risk: str
    spec: ParameterSpec
    parameters_cell: int
    sha256: str
    rbac: RbacSpec | None = None  # None: the runbook declares no RBAC and cannot run --on-cluster
    external: bool = False  # outside the catalogue: high-risk whatever its metadata declares
    declared_risk: str = ""  # the metadata's risk (differs from ``risk`` for an external notebook)
    cell_timeout: int | None = None  # metadata opsbook.timeouts.cell: seconds a cell may run
    run_timeout: int | None = None  # metadata opsbook.timeouts.run: seconds a whole run may take
    content_sha256: str = ""  # what a run executes: see content_digest (``sha256`` is the file's bytes)

    @property
    def high_risk(self) -> bool:
        return self.risk == "high"

    @property
    def origin(self) -> str:
        return f"outside the catalogue ({self.path.parent})" if self.external else "catalogue"


def content_digest(nb: dict[str, Any]) -> str:
    """sha256 of what a run of the notebook executes and is judged by: each cell's type and source
    (markdown included: it is the runbook's prose) and the ``opsbook`` metadata. Not the file's bytes:
    saving it in JupyterLab without an edit (kernelspec display name, language_info, cell ids, key
    order, indentation, outputs) changes the file, not this. An approval compares this digest."""
    doc = {"cells": [[c.get("cell_type"), cell_source(c)] for c in nb.get("cells", [])],
           "opsbook": nb.get("metadata", {}).get("opsbook")}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def load(path: Path) -> Runbook:
    """Read one runbook notebook, checking the runbook contract's static parts."""
    check_id(path.stem, path=path)  # before anything else: the archive and the record need a valid id
    raw = path.read_bytes()
    try:
        nb = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RunbookError(f"{path}: not a valid notebook (JSON error: {exc})") from None
    meta = nb.get("metadata", {}).get("opsbook")
    if not isinstance(meta, dict):
        raise RunbookError(f"{path}: notebook metadata has no 'opsbook' section (title, version, objective, risk)")
    missing = [k for k in ("title", "version", "objective", "risk") if not meta.get(k)]
    if missing:
        raise RunbookError(f"{path}: metadata 'opsbook' lacks {', '.join(missing)}")
    if meta["risk"] not in RISKS:
        raise RunbookError(f"{path}: metadata opsbook.risk is {meta['risk']!r}; expected low or high")
    cells = nb.get("cells", [])
    tagged = [i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise RunbookError(f"{path}: {len(tagged)} cells are tagged 'parameters'; exactly one is required")
    spec = parse_parameters_cell(cell_source(cells[tagged[0]]), where=f"{path.name}: parameters cell")
    rbac = parse_rbac(meta["rbac"], where=str(path)) if "rbac" in meta else None
    external = not in_catalogue(path)
    if external and any((d / path.name).is_file() for d in trusted_dirs()):
        from opsbook.errors import RunbookOutsideCatalogue

        raise RunbookOutsideCatalogue(f"{path}: runbook {path.stem!r} is in the catalogue ({catalogue_dir()}); a notebook of "
                         "the same id outside it cannot run under that id (its record would pass for the "
                         "catalogue's): rename it, or change the catalogue's notebook through review")
    cell_timeout, run_timeout = parse_timeouts(meta["timeouts"], where=str(path)) if "timeouts" in meta else (None, None)
    return Runbook(id=path.stem, path=path, title=str(meta["title"]), version=str(meta["version"]),
                   objective=str(meta["objective"]), risk="high" if external else str(meta["risk"]), spec=spec,
                   parameters_cell=tagged[0], sha256=hashlib.sha256(raw).hexdigest(), rbac=rbac,
                   external=external, declared_risk=str(meta["risk"]), cell_timeout=cell_timeout,
                   run_timeout=run_timeout, content_sha256=content_digest(nb))


def discover(directory: Path | None = None) -> list[Path]:
    d = directory or notebooks_dir()
    if not d.is_dir():
        return []
    return sorted(p for p in d.glob("*.ipynb") if not p.name.startswith("."))


def get(runbook_id: str, directory: Path | None = None) -> Runbook:
    d = directory or notebooks_dir()
    if _is_path(runbook_id):
        from opsbook.errors import InvalidRunbookId

        raise InvalidRunbookId(f"{runbook_id!r}: a runbook id is an id, never a path (the notebook's file name "
                               "without .ipynb; choose the folder with --notebooks DIR)")
    path = d / f"{runbook_id}.ipynb"
    if not path.is_file():
        known = [p.stem for p in discover(d)]
        import difflib

        close = difflib.get_close_matches(runbook_id, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RunbookNotFound(f"no runbook {runbook_id!r} in {d}{hint} (known: {', '.join(known) or 'none'})")
    return load(path)


def all_runbooks(directory: Path | None = None) -> list[Runbook | RunbookError]:
    """Every runbook in the folder; a notebook that breaks the contract is returned as its error."""
    out: list[Runbook | RunbookError] = []
    for p in discover(directory):
        try:
            out.append(load(p))
        except RunbookError as exc:
            out.append(exc)
    return out
