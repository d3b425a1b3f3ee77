"""Issue 15, section 4 ("Hostile input"), below the CLI: the YAML limits of ``opsbook.safeyaml`` and
where they apply, ``file:`` secret references that are not regular files or are too large, runbook
ids checked before anything runs, terminal escapes in notebook text, relative ``file:`` references.

Anything that could hang or exhaust memory on code without the fix runs in a subprocess with a
timeout and a memory limit, so that a regression fails the test instead of the machine."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opsbook import catalog, safeyaml, secrets
from opsbook.errors import (
    InvalidRunbookId,
    ParameterError,
    RunbookError,
    SecretError,
    TargetError,
    UsageError,
)
from opsbook.parameters import load_params_file, parse_parameters_cell, validate
from opsbook.text import safe_text

from ..conftest import FIXTURE_NOTEBOOKS

DEEP_FLOW = "[" * 5000 + "]" * 5000
BOMB = ("[&a [x,x,x,x,x,x,x,x,x], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], "
        "&d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], &f [*e,*e,*e,*e,*e,*e,*e,*e,*e], "
        "&g [*f,*f,*f,*f,*f,*f,*f,*f,*f], &h [*g,*g,*g,*g,*g,*g,*g,*g,*g], &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]]")


def isolated(code: str, *, timeout: float = 30, memory: int = 1 << 30) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with an address-space limit and a timeout."""
    prelude = f"import resource\nresource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory}))\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)


# -- opsbook.safeyaml ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,needle", [
    (DEEP_FLOW, "nested deeper than the limit of 100 levels"),
    ("- " * 5000 + "x", "nested deeper than the limit of 100 levels"),
    ("{a: " * 3000 + "1" + "}" * 3000, "nested deeper than the limit of 100 levels"),
    ("[" * 101 + "]" * 101, "nested deeper than the limit of 100 levels"),
    (BOMB, "aliases expand to more than the limit of 10000 nodes"),
    ("a: &a [*a]", "recursive YAML"),
    ("a: &a " + "[" * 60 + "]" * 60 + "\nb: " + "[" * 50 + "*a" + "]" * 50, "once alias *a is expanded"),
    ("x" * (1024 * 1024 + 1), "larger than the limit of 1 MiB"),
])
def test_limits_refuse_hostile_yaml_quickly_in_one_line(text, needle):
    with pytest.raises(safeyaml.YamlLimitExceeded) as ei:
        safeyaml.load(text, where="parameter packages")
    msg = str(ei.value)
    assert needle in msg and msg.startswith("parameter packages: ") and "\n" not in msg
    assert isinstance(ei.value, UsageError)


def test_limits_are_configurable_and_ordinary_yaml_still_loads():
    assert safeyaml.load("[" * 100 + "]" * 100, where="w") is not None  # exactly the limit
    assert safeyaml.load("d: &d {x: 1}\nt1: {<<: *d, z: 3}\nt2: {<<: *d}\n", where="w") == {
        "d": {"x": 1}, "t1": {"x": 1, "z": 3}, "t2": {"x": 1}}  # anchors for shared settings are fine
    assert safeyaml.load(io.StringIO("a: [1, 2]"), where="w") == {"a": [1, 2]}
    assert safeyaml.load("", where="w") is None
    with pytest.raises(safeyaml.YamlLimitExceeded, match="limit of 3 levels"):
        safeyaml.load("[[[[]]]]", where="w", max_depth=3)
    with pytest.raises(safeyaml.YamlLimitExceeded, match="limit of 10 bytes"):
        safeyaml.load("a: 1234567890", where="w", max_bytes=10)
    with pytest.raises(safeyaml.YamlLimitExceeded, match="limit of 5 nodes"):
        safeyaml.load("a: &a [1, 2]\nb: [*a, *a]", where="w", max_alias_nodes=5)


@pytest.mark.parametrize("text,needle", [
    ("x: [unclosed\n", "not valid YAML"),
    ("a: 2026-13-45", "not valid YAML"),  # yaml.safe_load raises a bare ValueError here
    ("a: " + "1" * 5000, "not valid YAML"),  # and here (int digits limit)
    ("a: *nope", "undefined alias"),
    ("a: !!python/object/apply:os.system [echo]", "not valid YAML"),
    (b"a: \xff\xfe", "not valid YAML"),
])
def test_broken_yaml_is_one_line_usage_error(text, needle):
    with pytest.raises(safeyaml.YamlInputError) as ei:
        safeyaml.load(text, where="targets file t.yaml")
    assert needle in str(ei.value) and "\n" not in str(ei.value)


def test_load_file_reads_at_most_the_limit(tmp_path):
    with pytest.raises(safeyaml.YamlLimitExceeded, match="larger than the limit"):
        safeyaml.load_file("/dev/zero", where="parameters file /dev/zero")
    with pytest.raises(safeyaml.YamlInputError, match="No such file"):
        safeyaml.load_file(str(tmp_path / "missing.yaml"), where="f")


