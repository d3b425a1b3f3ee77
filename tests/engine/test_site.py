"""`opsbook site`: the archive as a static HTML site, over an archive of real runs made through the real
CLI (passing, failing, evidence files, a high-risk plan and the apply that carried it out, a real
deploy-new-model plan with its canary plot), plus records written with `Archive.record` (an incident,
a hostile manifest). Checked: a page per run, plan <-> apply links, every link resolves, escaping,
verify status, the evidence bundle's pages, and the index in headless Chromium (rows rendered by its
script from file://, the filters, a screenshot kept as a test artifact).

The Chromium tests are skipped only when /usr/bin/chromium is absent (`make setup` installs it)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from opsbook.records import bundle as incident_bundle
from opsbook.records.disk import Archive

from ..conftest import FIXTURE_NOTEBOOKS, FIXTURE_SECRET, OPSBOOK, ROOT

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed")
HOSTILE_TITLE = "<script>alert(1)</script>"
HOSTILE_HEADLINE = '"><img src=x onerror=alert(1)>'
HOSTILE_INCIDENT = "INC-9 <b>bold</b>"


def opsbook(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "OPSBOOK_OUTPUTS"}
    full.update({"OPSBOOK_FIXTURE_SECRET": FIXTURE_SECRET, "COLUMNS": "200", **(env or {})})
    return subprocess.run([*OPSBOOK, *args], capture_output=True, text=True, env=full, timeout=timeout)


def _last_run(outputs: Path) -> str:
    return Archive(outputs, create=False).entries()[-1].run_id


def _record(archive: Archive, tmp: Path, run_id: str, manifest: dict, *, runbook: str = "security-incident-response",
            evidence: dict[str, bytes] | None = None) -> None:
    src = tmp / f"src-{run_id}"
    src.mkdir(parents=True)
    (src / "notebook.ipynb").write_text(json.dumps({"cells": [], "metadata": {}}))
    (src / "notebook.html").write_text(f"<html><body>{run_id}</body></html>")
    for name, data in (evidence or {}).items():
        p = src / "evidence" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    archive.record(runbook_id=runbook, run_id=run_id, source_dir=src, manifest=manifest)


def _manifest(*, incident: str, started: str, title: str = "Quarantine the affected pods", headline: str = "",
              status: str = "succeeded", evidence: list[str] = ()) -> dict:
    return {"parameters": {"incident_id": incident, "phases": ["identification", "containment"],
                           "responders": ["alice", "bob"], "summary": "token seen in a public log"},
            "started": started, "ended": started.replace(":00Z", ":30Z"), "status": status, "mode": "plan",
            "target": "staging", "operator": "carol", "runbook_version": "1.0.0",
            "steps": [{"kind": "change", "title": title, "outcome": "planned", "summary": f"{title} <i>would</i> run",
                       "headline": headline, "seconds": 0.5, "started": started}],
            "evidence": [{"name": n, "description": f"about {n}"} for n in evidence]}


@pytest.fixture(scope="module")
def archive_dir(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An archive of real CLI runs and a few records written with Archive.record."""
    tmp = tmp_path_factory.mktemp("site")
    outputs = tmp / "outputs"
    fx = ["--notebooks", str(FIXTURE_NOTEBOOKS), "--outputs", str(outputs)]
    ids: dict[str, str] = {}
    for name, args, code in (("passing", ["passing", "-p", "replicas", "3"], 0), ("failing", ["failing"], 1),
                             ("evidential", ["evidential"], 0), ("plan", ["highrisk", "-p", "replicas", "4"], 0)):
        r = opsbook("run", *args, "--quiet", *fx)
        assert r.returncode == code, r.stdout + r.stderr
        ids[name] = _last_run(outputs)
    r = opsbook("run", "highrisk", "--mode", "apply", "--approve", ids["plan"], "-p", "replicas", "4", "--quiet", *fx,
                env={"OPSBOOK_OPERATOR": "alice"})
    assert r.returncode == 0, r.stdout + r.stderr
    ids["apply"] = _last_run(outputs)
    r = opsbook("run", "deploy-new-model", "-p", "version", "2", "-p", "serving_version", "1", "--quiet",
                "--notebooks", str(ROOT / "notebooks"), "--outputs", str(outputs))
    assert r.returncode == 0, r.stdout + r.stderr
    ids["canary"] = _last_run(outputs)
    a = Archive(outputs)
    # an incident of two runs, recorded out of time order; the second is hostile from top to bottom
    ids["inc_late"] = "20260102T100000Z-bbbbbb"
    _record(a, tmp, ids["inc_late"], _manifest(incident="INC-7", started="2026-01-02T10:00:00Z",
                                               title="Lift the isolation"))
    ids["inc_early"] = "20260102T080000Z-aaaaaa"
    _record(a, tmp, ids["inc_early"], _manifest(incident="INC-7", started="2026-01-02T08:00:00Z",
                                                title="Quarantine the affected pods", evidence=["pods.json"]),
            evidence={"pods.json": b'{"kind": "Pod"}\n'})
    ids["hostile"] = "20260103T000000Z-evil00"
    _record(a, tmp, ids["hostile"], _manifest(incident=HOSTILE_INCIDENT, started="2026-01-03T00:00:00Z",
                                              title=HOSTILE_TITLE, headline=HOSTILE_HEADLINE, status="failed",
                                              evidence=["page.html", "../escape.txt"]),
            evidence={"page.html": b"<script>alert('evidence')</script>"})
    return {"outputs": outputs, "ids": ids, "tmp": tmp}


