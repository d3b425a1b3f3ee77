"""Interactive records and readable errors, without a browser: the notebook API in-process, and a
real kernel driven by nbclient the way JupyterLab drives it (no ``opsbook run``)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import opsbook
import pytest
from opsbook import catalog, notebook, secrets
from opsbook.errors import OpsbookError, RunFailed
from opsbook.records.disk import Archive

from ..conftest import FIXTURE_NOTEBOOKS, FIXTURE_SECRET

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path, monkeypatch):
    nbdir, outputs = tmp_path / "notebooks", tmp_path / "outputs"
    nbdir.mkdir()
    # the kernel test edits and saves a walkthrough: a copy under its own id (outside the catalogue,
    # a notebook may not reuse a catalogue id); the in-process tests use the fixture itself
    nb = json.loads((FIXTURE_NOTEBOOKS / "passing.ipynb").read_text())
    for c in nb["cells"]:
        c["source"] = "".join(c["source"]).replace('opsbook.start("passing"', 'opsbook.start("walkthrough"')
    (nbdir / "walkthrough.ipynb").write_text(json.dumps(nb))
    monkeypatch.setenv(catalog.ENV_NOTEBOOKS, str(FIXTURE_NOTEBOOKS))
    monkeypatch.setenv(catalog.ENV_OUTPUTS, str(outputs))
    monkeypatch.setenv("OPSBOOK_FIXTURE_SECRET", FIXTURE_SECRET)
    monkeypatch.setenv(notebook.ENV_OPERATOR, "alice")
    for var in (notebook.ENV_SOURCE, notebook.ENV_EVENTS, notebook.ENV_RUN_ID, secrets.ENV_SECRETS_FILE):
        monkeypatch.delenv(var, raising=False)
    return nbdir, outputs


def ns(mode: str = "plan") -> dict:
    return {"mode": mode, "target": "local", "namespace": "ml-platform", "replicas": 2,
            "db_password": "env:OPSBOOK_FIXTURE_SECRET"}


def record_files(outputs: Path, run_id: str) -> dict[str, str]:
    ref = Archive(outputs).find(run_id)
    assert ref is not None
    return {p.name: p.read_text(errors="replace") for p in Path(ref.path).rglob("*") if p.is_file()}


def test_summary_records_an_interactive_run_once(env):
    _, outputs = env
    run = opsbook.start("passing", ns("apply"))
    pw = run.secret("db_password")
    run.step("Leaky step", lambda: opsbook.Result(summary="connected with " + pw))
    assert run.change("Scale", lambda: "scaled") == "scaled"
    run.check("Replicas positive", True)
    run.evidence("pods/web-0.json", {"name": "web-0", "token": pw}, description="the pod")
    run.summary(record=True)

    archive = Archive(outputs)
    m = archive.load_manifest(run.id)
    assert m["interactive"] is True and m["status"] == "succeeded" and m["mode"] == "apply"
    assert m["operator"] == "alice" and m["runbook_id"] == "passing"
    assert m["parameters"]["db_password"] == "env:OPSBOOK_FIXTURE_SECRET"
    assert [(s["title"], s["outcome"]) for s in m["steps"]] == [
        ("Leaky step", "ok"), ("Scale", "changed"), ("Replicas positive", "ok")]
    files = record_files(outputs, run.id)
    assert {"notebook.ipynb", "notebook.html", "manifest.json"} <= set(files)
    assert m["evidence"] == [{"name": "pods/web-0.json", "description": "the pod"}]
    assert '"web-0"' in files["web-0.json"]
    assert not any(FIXTURE_SECRET in text for text in files.values())
    assert "[REDACTED]" in files["manifest.json"]
    assert archive.verify().ok

    # re-running the summary cell does not archive again; re-running an applied change refuses
    run.summary(record=True)
    assert len(archive.history(runbook="passing")) == 1
    with pytest.raises(OpsbookError, match="already applied"):
        run.change("Scale", lambda: "scaled")


def test_failed_interactive_run_is_recorded_failed(env):
    _, outputs = env
    run = opsbook.start("passing", ns())
    with pytest.raises(ZeroDivisionError):
        run.step("Divide", lambda: 1 / 0)
    with pytest.raises(RunFailed):
        run.summary(record=True)
    m = Archive(outputs).load_manifest(run.id)
    assert m["status"] == "failed" and "Divide" in m["error"] and m["mode"] == "plan"


def test_outside_a_kernel_summary_does_not_record_by_default(env):
    _, outputs = env
    run = opsbook.start("passing", ns())
    run.step("Compute", lambda: 1)
    run.summary()
    assert not outputs.exists() or not Archive(outputs).history()


# -- a real kernel, as JupyterLab runs it --------------------------------------------------------

EXTRA_CELLS = [
    'from IPython.display import HTML, display\ndisplay(HTML("<b>leak</b> " + run.secret("db_password")))',
    'run.step("Divide", lambda: 1 / 0)',
    'run.preflight([opsbook.Check("disk", False, "no space left")])',
]


def run_in_kernel(nbdir: Path, monkeypatch, extra: list[str]) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    path = nbdir / "walkthrough.ipynb"
    monkeypatch.setenv(catalog.ENV_NOTEBOOKS, str(nbdir))
    nb = nbformat.read(str(path), as_version=4)
    summary = nb.cells.pop()  # run.summary() stays last
    nb.cells += [nbformat.v4.new_code_cell(src) for src in extra] + [summary]
    nbformat.write(nb, str(path))  # "saved" by the operator, without outputs
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    client = NotebookClient(nb, kernel_name="python3", allow_errors=True, timeout=120,
                            resources={"metadata": {"path": str(nbdir)}},
                            extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
    return client.execute()


def outputs_text(cell) -> str:
    return json.dumps(cell.get("outputs", []))


def test_kernel_run_shows_short_errors_and_records_what_ran(env, monkeypatch):
    nbdir, outputs = env
    executed = run_in_kernel(nbdir, monkeypatch, EXTRA_CELLS)
    code = [c for c in executed.cells if c.cell_type == "code"]

    def cell(prefix: str):
        return next(c for c in code if c.source.startswith(prefix))

    for key, ename in (('run.step("Divide"', "ZeroDivisionError"), ("run.preflight([opsbook.Check(", "PreflightFailed")):
        outs = cell(key).outputs
        errors = [o for o in outs if o.output_type == "error"]
        assert len(errors) == 1 and errors[0].ename == ename
        assert len(errors[0].traceback) == 1, "the error output is one line, not a traceback"
        html_out = next(o for o in outs if o.output_type == "display_data" and "opsbook-error" in o.data.get("text/html", ""))
        assert "<details" in html_out.data["text/html"] and "Traceback" in html_out.data["text/html"]
    assert "no space left" in outputs_text(cell("run.preflight(["))

    recorded = [c for c in executed.cells if "recorded as" in outputs_text(c)]
    assert recorded, "the summary cell reports the record"
    run_id = next(iter(Archive(outputs).history(runbook="walkthrough"))).run_id
    m = Archive(outputs).load_manifest(run_id)
    assert m["interactive"] is True and m["status"] == "failed"
    assert m["interactive_notebook"]["cells_executed"] >= 7
    files = record_files(outputs, run_id)
    assert not any(FIXTURE_SECRET in text for text in files.values()), "the record is redacted"
    rec = nbformat.reads(files["notebook.ipynb"], as_version=4)
    rec_text = json.dumps(rec)
    assert "<b>leak</b> [REDACTED]" in rec_text  # the output the kernel showed, redacted
    assert "Compute" in rec_text and "Summary: FAILED" in rec_text
    assert Archive(outputs).verify().ok
