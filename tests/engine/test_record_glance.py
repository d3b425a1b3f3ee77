"""Records read at a glance (issue 16, section 4): the HTML record's header, no echo noise in the
executed notebook, text symbols instead of emoji; through the real CLI and in-process."""

from __future__ import annotations

import hashlib
import html
import json
from pathlib import Path

import nbformat
import opsbook
from opsbook import catalog, notebook, secrets
from opsbook.cireport import run_headline
from opsbook.records import record as recording
from opsbook.records.disk import Archive

from ..conftest import FIXTURE_NOTEBOOKS, FIXTURE_SECRET, ROOT
from ..unit.test_notebook_api import is_emoji

CATALOGUE = ROOT / "notebooks"


def only_record(outputs: Path, runbook: str) -> Path:
    (rec,) = sorted(p for p in (outputs / runbook).iterdir() if p.is_dir())
    return rec


def echoes(nb_path: Path) -> list[str]:
    """The text of every execute_result (``Out[n]:``) of an executed notebook."""
    nb = json.loads(nb_path.read_text())
    out = []
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            if o["output_type"] == "execute_result":
                text = o["data"].get("text/plain", "")
                out.append("".join(text) if isinstance(text, list) else text)
    return out


def header_of(page: str) -> str:
    start = page.index("<section class='opsbook-record-header'")
    return page[start:page.index("</section>", start)]


def test_environment_check_record_has_a_header_and_no_echo_noise(cli, outputs):
    r = cli("run", "environment-check", notebooks=CATALOGUE)
    assert r.returncode == 0, r.stderr
    rec = only_record(outputs, "environment-check")
    m = json.loads((rec / "manifest.json").read_text())

    # no Out[5]: Result(summary=..., rows=[...]) after the steps, no bare True/False after a check:
    # the only echo left is the summary cell's one line
    said = echoes(rec / "notebook.ipynb")
    assert said == [f"({len(m['steps'])} step record(s): {len(m['steps'])} ok)"], said

    page = (rec / "notebook.html").read_text()
    head = header_of(page)
    # at the top, before the runbook's prose (its title) and before the first cell
    main = page.index("<main>")
    assert main < page.index(head) < page.index("jp-Notebook-cell", main)
    assert page.index(head) < page.index(">Environment check<a class=\"anchor-link\"")
    for fact in ("SUCCEEDED", "environment-check v1.0.0 (Environment check), risk low",
                 "local: no cluster (plan only), namespace ml-platform", "plan: nothing was changed",
                 f"{m['operator']}@{m['host']}", f"--approve {m['run_id']}", m["run_id"], m["started"], m["ended"],
                 "5: 5 ok"):
        assert html.escape(fact, quote=False) in head, fact
    for line in run_headline(m):  # what the run found
        assert html.escape(line, quote=False) in head
    assert f"<title>environment-check {m['run_id']}: succeeded</title>" in page
    assert not any(is_emoji(ch) for ch in page)  # text symbols: the page renders without an emoji font

    # the HTML was final before the record was hashed
    assert m["files"]["notebook.html"] == hashlib.sha256((rec / "notebook.html").read_bytes()).hexdigest()
    assert Archive(outputs).verify().ok


def test_a_missing_package_fails_environment_check_by_name(cli, outputs):
    r = cli("run", "environment-check", "-p", "packages", "[papermill, no-such-package-opsbook-16]",
            notebooks=CATALOGUE)
    assert r.returncode == 1, r.stdout + r.stderr
    rec = only_record(outputs, "environment-check")
    m = json.loads((rec / "manifest.json").read_text())
    step = next(s for s in m["steps"] if s["title"] == "Python packages")
    assert step["outcome"] == "failed" and "not installed: no-such-package-opsbook-16" in step["summary"]
    assert {"package": "no-such-package-opsbook-16", "version": "-", "status": "not installed"} in step["rows"]
    head = header_of((rec / "notebook.html").read_text())
    assert "FAILED" in head and "Python packages" in head  # the headline names what failed
    assert not any(e.startswith("Result(") or e in ("True", "False") for e in echoes(rec / "notebook.ipynb"))


