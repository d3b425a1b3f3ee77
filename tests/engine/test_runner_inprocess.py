"""Runner behaviour that needs to reach inside the process (a broken finalisation step)."""

from __future__ import annotations

import json

import pytest
from opsbook import runner
from opsbook.archive import Archive

from ..conftest import FIXTURE_NOTEBOOKS, FIXTURE_SECRET


def test_a_record_is_kept_even_if_building_it_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("OPSBOOK_FIXTURE_SECRET", FIXTURE_SECRET)

    def broken(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(runner, "_finalize", broken)
    archive = Archive(tmp_path / "out")
    prep = runner.prepare("trivial", {}, notebooks=FIXTURE_NOTEBOOKS)
    outcome = runner.execute(prep, archive=archive)
    assert outcome.status == "failed" and outcome.exit_code == 1
    m = json.loads((outcome.record_dir / "manifest.json").read_text())
    assert "record incomplete: RuntimeError: disk on fire" in m["error"]
    assert m["files"] == {}  # the unredacted notebook is not archived
    assert archive.verify().ok


def test_progress_callback_sees_every_cell(tmp_path, monkeypatch):
    monkeypatch.setenv("OPSBOOK_FIXTURE_SECRET", FIXTURE_SECRET)
    events = []
    prep = runner.prepare("trivial", {"replicas": 4}, notebooks=FIXTURE_NOTEBOOKS)
    outcome = runner.execute(prep, archive=Archive(tmp_path / "out"),
                             progress=lambda ev, i, n, label: events.append((ev, i, n)))
    assert outcome.status == "succeeded"
    n = events[0][2]
    assert [e for e in events if e[0] == "start"] == [("start", i, n) for i in range(n)]
    assert len([e for e in events if e[0] == "complete"]) == n


def test_prepare_rejects_before_anything_runs(tmp_path):
    from opsbook.errors import ParameterError

    with pytest.raises(ParameterError):
        runner.prepare("trivial", {"replicas": "x"}, text_values={"replicas"}, notebooks=FIXTURE_NOTEBOOKS)
    assert not (tmp_path / "out").exists()