@pytest.fixture(scope="module")
def site(archive_dir: dict) -> Path:
    out = archive_dir["tmp"] / "site"
    r = opsbook("site", "--out", str(out), "--outputs", str(archive_dir["outputs"]))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verify OK" in r.stdout and "index.html" in r.stdout
    return out


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.handlers: list[tuple[str, str]] = []
        self.inline_scripts = 0
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for k, v in attrs:
            if k in ("href", "src") and v is not None:
                self.links.append(v)
            if k.startswith("on"):
                self.handlers.append((tag, k))
        if tag == "script" and not dict(attrs).get("src"):
            self.inline_scripts += 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(text: str) -> _Page:
    p = _Page()
    p.feed(text)
    return p


def _broken_links(page: Path, links: list[str]) -> list[str]:
    bad = []
    for link in links:
        parts = urlsplit(link)
        if parts.scheme or parts.netloc:
            bad.append(f"{link} (external)")
            continue
        if not parts.path:
            continue  # #fragment
        if not (page.parent / unquote(parts.path)).is_file():
            bad.append(link)
    return bad


def _our_pages(site: Path) -> list[Path]:
    """The pages the site wrote (not the records' own notebook.html copies)."""
    return [site / "index.html", *sorted((site / "runs").glob("*.html")), *sorted((site / "incidents").glob("*.html"))]


def _runs_js(site: Path) -> list[dict]:
    text = (site / "runs.js").read_text()
    return json.loads(text[text.index("= ") + 2:text.rindex(";")])


# ------------------------------------------------------------------------------------------ the pages


@pytest.mark.slow  # the module's archive_dir: six real CLI runs, about 20 s
def test_every_run_has_a_page_and_every_link_resolves(archive_dir, site):
    entries = Archive(archive_dir["outputs"], create=False).entries()
    runs = {e.run_id for e in entries if not e.is_start}
    assert runs == set(archive_dir["ids"].values())
    assert {p.stem for p in (site / "runs").glob("*.html")} == runs
    rows = _runs_js(site)
    assert {r["id"] for r in rows} == runs
    started = [r["started"] for r in rows]
    assert started == sorted(started, reverse=True)  # newest first
    for page in _our_pages(site):
        parsed = _parse(page.read_text())
        assert _broken_links(page, parsed.links) == [], page
        assert parsed.handlers == [] and parsed.inline_scripts == 0, page
        assert "Content-Security-Policy" in page.read_text()
    assert (site / ".opsbook-site").is_file() and (site / "assets" / "site.js").is_file()


