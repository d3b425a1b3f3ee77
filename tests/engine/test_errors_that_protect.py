"""Errors that protect (issue 16, section 2), through the real CLI: a mistyped archive, incident, bundle,
target, webhook reference or file parameter is refused with exit 2 and one line saying what is
missing, before anything runs or is created."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import FIXTURE_NOTEBOOKS, OPSBOOK, ROOT

NOTEBOOKS = ROOT / "notebooks"


def opsbook(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("OPSBOOK_OUTPUTS", "OPSBOOK_NOTIFY", *unset)}
    full.update(env or {})
    return subprocess.run([*OPSBOOK, *args], capture_output=True, text=True, env=full, cwd=cwd, timeout=180)


# -- read verbs never create an archive --------------------------------------------------------------------

READ_VERBS = [("verify",), ("history",), ("incident", "INC-42"), ("evidence", "INC-42", "--out", "x.tar.gz"),
              ("site", "--out", "x")]


@pytest.mark.parametrize("verb", READ_VERBS, ids=lambda v: v[0])
def test_read_verbs_refuse_a_missing_archive_and_create_nothing(tmp_path, verb):
    typo = tmp_path / "typo"
    r = opsbook(*verb, "--outputs", str(typo), cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip() == f"opsbook: no archive at {typo} (from --outputs): nothing has been recorded there yet"
    assert "OK" not in r.stdout and not typo.exists()
    r = opsbook(*verb, cwd=tmp_path, env={"OPSBOOK_OUTPUTS": str(typo)})
    assert r.returncode == 2 and f"no archive at {typo} (from $OPSBOOK_OUTPUTS)" in r.stderr, r.stderr
    assert not typo.exists() and not (tmp_path / "x.tar.gz").exists()


def test_the_default_archive_of_a_project_without_runs_is_missing_too(tmp_path):
    (tmp_path / "notebooks").mkdir()  # the project root, whose outputs/ has never had a run
    r = opsbook("verify", cwd=tmp_path)
    assert r.returncode == 2 and f"no archive at {tmp_path / 'outputs'} (from the default outputs/" in r.stderr, r.stderr
    assert not (tmp_path / "outputs").exists()


def test_run_still_creates_the_archive(cli, outputs):
    assert not outputs.exists()
    assert cli("run", "trivial", "--quiet").returncode == 0
    r = cli("verify")
    assert r.returncode == 0 and "OK: 1 record(s)" in r.stdout, r.stdout + r.stderr


# -- say what is missing -----------------------------------------------------------------------------------

def test_incident_without_runs_says_so(tmp_path):
    archive = tmp_path / "outputs"
    archive.mkdir()
    for extra in ((), ("--json",)):
        r = opsbook("incident", "INC-42", "--outputs", str(archive), *extra)
        assert r.returncode == 2, r.stdout + r.stderr
        assert r.stderr.strip() == f"opsbook: no archived run has incident_id 'INC-42' in {archive}"
        assert r.stdout == ""


def test_evidence_verify_of_a_missing_or_foreign_file(tmp_path):
    r = opsbook("evidence", "--verify", "missing.tar.gz", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == "opsbook: no such bundle: missing.tar.gz", r.stderr
    junk = tmp_path / "junk.tar.gz"
    junk.write_text("not a tar at all\n")
    r = opsbook("evidence", "--verify", str(junk))
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip() == f"opsbook: {junk}: not a tar.gz bundle (it does not open as a tar archive)"


# -- targets: one line, and only the target in use breaks a run ----------------------------------------------

def test_a_typo_in_one_target_breaks_only_that_target(cli, outputs, tmp_path):
    tfile = tmp_path / "targets.yaml"
    tfile.write_text("staging:\n  kube_contxt: staging-admin\nother:\n  namespace: ml\n")
    env = {"OPSBOOK_TARGETS": str(tfile)}
    line = f"targets file {tfile}: target 'staging': unknown field 'kube_contxt' (did you mean 'kube_context'?)"
    for target in ("local", "other"):
        r = cli("run", "trivial", "--quiet", "--target", target, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
    r = cli("run", "trivial", "--quiet", "--target", "staging", env=env)
    assert r.returncode == 2 and r.stderr.strip() == f"opsbook: {line}", r.stderr
    assert "pydantic" not in r.stderr and "https://" not in r.stderr
    r = opsbook("targets", env={**env, "COLUMNS": "300"})
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"invalid {line}" in r.stdout.splitlines()
    assert "other" in r.stdout and "pydantic" not in r.stdout


# -- --notify references are checked before the run ----------------------------------------------------------

@pytest.mark.parametrize("dest,needle", [
    ("slack:env:OPSBOOK_TEST_UNSET_HOOK", "--notify slack:env:OPSBOOK_TEST_UNSET_HOOK: environment variable "
                                          "OPSBOOK_TEST_UNSET_HOOK is not set"),
    ("generic:file:no-such-hook", "--notify generic:file:no-such-hook: "),
])
def test_an_unresolvable_notify_reference_is_refused_before_the_run(tmp_path, dest, needle):
    outputs = tmp_path / "outputs"
    r = opsbook("run", "trivial", "--notebooks", str(FIXTURE_NOTEBOOKS), "--outputs", str(outputs), "--notify", dest,
                cwd=tmp_path, unset=("OPSBOOK_TEST_UNSET_HOOK",))
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"opsbook: {needle}"), line
    assert not outputs.exists()  # nothing ran, nothing was created


# -- file parameters: the caller's folder, checked before the kernel ---------------------------------------------

def test_a_missing_file_parameter_is_refused_before_the_kernel(tmp_path):
    r = opsbook("run", "initial-kubernetes-deployment", "--outputs", str(tmp_path / "o"),
                "-p", "values_overrides", "my-values.yaml", "-p", "chart", "./my-chart", cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert (f"values_overrides: got 'my-values.yaml'; expected inline YAML, or the path of an existing YAML file: "
            f"{tmp_path / 'my-values.yaml'} does not exist") in r.stderr
    assert f"chart: got './my-chart'; expected a name, or the path of an existing folder or .tgz: {tmp_path / 'my-chart'}" \
        in r.stderr
    r = opsbook("run", "deploy-new-model", "--outputs", str(tmp_path / "o"), "-p", "version", "2",
                "-p", "metrics_file", "canary.csv", cwd=tmp_path)
    assert r.returncode == 2 and f"{tmp_path / 'canary.csv'} does not exist" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").rglob("manifest.json"))


@pytest.mark.slow
def test_a_relative_file_parameter_is_taken_from_the_callers_folder(tmp_path):
    (tmp_path / "vals.yaml").write_text("services:\n  critic:\n    replicas: 3\n")
    outputs = tmp_path / "o"
    r = opsbook("run", "initial-kubernetes-deployment", "--outputs", str(outputs), "--quiet",
                "-p", "values_overrides", "vals.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    (m,) = [json.loads(p.read_text()) for p in outputs.rglob("manifest.json")]
    assert m["parameters"]["values_overrides"] == str(tmp_path / "vals.yaml")
    assert m["parameters"]["chart"] == "../charts/ml-platform"  # a default stays as written (notebooks/)


@pytest.mark.slow
def test_papermill_from_the_project_root_finds_the_default_chart(tmp_path):
    """The default chart "../charts/ml-platform" is relative to notebooks/, not to the kernel's folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSBOOK_")}
    env["OPSBOOK_OUTPUTS"] = str(tmp_path / "outputs")
    r = subprocess.run([sys.executable, "-m", "papermill", "notebooks/initial-kubernetes-deployment.ipynb",
                        str(tmp_path / "out.ipynb"), "-p", "target", "local", "--no-progress-bar"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]


# -- deploy-new-model needs a version when there is no registry to find one -----------------------------------------

def test_deploy_new_model_without_version_or_registry_is_refused(tmp_path):
    r = opsbook("run", "deploy-new-model", "--outputs", str(tmp_path / "o"), cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert ("version: got ''; required when neither tracking_uri nor the target's mlflow_uri is set"
            in r.stderr), r.stderr
    assert "vNEW" not in r.stdout + r.stderr
