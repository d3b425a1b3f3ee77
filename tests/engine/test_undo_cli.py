"""``opsbook undo`` through the real CLI, where no cluster is needed: what it refuses before any
kernel, an apply with nothing to undo, the list of applies that can be undone, and what a failed apply
says. Each runbook's undo against the Kubernetes API is in ``tests/runbooks``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ..conftest import ROOT

NOTEBOOKS = ROOT / "notebooks"


def _opsbook(*args: str, outputs: Path, notebooks: Path = NOTEBOOKS) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "opsbook", *args, "--outputs", str(outputs), "--notebooks", str(notebooks)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=180, env={**os.environ, "COLUMNS": "200"})


def _manifests(outputs: Path, runbook: str) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in (outputs / runbook).glob("*/manifest.json")),
                  key=lambda m: m["started"])


def test_undo_refuses_an_unknown_run_and_a_plan_before_any_kernel(tmp_path):
    out = tmp_path / "outputs"
    r = _opsbook("run", "environment-check", outputs=out)
    assert r.returncode == 0, r.stdout + r.stderr
    (plan,) = _manifests(out, "environment-check")
    r = _opsbook("undo", "20261205T000000Z-000000", outputs=out)
    assert r.returncode == 2 and "no record of run 20261205T000000Z-000000" in r.stderr, r.stderr
    r = _opsbook("undo", plan["run_id"], outputs=out)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"undo {plan['run_id']}: that is a plan run of environment-check; only an apply" in r.stderr
    assert not (out / "undo").exists()  # refused before any run


def test_an_apply_that_changed_nothing_has_nothing_to_undo_and_the_undo_lists_what_can_be(tmp_path):
    out = tmp_path / "outputs"
    r = _opsbook("run", "environment-check", "--mode", "apply", outputs=out)
    assert r.returncode == 0, r.stdout + r.stderr
    (applied,) = _manifests(out, "environment-check")
    r = _opsbook("undo", applied["run_id"], outputs=out)
    assert r.returncode == 1, r.stdout + r.stderr
    (m,) = _manifests(out, "undo")
    assert m["undoes"] == applied["run_id"] and m["target"] == "local" and m["mode"] == "plan"
    pre = next(s for s in m["steps"] if s["kind"] == "preflight")
    assert pre["outcome"] == "failed" and "the apply recorded no change that can be undone" in pre["summary"]
    # without undo_of: the applies of this target, newest first, with how many changes each can undo
    r = _opsbook("run", "undo", outputs=out)
    assert r.returncode == 0, r.stdout + r.stderr
    listing = _manifests(out, "undo")[-1]
    step = next(s for s in listing["steps"] if s["id"] == "applies")
    assert step["outcome"] == "ok" and "undoes" not in listing
    assert [(x["run id"], x["runbook"], x["changes"], x["cannot be undone"]) for x in step["rows"]] == [
        (applied["run_id"], "environment-check", 0, "")]
    assert step["summary"] == ("0 of the 1 newest applies on target local can be undone (`opsbook undo RUN_ID`); "
                               "1 recorded nothing that can be taken back, or were undone already (see the table)")
    assert {s["id"]: s["outcome"] for s in listing["steps"]}["reverse"] == "skipped"
    # the site links the apply and its undo both ways
    r = _opsbook_site(out, tmp_path / "site")
    assert r.returncode == 0, r.stdout + r.stderr
    undo_page = (tmp_path / "site" / "runs" / f"{m['run_id']}.html").read_text()
    apply_page = (tmp_path / "site" / "runs" / f"{applied['run_id']}.html").read_text()
    assert "takes back apply" in undo_page and applied["run_id"] in undo_page
    assert m["run_id"] in apply_page and "(plan, failed)" in apply_page


def _opsbook_site(outputs: Path, dest: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "opsbook", "site", "--out", str(dest), "--outputs", str(outputs)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=180)


def test_a_failed_apply_that_changed_nothing_says_so(tmp_path):
    from ..conftest import FIXTURE_NOTEBOOKS

    out = tmp_path / "outputs"
    r = _opsbook("run", "failing", "--mode", "apply", outputs=out, notebooks=FIXTURE_NOTEBOOKS)
    assert r.returncode == 1
    assert "This apply changed nothing that its record can undo." in r.stdout
    assert "opsbook undo" not in r.stdout


def test_undo_help_fits_80_columns():
    r = subprocess.run([sys.executable, "-m", "opsbook", "undo", "--help"], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "COLUMNS": "80"})
    assert r.returncode == 0 and "UNDO_PLAN_ID" in r.stdout
    assert [line for line in r.stdout.splitlines() if len(line) > 80] == []


def test_an_undo_apply_needs_its_own_approved_plan_and_a_tampered_record_is_not_undone(tmp_path):
    """The undo is gated like any high-risk apply: no --approve, or the plan of another apply's undo,
    is refused before any kernel; and an apply record edited after the fact fails the undo's
    preflight (its hashes no longer verify), so nothing it names is acted on."""
    out = tmp_path / "outputs"
    for _ in range(2):
        r = _opsbook("run", "environment-check", "--mode", "apply", outputs=out)
        assert r.returncode == 0, r.stdout + r.stderr
    first, second = _manifests(out, "environment-check")
    r = _opsbook("undo", first["run_id"], "--mode", "apply", outputs=out)
    assert r.returncode == 2 and "needs --approve PLAN_RUN_ID" in r.stderr, r.stderr
    _opsbook("undo", second["run_id"], outputs=out)  # a plan of the undo of the other apply (it fails: nothing
    other_plan = _manifests(out, "undo")[-1]          # to undo; a failed plan is refused as well)
    r = _opsbook("undo", first["run_id"], "--mode", "apply", "--approve", other_plan["run_id"], outputs=out)
    assert r.returncode == 2 and f"--approve {other_plan['run_id']}" in r.stderr, r.stderr
    assert [m["mode"] for m in _manifests(out, "undo")] == ["plan"]  # nothing ran in apply mode
    record = next((out / "environment-check").glob(f"{first['run_id']}*"))
    manifest = record / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["operator"] = "someone-else"
    manifest.write_text(json.dumps(doc))
    r = _opsbook("undo", first["run_id"], outputs=out)
    assert r.returncode == 1, r.stdout + r.stderr
    pre = next(s for s in _manifests(out, "undo")[-1]["steps"] if s["kind"] == "preflight")
    assert pre["outcome"] == "failed" and "apply record: manifest_modified" in pre["summary"]