@pytest.mark.slow  # the module's archive_dir: six real CLI runs, about 20 s
def test_a_run_page_has_the_header_steps_notebook_and_evidence(archive_dir, site):
    ids, outputs = archive_dir["ids"], archive_dir["outputs"]
    text = (site / "runs" / f"{ids['passing']}.html").read_text()
    header = text.split("</header>")[0]
    for fact in ("succeeded", "run id", ids["passing"], "passing", "plan", "local", "operator", "started", "ended",
                 "duration", "verify", "<b>OK</b>"):
        assert fact in header, fact
    assert "<table class=\"steps\">" in text and "seconds" in text
    copied = site / "runs" / ids["passing"] / "notebook.html"
    assert copied.read_bytes() == (outputs / "passing" / ids["passing"] / "notebook.html").read_bytes()
    assert f'href="{ids["passing"]}/notebook.html"' in text
    # the manifest copy is the one the ledger hashed
    entry = next(e for e in Archive(outputs, create=False).entries() if e.run_id == ids["passing"])
    import hashlib

    assert hashlib.sha256((site / "runs" / ids["passing"] / "manifest.json").read_bytes()).hexdigest() \
        == entry.manifest_sha256
    # a failed run: its status, error and the failed step
    text = (site / "runs" / f"{ids['failing']}.html").read_text()
    assert "badge st-failed" in text and "<h2>Error</h2>" in text
    assert "failed in cell 3 (code cell 3): <b>RuntimeError: boom in cell 3</b>" in text
    assert "<li>RuntimeError: boom in cell 3</li>" in text.split("</header>")[0]  # the headline of a failed run
    # evidence files: copied, linked, identical
    text = (site / "runs" / f"{ids['evidential']}.html").read_text()
    rec = outputs / "evidential" / ids["evidential"]
    manifest = json.loads((rec / "manifest.json").read_text())
    ev = sorted(r for r in manifest["files"] if r.startswith("evidence/"))
    assert ev
    for rel in ev:
        assert (site / "runs" / ids["evidential"] / rel).read_bytes() == (rec / rel).read_bytes()
        assert f'href="{ids["evidential"]}/{rel}"' in text


@pytest.mark.slow  # the module's archive_dir: six real CLI runs, about 20 s
def test_plan_and_apply_pages_link_to_each_other(archive_dir, site):
    ids = archive_dir["ids"]
    plan = (site / "runs" / f"{ids['plan']}.html").read_text()
    apply = (site / "runs" / f"{ids['apply']}.html").read_text()
    assert f'href="../runs/{ids["apply"]}.html"' in plan and "carried out by apply" in plan
    assert f'href="../runs/{ids["plan"]}.html"' in apply and "carries out plan" in apply
    assert "approver alice" in apply


@pytest.mark.slow  # the module's archive_dir: six real CLI runs, about 20 s
def test_deploy_new_model_canary_plots_are_inline(archive_dir, site):
    ids = archive_dir["ids"]
    text = (site / "runs" / f"{ids['canary']}.html").read_text()
    assert "<h2>Canary plots</h2>" in text
    srcs = re.findall(r'<img src="([^"]+)"', text)
    assert srcs and all(s.startswith(f"{ids['canary']}/plot-") for s in srcs)
    for s in srcs:
        assert (site / "runs" / s).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.slow  # the module's archive_dir: six real CLI runs, about 20 s
def test_incident_page_is_a_timeline_in_time_order(archive_dir, site):
    ids = archive_dir["ids"]
    page = site / "incidents" / "INC-7.html"
    text = page.read_text()
    assert text.index(ids["inc_early"]) < text.index(ids["inc_late"])  # time order, not ledger order
    assert "identification, containment" in text and "carol" in text and "alice, bob" in text
    assert text.index("Quarantine the affected pods") < text.index("Lift the isolation")
    index = (site / "index.html").read_text()
    assert 'href="incidents/INC-7.html"' in index
    run_page = (site / "runs" / f"{ids['inc_early']}.html").read_text()
    assert 'href="../incidents/INC-7.html"' in run_page
    assert f'href="{ids["inc_early"]}/evidence/pods.json"' in run_page


@pytest.mark.slow  # the module's archive_dir: six real CLI runs, about 20 s
def test_a_hostile_manifest_shows_as_text(archive_dir, site):
    ids = archive_dir["ids"]
    page = site / "runs" / f"{ids['hostile']}.html"
    text = page.read_text()
    assert HOSTILE_TITLE not in text and "<img src=x" not in text and "onerror=alert(1)>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in text
    parsed = _parse(text)
    assert parsed.handlers == [] and parsed.inline_scripts == 0
    assert HOSTILE_TITLE in "".join(parsed.text) and HOSTILE_HEADLINE in "".join(parsed.text)
    # the hostile incident id: escaped, and its page named by a hash
    (inc_page,) = [p for p in (site / "incidents").glob("*.html") if p.name != "INC-7.html"]
    assert re.fullmatch(r"incident-[0-9a-f]{16}\.html", inc_page.name)
    assert "INC-9 &lt;b&gt;bold&lt;/b&gt;" in inc_page.read_text() and "<b>bold</b>" not in inc_page.read_text()
    # an evidence file a browser would render as a page is copied as text; a path out of the record is not
    assert (site / "runs" / ids["hostile"] / "evidence" / "page.html.txt").is_file()
    assert not (site / "runs" / ids["hostile"] / "evidence" / "page.html").exists()
    assert not list(site.rglob("escape.txt"))
    assert "</" not in (site / "runs.js").read_text().split("=", 1)[1]


