"""Issue 15, "never an apply without a record": an archive that cannot take the record refuses the run
before any kernel starts (exit 2), and every run has a per-cell and a per-run time limit, recorded.

The read-only and full-disk archives are real: a small tmpfs mounted for the test (remounted read-only,
or filled up). Mounting needs root (CAP_SYS_ADMIN); where that is not possible those tests skip, and
``tests/unit/test_archive_snapshot.py`` covers the same checks without a mount.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from opsbook import catalog, runner
from opsbook.records.disk import Archive

from ..conftest import FIXTURE_NOTEBOOKS, FIXTURE_SECRET, OPSBOOK

# ------------------------------------------------------------------------------------------ helpers


@pytest.fixture
def small_fs(tmp_path: Path):
    """``make(name, size)``: a fresh tmpfs of ``size`` (e.g. "8m") mounted at tmp_path/name."""
    mounted: list[Path] = []

    def make(name: str, size: str) -> Path:
        d = tmp_path / name
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(d)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
        mounted.append(d)
        return d

    yield make
    for d in reversed(mounted):
        if subprocess.run(["umount", str(d)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(d)], capture_output=True)


def _remount_ro(d: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(d)], check=True, capture_output=True)


def _fill(d: Path, leave: int) -> None:
    """Fill the file system of ``d`` until about ``leave`` bytes are free (0: completely)."""
    with open(d / "filler", "wb") as f:
        chunk = b"\0" * 4096
        try:
            while shutil.disk_usage(d).free > leave:
                f.write(chunk)
                f.flush()
        except OSError:
            pass  # ENOSPC: full


@pytest.fixture
def marked(tmp_path: Path) -> Path:
    """A notebook folder with runbook ``marked``: the fixture ``passing`` plus a cell that appends its
    mode to ``$OPSBOOK_TEST_MARKERS/<mode>``, i.e. proof that a kernel ran (and an apply changed
    something). Outside the catalogue, so high-risk: an apply needs an approved plan."""
    nb = json.loads((FIXTURE_NOTEBOOKS / "passing.ipynb").read_text().replace('start(\\"passing\\"',
                                                                           'start(\\"marked\\"'))
    start = next(i for i, c in enumerate(nb["cells"]) if "opsbook.start" in "".join(c["source"]))
    nb["cells"].insert(start + 1, {
        "cell_type": "code", "execution_count": None, "id": "marked-marker", "metadata": {}, "outputs": [],
        "source": "import os, pathlib\n"
                  "with open(pathlib.Path(os.environ['OPSBOOK_TEST_MARKERS'], mode), 'a') as f:\n"
                  "    f.write('the kernel ran\\n')\n"})
    d = tmp_path / "nb"
    d.mkdir()
    (d / "marked.ipynb").write_text(json.dumps(nb))
    (tmp_path / "markers").mkdir()
    return d


def _run(*args: str, notebooks: Path, outputs: Path, markers: Path | None = None,
         env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "OPSBOOK_FIXTURE_SECRET": FIXTURE_SECRET, **(env or {})}
    if markers is not None:
        full["OPSBOOK_TEST_MARKERS"] = str(markers)
    return subprocess.run([*OPSBOOK, "run", *args, "--quiet", "--notebooks", str(notebooks), "--outputs",
                           str(outputs)], capture_output=True, text=True, env=full, timeout=timeout)


def _plan(marked: Path, outputs: Path, markers: Path) -> str:
    r = _run("marked", notebooks=marked, outputs=outputs, markers=markers)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (markers / "plan").read_text().count("ran") == 1
    (m,) = [json.loads(p.read_text()) for p in outputs.glob("marked/*/manifest.json")]
    return str(m["run_id"])


def _refused(r: subprocess.CompletedProcess[str], markers: Path, needle: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert "cannot take a record" in r.stderr and needle in r.stderr, r.stderr
    assert not (markers / "apply").exists(), "the apply's kernel ran: its change was made"


# ------------------------------------------------------------------------------------------ archive checks


def test_read_only_outputs_refuse_an_apply_and_a_plan_before_any_kernel(small_fs, marked: Path, tmp_path: Path):
    mnt = small_fs("mnt", "16m")
    outputs, markers = mnt / "outputs", tmp_path / "markers"
    plan_id = _plan(marked, outputs, markers)
    ledger = (outputs / "ledger.jsonl").read_bytes()
    _remount_ro(mnt)

    r = _run("marked", "--mode", "apply", "--approve", plan_id, notebooks=marked, outputs=outputs, markers=markers)
    _refused(r, markers, "Read-only file system")
    r = _run("marked", notebooks=marked, outputs=outputs, markers=markers)  # a plan: refused as well
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert (markers / "plan").read_text().count("ran") == 1  # no second plan kernel either
    assert (outputs / "ledger.jsonl").read_bytes() == ledger
    report = Archive(outputs).verify(signers=None)  # a read-only archive still verifies (no lock needed)
    assert report.ok and report.records == 1, report


def test_missing_outputs_under_a_read_only_folder_exits_2_without_a_traceback(small_fs, marked: Path, tmp_path: Path):
    mnt = small_fs("mnt", "1m")
    _remount_ro(mnt)
    r = _run("marked", notebooks=marked, outputs=mnt / "outputs", markers=tmp_path / "markers")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "cannot create the archive root" in r.stderr
    assert not (tmp_path / "markers" / "plan").exists()


@pytest.mark.parametrize("leave_kb", [0, 200])
def test_an_apply_into_a_full_disk_is_refused_before_any_kernel(small_fs, marked: Path, tmp_path: Path, leave_kb: int):
    mnt = small_fs("mnt", "16m")
    outputs, markers = mnt / "outputs", tmp_path / "markers"
    plan_id = _plan(marked, outputs, markers)
    ledger = (outputs / "ledger.jsonl").read_bytes()
    _fill(mnt, leave_kb * 1024)

    r = _run("marked", "--mode", "apply", "--approve", plan_id, notebooks=marked, outputs=outputs, markers=markers)
    _refused(r, markers, "No space left on device" if leave_kb == 0 else "needed for the record")
    assert (outputs / "ledger.jsonl").read_bytes() == ledger
    (mnt / "filler").unlink()
    assert Archive(outputs).verify(signers=None).ok
    # with the space back, the same approved plan applies (it was not consumed by the refusal)
    r = _run("marked", "--mode", "apply", "--approve", plan_id, notebooks=marked, outputs=outputs, markers=markers)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (markers / "apply").read_text().count("ran") == 1


def test_the_reserve_is_sized_from_the_plan_record(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("OPSBOOK_FIXTURE_SECRET", FIXTURE_SECRET)
    archive = Archive(tmp_path / "out")
    plan = runner.execute(runner.prepare("passing", {}, notebooks=FIXTURE_NOTEBOOKS, archive=archive), archive=archive)
    rec = Path(plan.record_dir)
    size = sum(p.stat().st_size for p in rec.rglob("*") if p.is_file())
    approval = {"plan_run_id": plan.run_id}
    assert runner.record_reserve(archive, {"mode": "apply"}, approval) == 2 * size + runner.RESERVE_FLOOR
    assert runner.record_reserve(archive, {"mode": "apply"}, None) == runner.RESERVE_NO_PLAN
    assert runner.record_reserve(archive, {"mode": "apply"}, {"plan_run_id": "nope"}) == runner.RESERVE_NO_PLAN
    assert runner.record_reserve(archive, {"mode": "plan"}, None) == runner.RESERVE_FLOOR
    assert runner.record_reserve(archive, {}, None) == runner.RESERVE_FLOOR


# ------------------------------------------------------------------------------------------ timeouts


def _manifest(outputs: Path, runbook: str) -> dict:
    (m,) = [json.loads(p.read_text()) for p in outputs.glob(f"{runbook}/*/manifest.json")]
    return m


def test_run_timeout_from_the_target_stops_a_hanging_run(tmp_path: Path):
    targets = tmp_path / "targets.yaml"
    targets.write_text("slow-lane:\n  description: a target with tight limits\n  cell_timeout: 60\n  run_timeout: 2\n")
    outputs = tmp_path / "outputs"
    t0 = time.monotonic()
    r = _run("sleeper", "-p", "seconds", "120", "--target", "slow-lane", notebooks=FIXTURE_NOTEBOOKS,
             outputs=outputs, env={"OPSBOOK_TARGETS": str(targets)})
    took = time.monotonic() - t0
    assert r.returncode == 1, r.stdout + r.stderr
    assert took < 45, f"the run took {took:.0f} s: the run timeout did not stop it"
    assert "run timeout of 2 s exceeded" in r.stdout
    m = _manifest(outputs, "sleeper")
    assert m["status"] == "failed" and m["error"] == "run timeout of 2 s exceeded"
    assert m["timeouts"] == {"cell": 60, "run": 2, "source": {"cell": "target slow-lane", "run": "target slow-lane"}}
    assert m["duration_seconds"] < 30
    assert Archive(outputs).verify(signers=None).ok


def test_default_timeouts_are_recorded(cli, outputs):
    r = cli("run", "trivial", "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    m = _manifest(outputs, "trivial")
    assert m["timeouts"] == {"cell": runner.DEFAULT_CELL_TIMEOUT, "run": runner.DEFAULT_RUN_TIMEOUT,
                             "source": {"cell": "default", "run": "default"}}


def test_cli_timeouts_must_be_positive(cli):
    for flag in ("--run-timeout", "--cell-timeout"):
        r = cli("run", "trivial", flag, "0")
        assert r.returncode == 2 and "at least 1" in r.stderr, r.stderr


@pytest.fixture
def sleeper_meta(tmp_path: Path) -> Path:
    """The fixture ``sleeper`` with metadata ``opsbook.timeouts`` {cell: 120, run: 600}."""
    nb = json.loads((FIXTURE_NOTEBOOKS / "sleeper.ipynb").read_text().replace('start(\\"sleeper\\"',
                                                                           'start(\\"sleeper-meta\\"'))
    nb["metadata"]["opsbook"]["timeouts"] = {"cell": 120, "run": 600}
    d = tmp_path / "nb-meta"
    d.mkdir()
    (d / "sleeper-meta.ipynb").write_text(json.dumps(nb))
    return d


def test_run_timeout_argument_wins_over_the_runbook_metadata(tmp_path: Path, monkeypatch, sleeper_meta: Path):
    monkeypatch.setenv("OPSBOOK_FIXTURE_SECRET", FIXTURE_SECRET)
    prep = runner.prepare("sleeper-meta", {"seconds": 120}, notebooks=sleeper_meta)
    assert (prep.runbook.cell_timeout, prep.runbook.run_timeout) == (120, 600)
    t0 = time.monotonic()
    outcome = runner.execute(prep, archive=Archive(tmp_path / "out"), run_timeout=3)
    assert time.monotonic() - t0 < 40
    assert outcome.status == "failed" and outcome.exit_code == 1
    assert outcome.error == "run timeout of 3 s exceeded"
    assert outcome.manifest["timeouts"] == {
        "cell": 120, "run": 3, "source": {"cell": "runbook sleeper-meta metadata", "run": "--run-timeout"}}


def test_run_timeout_outside_the_main_thread(tmp_path: Path, monkeypatch):
    """No signal handler there: each cell is capped at the run's time left instead."""
    monkeypatch.setenv("OPSBOOK_FIXTURE_SECRET", FIXTURE_SECRET)
    prep = runner.prepare("sleeper", {"seconds": 120}, notebooks=FIXTURE_NOTEBOOKS)
    got: list = []
    t = threading.Thread(target=lambda: got.append(runner.execute(prep, archive=Archive(tmp_path / "out"),
                                                                  run_timeout=4)))
    t0 = time.monotonic()
    t.start()
    t.join(90)
    assert not t.is_alive() and time.monotonic() - t0 < 40
    (outcome,) = got
    assert outcome.status == "failed" and "run timeout of 4 s exceeded" in outcome.error, outcome.error
    assert "time.sleep" in (outcome.failed_cell or {}).get("source", "")


