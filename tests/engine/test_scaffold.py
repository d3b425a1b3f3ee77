"""``opsbook new`` (issue 17, item 6): a runbook added with the scaffold passes its own tests and plans,
and a refused one writes nothing.

Each test works in a temporary copy of the checkout's working tree (``lib/``, ``notebooks/``, the
pyproject and the test helpers the generated tests use), never in the repository: this venv's
``opsbook`` runs with that copy as its working folder and ``PYTHONPATH`` set to the copy's ``lib/``,
so the copy's package (and the ops module written into it) is the one imported. A copy of the working
tree rather than a clone: what is tested is the code as it is now, committed or not."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from opsbook import scaffold
from opsbook.errors import UsageError

from ..conftest import ROOT

OPSBOOK = str(Path(sys.executable).parent / "opsbook")
COPIED = ("lib", "notebooks", "pyproject.toml", "tests/__init__.py", "tests/conftest.py",
          "tests/test_notebook_contract.py", "tests/runbooks/__init__.py")


def copy_checkout(dest: Path) -> Path:
    for rel in COPIED:
        src, to = ROOT / rel, dest / rel
        to.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, to, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, to)
    return dest


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_checkout(tmp_path_factory.mktemp("checkout"))


def in_copy(copy: Path, *argv: str, timeout: float = 120, lib: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command in the copy, importing opsbook from the copy's lib/ (or ``lib``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSBOOK_") or k.startswith("OPSBOOK_TEST_")}
    env["PYTHONPATH"] = str(lib or copy / "lib")
    return subprocess.run(list(argv), capture_output=True, text=True, cwd=copy, env=env, timeout=timeout)


def tree(copy: Path) -> list[str]:
    """Every file where ``opsbook new`` writes (temporary names included)."""
    return sorted(str(p.relative_to(copy)) for d in ("notebooks", "lib/opsbook/ops", "tests")
                  for p in (copy / d).rglob("*") if "__pycache__" not in p.parts)


# ------------------------------------------------------------------------------------------ the happy path


@pytest.mark.slow
@pytest.mark.services  # the generated tests start the Kubernetes API test server (kube fixture)
@pytest.mark.kube
def test_a_new_runbook_passes_its_tests_and_plans(checkout: Path) -> None:
    r = in_copy(checkout, OPSBOOK, "new", "queue-drain", "--title", "Drain a model queue", "--risk", "low",
                "--objective", "Stop a model's queue\n  taking work, and drain it.")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    notebook = checkout / "notebooks" / "queue-drain.ipynb"
    module = checkout / "lib" / "opsbook" / "ops" / "queue_drain.py"
    tests = checkout / "tests" / "runbooks" / "test_queue_drain.py"
    for path in (notebook, module, tests):
        assert path.is_file() and str(path.relative_to(checkout)) in r.stdout
    for command in ("opsbook show queue-drain", "opsbook run queue-drain",
                    "pytest tests/runbooks/test_queue_drain.py"):
        assert f"\n  {command}\n" in r.stdout, r.stdout
    assert not [p for p in tree(checkout) if ".new-" in p], "temporary files left behind"

    nb = nbformat.read(notebook, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4 and all(c.get("id") for c in nb.cells)
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    meta = nb.metadata["opsbook"]
    assert (meta["title"], meta["version"], meta["risk"]) == ("Drain a model queue", "0.1.0", "low")
    assert meta["objective"] == "Stop a model's queue taking work, and drain it."
    (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert params.source.splitlines()[0].startswith('mode: str = "plan"  #')
    assert params.source.splitlines()[0].endswith("[choices: plan, apply]")
    assert params.source.splitlines()[1].startswith('target: str = "local"  #')
    assert len(params.source.splitlines()) == 3  # and one example parameter
    codes = [c.source for c in nb.cells if c.cell_type == "code"]
    assert codes[1] == 'import opsbook\nfrom opsbook.ops import queue_drain\n\nrun = opsbook.start("queue-drain", globals())'
    assert codes[-1] == "run.summary()"
    assert "TODO" in notebook.read_text() and "TODO" in module.read_text()  # what the author replaces

    # the generated tests pass as generated, and the notebook keeps the runbook contract
    r = in_copy(checkout, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                "tests/runbooks/test_queue_drain.py", "tests/test_notebook_contract.py", "-k", "queue",
                timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert re.search(r"\b11 passed\b", r.stdout), r.stdout[-2000:]  # 5 generated + 6 contract tests
    r = in_copy(checkout, sys.executable, "-m", "ruff", "check", "--no-cache", str(module), str(tests))
    assert r.returncode == 0, r.stdout

    # listed in the catalogue, and it plans through the CLI: its record has the scaffold's steps
    r = in_copy(checkout, OPSBOOK, "list")
    assert r.returncode == 0 and "queue-drain" in r.stdout, r.stdout + r.stderr
    outputs = checkout.parent / "outputs"
    r = in_copy(checkout, OPSBOOK, "run", "queue-drain", "--outputs", str(outputs), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    (record,) = [p for p in (outputs / "queue-drain").iterdir() if p.is_dir()]
    manifest = json.loads((record / "manifest.json").read_text())
    assert (manifest["status"], manifest["mode"], manifest["runbook_id"]) == ("succeeded", "plan", "queue-drain")
    assert [(s["id"], s["kind"], s["outcome"]) for s in manifest["steps"]] == [
        ("preflight", "preflight", "ok"), ("configmap", "change", "planned"), ("configmap-current", "check", "skipped")]


def test_a_notebook_folder_outside_the_catalogue_is_named_in_the_next_commands(tmp_path: Path) -> None:
    copy = copy_checkout(tmp_path / "checkout")
    elsewhere = tmp_path / "mine"
    elsewhere.mkdir()
    r = in_copy(copy, OPSBOOK, "new", "my-check", "--title", "My check", "--risk", "low",
                "--notebooks", str(elsewhere))
    assert r.returncode == 0, r.stderr
    assert (elsewhere / "my-check.ipynb").is_file() and not (copy / "notebooks" / "my-check.ipynb").exists()
    assert "outside the catalogue" in r.stdout and f"opsbook run my-check --notebooks {elsewhere}" in r.stdout
    generated = (copy / "tests" / "runbooks" / "test_my_check.py").read_text()
    assert f"NOTEBOOKS = Path({str(elsewhere.resolve())!r})" in generated


# ------------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize(("argv", "says"), [
    (["Bad_Id", "--title", "T", "--risk", "low"], "is not a valid runbook id"),
    (["drain-", "--title", "T", "--risk", "low"], "is not a valid runbook id"),
    (["2fa-reset", "--title", "T", "--risk", "low"], "cannot name a runbook's ops module"),
    (["run", "--title", "T", "--risk", "low"], "cannot name a runbook's ops module"),
    (["environment-check", "--title", "T", "--risk", "low"], "already exists"),  # a notebook
    (["deploy-ops", "--title", "T", "--risk", "low"], "already exists"),  # tests/runbooks/test_deploy_ops.py
    (["passing", "--title", "T", "--risk", "low"], "already exists"),  # a trusted fixture notebook's id
    (["fresh-one", "--title", "T", "--risk", "medium"], "--risk 'medium': expected low or high"),
    (["fresh-one", "--title", "  ", "--risk", "low"], "--title: expected one non-empty line"),
], ids=["bad-id", "trailing-dash", "digit-first", "reserved", "notebook-exists", "test-exists", "fixture-id",
        "bad-risk", "blank-title"])
def test_refused_with_exit_2_one_line_and_nothing_written(checkout: Path, argv: list[str], says: str) -> None:
    if argv[0] == "passing":  # the fixture folder the copy's pyproject trusts
        fixtures = checkout / "tests" / "fixtures" / "notebooks"
        fixtures.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / "tests" / "fixtures" / "notebooks" / "passing.ipynb", fixtures)
    if argv[0] == "deploy-ops":
        (checkout / "tests" / "runbooks" / "test_deploy_ops.py").write_text("")
    before = tree(checkout)
    r = in_copy(checkout, OPSBOOK, "new", *argv)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("opsbook: "), r.stderr
    assert says in r.stderr, r.stderr
    assert tree(checkout) == before


def test_refused_when_opsbook_is_not_run_from_a_checkout(tmp_path: Path) -> None:
    """Installed as a package (not lib/opsbook/ of a checkout), there is no ops folder to add a module to."""
    copy = copy_checkout(tmp_path / "checkout")
    site = tmp_path / "site-packages"
    shutil.copytree(copy / "lib" / "opsbook", site / "opsbook", ignore=shutil.ignore_patterns("__pycache__"))
    before = tree(copy)
    r = in_copy(copy, OPSBOOK, "new", "queue-drain", "--title", "T", "--risk", "low", lib=site)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "not from a checkout's lib/opsbook/" in r.stderr
    assert tree(copy) == before and sorted(p.name for p in (site / "opsbook" / "ops").iterdir()) == sorted(
        p.name for p in (copy / "lib" / "opsbook" / "ops").iterdir())


def test_all_three_files_or_none(tmp_path: Path) -> None:
    """A file that appears while the others are put in place undoes the ones already placed."""
    dests = [tmp_path / "a.ipynb", tmp_path / "b.py", tmp_path / "c.py"]
    dests[2].write_text("someone else's")
    with pytest.raises(UsageError, match="appeared while"):
        scaffold._write_all({d: f"text of {d.name}" for d in dests})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.py"]
    assert dests[2].read_text() == "someone else's"

    missing = tmp_path / "no-such-folder" / "c.py"  # a failure while staging: nothing is placed either
    with pytest.raises(FileNotFoundError):
        scaffold._write_all({dests[0]: "x", dests[1]: "y", missing: "z"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.py"]

    scaffold._write_all({dests[0]: "x", dests[1]: "y"})
    assert [d.read_text() for d in dests[:2]] == ["x", "y"]
