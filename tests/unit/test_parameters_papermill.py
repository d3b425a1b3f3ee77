"""The parameters cell is the only declaration of a runbook's parameters, and papermill reads it too
(``papermill.inspect_notebook``, the ``-p`` it injects). The catalogue reads it with its own parser,
without importing papermill (``opsbook list`` and ``--help`` stay fast: papermill's import costs about
2 s here); these tests hold the two readings equal, name for name, so they cannot drift."""

from __future__ import annotations

import ast
from pathlib import Path

import papermill
import pytest
from opsbook import catalog

from ..conftest import FIXTURE_NOTEBOOKS

CATALOGUE = sorted(catalog.catalogue_dir().glob("*.ipynb"))
FIXTURES = sorted(p for p in FIXTURE_NOTEBOOKS.glob("*.ipynb") if p.stem in {"trivial", "encodings"})


@pytest.mark.parametrize("path", CATALOGUE + FIXTURES, ids=lambda p: p.stem)
def test_the_catalogue_reads_the_parameters_cell_as_papermill_does(path: Path):
    rb = catalog.load(path)
    theirs = papermill.inspect_notebook(str(path))
    assert list(theirs) == [p.name for p in rb.spec], "the same names, in the same order"
    for p in rb.spec:
        t = theirs[p.name]
        assert t["inferred_type_name"] == p.type, p.name
        assert ast.literal_eval(t["default"]) == p.default, p.name
        assert t["help"].startswith(p.help.rstrip()), p.name


@pytest.mark.parametrize("path", CATALOGUE, ids=lambda p: p.stem)
def test_the_settings_model_is_the_parameters_cell(path: Path):
    """What ops receive as ``ctx.settings``: one typed, frozen field per parameter, its default the
    notebook's (the ops modules declare no second copy)."""
    rb = catalog.load(path)
    model = rb.spec.settings_model()
    settings = rb.spec.settings(rb.spec.defaults())
    assert list(model.model_fields) == [p.name for p in rb.spec]
    for p in rb.spec:
        assert getattr(settings, p.name) == p.default
    with pytest.raises(Exception, match="frozen"):
        settings.mode = "apply"  # type: ignore[misc]