def test_timeout_precedence_and_validation(tmp_path: Path, monkeypatch):
    from dataclasses import replace

    from opsbook.errors import RunbookError, TargetError, UsageError
    from opsbook.targets import Target

    rb = catalog.load(FIXTURE_NOTEBOOKS / "trivial.ipynb")
    prep = runner.Prepared(replace(rb, cell_timeout=30, run_timeout=300), {}, Target(name="t"), None)
    assert runner.effective_timeouts(prep) == {
        "cell": 30, "run": 300, "source": {"cell": "runbook trivial metadata", "run": "runbook trivial metadata"}}
    prep.target = Target(name="t", run_timeout=50)
    assert runner.effective_timeouts(prep, cell_timeout=7) == {
        "cell": 7, "run": 50, "source": {"cell": "--cell-timeout", "run": "target t"}}
    with pytest.raises(UsageError):
        runner.effective_timeouts(prep, run_timeout=0)

    for bad in ({"cell": 0}, {"run": "1h"}, {"cell": True}, {"wall": 5}, [5]):
        nb = json.loads((FIXTURE_NOTEBOOKS / "trivial.ipynb").read_text())
        nb["metadata"]["opsbook"]["timeouts"] = bad
        path = tmp_path / "bad-timeouts.ipynb"
        path.write_text(json.dumps(nb))
        with pytest.raises(RunbookError, match="timeouts"):
            catalog.load(path)

    targets = tmp_path / "targets.yaml"
    targets.write_text("bad:\n  run_timeout: -1\n")
    monkeypatch.setenv("OPSBOOK_TARGETS", str(targets))
    from opsbook.targets import load_all

    with pytest.raises(TargetError):
        load_all()