@pytest.mark.slow  # the module's archive_dir: six real CLI runs, about 20 s
def test_verify_problems_are_shown_on_the_record_they_name(archive_dir, tmp_path):
    outputs = tmp_path / "outputs"
    shutil.copytree(archive_dir["outputs"], outputs)
    ids = archive_dir["ids"]
    victim = outputs / "passing" / ids["passing"] / "notebook.html"
    victim.chmod(0o644)
    victim.write_text("<html>rewritten</html>")
    out = tmp_path / "site"
    r = opsbook("site", "--out", str(out), "--outputs", str(outputs))
    assert r.returncode == 1, r.stdout + r.stderr  # verify found a problem: the site is written, exit 1
    assert "verify FAILED: 1 problem(s)" in r.stdout
    bad = (out / "runs" / f"{ids['passing']}.html").read_text()
    assert "<b>FAILED</b>" in bad and "modified" in bad
    good = (out / "runs" / f"{ids['failing']}.html").read_text()
    assert "<b>OK</b>" in good and "1 problem(s) elsewhere" in good
    rows = {r["id"]: r["verify"] for r in _runs_js(out)}
    assert rows[ids["passing"]] == "problem" and rows[ids["failing"]] == "ok"
    r = opsbook("site", "--out", str(tmp_path / "site2"), "--no-verify", "--outputs", str(outputs))
    assert r.returncode == 0 and "not verified" in r.stdout
    assert "not verified" in (tmp_path / "site2" / "runs" / f"{ids['passing']}.html").read_text()


@pytest.mark.slow  # the module's archive_dir: six real CLI runs, about 20 s
def test_errors_that_protect(archive_dir, tmp_path):
    typo = tmp_path / "typo"
    r = opsbook("site", "--out", str(tmp_path / "s"), "--outputs", str(typo))
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip() == f"opsbook: no archive at {typo} (from --outputs): nothing has been recorded there yet"
    r = opsbook("site", "--out", str(tmp_path / "s"), env={"OPSBOOK_OUTPUTS": str(typo)})
    assert r.returncode == 2 and f"no archive at {typo} (from $OPSBOOK_OUTPUTS)" in r.stderr, r.stderr
    assert not typo.exists() and not (tmp_path / "s").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    r = opsbook("site", "--out", str(busy), "--outputs", str(archive_dir["outputs"]))
    assert r.returncode == 2 and "not a site opsbook wrote" in r.stderr
    assert (busy / "notes.txt").read_text() == "mine"
    r = opsbook("site", "--out", str(archive_dir["outputs"] / "site"), "--outputs", str(archive_dir["outputs"]))
    assert r.returncode == 2 and "inside the archive" in r.stderr
    # a site is rebuilt in place, as a whole
    out = tmp_path / "again"
    assert opsbook("site", "--out", str(out), "--outputs", str(archive_dir["outputs"])).returncode == 0
    (out / "runs" / "stale.html").write_text("old")
    assert opsbook("site", "--out", str(out), "--outputs", str(archive_dir["outputs"])).returncode == 0
    assert not (out / "runs" / "stale.html").exists() and (out / "index.html").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftover staging


