"""Errors that protect (issue 16, section 2), in-process: names assigned by hand next to the
parameters, the [path...] and [required...] markers, targets that break only themselves."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import opsbook
import pytest
from opsbook import notebook, parameters, targets
from opsbook.errors import ParameterError, RunbookError, TargetError

from ..conftest import FIXTURE_NOTEBOOKS

PARAMS_CELL = 'mode = "plan"\ntarget = "local"\nnamespace = "ml-platform"\nnamespace_typo = 3\n'


@pytest.fixture
def ns(monkeypatch, tmp_path):
    monkeypatch.setenv("OPSBOOK_NOTEBOOKS", str(FIXTURE_NOTEBOOKS))
    monkeypatch.setenv("OPSBOOK_OUTPUTS", str(tmp_path / "outputs"))
    for var in (notebook.ENV_SOURCE, notebook.ENV_EVENTS, notebook.ENV_RUN_ID):
        monkeypatch.delenv(var, raising=False)
    return {"mode": "plan", "target": "local", "namespace": "ml-platform", "replicas": 2,
            "db_password": "env:OPSBOOK_FIXTURE_SECRET", "unrelated_variable": object()}


def test_a_name_typed_in_the_parameters_cell_is_flagged(ns):
    ns.update(namespace_typo=3, In=["", PARAMS_CELL, 'run = opsbook.start("passing", globals())'])
    with pytest.raises(ParameterError) as err:
        opsbook.start("passing", ns)
    (problem,) = err.value.problems
    assert problem.name == "namespace_typo" and "did you mean 'namespace'?" in problem.expected


def test_papermills_injected_cell_is_read_too(ns):
    injected = '# Parameters\nmode = "plan"\nnamespce = "team-a"\n'
    ns.update(namespce="team-a", In=["", 'mode = "plan"\nnamespace = "ml-platform"\n', injected, "run = opsbook.start("
                                    '"passing", globals())'])
    with pytest.raises(ParameterError, match="namespce.*did you mean 'namespace'"):
        opsbook.start("passing", ns)


def test_other_variables_and_cells_before_the_last_start_are_not_flagged(ns):
    # a typo fixed since: the cells before the previous setup cell belong to the earlier run
    ns.update(namespace_typo=3, metrics=[1], In=["", PARAMS_CELL, 'run = opsbook.start("passing", globals())',
                                                 "metrics = [1]", 'namespace = "ml-platform"\nreplicas = 3',
                                                 'run = opsbook.start("passing", globals())'])
    assert opsbook.start("passing", ns).params["namespace"] == "ml-platform"


def test_without_a_history_nothing_changes(ns):
    ns["namespace_typo"] = 3  # plain Python (tests, scripts): no IPython input history to read
    assert opsbook.start("passing", ns).params["replicas"] == 2


# -- markers ---------------------------------------------------------------------------------------------------

CELL = '''version: str = ""  # version [required-unless: tracking_uri, target.mlflow_uri]
tracking_uri: str = ""  # registry
name: str = ""  # a name [required]
data: str = ""  # data file [path: file]
chart: str = "../charts/c"  # chart [path-or-name]
overrides: str = ""  # overrides [path-or-yaml]
'''


def test_markers_parse_and_describe():
    spec = parameters.parse_parameters_cell(CELL)
    p = spec.params
    assert p["version"].required_unless == ("tracking_uri", "target.mlflow_uri") and p["name"].required
    assert (p["data"].path, p["chart"].path, p["overrides"].path) == ("file", "name", "yaml")
    assert p["data"].describe() == "the path of an existing file" and p["data"].help == "data file"
    with pytest.raises(RunbookError, match=r"\[path: socket\]"):
        parameters.parse_parameters_cell('x: str = ""  # x [path: socket]\n')
    with pytest.raises(RunbookError, match="apply to str parameters"):
        parameters.parse_parameters_cell("x: int = 0  # x [required]\n")


def test_required_unless_another_parameter_or_the_target():
    spec = parameters.parse_parameters_cell(CELL)
    values = {**spec.defaults(), "name": "n"}
    no_registry = SimpleNamespace(mlflow_uri=None)
    with pytest.raises(ParameterError, match="required when neither tracking_uri nor the target's mlflow_uri"):
        parameters.check_required(spec, values, no_registry)
    parameters.check_required(spec, {**values, "tracking_uri": "http://mlflow"}, no_registry)
    parameters.check_required(spec, values, lambda: SimpleNamespace(mlflow_uri="http://mlflow"))
    parameters.check_required(spec, {**values, "version": "3"}, lambda: pytest.fail("target not needed"))
    with pytest.raises(ParameterError, match="name='': required"):
        parameters.check_required(spec, {**values, "name": "", "version": "3"}, no_registry)


def test_given_paths_from_the_callers_folder_defaults_from_the_notebooks(tmp_path):
    spec = parameters.parse_parameters_cell(CELL)
    here, nbdir = tmp_path / "here", tmp_path / "project" / "notebooks"
    (here / "sub").mkdir(parents=True)
    (tmp_path / "project" / "charts" / "c").mkdir(parents=True)
    nbdir.mkdir()
    (here / "d.csv").write_text("x\n")
    values = {**spec.defaults(), "data": "d.csv", "overrides": "a: 1"}
    out = parameters.resolve_paths(spec, values, given={"data", "overrides"}, cwd=here, notebook_dir=nbdir)
    assert out["data"] == str(here / "d.csv")  # given: the caller's folder, made absolute
    assert out["chart"] == "../charts/c"  # the default: checked against notebooks/, kept as written
    assert out["overrides"] == "a: 1" and out["version"] == ""  # inline YAML, empty: left alone
    out = parameters.resolve_paths(spec, {**values, "chart": "ml-platform"}, given={"chart", "data"}, cwd=here,
                                   notebook_dir=nbdir)
    assert out["chart"] == "ml-platform"  # a name in a repository
    with pytest.raises(ParameterError) as err:
        parameters.resolve_paths(spec, {**values, "data": "sub", "overrides": "v.yaml", "chart": "./nope"},
                                 given={"data", "overrides", "chart"}, cwd=here, notebook_dir=nbdir)
    got = {p.name: p.expected for p in err.value.problems}
    assert got["data"].endswith(f"{here / 'sub'} is not a file (a relative path is taken from the folder "
                                f"opsbook runs in, {here})")
    assert f"{here / 'v.yaml'} does not exist" in got["overrides"] and f"{here / 'nope'} does not exist" in got["chart"]
    with pytest.raises(ParameterError, match="the default, relative to the runbook's folder"):
        parameters.resolve_paths(spec, spec.defaults(), given=set(), cwd=here, notebook_dir=tmp_path)


def test_path_base_in_the_kernel(ns, tmp_path, monkeypatch):
    run = opsbook.start("passing", ns)
    monkeypatch.chdir(tmp_path)
    assert notebook.path_base("replicas", run.runbook.spec.params["replicas"].default) == Path(
        FIXTURE_NOTEBOOKS).resolve()
    assert notebook.path_base("replicas", 7) == tmp_path


# -- targets ----------------------------------------------------------------------------------------------------

def test_a_broken_target_breaks_only_itself(tmp_path, monkeypatch):
    f = tmp_path / "targets.yaml"
    monkeypatch.setenv(targets.ENV_TARGETS, str(f))
    f.write_text("staging:\n  kube_contxt: x\nprod:\n  log_store_kind: splunk\nok:\n  namespace: ml\nbad: 3\n")
    assert targets.get("local").name == "local" and targets.get("ok").namespace == "ml"
    with pytest.raises(TargetError) as err:
        targets.get("staging")
    assert str(err.value) == (f"targets file {f}: target 'staging': unknown field 'kube_contxt' "
                              "(did you mean 'kube_context'?)")
    with pytest.raises(TargetError) as err:
        targets.get("prod")
    assert "\n" not in str(err.value) and "https://" not in str(err.value)
    assert "field 'log_store_kind': input should be 'opensearch', 'elasticsearch' or 'loki' (got 'splunk')" in str(
        err.value)
    usable, broken = targets.scan()
    assert set(usable) == {"local", "ok"} and [b.name for b in broken] == ["staging", "prod", "bad"]
    f.write_text("x: [unclosed\n")  # a file that does not parse: its targets are unknown, local is not
    assert targets.get("local").name == "local"
    with pytest.raises(TargetError, match="not valid YAML"):
        targets.get("x")