CELL = '''mode: str = "plan"  # plan or apply [choices: plan, apply]
packages: list = []  # packages
overrides: dict = {}  # overrides
'''


@pytest.mark.parametrize("value", [DEEP_FLOW, BOMB])
def test_p_list_value_over_a_limit_is_refused_naming_the_parameter(value):
    spec = parse_parameters_cell(CELL)
    with pytest.raises(safeyaml.YamlLimitExceeded, match="^parameter packages: "):
        validate(spec, {"packages": value}, text_values={"packages"})


def test_p_value_that_does_not_parse_is_still_a_parameter_problem():
    spec = parse_parameters_cell(CELL)
    with pytest.raises(ParameterError) as ei:
        validate(spec, {"packages": "[a, ", "overrides": "a: 2026-13-45"}, text_values={"packages", "overrides"})
    assert {p.name for p in ei.value.problems} == {"packages", "overrides"}


@pytest.mark.parametrize("body,needle", [
    ("a: " + "[" * 20000 + "]" * 20000, "nested deeper"),
    ("bogus: " + BOMB, "aliases expand"),
    ("packages: " + BOMB, "aliases expand"),
])
def test_params_file_over_a_limit_is_refused(tmp_path, body, needle):
    f = tmp_path / "p.yaml"
    f.write_text(body)
    with pytest.raises(UsageError, match=f"^parameters file {f}: .*{needle}"):
        load_params_file(str(f))


def test_targets_file_over_a_limit_is_a_target_error(tmp_path, monkeypatch):
    f = tmp_path / "targets.yaml"
    f.write_text("x: " + BOMB + "\n")
    monkeypatch.setenv("OPSBOOK_TARGETS", str(f))
    from opsbook import targets

    with pytest.raises(TargetError, match="aliases expand") as ei:
        targets.load_all()
    assert "\n" not in str(ei.value)


def test_values_overrides_over_a_limit_is_invalid(tmp_path):
    from opsbook.errors import Invalid
    from opsbook.ops import initial_kubernetes_deployment as deploy

    with pytest.raises(Invalid, match="aliases expand"):
        deploy.parse_overrides("a: " + BOMB)
    f = tmp_path / "values.yaml"
    f.write_text("a: " + DEEP_FLOW)
    with pytest.raises(Invalid, match="nested deeper"):
        deploy.parse_overrides(str(f))


# -- file: secret references -----------------------------------------------------------------------------

def test_file_ref_to_dev_zero_is_refused_without_reading_it():
    r = isolated("""
        from opsbook import secrets
        from opsbook.errors import SecretError
        try:
            secrets.resolve("file:/dev/zero")
        except SecretError as exc:
            print("REFUSED", exc)
    """)
    assert "REFUSED secret reference file:/dev/zero: /dev/zero is a character device" in r.stdout, r.stderr[-2000:]


def test_file_ref_to_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pw.fifo"
    os.mkfifo(fifo)
    r = isolated(f"""
        from opsbook import secrets
        from opsbook.errors import SecretError
        try:
            secrets.resolve("file:{fifo}")
        except SecretError as exc:
            print("REFUSED", exc)
    """, timeout=20)
    assert "REFUSED" in r.stdout and "a FIFO" in r.stdout, r.stderr[-2000:]


def test_redactor_for_does_not_block_on_a_fifo(tmp_path):
    fifo = tmp_path / "pw.fifo"
    os.mkfifo(fifo)
    r = isolated(f"""
        from opsbook import catalog
        from opsbook.records import record as recording
        rb = catalog.load(catalog.Path({str(FIXTURE_NOTEBOOKS / "passing.ipynb")!r}))
        red = recording.redactor_for({{"db_password": "file:{fifo}"}}, rb, [])
        print("BUILT", len(red))
    """, timeout=20)
    assert "BUILT 0" in r.stdout, r.stderr[-2000:]


def test_file_ref_to_a_directory_or_oversized_file_is_refused(tmp_path):
    with pytest.raises(SecretError, match="is a directory"):
        secrets.resolve(f"file:{tmp_path}")
    big = tmp_path / "big.pem"
    big.write_text("k" * (secrets.MAX_SECRET_BYTES + 1))
    with pytest.raises(SecretError, match="larger than the limit of 64 KiB") as ei:
        secrets.resolve(f"file:{big}")
    assert "kkkk" not in str(ei.value)
    ok = tmp_path / "ok.txt"
    ok.write_text("s3cr3t-value\n")
    assert secrets.resolve(f"file:{ok}") == "s3cr3t-value"
    binary = tmp_path / "bin"
    binary.write_bytes(b"\xff\xfe\x00\x01secret")
    with pytest.raises(SecretError, match="not UTF-8"):
        secrets.resolve(f"file:{binary}")