def test_an_apply_header_names_the_plan_it_carries_out(cli, outputs):
    assert cli("run", "highrisk").returncode == 0
    plan_id = json.loads((outputs / "ledger.jsonl").read_text().splitlines()[-1])["run_id"]
    r = cli("run", "highrisk", "--mode", "apply", "--approve", plan_id, env={"OPSBOOK_OPERATOR": "bob"})
    assert r.returncode == 0, r.stderr
    apply_rec = next(p for p in (outputs / "highrisk").iterdir() if p.is_dir() and p.name != plan_id)
    head = header_of((apply_rec / "notebook.html").read_text())
    assert "apply: changes were made" in head
    assert f"carries out plan {plan_id}" in head and "approved by bob" in head


def test_a_failed_run_header_shows_the_failing_cell_and_the_error(cli, outputs):
    assert cli("run", "failing").returncode == 1
    head = header_of((only_record(outputs, "failing") / "notebook.html").read_text())
    assert "FAILED" in head and "code cell 3" in head and "RuntimeError: boom in cell 3" in head


def test_the_header_is_redacted_with_the_record(tmp_path):
    red = secrets.Redactor([FIXTURE_SECRET])
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title")])
    m = {"run_id": "20261204T000000Z-abcdef", "runbook_id": "passing", "runbook_version": "1.0.0", "status": "failed",
         "mode": "plan", "target": "local", "operator": "alice", "started": "2026-12-04T00:00:00Z",
         "ended": "2026-12-04T00:01:05Z", "duration_seconds": 65.0,
         "error": f"RuntimeError: login with {FIXTURE_SECRET} refused",
         "steps": [{"kind": "step", "title": "Login", "outcome": "failed", "headline": f"token {FIXTURE_SECRET}"}]}
    recording.write_html(nb, tmp_path, red, manifest=m)
    page = (tmp_path / recording.HTML_NAME).read_text()
    head = header_of(page)
    assert FIXTURE_SECRET not in page and "[REDACTED]" in head
    assert "1 min 05 s" in head and "FAILED" in head
    assert page.index(head) < page.index(">Title<a class=\"anchor-link\"")


def test_the_page_rendered_in_a_fresh_interpreter_is_the_same_page(tmp_path):
    """A Ctrl-C inside an import can leave this process's import lock held, and nbconvert can then not
    be imported here (the runner's HTML warm-up thread waits for ever): the runner renders in a fresh
    interpreter instead, and the page, header and redaction included, is the same."""
    red = secrets.Redactor([FIXTURE_SECRET])
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title"),
                                         nbformat.v4.new_code_cell(f"print('{FIXTURE_SECRET}')")])
    m = {"run_id": "20261204T000000Z-abcdef", "runbook_id": "passing", "runbook_version": "1.0.0",
         "status": "aborted", "mode": "plan", "target": "local", "operator": "alice",
         "error": "interrupted (Ctrl-C)", "steps": []}
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    recording.write_html(nb, here, red, manifest=m)
    recording.write_html(nb, there, red, manifest=m, isolated=True)
    assert not (there / "html-error.txt").exists()
    page = (there / recording.HTML_NAME).read_text()
    assert page == (here / recording.HTML_NAME).read_text()
    assert FIXTURE_SECRET not in page and "interrupted (Ctrl-C)" in header_of(page)


def test_an_interactive_record_has_the_header_too(tmp_path, monkeypatch):
    monkeypatch.setenv(catalog.ENV_NOTEBOOKS, str(FIXTURE_NOTEBOOKS))
    monkeypatch.setenv(catalog.ENV_OUTPUTS, str(tmp_path / "outputs"))
    monkeypatch.setenv(notebook.ENV_OPERATOR, "alice")
    for var in (notebook.ENV_SOURCE, notebook.ENV_EVENTS, notebook.ENV_RUN_ID, secrets.ENV_SECRETS_FILE):
        monkeypatch.delenv(var, raising=False)
    run = opsbook.start("passing", {"mode": "plan", "target": "local", "namespace": "team-a", "replicas": 2,
                                    "db_password": "env:OPSBOOK_FIXTURE_SECRET"})
    run.change("Scale", lambda: None, plan=lambda: opsbook.Result(summary="would scale to 2"))
    run.summary(record=True)
    ref = Archive(tmp_path / "outputs").find(run.id)
    assert ref is not None
    head = header_of((Path(ref.path) / "notebook.html").read_text())
    assert "alice@" in head and "(interactive, JupyterLab)" in head and run.id in head
    assert "namespace team-a" in head and "would change: Scale" in head