def test_a_manifest_of_any_shape_still_gets_a_page(tmp_path):
    """Fields of the wrong type, a step that is not an object, an unreadable manifest, a record that is
    gone: each run still gets its page, saying what it could not read."""
    from opsbook.records import site

    a = Archive(tmp_path / "outputs", fsync=False)
    weird = {"steps": ["not a step", {"title": ["a", "list"], "outcome": None, "seconds": "NaN?"}], "parameters": [1, 2],
             "evidence": "evidence", "approval": "yes", "error": {"nested": True}, "failed_cell": 3, "started": 7,
             "status": {"x": 1}, "duration_seconds": "long"}
    _record(a, tmp_path, "20260101T000000Z-weird0", weird, runbook="deploy-new-model")
    _record(a, tmp_path, "20260101T000000Z-gone00", _manifest(incident="INC-1", started="2026-01-01T00:00:00Z"))
    shutil.rmtree(tmp_path / "outputs" / "security-incident-response")  # a removed record
    info = site.build(a, tmp_path / "site", workers=1)
    assert info.runs == 2 and info.verified is False and info.problems >= 1
    weird_page = (tmp_path / "site" / "runs" / "20260101T000000Z-weird0.html").read_text()
    assert "failed cell: 3" in weird_page and "[&quot;a&quot;, &quot;list&quot;]" in weird_page
    gone = (tmp_path / "site" / "runs" / "20260101T000000Z-gone00.html").read_text()
    assert "cannot be read" in gone and "<b>FAILED</b>" in gone and "removed" in gone
    for page in _our_pages(tmp_path / "site"):
        assert _broken_links(page, _parse(page.read_text()).links) == [], page


def test_help_fits_80_columns():
    r = opsbook("site", "--help", env={"COLUMNS": "80"})
    assert r.returncode == 0 and "--out DIR" in r.stdout
    assert [ln for ln in r.stdout.splitlines() if len(ln) > 80] == []


@pytest.mark.slow  # the module's archive_dir: six real CLI runs, about 20 s
def test_the_evidence_bundle_holds_the_incident_pages_and_still_verifies(archive_dir, tmp_path):
    ids = archive_dir["ids"]
    bundle = tmp_path / "INC-7.tar.gz"
    info = incident_bundle.export(Archive(archive_dir["outputs"], create=False), "INC-7", bundle)
    report = incident_bundle.verify_bundle(bundle)
    assert report.ok, report.problems
    with tarfile.open(bundle) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    top = tmp_path / "x" / "INC-7-evidence"
    sums = (top / "SHA256SUMS").read_text()
    for name in ("site/index.html", "site/runs.js", "site/incidents/INC-7.html", f"site/runs/{ids['inc_early']}.html",
                 f"site/runs/{ids['inc_late']}.html"):
        assert (top / name).is_file() and f"  {name}\n" in sums
    pages = [top / "site" / "index.html", *(top / "site" / "runs").glob("*.html"),
             *(top / "site" / "incidents").glob("*.html")]
    assert len(pages) == 4
    for page in pages:
        assert _broken_links(page, _parse(page.read_text()).links) == [], page
    run_page = (top / "site" / "runs" / f"{ids['inc_early']}.html").read_text()
    assert f"../../records/security-incident-response/{ids['inc_early']}/evidence/pods.json" in run_page
    assert "opsbook evidence --verify" in run_page
    assert 'href="../../POSTMORTEM.md"' in (top / "site" / "incidents" / "INC-7.html").read_text()
    # a changed page fails the bundle's verification like any other file
    page = top / "site" / "incidents" / "INC-7.html"
    page.write_text(page.read_text().replace("Lift the isolation", "Nothing happened"))
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        tar.add(top, arcname=top.name)
    report = incident_bundle.verify_bundle(bad)
    assert not report.ok and any("site/incidents/INC-7.html" in p for p in report.problems)
    assert info.files == report.files


# ------------------------------------------------------------------------------------------ Chromium


