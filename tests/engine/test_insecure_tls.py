"""A kubeconfig with ``insecure-skip-tls-verify: true``: the run says so once, in its banner (and the
record's target line), and urllib3's ``InsecureRequestWarning`` appears nowhere, neither in the
records (notebook, HTML, manifest) nor on the terminal. The real CLI against the TLS test server (or
OPSBOOK_TEST_KUBECONFIG's cluster, reached the same way with verification turned off)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from opsbook.clients.kubeconfig import insecure_cluster, quiet_insecure_warning

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
OTHER_HOST = ("Unverified HTTPS request is being made to host 'other.example'. Adding certificate verification "
              "is strongly advised.")
BANNER = "TLS verification is off for cluster {} (insecure-skip-tls-verify in kubeconfig): the API server's " \
         "identity is not checked"


def _insecure_copy(kubeconfig: str, context: str, path: Path) -> tuple[Path, str]:
    """The kubeconfig with the context's cluster reached without verifying its certificate (no CA):
    what an operator gets from a cluster set up with a self-signed certificate and no CA to hand."""
    cfg = yaml.safe_load(Path(kubeconfig).read_text())
    ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == context)
    for c in cfg["clusters"]:
        if c["name"] == ctx["cluster"]:
            c["cluster"].pop("certificate-authority-data", None)
            c["cluster"].pop("certificate-authority", None)
            c["cluster"]["insecure-skip-tls-verify"] = True
    path.write_text(yaml.safe_dump(cfg))
    return path, ctx["cluster"]


def _run(tmp_path: Path, kube, kubeconfig: str | Path, runbook: str, *args: str) -> subprocess.CompletedProcess:
    targets = tmp_path / "targets.yaml"
    targets.write_text(f"kubetest:\n  kubeconfig: {kubeconfig}\n  kube_context: {kube.context}\n"
                       f"  namespace: {kube.namespace}\n  requires_approval: false\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OPSBOOK_OUTPUTS", "OPSBOOK_CI")}
    env.update(OPSBOOK_TARGETS=str(targets), OPSBOOK_OPERATOR="alice", COLUMNS="100")
    argv = [sys.executable, "-m", "opsbook", "run", runbook, "--target", "kubetest", "--notebooks", str(NOTEBOOKS),
            "--outputs", str(tmp_path / "outputs"), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=180, cwd=tmp_path)


def _record(tmp_path: Path, runbook: str) -> Path:
    (record,) = [p for p in (tmp_path / "outputs" / runbook).iterdir() if p.is_dir()]
    return record


@pytest.mark.slow
def test_an_insecure_kubeconfig_is_said_once_in_the_banner_and_never_in_the_records(kube, tmp_path):
    kubeconfig, cluster = _insecure_copy(kube.kubeconfig, kube.context, tmp_path / "kubeconfig")
    runbook = "initial-kubernetes-deployment"
    r = _run(tmp_path, kube, kubeconfig, runbook, "-p", "namespace", kube.namespace)
    assert r.returncode == 0, r.stdout + r.stderr
    record = _record(tmp_path, runbook)
    manifest = json.loads((record / "manifest.json").read_text())
    steps = {s["id"]: s for s in manifest["steps"]}
    # the API server was reached (over TLS, its certificate unchecked) and answered
    assert steps["connect"]["outcome"] == "ok" and "cluster v1." in steps["connect"]["summary"]
    assert steps["server-dry-run"]["outcome"] == "ok", steps["server-dry-run"]
    terminal = r.stdout + r.stderr
    assert terminal.count(BANNER.format(cluster)) == 1, terminal
    assert "TLS verification is off" not in r.stdout  # the banner is on stderr, before the run
    assert r.stderr.index(BANNER.format(cluster)) < r.stderr.index("starting the kernel")
    for text in (terminal, *(f.read_text(errors="replace") for f in record.rglob("*") if f.is_file())):
        assert "InsecureRequestWarning" not in text and "Unverified HTTPS request" not in text
    # the record says it once, in its target line
    assert manifest["target_tls"] == {"verify": False, "cluster": cluster}
    html = (record / "notebook.html").read_text()
    assert html.count(f"TLS verification off for cluster {cluster} (insecure-skip-tls-verify)") == 1
    # and the notebook's own banner (all a JupyterLab run has) says it once, in its text form
    cells = json.loads((record / "notebook.ipynb").read_text())["cells"]
    texts = ["".join(o.get("data", {}).get("text/plain", "")) for c in cells for o in c.get("outputs", [])]
    assert sum(t.count(BANNER.format(cluster)) for t in texts) == 1, texts[:3]


@pytest.mark.slow
def test_with_the_ca_there_is_no_tls_line(kube, tmp_path):
    if not kube.api.ca_file:
        pytest.skip("this cluster's kubeconfig names no CA")
    r = _run(tmp_path, kube, kube.kubeconfig, "environment-check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "TLS verification" not in r.stdout + r.stderr
    manifest = json.loads((_record(tmp_path, "environment-check") / "manifest.json").read_text())
    assert "target_tls" not in manifest


def test_the_kube_client_says_tls_is_off_and_keeps_urllib3_quiet_about_that_host(kube_api, tmp_path):
    """In the process that makes the requests (the kernel, in a run): no InsecureRequestWarning, which
    pytest turns into an error here, and only for the API host: any other unverified host still warns."""
    from opsbook.clients.kube import Kube
    from urllib3.exceptions import InsecureRequestWarning

    kubeconfig, _ = _insecure_copy(kube_api.kubeconfig, kube_api.context, tmp_path / "kubeconfig")
    insecure = Kube(kubeconfig=kubeconfig, context=kube_api.context)
    secure = Kube(kubeconfig=kube_api.kubeconfig, context=kube_api.context)
    try:
        assert insecure.tls_verification_off and not secure.tls_verification_off
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")  # as urllib3 does for its security warnings: each one shown
            assert insecure.version()["gitVersion"].startswith("v1.")
            assert insecure.namespace_exists(name="default")
            assert secure.namespace_exists(name="default")
            warnings.warn(OTHER_HOST, InsecureRequestWarning, stacklevel=1)
        assert [str(w.message) for w in seen] == [OTHER_HOST]
    finally:
        insecure.close()
        secure.close()


def _kubeconfig(path: Path, current: str | None, clusters: dict[str, dict], contexts: dict[str, str]) -> str:
    doc = {"apiVersion": "v1", "kind": "Config",
           "clusters": [{"name": n, "cluster": {"server": "https://127.0.0.1:6443", **c}} for n, c in clusters.items()],
           "contexts": [{"name": n, "context": {"cluster": c, "user": "u"}} for n, c in contexts.items()],
           "users": [{"name": "u", "user": {"token": "t"}}]}
    if current:
        doc["current-context"] = current
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_insecure_cluster_reads_the_kubeconfig_as_the_client_does(tmp_path, monkeypatch):
    off = {"insecure-skip-tls-verify": True}
    a = _kubeconfig(tmp_path / "a", "lab", {"lab": off, "prod": {"certificate-authority-data": "eA=="}},
                    {"lab": "lab", "prod": "prod"})
    assert insecure_cluster(a, None) == "lab"  # the current context
    assert insecure_cluster(a, "prod") is None
    assert insecure_cluster(a, "no-such-context") is None
    # $KUBECONFIG: a list, merged; the first file that defines a name (or the current context) wins
    b = _kubeconfig(tmp_path / "b", "prod", {"lab": {}, "prod": off, "edge": off}, {"edge": "edge"})
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([a, b]))
    assert insecure_cluster(None, None) == "lab"
    assert insecure_cluster(None, "prod") is None
    assert insecure_cluster(None, "edge") == "edge"
    # a file that is missing or is not a kubeconfig says nothing (loading the client will say why)
    (tmp_path / "junk").write_text("- [unclosed")
    assert insecure_cluster(tmp_path / "junk", None) is None
    assert insecure_cluster(tmp_path / "missing", "lab") is None


def test_the_filter_is_installed_once_however_often_it_is_asked_for():
    from urllib3.exceptions import InsecureRequestWarning

    near = "Unverified HTTPS request is being made to host '10.0.0.10'."  # a name that merely starts the same
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        before = len(warnings.filters)
        for _ in range(3):
            quiet_insecure_warning("10.0.0.1")
        assert len(warnings.filters) == before + 1
        warnings.warn("Unverified HTTPS request is being made to host '10.0.0.1'. Adding certificate "
                      "verification is strongly advised.", InsecureRequestWarning, stacklevel=1)
        warnings.warn(near, InsecureRequestWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == [near]
