"""helm install / upgrade / rollback / uninstall of a tiny chart (helm stores releases as Secrets)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import PAUSE

pytestmark = pytest.mark.kube

CHART = {
    "Chart.yaml": "apiVersion: v2\nname: tiny\nversion: 0.1.0\n",
    "values.yaml": f"image: {PAUSE}\nreplicas: 1\nmessage: one\n",
    "templates/deployment.yaml": """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-tiny
  labels: {app: {{ .Release.Name }}-tiny}
spec:
  replicas: {{ .Values.replicas }}
  selector: {matchLabels: {app: {{ .Release.Name }}-tiny}}
  template:
    metadata: {labels: {app: {{ .Release.Name }}-tiny}}
    spec:
      containers:
      - name: app
        image: {{ .Values.image }}
        env: [{name: MESSAGE, value: {{ .Values.message | quote }}}]
""",
    "templates/configmap.yaml": """apiVersion: v1
kind: ConfigMap
metadata: {name: {{ .Release.Name }}-cfg}
data: {message: {{ .Values.message | quote }}}
""",
    "templates/service.yaml": """apiVersion: v1
kind: Service
metadata: {name: {{ .Release.Name }}-svc}
spec:
  selector: {app: {{ .Release.Name }}-tiny}
  ports: [{port: 80, targetPort: 8080}]
""",
}


def _helm_binary() -> str | None:
    venv = Path(sys.executable).parent / "helm"
    if venv.exists():
        return str(venv)
    return shutil.which("helm")


@pytest.fixture
def helm_run(kube, tmp_path):
    binary = _helm_binary()
    if binary is None:
        pytest.fail("helm is not installed (scripts/install-tools.sh puts it at .venv/bin/helm)")
    env = dict(os.environ, HELM_CACHE_HOME=str(tmp_path / "cache"), HELM_CONFIG_HOME=str(tmp_path / "config"),
               HELM_DATA_HOME=str(tmp_path / "data"))

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [binary, "--kubeconfig", kube.kubeconfig, "--kube-context", kube.context, "-n", kube.namespace,
               *args]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=env)
        if check and p.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p

    return run


def _chart(tmp_path: Path) -> Path:
    d = tmp_path / "tiny"
    for rel, text in CHART.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    return d


def _message(kube) -> str:
    return json.loads(kube.kubectl("get", "configmap", "rel-cfg", "-o", "json").stdout)["data"]["message"]


@pytest.mark.needs_ready_pods
def test_helm_install_upgrade_rollback_uninstall(kube, helm_run, tmp_path):
    chart = _chart(tmp_path)
    helm_run("install", "rel", str(chart))
    kube.kubectl("rollout", "status", "deployment/rel-tiny", "--timeout=30s", timeout=45)
    assert _message(kube) == "one"
    secrets = kube.kubectl("get", "secrets", "-l", "owner=helm,name=rel", "-o", "name").stdout.split()
    assert secrets == ["secret/sh.helm.release.v1.rel.v1"]
    helm_run("upgrade", "rel", str(chart), "--set", "message=two", "--set", "replicas=2")
    kube.kubectl("rollout", "status", "deployment/rel-tiny", "--timeout=30s", timeout=45)
    assert _message(kube) == "two"
    status = json.loads(helm_run("status", "rel", "-o", "json").stdout)
    assert status["info"]["status"] == "deployed" and status["version"] == 2
    helm_run("rollback", "rel", "1")
    kube.kubectl("rollout", "status", "deployment/rel-tiny", "--timeout=30s", timeout=45)
    assert _message(kube) == "one"
    history = json.loads(helm_run("history", "rel", "-o", "json").stdout)
    assert [h["revision"] for h in history] == [1, 2, 3] and history[-1]["status"] == "deployed"
    assert "rel" in helm_run("list", "-q").stdout.split()
    helm_run("uninstall", "rel")
    assert kube.kubectl("get", "deployment", "rel-tiny", check=False).returncode != 0
    assert kube.kubectl("get", "secrets", "-l", "owner=helm", "-o", "name").stdout.strip() == ""
