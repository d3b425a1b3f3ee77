"""The approval gate under attack (issue 15, section 1): every way an adversarial operator found around
it is reproduced here through the real CLI, papermill or the public API, and must be refused."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from opsbook import approval, catalog, cli, runner, signing, targets
from opsbook.errors import ApprovalError
from opsbook.records.disk import Archive
from opsbook.records.ledger import chain_entry

from ..conftest import FIXTURE_NOTEBOOKS, FIXTURE_SECRET, OPSBOOK

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT / "notebooks"


def entries(outputs: Path) -> list[dict]:
    path = outputs / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def planned(cli, outputs):
    """A real, complete plan run of the high-risk fixture; returns its run id."""
    r = cli("run", "highrisk", "--quiet", "-p", "replicas", "4")
    assert r.returncode == 0, r.stderr
    return next(e["run_id"] for e in entries(outputs) if e["mode"] == "plan")


def _low_risk_copy(src: Path, dest_dir: Path, name: str | None = None) -> Path:
    nb = json.loads(src.read_text())
    nb["metadata"]["opsbook"]["risk"] = "low"
    if name:  # its setup cell names its new id
        for c in nb["cells"]:
            c["source"] = "".join(c["source"]).replace(f'opsbook.start("{src.stem}"', f'opsbook.start("{Path(name).stem}"')
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / (name or src.name)
    dest.write_text(json.dumps(nb))
    return dest


# --- 1. a copy of a runbook with `risk: low` ------------------------------------------------------

@pytest.mark.parametrize("how", ["--notebooks", "OPSBOOK_NOTEBOOKS"])
def test_a_low_risk_copy_of_a_catalogue_runbook_cannot_run_under_its_id(cli, outputs, tmp_path, how):
    evil = tmp_path / "evil"
    _low_risk_copy(CATALOGUE / "security-incident-response.ipynb", evil)
    if how == "--notebooks":
        r = cli("run", "security-incident-response", "--mode", "apply", notebooks=evil)
    else:
        r = subprocess.run([*OPSBOOK, "run", "security-incident-response", "--mode", "apply", "--outputs",
                            str(outputs)], capture_output=True, text=True,
                           env={**os.environ, "OPSBOOK_NOTEBOOKS": str(evil)}, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "is in the catalogue" in r.stderr and "cannot run under that id" in r.stderr
    assert entries(outputs) == [] and not (outputs / "security-incident-response").exists()


def test_a_renamed_copy_outside_the_catalogue_is_high_risk_whatever_it_declares(cli, outputs, tmp_path):
    evil = tmp_path / "evil"
    _low_risk_copy(FIXTURE_NOTEBOOKS / "highrisk.ipynb", evil, "quiet-fix.ipynb")
    rb = catalog.get("quiet-fix", evil)
    assert rb.external and rb.risk == "high" and rb.declared_risk == "low"
    r = cli("run", "quiet-fix", "--mode", "apply", notebooks=evil)
    assert r.returncode == 2 and "needs --approve" in r.stderr and "outside the catalogue" in r.stderr
    assert entries(outputs) == []
    # a plan of it is filed under its own id, and says where it came from
    r = cli("run", "quiet-fix", "--quiet", notebooks=evil)
    assert r.returncode == 0, r.stderr
    (rec,) = (outputs / "quiet-fix").iterdir()
    m = json.loads((rec / "manifest.json").read_text())
    assert m["risk"] == "high" and m["runbook_origin"].startswith("outside the catalogue")
    # a copy whose setup cell still names the original's id is refused by its kernel
    nb = json.loads((evil / "quiet-fix.ipynb").read_text())
    for c in nb["cells"]:
        c["source"] = c["source"].replace('opsbook.start("quiet-fix"', 'opsbook.start("highrisk"')
    (evil / "quiet-fix.ipynb").write_text(json.dumps(nb))
    r = cli("run", "quiet-fix", "--quiet", notebooks=evil)
    assert r.returncode == 1 and "calls opsbook.start('highrisk') but runs as 'quiet-fix'" in r.stdout


def test_fixture_and_catalogue_runbooks_keep_their_declared_risk():
    assert catalog.get("passing", FIXTURE_NOTEBOOKS).risk == "low"  # trusted by pyproject [tool.opsbook]
    env_check = catalog.get("environment-check", CATALOGUE)
    assert env_check.risk == "low" and not env_check.external and env_check.origin == "catalogue"


# --- 2/3/4. a plan that is not a real, untampered plan run ----------------------------------------

def test_a_plan_record_forged_through_the_archive_api_is_refused(cli, outputs, tmp_path):
    rb = catalog.get("highrisk", FIXTURE_NOTEBOOKS)
    params = runner.prepare("highrisk", {"replicas": 4}, notebooks=FIXTURE_NOTEBOOKS).params
    forged = {"run_id": "forged-1", "runbook_id": "highrisk", "mode": "plan", "status": "succeeded",
              "source_sha256": rb.sha256, "parameters": params, "operator": "mallory"}
    src = tmp_path / "src"
    src.mkdir()
    Archive(outputs).record(runbook_id="highrisk", run_id="forged-1", source_dir=src, manifest=forged)
    r = cli("run", "highrisk", "--mode", "apply", "--approve", "forged-1", "-p", "replicas", "4")
    assert r.returncode == 2 and "holds no readable notebook" in r.stderr
    # ... also with a notebook in it: the source, never executed
    shutil.copy(FIXTURE_NOTEBOOKS / "highrisk.ipynb", src / "notebook.ipynb")
    Archive(outputs).record(runbook_id="highrisk", run_id="forged-2", source_dir=src,
                            manifest={**forged, "run_id": "forged-2"})
    r = cli("run", "highrisk", "--mode", "apply", "--approve", "forged-2", "-p", "replicas", "4")
    assert r.returncode == 2 and "not a complete plan run" in r.stderr and "never run" in r.stderr
    assert not [e for e in entries(outputs) if e["mode"] == "apply"]


def test_a_plan_made_in_plain_python_without_running_its_steps_is_refused(cli, outputs, monkeypatch):
    import opsbook

    monkeypatch.setenv("OPSBOOK_NOTEBOOKS", str(FIXTURE_NOTEBOOKS))
    monkeypatch.setenv("OPSBOOK_OUTPUTS", str(outputs))
    monkeypatch.setenv("OPSBOOK_FIXTURE_SECRET", FIXTURE_SECRET)
    for var in ("OPSBOOK_SOURCE", "OPSBOOK_EVENTS", "OPSBOOK_RUN_ID", "OPSBOOK_APPROVED_PLAN"):
        monkeypatch.delenv(var, raising=False)
    ns = {"mode": "plan", "target": "local", "namespace": "ml-platform", "replicas": 4,
          "db_password": "env:OPSBOOK_FIXTURE_SECRET"}
    run = opsbook.start("highrisk", ns)
    run.summary(record=True)
    fake = json.loads((run.recorded / "manifest.json").read_text())
    assert fake["status"] == "succeeded" and fake["mode"] == "plan"  # it looks like a plan...
    r = cli("run", "highrisk", "--mode", "apply", "--approve", run.id, "-p", "replicas", "4")
    assert r.returncode == 2 and "not a complete plan run" in r.stderr  # ...but no step of it ran


def test_a_complete_plan_run_is_a_real_plan(planned, outputs):
    rb = catalog.get("highrisk", FIXTURE_NOTEBOOKS)
    recorded = json.loads((outputs / "highrisk" / planned / "notebook.ipynb").read_text())
    assert approval.code_cells_ran(recorded, rb) is None
    recorded["cells"][-1]["execution_count"] = None  # the summary cell did not run
    assert "never run" in approval.code_cells_ran(recorded, rb)


# --- signatures: a rewritten and re-chained tail --------------------------------------------------

def _keygen(path: Path, comment: str) -> signing.Signer:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return signing.Signer.load(path)


def _rechain(outputs: Path, *, edit, signer=None) -> None:
    """What an attacker with write access does: edit one record's manifest, then rewrite its ledger
    entry and every later one so that the chain is consistent again."""
    lines = entries(outputs)
    out, prev = [], None
    for e in lines:
        path = outputs / e["record"] / "manifest.json"
        m = json.loads(path.read_text())
        if edit(m):
            path.chmod(0o644)
            path.write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
        msha = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
        prev = chain_entry(prev=prev, run_id=e["run_id"], runbook_id=e["runbook_id"], manifest=m,
                           manifest_sha256=msha, event=e.get("event"), plan=e.get("plan"), claim=e.get("claim"),
                           signer=signer)
        out.append(prev.to_line())
    ledger = outputs / "ledger.jsonl"
    ledger.write_bytes(b"".join(out))


def test_a_rechained_edit_of_a_plan_passes_plain_verify_but_not_signatures(cli, outputs, tmp_path, monkeypatch):
    key = _keygen(tmp_path / "ci_key", "ci@opsbook")
    mallory = _keygen(tmp_path / "mallory_key", "mallory")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"ci@opsbook {key.public_line()}\n")
    r = cli("run", "highrisk", "--quiet", "-p", "replicas", "4", env={signing.ENV_SIGNING_KEY: str(key.path)})
    assert r.returncode == 0, r.stderr
    plan_id = entries(outputs)[0]["run_id"]
    assert entries(outputs)[0]["sig"]
    trusted = signing.AllowedSigners.load(allowed)
    assert Archive(outputs).verify(signers=trusted).ok

    def to_five(m: dict) -> bool:
        m["parameters"]["replicas"] = 5
        return True

    _rechain(outputs, edit=to_five, signer=mallory)
    unsigned_view = Archive(outputs).verify(signers=None)
    assert unsigned_view.ok  # the rewrite is invisible without an anchor...
    assert any("cannot be detected without --expect-head" in i for i in unsigned_view.info)
    report = Archive(outputs).verify(signers=trusted)
    assert not report.ok and {p.kind for p in report.problems} == {"bad_signature"}  # ...and plain with one
    # --approve refuses it (the CLI in-process, so that the repository's allowed_signers can be the test's)
    monkeypatch.setattr(signing, "allowed_signers_path", lambda: allowed)
    monkeypatch.setenv("OPSBOOK_FIXTURE_SECRET", FIXTURE_SECRET)
    code = cli_main("run", "highrisk", "--mode", "apply", "--approve", plan_id, "-p", "replicas", "5",
                    "--notebooks", str(FIXTURE_NOTEBOOKS), "--outputs", str(outputs))
    assert code == 2
    # unsigned re-chaining is caught too
    _rechain(outputs, edit=lambda m: False, signer=None)
    assert {p.kind for p in Archive(outputs).verify(signers=trusted).problems} == {"unsigned"}


def cli_main(*argv: str) -> int:
    return cli.main(list(argv))


def test_signatures_are_sshsig_that_stock_ssh_keygen_verifies_both_ways(tmp_path):
    key = _keygen(tmp_path / "k", "ops@example")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"ops@example {key.public_line()}\n")
    msg = "ab" * 32
    sig = key.sign(msg)
    (tmp_path / "entry.sig").write_text(signing.armor(sig))
    r = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "ops@example", "-n", signing.NAMESPACE,
                        "-s", str(tmp_path / "entry.sig")], input=msg, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # and a signature made by ssh-keygen is accepted by opsbook
    (tmp_path / "m").write_text(msg)
    subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(tmp_path / "k"), "-n", signing.NAMESPACE,
                    str(tmp_path / "m")], check=True, capture_output=True)
    theirs = (tmp_path / "m.sig").read_text()
    trusted = signing.AllowedSigners.load(allowed)
    assert trusted.check(msg, theirs) == "ops@example"
    with pytest.raises(ValueError, match="does not match"):
        trusted.check("cd" * 32, sig)
    other = _keygen(tmp_path / "o", "other")
    with pytest.raises(ValueError, match="not in allowed_signers"):
        trusted.check(msg, other.sign(msg))
    with pytest.raises(ValueError, match="not signed"):
        trusted.check(msg, None)


def test_verify_says_plainly_that_without_signers_a_rewritten_tail_is_undetectable(cli, outputs):
    assert cli("run", "passing", "--quiet").returncode == 0
    r = cli("verify")
    assert r.returncode == 0 and "cannot be detected without --expect-head" in r.stdout


# --- 5. a personal targets file cannot lower a shared target's guards -----------------------------

def test_a_personal_target_cannot_lower_requires_approval_of_a_shared_one(tmp_path, monkeypatch, outputs):
    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    (project / "targets.yaml").write_text("staging:\n  requires_approval: true\n  production: true\n")
    personal = tmp_path / "mine.yaml"
    personal.write_text("staging:\n  requires_approval: false\n  production: false\n  namespace: mine\n")
    monkeypatch.chdir(project)
    monkeypatch.setenv(targets.ENV_TARGETS, str(personal))
    t = targets.get("staging")
    assert t.requires_approval and t.production and t.namespace == "mine"
    assert str(personal) in t.source and str(project / "targets.yaml") in t.source
    r = subprocess.run([*OPSBOOK, "run", "environment-check", "--mode", "apply", "--target", "staging",
                        "--notebooks", str(CATALOGUE), "--outputs", str(outputs)],
                       capture_output=True, text=True, cwd=project, timeout=60,
                       env={**os.environ, targets.ENV_TARGETS: str(personal)})
    assert r.returncode == 2 and "target staging requires approval" in r.stderr, r.stderr
    assert entries(outputs) == []


def test_the_manifest_says_which_file_defined_the_target(cli, outputs):
    assert cli("run", "passing", "--quiet").returncode == 0
    (rec,) = (outputs / "passing").iterdir()
    assert json.loads((rec / "manifest.json").read_text())["target_source"] == "built-in"


# --- 6. a kernel started by papermill with a faked environment -------------------------------------

def _papermill(tmp_path: Path, outputs: Path, *, extra_env: dict[str, str], params: dict | None = None):
    out = tmp_path / f"out-{time.monotonic_ns()}.ipynb"
    env = {**os.environ, "OPSBOOK_FIXTURE_SECRET": FIXTURE_SECRET, "OPSBOOK_OUTPUTS": str(outputs),
           "OPSBOOK_NOTEBOOKS": str(FIXTURE_NOTEBOOKS), **extra_env}
    args = [sys.executable, "-m", "papermill", str(FIXTURE_NOTEBOOKS / "highrisk.ipynb"), str(out), "-p", "mode",
            "apply", "--cwd", str(FIXTURE_NOTEBOOKS)]
    for k, v in (params or {}).items():
        args += ["-p", k, str(v)]
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=180)
    return r, (json.loads(out.read_text()) if out.exists() else None)


@pytest.mark.slow  # over 10 s on a 2-core machine
def test_papermill_with_a_faked_runner_environment_is_still_gated_and_recorded(cli, outputs, tmp_path, planned):
    fake = {"OPSBOOK_SOURCE": str(FIXTURE_NOTEBOOKS / "highrisk.ipynb"), "OPSBOOK_RUN_ID": "20990101T000000Z-fake00"}
    r, nb = _papermill(tmp_path, outputs, extra_env=fake, params={"replicas": 4})
    assert r.returncode != 0 and "ApprovalError" in (r.stderr + r.stdout)
    outputs_text = json.dumps(nb)
    assert '"changed"' not in outputs_text  # nothing was applied
    # with an approved plan named, the kernel checks it, writes ahead and records the apply itself
    r, nb = _papermill(tmp_path, outputs, extra_env={**fake, "OPSBOOK_APPROVED_PLAN": planned},
                       params={"replicas": 4})
    assert r.returncode == 0, r.stderr[-2000:]
    applies = [e for e in entries(outputs) if e["mode"] == "apply"]
    assert [e.get("event") for e in applies] == ["started", None]
    assert applies[0]["plan"] == applies[1]["plan"] == planned and applies[0]["run_id"] == applies[1]["run_id"]
    assert applies[0]["run_id"] != fake["OPSBOOK_RUN_ID"]  # the faked id was not trusted
    m = json.loads((outputs / applies[1]["record"] / "manifest.json").read_text())
    assert m["status"] == "succeeded" and m["approval"]["plan_run_id"] == planned
    assert [s["outcome"] for s in m["steps"]] == ["ok", "changed", "ok"]
    assert Archive(outputs).verify().ok
    # and that plan is now used up: a second papermill apply is refused before any step
    r, nb = _papermill(tmp_path, outputs, extra_env={**fake, "OPSBOOK_APPROVED_PLAN": planned},
                       params={"replicas": 4})
    assert r.returncode != 0 and "already carried out by apply run " + applies[0]["run_id"] in r.stderr + r.stdout


# --- 7. one plan, one apply ------------------------------------------------------------------------

def test_a_plan_is_consumed_by_its_first_apply(cli, outputs, planned):
    r = cli("run", "highrisk", "--quiet", "--mode", "apply", "--approve", planned, "-p", "replicas", "4")
    assert r.returncode == 0, r.stderr
    first = [e for e in entries(outputs) if e["mode"] == "apply"]
    assert [e.get("event") for e in first] == ["started", None]  # written ahead, then the record
    assert first[0]["plan"] == planned and first[0]["claim"]
    r = cli("run", "highrisk", "--quiet", "--mode", "apply", "--approve", planned, "-p", "replicas", "4")
    assert r.returncode == 2
    assert f"already carried out by apply run {first[0]['run_id']}" in r.stderr
    assert len([e for e in entries(outputs) if e["mode"] == "apply"]) == 2


def test_two_racing_applies_of_one_plan_start_at_most_once(outputs, planned):
    procs = [subprocess.Popen([*OPSBOOK, "run", "highrisk", "--quiet", "--mode", "apply", "--approve", planned,
                               "-p", "replicas", "4", "--notebooks", str(FIXTURE_NOTEBOOKS), "--outputs",
                               str(outputs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OPSBOOK_FIXTURE_SECRET": FIXTURE_SECRET}) for _ in range(3)]
    for p in procs:
        p.communicate(timeout=180)  # waits, and closes its pipes
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2, 2]
    assert len([e for e in entries(outputs) if e.get("event") == "started"]) == 1


def test_the_kernel_refuses_a_consumed_plan_even_if_the_runner_was_bypassed(outputs, planned, monkeypatch):
    a = Archive(outputs)
    a.start_run(runbook_id="highrisk", run_id="20990101T000000Z-first0", plan=planned,
                fields={"mode": "apply", "target": "local"})
    rb = catalog.get("highrisk", FIXTURE_NOTEBOOKS)
    params = runner.prepare("highrisk", {"replicas": 4}, notebooks=FIXTURE_NOTEBOOKS).params
    with pytest.raises(ApprovalError, match="already carried out by apply run 20990101T000000Z-first0"):
        approval.check(a, rb, {**params, "mode": "apply"}, planned, approver="bob")


# --- never an apply without a trace ----------------------------------------------------------------

@pytest.mark.slow
def test_a_killed_apply_shows_as_started_never_finished(cli, outputs):
    env = {**os.environ, "OPSBOOK_FIXTURE_SECRET": FIXTURE_SECRET}
    p = subprocess.Popen([*OPSBOOK, "run", "sleeper", "--mode", "apply", "-p", "seconds", "4", "--notebooks",
                          str(FIXTURE_NOTEBOOKS), "--outputs", str(outputs)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(e.get("event") == "started" for e in entries(outputs)):
        time.sleep(0.1)
    time.sleep(1.5)
    os.killpg(p.pid, signal.SIGKILL)  # the runner and its kernel: no chance to write a record
    p.wait(timeout=30)
    p.stdout.close()
    (started,) = [e for e in entries(outputs) if e.get("event") == "started"]
    report = Archive(outputs).verify()
    assert report.ok and any(f"started, never finished: run {started['run_id']}" in i for i in report.info)
    (last,) = Archive(outputs).history(runbook="sleeper", status="started")
    assert last.run_id == started["run_id"]
    r = cli("history")
    assert started["run_id"] in r.stdout and "started" in r.stdout


def test_an_approval_hashes_only_the_plans_files_but_the_whole_ledger(tmp_path):
    from ..unit.test_archive import _manifest, _source

    a = Archive(tmp_path / "o", fsync=False)
    for rid in ("plan-a", "other-b"):
        a.record(runbook_id="rb", run_id=rid, source_dir=_source(tmp_path, rid), manifest=_manifest(rid))
    other = tmp_path / "o" / "rb" / "other-b" / "notebook.html"
    other.chmod(0o644)
    other.write_text("tampered")
    assert a.verify(only="plan-a", signers=None).ok  # another record's files are not hashed for an approval
    assert {p.record for p in a.verify(signers=None).problems} == {"other-b"}
    mine = tmp_path / "o" / "rb" / "plan-a" / "notebook.html"
    mine.chmod(0o644)
    mine.write_text("tampered")
    assert {p.record for p in a.verify(only="plan-a", signers=None).problems} == {"plan-a"}


# --- apply what was planned (issue 16, section 3) ---------------------------------------------------

def test_an_apply_takes_the_plans_parameters_and_shows_both_values_when_they_differ(cli, outputs, planned):
    r = cli("run", "highrisk", "--quiet", "--mode", "apply", "--approve", planned, "-p", "replicas", "5")
    assert r.returncode == 2 and "replicas: plan 4, apply 5" in r.stderr
    r = cli("run", "highrisk", "--quiet", "--mode", "apply", "--approve", planned)  # no -p: the plan's
    assert r.returncode == 0, r.stderr
    (rec,) = [p for p in (outputs / "highrisk").iterdir()
              if json.loads((p / "manifest.json").read_text())["mode"] == "apply"]
    assert json.loads((rec / "manifest.json").read_text())["parameters"]["replicas"] == 4


def test_saving_a_runbook_unchanged_keeps_its_plans_valid_an_edit_does_not(cli, outputs, tmp_path):
    d = tmp_path / "nb"
    _low_risk_copy(FIXTURE_NOTEBOOKS / "highrisk.ipynb", d, "walk.ipynb")
    path = d / "walk.ipynb"
    r = cli("run", "walk", "--quiet", notebooks=d)
    assert r.returncode == 0, r.stderr
    plan_id = next(e["run_id"] for e in entries(outputs) if e["mode"] == "plan")
    # what JupyterLab's Ctrl-S does to an unedited notebook: kernelspec display name, language_info,
    # cell ids, key order and indentation change; the cells and the opsbook metadata do not
    nb = json.loads(path.read_text())
    nb["metadata"]["kernelspec"]["display_name"] = "Python 3 (ipykernel)"
    nb["metadata"]["language_info"] = {"name": "python", "version": "3.11.2", "mimetype": "text/x-python"}
    for i, c in enumerate(nb["cells"]):
        c["id"] = f"saved-{i}"
        c["source"] = c["source"].splitlines(keepends=True)  # as a list of lines, as Jupyter writes it
    path.write_text(json.dumps(nb, indent=1, sort_keys=True))
    before = catalog.get("walk", d)
    assert before.sha256 != json.loads(next((outputs / "walk").iterdir()).joinpath("manifest.json").read_text())[
        "source_sha256"]  # the bytes changed...
    # (a low-risk copy outside the catalogue is high-risk: its apply needs the plan)
    r = cli("run", "walk", "--quiet", "--mode", "apply", "--approve", plan_id, notebooks=d)
    assert r.returncode == 0, r.stderr  # ...what the run executes did not
    # an edited cell invalidates the next plan's approval
    r = cli("run", "walk", "--quiet", notebooks=d)
    plan2 = [e["run_id"] for e in entries(outputs) if e["mode"] == "plan"][-1]
    nb["cells"][-2]["source"] = ['run.check("Replicas positive", replicas > 1)']
    path.write_text(json.dumps(nb, indent=1))
    r = cli("run", "walk", "--quiet", "--mode", "apply", "--approve", plan2, notebooks=d)
    assert r.returncode == 2 and "its cells or opsbook metadata differ" in r.stderr
