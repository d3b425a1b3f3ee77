"""End to end in headless Chromium: ``opsbook lab`` serves the runbooks, a real browser runs every
cell of a runbook through JupyterLab's own menu, and we read what an operator would see.

Needs Debian's ``chromium`` and the Python ``playwright`` package (both installed by ``make setup``:
``scripts/install-tools.sh`` and the ``test`` extra). Playwright drives the system browser; no
browser is downloaded. Missing either is a failure, not a skip. Screenshots are saved in the test's
tmp folder (their paths are printed).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from opsbook.records.disk import Archive

from ..conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
URL_LINE = re.compile(r"open: (http://127\.0\.0\.1:\d+/lab\?token=\w+)")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A runbook folder with a copy of environment-check, and a copy whose preflight fails. A copy
    outside the catalogue may not use a catalogue runbook's id, so they are `env-walkthrough`."""
    d = tmp_path_factory.mktemp("lab")
    nbdir = d / "notebooks"
    nbdir.mkdir()
    nb = json.loads((ROOT / "notebooks" / "environment-check.ipynb").read_text())
    for c in nb["cells"]:
        c["source"] = "".join(c["source"]).replace('opsbook.start("environment-check"', 'opsbook.start("env-walkthrough"')
    (nbdir / "env-walkthrough.ipynb").write_text(json.dumps(nb, indent=1))
    params = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    src = "".join(params["source"])
    assert "min_free_gb: float = 1.0" in src
    params["source"] = src.replace("min_free_gb: float = 1.0", "min_free_gb: float = 1e9")
    # a second copy of the runbook under another file name: the kernel's runbook id stays the same
    (nbdir / "broken-preflight").mkdir()
    (nbdir / "broken-preflight" / "env-walkthrough.ipynb").write_text(json.dumps(nb, indent=1))
    return d


@pytest.fixture(scope="module")
def lab(workdir):
    """``opsbook lab`` as an operator starts it, on a free port, with private Jupyter state."""
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(workdir / "jupyter-config"),
           "JUPYTER_RUNTIME_DIR": str(workdir / "jupyter-runtime"),
           "JUPYTERLAB_WORKSPACES_DIR": str(workdir / "workspaces"),
           "JUPYTERLAB_SETTINGS_DIR": str(workdir / "lab-settings"),
           "OPSBOOK_OPERATOR": "browser-test"}
    env.pop("OPSBOOK_SOURCE", None)
    # no "get notified about Jupyter news?" toast over the screenshots (the network is closed anyway)
    settings = workdir / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    log = open(workdir / "lab.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "opsbook", "lab", "--port", "0", "--no-browser",
         "--notebooks", str(workdir / "notebooks"), "--outputs", str(workdir / "outputs")],
        stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    url = None
    deadline = time.monotonic() + 120
    lines = []
    while time.monotonic() < deadline and url is None:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if m := URL_LINE.search(line):
            url = m.group(1)
    if url is None:
        proc.kill()
        pytest.fail("opsbook lab printed no URL:\n" + "".join(lines) + (workdir / "lab.log").read_text())
    yield url, workdir
    proc.send_signal(2)  # Ctrl-C: opsbook lab stops JupyterLab and its kernels
    try:
        rest, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("opsbook lab did not stop within 30 s of Ctrl-C")
    assert proc.returncode == 0, rest
    assert "stopped" in rest


@pytest.fixture(scope="module")
def browser(workdir):
    assert CHROMIUM.exists(), "Debian's chromium is missing: run `make setup` (scripts/install-tools.sh)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: run `make setup` (the test extra)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                               args=CHROMIUM_ARGS)  # Playwright gives it a fresh, empty profile
        try:
            yield b
        finally:
            b.close()


