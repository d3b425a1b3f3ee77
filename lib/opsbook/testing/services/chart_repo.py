"""The ``chart_repo`` fixture: a static Helm chart repository on loopback, filled with ``helm
package``."""

from __future__ import annotations

import functools
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from opsbook.testing.timing import record_startup

from .process import (
    LOOPBACK,
    register_cleanup,
    unregister_cleanup,
)


@dataclass
class ChartRepo:
    """A static Helm chart repository served over HTTP on loopback from ``directory``."""

    url: str
    directory: Path
    helm: Path
    helm_env: dict[str, str]
    charts: list[Path] = field(default_factory=list)

    def run_helm(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run ``helm ARGS`` with this repo's private helm home (config/cache/data dirs)."""
        res = subprocess.run(
            [str(self.helm), *args],
            capture_output=True,
            text=True,
            env=self.helm_env,
            timeout=timeout,
            check=False,
        )
        if check and res.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} exited {res.returncode}:\n{res.stdout}{res.stderr}")
        return res

    def add_chart(self, chart_dir: str | os.PathLike[str]) -> Path:
        """``helm package`` ``chart_dir`` into the repo and regenerate ``index.yaml``; returns the .tgz."""
        res = self.run_helm("package", str(chart_dir), "--destination", str(self.directory))
        tgz = Path(res.stdout.strip().rsplit(":", 1)[-1].strip())
        self.run_helm("repo", "index", str(self.directory), "--url", self.url)
        self.charts.append(tgz)
        return tgz


@pytest.fixture(scope="session")
def chart_repo(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChartRepo]:
    """An empty chart repository on ``http://127.0.0.1:P``; fill it with ``chart_repo.add_chart(dir)``."""
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    t0 = time.monotonic()
    base = tmp_path_factory.mktemp("chart_repo")
    directory = base / "repo"
    directory.mkdir()

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer((LOOPBACK, 0), functools.partial(Handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, name="opsbook-chart-repo", daemon=True)
    thread.start()
    url = f"http://{LOOPBACK}:{server.server_address[1]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELM_")}
    for var, sub in (
        ("HELM_CONFIG_HOME", "config"),
        ("HELM_CACHE_HOME", "cache"),
        ("HELM_DATA_HOME", "data"),
    ):
        (base / "helm" / sub).mkdir(parents=True)
        env[var] = str(base / "helm" / sub)
    repo = ChartRepo(url, directory, helm, env)
    key = register_cleanup(server.shutdown)
    try:
        repo.run_helm("repo", "index", str(directory), "--url", url)
        record_startup("chart_repo", time.monotonic() - t0)
        yield repo
    finally:
        unregister_cleanup(key)
        server.shutdown()
        server.server_close()
