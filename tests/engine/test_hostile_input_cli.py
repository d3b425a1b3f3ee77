"""Issue 15, section 4 ("Hostile input"), through the real `opsbook` CLI: each reproduction of the
issue exits 2 with one line on stderr (no traceback), leaves nothing archived, and returns (the
subprocess timeout is only the guard against a hang; the assertions are on exit code and message)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ..conftest import FIXTURE_NOTEBOOKS, FIXTURE_SECRET, OPSBOOK, ROOT

CATALOGUE = ROOT / "notebooks"
DEEP_5000 = "[" * 5000 + "]" * 5000
BOMB = ("[&a [x,x,x,x,x,x,x,x,x], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], "
        "&d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], &f [*e,*e,*e,*e,*e,*e,*e,*e,*e], "
        "&g [*f,*f,*f,*f,*f,*f,*f,*f,*f], &h [*g,*g,*g,*g,*g,*g,*g,*g,*g], &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]]")


def one_line_usage_error(r: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr[-3000:]
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def nothing_archived(outputs: Path) -> bool:
    return not outputs.exists() or not list(outputs.rglob("manifest.json"))


# -- YAML: nesting, alias bombs ---------------------------------------------------------------------------

def test_5000_deep_list_parameter(cli, outputs):
    r = cli("run", "environment-check", "-p", "packages", DEEP_5000, notebooks=CATALOGUE, timeout=30)
    one_line_usage_error(r, "parameter packages", "nested deeper than the limit of 100 levels")
    assert nothing_archived(outputs)


def test_20000_deep_parameters_file(cli, outputs, tmp_path):
    f = tmp_path / "deep.yaml"
    f.write_text("packages: " + "[" * 20000 + "]" * 20000 + "\n")
    r = cli("run", "environment-check", "-f", str(f), notebooks=CATALOGUE, timeout=30)
    one_line_usage_error(r, f"parameters file {f}", "nested deeper than the limit of 100 levels")
    assert nothing_archived(outputs)


def test_billion_laughs_in_a_list_parameter(cli, outputs):
    r = cli("run", "environment-check", "-p", "packages", BOMB, notebooks=CATALOGUE, timeout=30)
    one_line_usage_error(r, "parameter packages", "aliases expand to more than the limit of 10000 nodes")
    assert nothing_archived(outputs)


def test_billion_laughs_under_an_unknown_name(cli, outputs, tmp_path):
    f = tmp_path / "bomb.yaml"
    f.write_text(f"not_a_parameter: {BOMB}\n")
    r = cli("run", "environment-check", "-f", str(f), notebooks=CATALOGUE, timeout=30)
    one_line_usage_error(r, f"parameters file {f}", "aliases expand")
    assert nothing_archived(outputs)


def test_billion_laughs_in_the_targets_file(cli, outputs, tmp_path):
    """Refused within seconds, in one line; only a run on a target of that file breaks (issue 16:
    a broken targets file must not break `--target local`)."""
    f = tmp_path / "targets.yaml"
    f.write_text(f"staging:\n  description: {BOMB}\n")
    env = {"OPSBOOK_TARGETS": str(f)}
    r = cli("run", "passing", "--target", "staging", env=env, timeout=30)
    one_line_usage_error(r, f"targets file {f}", "aliases expand")
    assert nothing_archived(outputs)
    r = cli("targets", env=env, timeout=30)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"invalid targets file {f}: YAML aliases expand" in " ".join(r.stdout.split())
    r = cli("run", "passing", "--quiet", env=env, timeout=60)  # target local: unaffected
    assert r.returncode == 0, r.stderr


# -- file: secret references that are not regular files -------------------------------------------------

def test_fifo_secret_reference_fails_the_run_instead_of_blocking(cli, outputs, tmp_path):
    fifo = tmp_path / "pw.fifo"
    os.mkfifo(fifo)
    r = cli("run", "leaky", "-p", "db_password", f"file:{fifo}", timeout=90)
    assert r.returncode == 1, r.stderr[-3000:]
    (m,) = [json.loads(p.read_text()) for p in outputs.rglob("manifest.json")]
    assert m["status"] == "failed" and "is a FIFO" in m["error"]


# -- runbook ids -------------------------------------------------------------------------------------------

def test_notebook_named_bad_id_is_refused_before_any_kernel(cli, outputs, tmp_path):
    nb = tmp_path / "nb"
    nb.mkdir()
    (nb / "bad id.ipynb").write_bytes((FIXTURE_NOTEBOOKS / "passing.ipynb").read_bytes())
    r = cli("run", "bad id", notebooks=nb, timeout=60)
    one_line_usage_error(r, "'bad id' is not a valid runbook id")
    assert nothing_archived(outputs)
    r = cli("list", notebooks=nb)
    assert r.returncode == 1 and "invalid" in r.stdout and "not a valid runbook id" in r.stdout


@pytest.mark.parametrize("runbook_id", ["../tests/fixtures/notebooks/passing", "passing.ipynb",
                                        str(FIXTURE_NOTEBOOKS / "passing")])
def test_a_runbook_id_is_never_a_path(cli, outputs, runbook_id):
    r = cli("run", runbook_id, notebooks=CATALOGUE, timeout=60)
    one_line_usage_error(r, "a runbook id is an id, never a path")
    assert nothing_archived(outputs)


# -- terminal escapes in notebook text ---------------------------------------------------------------------

EVIL_TITLE = "Evil \x1b[31mred\x1b]0;pwned\x07 title"
EVIL_VERSION = "1.0\x1b[2J\x9b"


@pytest.fixture
def evil_notebooks(tmp_path: Path) -> Path:
    d = tmp_path / "evil"
    d.mkdir()
    nb = json.loads((FIXTURE_NOTEBOOKS / "trivial.ipynb").read_text())
    meta = nb["metadata"]["opsbook"]
    meta.update(title=EVIL_TITLE, version=EVIL_VERSION, objective="Clear \x1b[2J\x1b[H the screen")
    for c in nb["cells"]:
        c["source"] = "".join(c["source"]).replace('opsbook.start("trivial"', 'opsbook.start("escapes"')
        if "parameters" in c["metadata"].get("tags", []):
            c["source"] = "".join(c["source"]) + 'note: str = "\\x1b[5m"  # help \x1b[31mred\x1b[0m [bold]\n'
    (d / "escapes.ipynb").write_text(json.dumps(nb))
    return d


def test_list_and_show_print_no_escape_codes(cli, evil_notebooks):
    r = cli("list", notebooks=evil_notebooks)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "escapes" in r.stdout and "\\x1b[31mred" in r.stdout
    assert "\x1b" not in r.stdout + r.stderr and "\x07" not in r.stdout and "\x9b" not in r.stdout
    r = cli("show", "escapes", notebooks=evil_notebooks)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "\\x1b]0;pwned\\x07" in r.stdout and "[bold]" in r.stdout
    assert "\x1b" not in r.stdout + r.stderr and "\x07" not in r.stdout and "\x9b" not in r.stdout


def test_run_banner_prints_no_escape_codes(cli, evil_notebooks):
    r = cli("run", "escapes", "--quiet", notebooks=evil_notebooks, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "v1.0\\x1b[2J" in r.stderr
    assert "\x1b" not in r.stdout + r.stderr and "\x9b" not in r.stderr


def test_targets_print_no_escape_codes(cli, tmp_path):
    f = tmp_path / "targets.yaml"
    f.write_text('evil:\n  kube_context: "ctx\\e]0;pwned\\a"\n  namespace: ns\n')
    r = cli("targets", env={"OPSBOOK_TARGETS": str(f)})
    assert r.returncode == 0, r.stderr
    assert "ctx\\x1b]0;pwned\\x07" in r.stdout and "\x1b" not in r.stdout


# -- relative file: references -----------------------------------------------------------------------------

def test_relative_file_reference_resolves_against_the_cwd(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "pw.txt").write_text(FIXTURE_SECRET + "\n")
    outputs = tmp_path / "outputs"
    env = {k: v for k, v in os.environ.items() if k != "OPSBOOK_FIXTURE_SECRET"}
    r = subprocess.run([*OPSBOOK, "run", "leaky", "-p", "db_password", "file:pw.txt", "--notebooks",
                        str(FIXTURE_NOTEBOOKS), "--outputs", str(outputs)], cwd=work, capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 1, r.stderr[-3000:]  # leaky raises in its last cell, after using the password
    (rec,) = [p.parent for p in outputs.rglob("manifest.json")]
    m = json.loads((rec / "manifest.json").read_text())
    assert m["parameters"]["db_password"] == f"file:{work / 'pw.txt'}"
    assert ("Use the password", "ok") in [(s["title"], s["outcome"]) for s in m["steps"]]
    assert "login failed for password [REDACTED]" in m["error"]
    for p in rec.rglob("*"):
        if p.is_file():
            assert FIXTURE_SECRET not in p.read_text(errors="replace"), p
    assert FIXTURE_SECRET not in r.stdout + r.stderr


def test_history_and_incident_escape_what_a_record_holds(cli, outputs):
    evil = "mallory\x1b]0;pwned\x07\x1b[31m"
    r = cli("run", "passing", "--quiet", env={"OPSBOOK_OPERATOR": evil})
    assert r.returncode == 0, r.stderr
    r = cli("history")
    assert r.returncode == 0 and "\x1b" not in r.stdout and "\\x1b" in r.stdout
