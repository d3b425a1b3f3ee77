from __future__ import annotations

import json

import pytest
from opsbook import catalog
from opsbook.errors import RunbookError, RunbookNotFound

from ..conftest import FIXTURE_NOTEBOOKS


def test_fixture_catalogue_loads():
    books = {rb.id: rb for rb in catalog.all_runbooks(FIXTURE_NOTEBOOKS)}
    assert {"passing", "failing", "sleeper", "leaky", "highrisk"} <= set(books)
    assert books["highrisk"].high_risk and not books["passing"].high_risk
    assert books["passing"].spec.params["replicas"].default == 2


def test_unknown_runbook_suggests(tmp_path):
    with pytest.raises(RunbookNotFound, match="did you mean 'passing'"):
        catalog.get("pasing", FIXTURE_NOTEBOOKS)


def _write(tmp_path, name, nb):
    p = tmp_path / f"{name}.ipynb"
    p.write_text(json.dumps(nb))
    return p


def _nb(meta=None, cells=None):
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {"opsbook": meta} if meta is not None else {},
            "cells": cells if cells is not None else [
                {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": 'mode: str = "plan"',
                 "outputs": [], "execution_count": None}]}


GOOD_META = {"title": "T", "version": "1", "objective": "O", "risk": "low"}


@pytest.mark.parametrize("nb,message", [
    (_nb(None), "no 'opsbook' section"),
    (_nb({"title": "T"}), "lacks version, objective, risk"),
    (_nb({**GOOD_META, "risk": "medium"}), "expected low or high"),
    (_nb(GOOD_META, cells=[]), "0 cells are tagged"),
])
def test_contract_violations(tmp_path, nb, message):
    with pytest.raises(RunbookError, match=message):
        catalog.load(_write(tmp_path, "x", nb))


def test_two_parameters_cells_rejected(tmp_path):
    cell = {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "a: int = 1", "outputs": [],
            "execution_count": None}
    with pytest.raises(RunbookError, match="2 cells are tagged"):
        catalog.load(_write(tmp_path, "x", _nb(GOOD_META, cells=[cell, cell])))


def test_not_json(tmp_path):
    p = tmp_path / "bad.ipynb"
    p.write_text("{not json")
    with pytest.raises(RunbookError, match="not a valid notebook"):
        catalog.load(p)
    assert isinstance(catalog.all_runbooks(tmp_path)[0], RunbookError)
