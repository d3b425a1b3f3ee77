"""Issue 15, section 3, end to end: a real kernel shows a secret in every encoding, and no record file
(notebook.ipynb, notebook.html, manifest.json, evidence), nor the terminal's ``error:`` line, nor
``--output-json``/``--junit`` holds any of them. And a SIGKILLed ``opsbook run`` leaves a staging
folder that the next start sweeps."""

from __future__ import annotations

import base64
import contextlib
import html
import json
import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest
from opsbook import runner, workdirs
from opsbook.records.disk import Archive
from opsbook.secrets import MASK

from ..conftest import FIXTURE_NOTEBOOKS, OPSBOOK

pytestmark = pytest.mark.slow

# quotes of both kinds, a control character, space, / + = % & < >, non-ASCII
SECRET = "p@ss w/rd+=%&<>'\"\tÿé€-9Zx"


def b64_core(prefix: bytes, value: bytes, *, urlsafe: bool = False) -> str:
    """The characters of base64(prefix + value + ...) that depend on the value alone."""
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(prefix + value).decode()
    p, n = len(prefix), len(value)
    return text[-(-8 * p // 6): 8 * (p + n) // 6]


def forms(value: str) -> dict[str, str]:
    """What the ``encodings`` fixture notebook shows, as the parts that must not be left anywhere."""
    raw = value.encode()
    quote = urllib.parse.quote(value, safe="")
    out = {
        "plain": value, "repr": repr(value)[1:-1], "repr_both_quotes": repr("'\"" + value)[4:-1],
        "ascii": ascii(value)[1:-1], "bytes": repr(raw)[2:-1], "json": json.dumps(value)[1:-1],
        "hex": raw.hex(), "HEX": raw.hex().upper(), "quote": quote, "quote_slash": urllib.parse.quote(value),
        "quote_plus": urllib.parse.quote_plus(value), "quote_lower": re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote),
        "basic": b64_core(b"admin:", raw), "basic_user": b64_core(b"user:", raw),
        "html_escape": html.escape(value), "html_escape_noquote": html.escape(value, quote=False),
        "html_escape_repr": html.escape(repr(value)[1:-1]), "repr_html_escape": repr(html.escape(value))[1:-1],
    }
    for k in range(3):
        out[f"b64_{k}"] = b64_core(b"x" * k, raw)
        out[f"b64url_{k}"] = b64_core(b"x" * k, raw, urlsafe=True)
    return out


FORMS = forms(SECRET)


def strings(obj) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, list):
        return [s for x in obj for s in strings(x)]
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in [k, *strings(v)]]
    return []


