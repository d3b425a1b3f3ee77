"""``helm``, ``kubectl`` and ``chart_repo`` are the real tools and a real HTTP chart repository."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

pytestmark = pytest.mark.services

CHART = Path(__file__).parent / "charts" / "hello"


def _run(*argv: object, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120, check=False)
    if check:
        assert res.returncode == 0, res.stdout + res.stderr
    return res


def test_helm_lint_and_template(helm):
    assert "v3.17" in _run(helm, "version", "--short").stdout
    assert "0 chart(s) failed" in _run(helm, "lint", CHART).stdout
    rendered = _run(helm, "template", "demo", CHART, "--set", "replicaCount=3").stdout
    docs = {d["kind"]: d for d in yaml.safe_load_all(rendered) if d}
    assert docs["Deployment"]["metadata"]["name"] == "demo-hello"
    assert docs["Deployment"]["spec"]["replicas"] == 3
    assert docs["Service"]["spec"]["ports"][0]["port"] == 80


def test_helm_lint_rejects_a_broken_chart(helm, tmp_path):
    broken = tmp_path / "hello"
    shutil.copytree(CHART, broken)
    (broken / "templates" / "broken.yaml").write_text(
        "kind: ConfigMap\nmetadata:\n  name: {{ .Values.nope.deeper }}\n"
    )
    res = _run(helm, "lint", broken, check=False)
    assert res.returncode != 0
    assert "nil pointer" in res.stdout + res.stderr


def test_chart_repo_serves_packaged_charts(chart_repo):
    tgz = chart_repo.add_chart(CHART)
    assert tgz.name == "hello-0.1.0.tgz" and tgz.is_file()
    index = yaml.safe_load(requests.get(f"{chart_repo.url}/index.yaml", timeout=5).text)
    assert index["entries"]["hello"][0]["urls"] == [f"{chart_repo.url}/hello-0.1.0.tgz"]

    chart_repo.run_helm("repo", "add", "platform", chart_repo.url)
    found = json.loads(chart_repo.run_helm("search", "repo", "platform/hello", "--output", "json").stdout)
    assert [(c["name"], c["version"]) for c in found] == [("platform/hello", "0.1.0")]
    rendered = chart_repo.run_helm("template", "fromrepo", "platform/hello").stdout
    assert "name: fromrepo-hello" in rendered


def test_helm_repo_add_of_a_missing_repo_fails(chart_repo):
    res = chart_repo.run_helm("repo", "add", "nothere", f"{chart_repo.url}/nothere", check=False)
    assert res.returncode != 0
    assert "404" in res.stderr


def test_kubectl_client_version(kubectl):
    info = json.loads(_run(kubectl, "version", "--client", "--output=json").stdout)
    assert info["clientVersion"]["gitVersion"].startswith("v1.")
