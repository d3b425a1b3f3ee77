"""Strict parameter validation: every kind of bad parameter is refused with name, value and expectation."""

from __future__ import annotations

import pytest
from opsbook.errors import ParameterError, RunbookError
from opsbook.parameters import load_params_file, parse_parameters_cell, validate

CELL = '''mode: str = "plan"  # plan or apply [choices: plan, apply]
target: str = "local"  # target environment
namespace: str = "ml-platform"  # namespace [k8s-name]
release: str = "ml"  # release name [k8s-name]
replicas: int = 2  # instances [min: 1] [max: 10]
ratio: float = 0.5  # canary share
dry: bool = True  # dry run
tags: list = []  # tags
overrides: dict = {}  # values overrides
db_password: str = "env:DB_PASSWORD"  # database password [secret]
note: str = ""  # free text
'''


@pytest.fixture(scope="module")
def spec():
    return parse_parameters_cell(CELL)


def problems(spec, given, text=None):
    with pytest.raises(ParameterError) as ei:
        validate(spec, given, text_values=set(given) if text is None else text)
    return {p.name: p for p in ei.value.problems}


def test_spec_reads_types_defaults_help_and_markers(spec):
    p = spec.params
    assert list(p) == ["mode", "target", "namespace", "release", "replicas", "ratio", "dry", "tags", "overrides",
                       "db_password", "note"]
    assert p["replicas"].type == "int" and p["replicas"].default == 2
    assert (p["replicas"].minimum, p["replicas"].maximum) == (1, 10)
    assert p["mode"].choices == ("plan", "apply")
    assert p["namespace"].k8s_name and p["release"].k8s_name and not p["note"].k8s_name
    assert p["db_password"].secret and p["db_password"].help == "database password"


def test_defaults_validate_unchanged(spec):
    assert validate(spec, {}) == spec.defaults()


def test_text_values_are_parsed_as_declared_types(spec):
    out = validate(spec, {"replicas": "3", "ratio": "0.25", "dry": "false", "tags": "[a, b]",
                          "overrides": "{image: {tag: '1.2'}}"}, text_values={"replicas", "ratio", "dry", "tags",
                                                                                 "overrides"})
    assert out["replicas"] == 3 and out["ratio"] == 0.25 and out["dry"] is False
    assert out["tags"] == ["a", "b"] and out["overrides"] == {"image": {"tag": "1.2"}}


def test_unknown_name_suggests_the_closest(spec):
    p = problems(spec, {"namspace": "x"})
    assert "did you mean 'namespace'" in p["namspace"].expected


def test_unknown_name_without_close_match_lists_known(spec):
    p = problems(spec, {"zzz": "1"})
    assert "unknown parameter" in p["zzz"].expected and "known:" in p["zzz"].expected


@pytest.mark.parametrize("name,value,expected", [
    ("replicas", "three", "an integer"),
    ("replicas", "2.5", "an integer"),
    ("ratio", "half", "a number"),
    ("dry", "maybe", "true or false"),
    ("tags", "{a: 1}", "a list"),
    ("overrides", "[1, 2]", "a mapping"),
    ("overrides", "{unclosed", "does not parse"),
])
def test_values_that_do_not_parse(spec, name, value, expected):
    p = problems(spec, {name: value})
    assert expected in p[name].expected
    assert p[name].value == repr(value)


def test_yaml_typed_values_are_not_coerced_across_types(spec):
    # from a YAML file a bool is not an int, a list is not a string
    p = problems(spec, {"replicas": True, "note": ["a"]}, text=set())
    assert set(p) == {"replicas", "note"}


def test_choices(spec):
    assert "one of plan, apply" in problems(spec, {"mode": "destroy"})["mode"].expected


def test_bounds(spec):
    assert ">= 1" in problems(spec, {"replicas": "0"})["replicas"].expected
    assert "<= 10" in problems(spec, {"replicas": "11"})["replicas"].expected


@pytest.mark.parametrize("bad", ["Bad_Name", "UPPER", "-lead", "trail-", "a.b", "x" * 64])
def test_kubernetes_names(spec, bad):
    assert "DNS-1123" in problems(spec, {"namespace": bad})["namespace"].expected


@pytest.mark.parametrize("good", ["a", "ml-platform", "x" * 63, "team-1"])
def test_good_kubernetes_names(spec, good):
    assert validate(spec, {"namespace": good})["namespace"] == good


@pytest.mark.parametrize("ref", ["env:DB_PASSWORD", "file:/run/secrets/db", "k8s:ml-platform/db-creds/password", ""])
def test_secret_references_accepted(spec, ref):
    assert validate(spec, {"db_password": ref})["db_password"] == ref


@pytest.mark.parametrize("literal", ["s3cr3t-P@ss", "env:", "env:1BAD", "k8s:ns/secret", "k8s:NS/s/k", "file:"])
def test_literal_secret_values_refused_and_masked(spec, literal):
    p = problems(spec, {"db_password": literal})["db_password"]
    assert "secret reference" in p.expected
    assert literal not in p.value or literal in ("env:", "file:")  # never echo a possible secret
    assert "****" in p.value


def test_secret_looking_value_in_plain_parameter_is_refused(spec):
    token = "ghp_" + "a1B2c3D4e5" * 4
    p = problems(spec, {"note": token})["note"]
    assert token not in p.value and "literal secret" in p.expected


def test_every_problem_reported_at_once(spec):
    p = problems(spec, {"replicas": "x", "namespace": "Bad", "mode": "nope", "nope": "1"})
    assert set(p) == {"replicas", "namespace", "mode", "nope"}


def test_error_message_lists_one_line_per_problem(spec):
    with pytest.raises(ParameterError) as ei:
        validate(spec, {"replicas": "x", "namespace": "Bad"}, text_values={"replicas"})
    lines = [ln for ln in str(ei.value).splitlines() if ln.strip().startswith("-")]
    assert len(lines) == 2


@pytest.mark.parametrize("cell,message", [
    ('import os\nmode: str = "plan"', "only `name: type = default"),
    ('mode: str = "apply"  # [choices: plan, apply]', "default mode must be 'plan'"),
    ('x: str = some_call()', "must be a literal"),
    ('x: complex = 1', "expected one of"),
    ('x: int = 1\nx: int = 2', "declared twice"),
    ('namespace: str = "Bad_NS"', "invalid default"),
    ('pw: str = "literal"  # [secret]', "invalid default"),
    ('x: int = (', "not valid Python"),
])
def test_bad_parameters_cells_are_rejected(cell, message):
    with pytest.raises(RunbookError, match=message.replace("(", r"\(")):
        parse_parameters_cell(cell)


def test_params_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("replicas: 3\nnamespace: team-a\n")
    assert load_params_file(str(f)) == {"replicas": 3, "namespace": "team-a"}
    f.write_text("- a\n- b\n")
    from opsbook.errors import UsageError

    with pytest.raises(UsageError, match="expected a mapping"):
        load_params_file(str(f))
    with pytest.raises(UsageError, match="No such file"):
        load_params_file(str(tmp_path / "missing.yaml"))
