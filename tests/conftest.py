"""Shared test helpers. The real-service fixtures come from the opsbook pytest plugin
(``opsbook.testing``), loaded through its entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

collect_ignore = ["fixtures"]

# ------------------------------------------------------------------ markers from the fixtures a test uses
#
# A test that uses a live-service fixture (directly or through another fixture: ``item.fixturenames`` is
# the whole closure) gets that service's marker and the umbrella ``services`` marker at collection time,
# so ``-m "not services"`` (``make check``) never starts a server. Explicit markers still work: a test
# that starts a service itself (not through a fixture) says so with ``@pytest.mark.services`` and the
# service's marker. ``helm``, ``kubectl`` (binary paths), ``metrics_exporter`` (an in-process exporter)
# and the runbook tests' ``ingress`` (an in-process HTTP server) start no service.

SERVICE_FIXTURES: dict[str, str] = {
    "kube_api": "kube",  # the Kubernetes API test server (python -m opsbook.testing.kubeapi), or a cluster
    "kube": "kube",
    "postgres": "postgres",
    "s3": "s3",  # SeaweedFS
    "mlflow_server": "mlflow",
    "prometheus": "prometheus",
    "log_store": "log_store",  # osmem-server
    "chart_repo": "chart_repo",  # a Helm chart repository on loopback, filled with helm package
}
SERVICES = "services"


def service_markers(fixturenames) -> set[str]:
    """The markers a test using ``fixturenames`` must carry: one per live service, plus ``services``."""
    names = {SERVICE_FIXTURES[f] for f in fixturenames if f in SERVICE_FIXTURES}
    return names | {SERVICES} if names else set()


def _unmarked(item: pytest.Item) -> set[str]:
    have = {m.name for m in item.iter_markers()}
    return service_markers(getattr(item, "fixturenames", ())) - have


@pytest.hookimpl(tryfirst=True)  # before -m deselects: the markers must be there when it looks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for name in sorted(_unmarked(item)):
            item.add_marker(name)
        have = {m.name for m in item.iter_markers()}
        if have & set(SERVICE_FIXTURES.values()) and SERVICES not in have:
            item.add_marker(SERVICES)  # an explicit service marker implies the umbrella one


class _ServiceMarkerGuard:
    """Registered as a plugin, not written as conftest hooks: pytest offers session-level hooks (the end
    of collection, a session fixture's set-up) only to the conftest files of the root directory."""

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Refuse to run a selection in which a test uses a live-service fixture without its marker."""
        wrong = {item.nodeid: sorted(_unmarked(item)) for item in session.items if _unmarked(item)}
        if wrong:
            lines = "\n".join(f"  {nodeid}: {', '.join(names)}" for nodeid, names in sorted(wrong.items()))
            raise pytest.UsageError(f"tests using live-service fixtures without their markers:\n{lines}")

    @pytest.hookimpl(tryfirst=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest) -> None:
        """A service fixture reached at run time (``request.getfixturevalue``) by a test not marked for
        it fails that test instead of starting the service behind ``-m "not services"``'s back."""
        marker = SERVICE_FIXTURES.get(fixturedef.argname)
        item = getattr(request, "_pyfuncitem", None)
        if marker and item is not None and item.get_closest_marker(marker) is None:
            pytest.fail(f"{item.nodeid} uses the {fixturedef.argname!r} fixture at run time without "
                        f"@pytest.mark.{marker} (and @pytest.mark.{SERVICES}): add them", pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_ServiceMarkerGuard(), "opsbook-service-marker-guard")
    # The CLI sizes its tables from COLUMNS. pytest-xdist's workers (``make check`` runs two) set it to
    # 80, a plain run leaves it unset: the tests that care about a width set it themselves.
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)


ROOT = Path(__file__).resolve().parents[1]
FIXTURE_NOTEBOOKS = ROOT / "tests" / "fixtures" / "notebooks"
OPSBOOK = [sys.executable, "-m", "opsbook"]
FIXTURE_SECRET = "hunter2-correct-horse-battery"


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    return tmp_path / "outputs"


@pytest.fixture
def cli(outputs: Path):
    """Run the real `opsbook` CLI against the fixture notebooks and a private archive."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
            notebooks: Path = FIXTURE_NOTEBOOKS) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "OPSBOOK_FIXTURE_SECRET": FIXTURE_SECRET, **(env or {})}
        argv = [*OPSBOOK, *args]
        if args and args[0] in ("run", "list", "show"):
            argv += ["--notebooks", str(notebooks)]
        if args and args[0] in ("run", "history", "verify"):
            argv += ["--outputs", str(outputs)]
        return subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=timeout)

    return run
