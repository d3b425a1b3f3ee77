"""``opsbook new``: a new runbook that works before its author has written a line of it.

A runbook is three files that must agree: the notebook (``notebooks/ID.ipynb``: the prose, the
parameters cell, one call per cell), its ops module (``lib/opsbook/ops/MODULE.py``, MODULE being the
id with ``_`` for ``-``: the notebook API finds the module by that name) and its tests
(``tests/runbooks/test_MODULE.py``). Written from the templates in ``opsbook/templates/runbook/``,
they follow the runbook contract, the tests pass as generated, and ``opsbook run ID`` plans; every
``TODO`` marks what the author replaces (``docs/writing-a-runbook.md``).

The ops module has to be importable as ``opsbook.ops.MODULE``, so it is written into the source tree
opsbook runs from (an editable install of a checkout); from an installed package this refuses, as it
refuses an id that is taken (a notebook, a module or a test file of that name) or that is no Python
module name. The three files are written under temporary names and then put in place together: all
of them, or none.

This is the engine: it never imports :mod:`opsbook.ops` (it only writes a file there).
"""

from __future__ import annotations

import json
import keyword
import os
import secrets
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from opsbook import catalog
from opsbook.errors import UsageError

VERSION = "0.1.0"
#: the source tree this opsbook is imported from (``lib/opsbook/scaffold.py`` -> the checkout)
SOURCE = Path(__file__).resolve().parents[2]
OPS_DIR = Path(__file__).resolve().parent / "ops"
#: names the generated notebook binds itself (a module of that name would shadow them in the kernel)
RESERVED = frozenset({"opsbook", "run", "mode", "target", "namespace", "base", "display", "get_ipython",
                      "exit", "quit", "In", "Out"})


@dataclass(frozen=True)
class Scaffold:
    """What ``opsbook new`` wrote (or would write): the three files and how to go on from there."""

    runbook_id: str
    module: str
    risk: str
    notebook: Path
    ops_module: Path
    test_file: Path
    external: bool = False  # the notebook folder is outside the catalogue: high-risk whatever it declares

    @property
    def files(self) -> tuple[Path, Path, Path]:
        return self.notebook, self.ops_module, self.test_file

    def next_commands(self, cwd: Path | None = None) -> list[str]:
        where = f" --notebooks {shown(self.notebook.parent, cwd)}" if self.external else ""
        return [f"opsbook show {self.runbook_id}{where}", f"opsbook run {self.runbook_id}{where}",
                f"pytest {shown(self.test_file, cwd)}"]


def shown(path: Path, cwd: Path | None = None) -> str:
    """``path`` relative to the working folder when it is under it (what people type), else absolute."""
    try:
        return str(path.resolve().relative_to((cwd or Path.cwd()).resolve()))
    except ValueError:
        return str(path)


def module_name(runbook_id: str) -> str:
    return runbook_id.replace("-", "_")


def plan(runbook_id: str, *, title: str, risk: str, notebooks: str | os.PathLike[str] | None = None) -> Scaffold:
    """Check everything ``create`` needs and say where it would write; raises UsageError (exit 2)."""
    catalog.check_id(runbook_id)
    module = module_name(runbook_id)
    if not module.isidentifier() or keyword.iskeyword(module) or module in RESERVED:
        raise UsageError(f"{runbook_id!r} cannot name a runbook's ops module: opsbook.ops.{module} must be a Python "
                         "module name, starting with a letter, neither a keyword nor a name the notebook binds "
                         f"({', '.join(sorted(RESERVED))}); choose another id")
    if risk not in catalog.RISKS:
        raise UsageError(f"--risk {risk!r}: expected low or high")
    if not title.strip() or any(c in title for c in "\r\n"):
        raise UsageError("--title: expected one non-empty line")
    if not OPS_DIR.is_dir() or SOURCE / "lib" / "opsbook" / "ops" != OPS_DIR:
        raise UsageError(f"opsbook runs from {OPS_DIR.parent}, not from a checkout's lib/opsbook/: a runbook's ops "
                         "module must go into the checkout it is imported from; run `opsbook new` in a checkout "
                         "installed with `pip install -e .`")
    tests_dir = SOURCE / "tests" / "runbooks"
    for folder in (OPS_DIR, tests_dir):
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"{folder}: {'not writable' if folder.is_dir() else 'no such folder'}; "
                             "`opsbook new` writes the runbook's ops module and tests there")
    nbdir = Path(notebooks) if notebooks else catalog.catalogue_dir()
    if not nbdir.is_dir() or not os.access(nbdir, os.W_OK | os.X_OK):
        raise UsageError(f"{nbdir}: {'not writable' if nbdir.is_dir() else 'no such folder'} (the runbook folder)")
    taken = [nbdir / f"{runbook_id}.ipynb", *(d / f"{runbook_id}.ipynb" for d in catalog.trusted_dirs()),
             OPS_DIR / f"{module}.py", OPS_DIR / module, tests_dir / f"test_{module}.py"]
    for path in taken:
        if path.exists():
            raise UsageError(f"runbook {runbook_id!r} already exists: {path} is there; choose another id")
    return Scaffold(runbook_id=runbook_id, module=module, risk=risk, notebook=nbdir / f"{runbook_id}.ipynb",
                    ops_module=OPS_DIR / f"{module}.py", test_file=tests_dir / f"test_{module}.py",
                    external=nbdir.resolve() not in catalog.trusted_dirs())


