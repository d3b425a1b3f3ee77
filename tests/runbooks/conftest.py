"""Helpers for the runbook tests: the real CLI on the real notebooks, and an HTTP server on loopback that
stands in for an ingress controller."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .rbac import Grant

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
CHART = ROOT / "charts" / "ml-platform"


@dataclass
class Ingress:
    """An HTTP server on loopback answering like an ingress controller: 200 on the known paths, 404
    elsewhere; it records the Host header and path of every request."""

    url: str
    paths: set[str]
    seen: list[tuple[str, str]] = field(default_factory=list)


@pytest.fixture
def ingress() -> Iterator[Ingress]:
    state = Ingress(url="", paths={"/proposer", "/critic"})

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # noqa: ANN002
            pass

        def do_GET(self):  # noqa: N802
            state.seen.append((self.headers.get("Host", ""), self.path))
            ok = any(self.path == p or self.path.startswith(p + "/") for p in state.paths)
            body = json.dumps({"ok": ok, "path": self.path}).encode()
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def opsbook_run(tmp_path: Path):
    """Run ``python -m opsbook run RUNBOOK ...`` on the real notebooks, archiving into tmp_path/outputs."""
    outputs = tmp_path / "outputs"

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "opsbook", "run", *args, "--notebooks", str(NOTEBOOKS),
                "--outputs", str(outputs)]
        return subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **(env or {})},
                              timeout=timeout, cwd=tmp_path)

    run.outputs = outputs  # type: ignore[attr-defined]
    return run


@pytest.fixture
def declared_rbac(kube, tmp_path: Path) -> Iterator[Callable[[str, dict[str, Any]], Grant]]:
    """``declared_rbac(runbook_id, params)``: the :class:`~.rbac.Grant` that ``--on-cluster``
    would give a run of that runbook with those parameters, created now and revoked after the test. A
    test runs the CLI through ``grant.targets(...)`` and keeps the admin ``kube`` for its own set-up and
    assertions (``rbac.py``); ``test_declared_rbac.py`` checks each declaring runbook has such a test."""
    from .rbac import granted, runbook

    with contextlib.ExitStack() as stack:
        yield lambda runbook_id, params: stack.enter_context(granted(kube, runbook(runbook_id), params, tmp_path))


def manifests_of(outputs: Path, runbook: str) -> list[dict]:
    d = outputs / runbook
    if not d.exists():
        return []
    return sorted((json.loads((p / "manifest.json").read_text()) for p in d.iterdir() if p.is_dir()),
                  key=lambda m: m["started"] if "started" in m else m["run_id"])


# On a real cluster (OPSBOOK_TEST_KUBECONFIG) the chart's default images (ghcr.io/ml-platform/*) may not be
# pullable: run a real, public HTTP server in their place. The test server runs no images, so it needs none.
REAL_CLUSTER_SERVICE = {"image": {"registry": "registry.k8s.io", "repository": "e2e-test-images/agnhost",
                                  "tag": "2.47"},
                        "args": ["netexec", "--http-port=8080"], "readinessProbe": {"tcpSocket": {"port": "http"}}}


def values_for(kube, overrides: str = "") -> str:
    """``overrides`` (YAML), plus on a real cluster the image overrides above (overrides win)."""
    import yaml
    from opsbook.ops.initial_kubernetes_deployment import deep_merge

    base = {} if kube.is_test_server else {"services": {"proposer": REAL_CLUSTER_SERVICE,
                                                        "critic": REAL_CLUSTER_SERVICE}}
    merged = deep_merge(base, yaml.safe_load(overrides) or {})
    return yaml.safe_dump(merged, sort_keys=False) if merged else ""
