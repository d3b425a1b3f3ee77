"""The runbook catalogue: the notebooks in ``notebooks/``; a runbook's id is its file stem.

Each notebook carries metadata ``opsbook`` (title, version, objective, risk) and exactly one cell
tagged ``parameters``. Reading the catalogue parses JSON only: no kernel, no papermill.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opsbook.errors import RunbookError, RunbookNotFound
from opsbook.parameters import ParameterSpec, parse_parameters_cell

RISKS = ("low", "high")
ENV_NOTEBOOKS = "OPSBOOK_NOTEBOOKS"
ENV_OUTPUTS = "OPSBOOK_OUTPUTS"


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

    @property
    def high_risk(self) -> bool:
        return self.risk == "high"


def load(path: Path) -> Runbook:
    """Read one runbook notebook, checking the runbook contract's static parts."""
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
    return Runbook(id=path.stem, path=path, title=str(meta["title"]), version=str(meta["version"]),
                   objective=str(meta["objective"]), risk=str(meta["risk"]), spec=spec,
                   parameters_cell=tagged[0], sha256=hashlib.sha256(raw).hexdigest())


def discover(directory: Path | None = None) -> list[Path]:
    d = directory or notebooks_dir()
    if not d.is_dir():
        return []
    return sorted(p for p in d.glob("*.ipynb") if not p.name.startswith("."))


def get(runbook_id: str, directory: Path | None = None) -> Runbook:
    d = directory or notebooks_dir()
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