def create(runbook_id: str, *, title: str, risk: str, objective: str = "",
           notebooks: str | os.PathLike[str] | None = None) -> Scaffold:
    """Write the new runbook's notebook, ops module and tests, all three or none (see the module docstring)."""
    sc = plan(runbook_id, title=title, risk=risk, notebooks=notebooks)
    values = {"runbook_id": runbook_id, "module": sc.module, "title": title.strip(),
              "objective": " ".join(objective.split()) or
              "TODO: one or two sentences: what this runbook achieves, and when to run it.",
              "apply_command": f"`opsbook run {runbook_id} --mode apply`" if risk == "low" else
              f"`opsbook run {runbook_id} --mode apply --approve PLAN_RUN_ID` (high risk: an apply carries out "
              "a plan run that was reviewed)",
              "notebooks": _notebooks_expr(sc.notebook.parent)}
    texts = {sc.notebook: notebook_text(values, risk=risk),
             sc.ops_module: _template("ops.py.tmpl").substitute(values),
             sc.test_file: _template("test.py.tmpl").substitute(values)}
    _write_all(texts)
    return sc


def _template(name: str) -> string.Template:
    return string.Template((resources.files("opsbook") / "templates" / "runbook" / name).read_text(encoding="utf-8"))


def _notebooks_expr(nbdir: Path) -> str:
    """How the generated test names the runbook folder: from the checkout's root when it is inside it."""
    try:
        rel = nbdir.resolve().relative_to(SOURCE)
    except ValueError:
        return f"Path({str(nbdir.resolve())!r})"
    return "ROOT" + "".join(f" / {json.dumps(part)}" for part in rel.parts)


def notebook_text(values: dict[str, str], *, risk: str) -> str:
    """The runbook notebook (nbformat 4, cell ids, no outputs) from ``templates/runbook/notebook.json``."""
    import nbformat
    from nbformat import v4

    spec = json.loads((resources.files("opsbook") / "templates" / "runbook" / "notebook.json")
                      .read_text(encoding="utf-8"))
    nb = v4.new_notebook()
    prefix = values["runbook_id"][:48].rstrip("-")
    for i, cell in enumerate(spec["cells"]):
        source = string.Template("".join(cell["source"])).substitute(values)
        made = v4.new_markdown_cell(source) if cell["cell_type"] == "markdown" else v4.new_code_cell(source)
        made["id"] = f"{prefix}-{i}"
        if cell.get("tags"):
            made["metadata"]["tags"] = list(cell["tags"])
        nb.cells.append(made)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    meta: dict[str, Any] = {
        "title": values["title"], "version": VERSION, "objective": values["objective"], "risk": risk,
        # what the runbook may do on a cluster when it runs there (--on-cluster): the example step's needs
        "rbac": {"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch"]}],
                 "cluster_rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}]}}
    nb.metadata["opsbook"] = meta
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def _write_all(texts: dict[Path, str]) -> None:
    """Write each text to a temporary name next to its file, then link every one into place; a file
    that appeared meanwhile (or any error) removes whatever this call wrote."""
    staged: dict[Path, Path] = {}
    placed: list[Path] = []
    try:
        for dest, text in texts.items():
            tmp = dest.with_name(f".{dest.name}.new-{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask decides, as for any file
            staged[dest] = tmp
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
        for dest, tmp in staged.items():
            try:
                os.link(tmp, dest)  # never replaces a file of that name
            except FileExistsError:
                raise UsageError(f"{dest} appeared while `opsbook new` ran; nothing was written") from None
            except OSError:  # a file system without hard links
                if dest.exists():
                    raise UsageError(f"{dest} appeared while `opsbook new` ran; nothing was written") from None
                os.rename(tmp, dest)
            placed.append(dest)
    except BaseException:
        for path in placed:
            path.unlink(missing_ok=True)
        raise
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
