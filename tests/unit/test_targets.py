from __future__ import annotations

import pytest
from opsbook import targets
from opsbook.errors import TargetError


@pytest.fixture
def tfile(tmp_path, monkeypatch):
    f = tmp_path / "targets.yaml"
    monkeypatch.setenv(targets.ENV_TARGETS, str(f))
    return f


def test_local_is_built_in_and_plans_only(tfile):
    local = targets.get("local")
    assert not local.has_cluster and not local.production and local.source == "built-in"


def test_targets_file_adds_targets(tfile):
    tfile.write_text("staging:\n  kube_context: stg\n  namespace: ml\n  requires_approval: true\n"
                     "prod:\n  kube_context: prod\n  production: true\n")
    all_t = targets.load_all()
    assert set(all_t) >= {"local", "staging", "prod"}
    assert all_t["staging"].has_cluster and all_t["staging"].requires_approval
    assert all_t["prod"].production and all_t["prod"].source == str(tfile)


@pytest.mark.parametrize("text,message", [
    ("local:\n  kube_context: x\n", "built in"),
    ("x:\n  kube_contxt: y\n", "kube_contxt"),
    ("x:\n  log_store_kind: splunk\n", "log_store_kind"),
    ("- a\n", "expected a mapping"),
    ("x: [unclosed\n", "not valid YAML"),
])
def test_bad_targets_files_are_refused_clearly(tfile, text, message):
    tfile.write_text(text)
    with pytest.raises(TargetError, match=message):
        targets.load_all()


def test_unknown_target_lists_known(tfile):
    with pytest.raises(TargetError, match="known: local"):
        targets.get("nowhere")