def _chromium(*args: str, profile: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    argv = [str(CHROMIUM), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def _rows(dom: str) -> list[str]:
    return re.findall(r'<tr class="st-(\w+)" data-run="([^"]+)"', dom)  # type: ignore[return-value]


@pytest.mark.slow  # the module's archive_dir: six real CLI runs, about 20 s
@needs_chromium
def test_chromium_renders_the_index_from_file_url_and_the_filters_work(archive_dir, site, tmp_path):
    ids = archive_dir["ids"]
    url = (site / "index.html").as_uri()
    r = _chromium("--dump-dom", url, profile=tmp_path / "p1")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = _rows(r.stdout)
    assert {run for _st, run in rows} == set(ids.values())
    assert f'data-rendered="{len(ids)}"' in r.stdout
    # the hostile headline is text in the DOM the script built, not markup
    assert "<img src=\"x\"" not in r.stdout and "&lt;img src=x onerror=alert(1)&gt;" in r.stdout
    # a filter given in the URL is applied on load: ?query and #fragment
    r = _chromium("--dump-dom", url + "?status=failed", profile=tmp_path / "p2")
    failed = _rows(r.stdout)
    assert failed and {st for st, _run in failed} == {"failed"}
    assert {run for _st, run in failed} == {ids["failing"], ids["hostile"]}
    r = _chromium("--dump-dom", url + "#runbook=highrisk&mode=apply", profile=tmp_path / "p3")
    assert [run for _st, run in _rows(r.stdout)] == [ids["apply"]]
    r = _chromium("--dump-dom", url + "#incident=INC-7&from=2026-01-02&to=2026-01-02", profile=tmp_path / "p4")
    assert [run for _st, run in _rows(r.stdout)] == [ids["inc_late"], ids["inc_early"]]  # newest first
    shot = tmp_path / "site-index.png"
    r = _chromium(f"--screenshot={shot}", "--window-size=1280,900", url, profile=tmp_path / "p5")
    assert r.returncode == 0 and shot.read_bytes().startswith(b"\x89PNG"), r.stderr[-2000:]
    run_shot = tmp_path / "site-run.png"
    _chromium(f"--screenshot={run_shot}", "--window-size=1280,1600",
              (site / "runs" / f"{ids['canary']}.html").as_uri(), profile=tmp_path / "p6")
    assert run_shot.read_bytes().startswith(b"\x89PNG")
    print(f"\nscreenshots: {shot} {run_shot}")


@pytest.mark.slow  # the module's archive_dir: six real CLI runs, about 20 s
@needs_chromium
def test_the_filter_form_in_a_browser(archive_dir, site):
    """The filters as an operator uses them (Playwright drives the same Chromium)."""
    from playwright.sync_api import sync_playwright

    ids = archive_dir["ids"]
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                               args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = b.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("dialog", lambda d: errors.append(f"dialog: {d.message}"))
            page.goto((site / "index.html").as_uri())
            assert page.locator("#runs-body tr").count() == len(ids)
            page.select_option("select[name=status]", "failed")
            assert page.locator("#runs-body tr").count() == 2
            assert "status=failed" in page.url
            page.fill("input[name=q]", "evil")
            assert [page.locator("#runs-body tr").first.get_attribute("data-run")] == [ids["hostile"]]
            page.click("#reset")
            page.wait_for_function(f"document.querySelectorAll('#runs-body tr').length === {len(ids)}")
            page.select_option("select[name=runbook]", "highrisk")
            assert page.locator("#runs-body tr").count() == 2
            page.click(f"a[href='runs/{ids['plan']}.html']")
            page.wait_for_load_state()
            page.click(f"a[href='../runs/{ids['apply']}.html']")  # the plan page links to its apply
            page.wait_for_load_state()
            assert ids["apply"] in page.title()
            page.goto((site / "runs" / f"{ids['hostile']}.html").as_uri())
            assert HOSTILE_TITLE in page.inner_text("#steps")
            assert errors == []
        finally:
            b.close()


# ------------------------------------------------------------------------------------------ S3


@pytest.mark.services
def test_site_of_an_s3_archive(s3, tmp_path, monkeypatch):
    import uuid

    url = f"s3://{s3.bucket}/t/site-{uuid.uuid4().hex[:8]}"
    env = {**s3.env(), "OPSBOOK_OPERATOR": "alice"}
    for args in (["passing"], ["evidential"]):
        r = opsbook("run", *args, "--quiet", "--notebooks", str(FIXTURE_NOTEBOOKS), "--outputs", url, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "site"
    r = opsbook("site", "--out", str(out), "--outputs", url, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "site of 2 run(s)" in r.stdout and "verify OK" in r.stdout
    from opsbook.records.s3 import S3Archive

    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    archive = S3Archive(url)
    try:
        entries = archive.entries()
        for e in entries:
            page = out / "runs" / f"{e.run_id}.html"
            assert page.is_file() and _broken_links(page, _parse(page.read_text()).links) == []
            nb = archive.record_path(e.runbook_id, e.run_id) / "notebook.html"
            assert (out / "runs" / e.run_id / "notebook.html").read_bytes() == nb.read_bytes()
        ev = next(e for e in entries if e.runbook_id == "evidential")
        assert list((out / "runs" / ev.run_id / "evidence").rglob("*.json"))
        assert url in (out / "index.html").read_text()
    finally:
        archive.close()
