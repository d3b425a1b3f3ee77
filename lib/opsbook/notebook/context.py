"""Which ops context a runbook's steps get, and where its relative paths are taken from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from opsbook import catalog
from opsbook.runenv import ENV_SOURCE


def _model_name(runbook_id: str) -> str:
    return "".join(w.capitalize() for w in runbook_id.split("-") if w) + "Settings"


def _context_class(runbook_id: str) -> Any:
    """The ``Context`` class of the runbook's ops module (``opsbook.ops.<id with _>``), or the base one
    (a runbook without an ops module of its own, such as a test fixture)."""
    import importlib

    from opsbook.ops.base import Context

    name = "opsbook.ops." + runbook_id.replace("-", "_")
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:  # the module exists and one of its imports is missing: say so
            raise
        return Context
    cls = getattr(module, "Context", Context)
    return cls if isinstance(cls, type) and issubclass(cls, Context) else Context


#: the runbook ``start`` loaded last in this kernel (``path_base`` resolves its relative defaults)
_STARTED: dict[str, catalog.Runbook] = {}


def path_base(name: str, value: Any) -> Path:
    """The folder a relative path in parameter ``name`` is taken from, in the kernel: the runbook's own
    folder for the default as written in its parameters cell (``chart = "../charts/ml-platform"``,
    whatever folder papermill or JupyterLab started the kernel in), else the working folder (a value a
    caller gave; ``opsbook run`` has already made those absolute against the caller's folder)."""
    rb = _STARTED.get("runbook")
    if rb is not None and name in rb.spec:
        return base_for(rb, name, value)
    source = os.environ.get(ENV_SOURCE)
    if source and value:  # no start() in this process: the runner's notebook
        return Path(source).resolve().parent
    return Path.cwd()


def base_for(rb: catalog.Runbook, name: str, value: Any) -> Path:
    """``path_base`` for runbook ``rb``: its folder for a default as written, else the working folder."""
    p = rb.spec.params.get(name)
    return rb.path.resolve().parent if p is not None and value == p.default else Path.cwd()