def views(path: Path) -> list[str]:
    """The file as stored, and as read back: JSON strings unescaped, HTML entities decoded."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    out = [text]
    if path.suffix in (".ipynb", ".json"):
        out.append("\n".join(strings(json.loads(text))))
    if path.suffix == ".html":
        out.append(html.unescape(text))
    return out


@pytest.fixture(scope="module")
def encodings_record(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPSBOOK_FIXTURE_SECRET", SECRET)
        prep = runner.prepare("encodings", {}, notebooks=FIXTURE_NOTEBOOKS)
        outcome = runner.execute(prep, archive=Archive(tmp_path_factory.mktemp("enc") / "out"))
    return outcome


RECORD_FILES = ["notebook.ipynb", "notebook.html", "manifest.json", "evidence/logs/auth.log"]


def test_the_encodings_run_succeeds_and_shows_every_form_redacted(encodings_record):
    assert encodings_record.status == "succeeded", encodings_record.error
    rec = Path(encodings_record.record_dir)
    assert {p.relative_to(rec).as_posix() for p in rec.rglob("*") if p.is_file()} == set(RECORD_FILES)
    nb = json.loads((rec / "notebook.ipynb").read_text())
    printed = next(o["text"] for c in nb["cells"] for o in c.get("outputs", []) if o.get("name") == "stdout")
    lines = dict(ln.split(": ", 1) for ln in "".join(printed).splitlines())
    assert len(lines) == 21 and all(MASK in text for text in lines.values())  # each line there, its value not
    assert lines["plain"] == lines["hex"] == lines["quote_lower"] == MASK
    m = json.loads((rec / "manifest.json").read_text())
    assert m["steps"][0]["summary"] == f"hex {MASK}"
    assert Archive(rec.parents[1]).verify().ok


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("name", RECORD_FILES)
def test_no_encoded_form_is_left_in_any_record_file(encodings_record, name, form):
    path = Path(encodings_record.record_dir) / name
    needle = FORMS[form]
    assert len(needle) >= 4
    for view in views(path):
        assert needle not in view, f"{form} of the secret found in {name}"


def test_no_encoded_form_in_the_error_line_output_json_or_record_of_a_failed_run(tmp_path):
    """The error case: a server echoes the password URL-encoded, and the cell raises with it."""
    outputs, out_json, junit = tmp_path / "outputs", tmp_path / "run.json", tmp_path / "junit.xml"
    env = {**os.environ, "OPSBOOK_FIXTURE_SECRET": SECRET}
    r = subprocess.run([*OPSBOOK, "run", "urlerror", "--notebooks", str(FIXTURE_NOTEBOOKS), "--outputs",
                        str(outputs), "--output-json", str(out_json), "--junit", str(junit)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    error_line = next(ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip().startswith("error:"))
    assert f"password={MASK}" in error_line
    (rec,) = [p for p in (outputs / "urlerror").iterdir() if p.is_dir()]
    texts = {"terminal": [r.stdout + r.stderr], "--output-json": views(out_json), "--junit": views(junit)}
    texts |= {p.name: views(p) for p in rec.rglob("*") if p.is_file()}
    assert {"notebook.ipynb", "notebook.html", "manifest.json"} <= set(texts)
    m = json.loads((rec / "manifest.json").read_text())
    assert f"password={MASK}" in m["error"] and f"password={MASK}" in m["failed_cell"]["evalue"]
    for where, views_ in texts.items():
        for form, needle in FORMS.items():
            for view in views_:
                assert needle not in view, f"{form} of the secret found in {where}"


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            data = stat.read_bytes()
            if int(data[data.rindex(b")") + 2:].split()[1]) == pid:
                out.append(int(stat.parent.name))
    return out


def test_a_killed_run_leaves_a_staging_folder_that_the_next_start_sweeps(tmp_path, monkeypatch):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "OPSBOOK_FIXTURE_SECRET": SECRET, "TMPDIR": str(tmpdir)}
    proc = subprocess.Popen([*OPSBOOK, "run", "sleeper", "-p", "seconds", "60", "--notebooks",
                             str(FIXTURE_NOTEBOOKS), "--outputs", str(tmp_path / "outputs")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # its own group: the kernel is killed with it
    try:
        deadline, seen = time.monotonic() + 60, ""
        while time.monotonic() < deadline and "Sleeps so that" not in seen:  # the first code cell's line
            seen += proc.stderr.readline()
        time.sleep(1.0)
        (staging,) = [p for p in tmpdir.iterdir() if p.name.startswith("opsbook-")]
        assert (staging.stat().st_mode & 0o777) == 0o700 and (staging / workdirs.OWNER_FILE).is_file()
        kernels = children(proc.pid)  # the kernel may run in a session of its own
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    for pid in kernels:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert staging.is_dir()  # what issue 15 found: the unredacted staging folder is left behind
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    assert workdirs.sweep_stale_workdirs(project_root=tmp_path / "project") == [staging]
    assert not [p for p in tmpdir.iterdir() if p.name.startswith("opsbook-")]


def test_the_live_step_lines_and_the_headline_show_no_form_of_the_secret(tmp_path):
    """The terminal now shows each step's summary as it finishes: a step whose summary carries the
    password hex-encoded (the ``encodings`` fixture) must reach the terminal redacted, as the record."""
    env = {**os.environ, "OPSBOOK_FIXTURE_SECRET": SECRET}
    env.pop("CI", None)
    r = subprocess.run([*OPSBOOK, "run", "encodings", "--notebooks", str(FIXTURE_NOTEBOOKS), "--outputs",
                        str(tmp_path / "outputs")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    shown = r.stdout + r.stderr
    assert "Use the encoded password: hex " in shown  # the live step line is there
    for form, needle in FORMS.items():
        assert needle not in shown, f"{form} of the secret reached the terminal"