def open_and_run_all(browser, url: str, path: str, workspace: str, shots: Path):
    """Open ``path`` in a fresh JupyterLab workspace, wait for its kernel, and use the menu
    Run > Run All Cells, as an operator does."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(url.replace("/lab?", f"/lab/workspaces/{workspace}/tree/{path}?reset&"))
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
    # the kernel is started and idle (accept the kernel JupyterLab proposes if it asks)
    idle = page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"Python 3.*\| Idle"))
    select = page.locator(".jp-Dialog button", has_text=re.compile(r"^Select$"))
    deadline = time.monotonic() + 120
    while not idle.count() and time.monotonic() < deadline:
        if select.count():
            select.first.click()
        page.wait_for_timeout(250)
    idle.first.wait_for(timeout=5_000)
    started = page.locator(".jp-InputPrompt", has_text=re.compile(r"\[(\*|\d+)\]"))
    for _attempt in range(3):
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        try:
            started.first.wait_for(timeout=20_000)
            return page
        except Exception:
            page.keyboard.press("Escape")
    page.screenshot(path=str(shots / f"{workspace}-not-started.png"))
    pytest.fail("Run > Run All Cells did not start the cells")


def shot(page, locator, path: Path) -> Path:
    locator.evaluate("e => e.scrollIntoView({block: 'center'})")
    page.wait_for_timeout(300)
    page.screenshot(path=str(path))
    print(f"screenshot: {path}")
    return path


def test_run_all_cells_shows_every_step_ok_or_planned(browser, lab):
    url, workdir = lab
    page = open_and_run_all(browser, url, "env-walkthrough.ipynb", "plan", workdir)
    heading = page.locator(".jp-OutputArea-output h3", has_text="Summary:")
    heading.wait_for(timeout=180_000)
    recorded = page.locator(".opsbook-recorded")
    recorded.wait_for(timeout=60_000)
    table = heading.locator("xpath=following-sibling::table[1]")
    rows = table.locator("tbody tr").all()
    header = [h.inner_text().strip() for h in table.locator("thead th").all()]
    outcomes = {r.locator("td").nth(header.index("step")).inner_text(): r.locator("td").nth(header.index("outcome")).inner_text()
                for r in rows}
    shot(page, table, workdir / "environment-check-summary.png")
    page.locator(".jp-NotebookPanel .jp-Cell").first.scroll_into_view_if_needed()
    shot(page, page.locator(".jp-OutputArea-output h3", has_text="opsbook run"),
         workdir / "environment-check-banner.png")
    assert "Summary: PLANNED" in heading.inner_text()
    assert outcomes and set(outcomes.values()) <= {"ok", "planned"}, outcomes
    assert {"Preflight", "Python packages", "Archive integrity"} <= set(outcomes)
    assert page.locator(".opsbook-error").count() == 0

    archive = Archive(workdir / "outputs")
    (entry,) = archive.history(runbook="env-walkthrough")
    m = archive.load_manifest(entry.run_id)
    assert m["interactive"] is True and m["status"] == "succeeded" and m["mode"] == "plan"
    assert m["operator"] == "browser-test"
    assert {s["title"]: s["outcome"] for s in m["steps"]} == outcomes
    assert archive.verify().ok
    page.close()


def test_failed_preflight_shows_a_short_readable_error(browser, lab):
    url, workdir = lab
    page = open_and_run_all(browser, url, "broken-preflight/env-walkthrough.ipynb", "broken", workdir)
    err = page.locator(".opsbook-error")
    try:
        err.wait_for(timeout=180_000)
    except Exception:
        page.screenshot(path=str(workdir / "preflight-timeout.png"))
        raise
    text = err.inner_text()
    assert "A prerequisite is missing" in text and "PreflightFailed" in text and "free" in text
    details = err.locator("details")
    assert details.count() == 1 and details.get_attribute("open") is None, "the traceback is folded"
    assert not details.locator("pre").is_visible()
    # the cell's own error output is one line, not a traceback
    error_out = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    assert error_out.count() == 1 and len(error_out.inner_text().strip().splitlines()) == 1
    assert "Traceback" not in error_out.inner_text()
    shot(page, err, workdir / "preflight-failed.png")
    # Run All stopped at the failing cell: the later steps did not run
    assert page.locator(".jp-OutputArea-output h3", has_text="Summary:").count() == 0
    details.locator("summary").click()
    assert details.locator("pre").is_visible() and "Traceback" in details.inner_text()
    shot(page, err, workdir / "preflight-failed-details.png")
    page.close()
