"""Markers are true (issue 19): a test that uses a live service carries that service's marker and
``services``, set from its fixtures in ``tests/conftest.py``, so ``make check`` (``-m "not services and not
slow"``) starts none; and a test that uses the Kubernetes API test server's admin endpoints is marked
``requires_test_server``, so it is skipped, not failed, on a real cluster."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from .conftest import SERVICE_FIXTURES, SERVICES, pytest_collection_modifyitems, service_markers

TESTS = Path(__file__).resolve().parent

# KubeApi / KubeNamespace methods that exist only on the test server (opsbook.testing.kube), and the
# path of its admin endpoints (a test that calls them directly)
TEST_SERVER_ONLY = {"feed_logs", "faults", "set_faults", "clear_faults", "set_node_ready", "server_state", "reset",
                    "set_token_controller", "_admin"}
ADMIN_PATH = "/_opsbook/"


class FakeItem:
    """Just what the collection hook uses of a pytest item."""

    def __init__(self, fixturenames: list[str], marks: tuple[str, ...] = ()):
        self.nodeid = "tests/test_x.py::test_x"
        self.fixturenames = fixturenames
        self.own_markers = [getattr(pytest.mark, m).mark for m in marks]

    def iter_markers(self, name: str | None = None):
        return (m for m in self.own_markers if name is None or m.name == name)

    def add_marker(self, marker: str) -> None:
        self.own_markers.append(getattr(pytest.mark, marker).mark)

    def names(self) -> list[str]:
        return sorted(m.name for m in self.own_markers)


def test_service_markers_follow_the_fixture_closure():
    assert service_markers(["tmp_path", "cli", "outputs"]) == set()
    assert service_markers(["helm", "kubectl", "metrics_exporter", "ingress"]) == set()
    assert service_markers(["core", "kube", "kube_api", "request"]) == {"kube", "services"}
    # mlflow_server's closure holds postgres and s3
    assert service_markers(["mlflow_server", "postgres", "s3", "tmp_path"]) == {"mlflow", "postgres", "s3",
                                                                                  "services"}
    assert service_markers(["chart_repo", "helm"]) == {"chart_repo", "services"}


def test_the_collection_hook_marks_a_synthetic_item():
    plain = FakeItem(["tmp_path"])
    s3 = FakeItem(["s3", "tmp_path"])
    kube = FakeItem(["kube", "kube_api"], marks=("kube",))  # already marked by hand: not marked twice
    by_hand = FakeItem(["tmp_path"], marks=("mlflow",))  # starts its own server: umbrella added
    slow = FakeItem(["tmp_path"], marks=("slow",))
    pytest_collection_modifyitems(None, [plain, s3, kube, by_hand, slow])  # type: ignore[arg-type]
    assert plain.names() == []
    assert s3.names() == ["s3", "services"]
    assert kube.names() == ["kube", "services"]
    assert by_hand.names() == ["mlflow", "services"]
    assert slow.names() == ["slow"]


def test_every_test_of_this_session_carries_the_markers_of_its_services(request):
    items = request.session.items
    assert request.node in items
    wrong = {i.nodeid: sorted(service_markers(getattr(i, "fixturenames", ())) - {m.name for m in i.iter_markers()})
             for i in items}
    assert {k: v for k, v in wrong.items() if v} == {}


def test_every_service_fixture_of_the_plugin_has_a_marker(pytestconfig):
    # a session fixture that starts a service reports its start-up time (opsbook.testing.timing)
    import importlib
    import pkgutil

    from opsbook.testing import kube, services

    mods = [kube, services, *(importlib.import_module(f"{services.__name__}.{m.name}")
                              for m in pkgutil.iter_modules(services.__path__))]
    started = set()
    for mod in mods:
        started |= set(re.findall(r'record_startup\("(\w+)"', inspect.getsource(mod)))
    assert len(started) > 2 and started <= set(SERVICE_FIXTURES)  # the test server and the services
    assert set(SERVICE_FIXTURES) <= set(kube.__all__) | set(services.__all__)
    declared = {line.split(":")[0].strip() for line in pytestconfig.getini("markers")}
    assert {*SERVICE_FIXTURES.values(), SERVICES, "slow"} <= declared


def uses_of_test_server_admin(source: str) -> list[str]:
    """Tests in ``source`` that call a test-server-only helper but are not marked ``requires_test_server``."""
    tree = ast.parse(source)

    def mentions(nodes) -> bool:
        return any(isinstance(n, ast.Name | ast.Attribute) and "requires_test_server" in ast.unparse(n)
                   for node in nodes for n in ast.walk(node))

    module_marked = mentions(n for n in tree.body if isinstance(n, ast.Assign)
                             and any(getattr(t, "id", "") == "pytestmark" for t in n.targets))
    found = []
    scopes = [(tree.body, [])] + [(c.body, c.decorator_list) for c in tree.body if isinstance(c, ast.ClassDef)]
    for body, class_decorators in scopes:
        for fn in body:
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) or not fn.name.startswith("test"):
                continue
            calls = {n.func.attr for n in ast.walk(fn) if isinstance(n, ast.Call)
                     and isinstance(n.func, ast.Attribute)}
            admin_path = any(isinstance(n, ast.Constant) and isinstance(n.value, str) and ADMIN_PATH in n.value
                             for n in ast.walk(fn))
            if (calls & TEST_SERVER_ONLY or admin_path) and not (
                    module_marked or mentions(class_decorators) or mentions(fn.decorator_list) or mentions(fn.body)):
                found.append(fn.name)
    return found


def test_the_admin_check_sees_a_missing_marker():
    src = ("import pytest\n"
           "@pytest.mark.kube\n"
           "def test_a(kube):\n    kube.feed_logs('p', 'c', 'x')\n"
           "@requires_test_server\n"
           "def test_b(kube):\n    kube.feed_logs('p', 'c', 'x')\n"
           "def test_c(kube):\n    kube.api.set_node_ready('n', False)\n"
           "def test_d(kube):\n    kube.kubectl('get', 'pods')\n"
           "def test_e(kube_api):\n    kube_api.set_token_controller(True)\n    kube_api.reset()\n"
           "def test_f(kube_api):\n    urlopen(kube_api.url + '/_opsbook/state')\n"
           "class TestG:\n    def test_g(self, kube_api):\n        kube_api.server_state()\n")
    assert uses_of_test_server_admin(src) == ["test_a", "test_c", "test_e", "test_f", "test_g"]
    assert uses_of_test_server_admin("pytestmark = [requires_test_server]\n" + src) == []


def test_the_admin_check_would_have_caught_the_evidence_test():
    """Issue 19: the incident's evidence test fed logs without the marker and failed on every real
    cluster. Its source as it was, minus the marker line, must be caught."""
    src = (TESTS / "runbooks" / "test_security_incident.py").read_text()
    name = "test_evidence_files_match_what_the_cluster_returned"
    assert name not in uses_of_test_server_admin(src)
    unmarked = re.sub(rf"@requires_test_server[^\n]*\n(def {name}\()", r"\1", src)
    assert unmarked != src and name in uses_of_test_server_admin(unmarked)


def test_tests_using_the_test_servers_admin_endpoints_are_marked_requires_test_server():
    files = [p for p in sorted(TESTS.rglob("test_*.py")) if p != Path(__file__).resolve()]  # not these samples
    assert len(files) > 50
    unmarked = {str(p.relative_to(TESTS)): names for p in files if (names := uses_of_test_server_admin(p.read_text()))}
    assert unmarked == {}