def test_oversized_env_value_is_refused(monkeypatch):
    monkeypatch.setenv("OPSBOOK_TEST_BIG_SECRET", "v" * (secrets.MAX_SECRET_BYTES + 1))
    with pytest.raises(SecretError, match="larger than the limit") as ei:
        secrets.resolve("env:OPSBOOK_TEST_BIG_SECRET")
    assert "vvvv" not in str(ei.value)


# -- runbook ids -----------------------------------------------------------------------------------------

def _copy(src: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes((FIXTURE_NOTEBOOKS / f"{src}.ipynb").read_bytes())
    return dest


@pytest.mark.parametrize("stem", ["bad id", "Bad_Id", "-x", "x.y", "x" * 64])
def test_notebook_whose_stem_is_not_an_id_is_refused(tmp_path, stem):
    p = _copy("passing", tmp_path / f"{stem}.ipynb")
    with pytest.raises(InvalidRunbookId, match="not a valid runbook id"):
        catalog.load(p)
    with pytest.raises(InvalidRunbookId):
        catalog.get(stem, tmp_path)
    (err,) = catalog.all_runbooks(tmp_path)
    assert isinstance(err, RunbookError) and isinstance(err, UsageError)


@pytest.mark.parametrize("runbook_id", ["../fixtures/notebooks/passing", "sub/passing", "passing.ipynb",
                                        str(FIXTURE_NOTEBOOKS / "passing"), "..\\passing", ".."])
def test_an_id_is_never_a_path(runbook_id):
    with pytest.raises(InvalidRunbookId, match="never a path"):
        catalog.get(runbook_id, FIXTURE_NOTEBOOKS / "sub")


def test_every_shipped_notebook_has_a_valid_id():
    root = FIXTURE_NOTEBOOKS.parents[2]
    for p in [*FIXTURE_NOTEBOOKS.glob("*.ipynb"), *(root / "notebooks").glob("*.ipynb")]:
        assert catalog.RUNBOOK_ID.match(p.stem), p


# -- terminal escapes ------------------------------------------------------------------------------------

def test_safe_text_shows_control_characters_never_sends_them():
    raw = "T\x1b[31mred\x1b]0;pwned\x07 [bold]b\r\x9b2J\u202eevil\nnext\tcol"
    out = safe_text(raw)
    assert not any(c in out for c in "\x1b\x07\r\x9b\u202e")
    assert "\\x1b[31m" in out and "\\x07" in out and "\\[bold]" in out and "\nnext\tcol" in out
    one = safe_text(raw, markup=False, oneline=True)
    assert "\n" not in one and "\t" not in one and "[bold]" in one and "\\n" in one


def test_ci_banner_has_no_control_characters():
    from opsbook import cireport

    buf = io.StringIO()
    cireport.make("github", buf).banner(runbook="x", version="1\x1b[2J\n::error::pwned", mode="plan",
                                        target="t\x1b]0;x\x07")
    assert "\x1b" not in buf.getvalue() and "\x07" not in buf.getvalue()
    assert len(buf.getvalue().splitlines()) == 1


# -- relative file: references -------------------------------------------------------------------------

def test_prepare_makes_a_relative_file_ref_absolute_against_the_cwd(tmp_path, monkeypatch):
    from opsbook import runner

    monkeypatch.chdir(tmp_path)
    prep = runner.prepare("passing", {"db_password": "file:pw.txt"}, notebooks=FIXTURE_NOTEBOOKS)
    assert prep.params["db_password"] == f"file:{tmp_path / 'pw.txt'}"
    for ref in ("file:/etc/pw", "file:~/pw", "env:OPSBOOK_FIXTURE_SECRET"):
        assert runner.prepare("passing", {"db_password": ref}, notebooks=FIXTURE_NOTEBOOKS).params[
            "db_password"] == ref
    prep = runner.prepare("passing", {"db_password": "file:../x/pw"}, notebooks=FIXTURE_NOTEBOOKS)
    assert prep.params["db_password"] == f"file:{tmp_path.parent / 'x' / 'pw'}"



@pytest.mark.parametrize("text,needle", [(DEEP_FLOW, "nested deeper"), (BOMB, "aliases expand"),
                                         ("a: &a [*a]", "recursive")])
def test_pure_python_parser_has_the_same_limits(monkeypatch, text, needle):
    """Without libyaml the same composer runs on PyYAML's own parser."""
    monkeypatch.setattr(safeyaml, "_Loader", safeyaml._PyLoader)
    with pytest.raises(safeyaml.YamlLimitExceeded, match=needle):
        safeyaml.load(text, where="w")
    assert safeyaml.load("a: [1, {b: 2}]", where="w") == {"a": [1, {"b": 2}]}
