"""The runbook contract, checked for every notebook in notebooks/ (DESIGN.md: the runbook contract)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from opsbook import catalog

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_runbooks():
    assert NOTEBOOKS, "notebooks/ holds no runbook"


@pytest.fixture(params=NOTEBOOKS, ids=lambda p: p.stem)
def nb(request):
    return request.param, json.loads(request.param.read_text())


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def src(cell):
    return "".join(cell["source"])


def test_loads_as_a_runbook_with_safe_defaults(nb):
    path, _ = nb
    rb = catalog.load(path)  # metadata, exactly one parameters cell, valid spec and defaults
    assert rb.spec.params["mode"].default == "plan"
    assert rb.spec.params["target"].default == "local"
    assert rb.risk in ("low", "high") and rb.objective and rb.title


def test_no_outputs_committed(nb):
    _, data = nb
    for c in code_cells(data):
        assert c.get("outputs") == [] and c.get("execution_count") is None, src(c)[:60]


def test_no_input_calls(nb):
    _, data = nb
    for c in code_cells(data):
        for node in ast.walk(ast.parse(src(c))):
            assert not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "input"), src(c)


def test_setup_cell_starts_the_run_with_this_runbook_id(nb):
    path, data = nb
    setup = [c for c in code_cells(data) if "opsbook.start(" in src(c)]
    assert len(setup) == 1
    assert f'opsbook.start("{path.stem}", globals())' in src(setup[0])


def test_one_library_call_per_cell_each_explained_by_markdown(nb):
    _, data = nb
    cells = data["cells"]
    for i, c in enumerate(cells):
        if c["cell_type"] != "code" or "parameters" in c["metadata"].get("tags", []):
            continue
        tree = ast.parse(src(c))
        statements = [s for s in tree.body if not isinstance(s, (ast.Import, ast.ImportFrom))]
        assert len(statements) == 1, f"cell {i} has {len(statements)} statements: {src(c)[:80]}"
        assert not any(isinstance(s, (ast.FunctionDef, ast.ClassDef, ast.For, ast.While, ast.If, ast.With))
                       for s in tree.body), f"cell {i} holds logic: {src(c)[:80]}"
        assert i > 0 and cells[i - 1]["cell_type"] == "markdown", f"cell {i} has no markdown above it"


def test_first_cell_is_a_title_with_objective(nb):
    _, data = nb
    first = data["cells"][0]
    assert first["cell_type"] == "markdown" and src(first).startswith("# ")
    assert "Objective" in src(first) and "opsbook run" in src(first)
