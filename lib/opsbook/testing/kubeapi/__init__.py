"""A Kubernetes API test server: the real REST API over HTTPS, with simulated nodes and controllers.

Start it with ``python -m opsbook.testing.kubeapi --port 0`` (prints ``READY https://127.0.0.1:PORT``),
or in-process with :func:`start`. It serves TLS with a CA of its own made at start (see ``tls.py``):
clients trust it through the kubeconfig's ``certificate-authority-data``, as with a real cluster. See
README.md next to this file for what it implements and its gaps.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .controllers import Controllers
from .server import KubeServer, serve
from .store import Cluster
from .tls import ServerTls, generate

__all__ = ["Cluster", "RunningServer", "ServerTls", "start"]


@dataclass
class RunningServer:
    cluster: Cluster
    http: KubeServer
    controllers: Controllers
    tls: ServerTls
    own_dir: Path | None = None  # the CA's temporary folder, when start() made one: stop() removes it

    @property
    def url(self) -> str:
        host, port = self.http.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"https://{host}:{port}"

    @property
    def ca_pem(self) -> str:
        """The CA that signed the server's certificate: what a client must trust."""
        return self.tls.ca_pem

    def stop(self) -> None:
        with self.cluster.lock:
            self.cluster.stopping = True
            self.cluster.cond.notify_all()
        self.http.shutdown()
        self.http.server_close()
        if self.own_dir is not None:
            shutil.rmtree(self.own_dir, ignore_errors=True)


def start(port: int = 0, nodes: int = 3, ready_delay: float = 0.3, log_follow_seconds: float = 30.0,
          tls_dir: str | Path | None = None) -> RunningServer:
    """Serve on 127.0.0.1:``port``. The CA and the server's certificate and key are written to
    ``tls_dir`` (kept: its owner removes it), else to a temporary folder that :meth:`RunningServer.stop`
    removes."""
    own_dir = None
    if tls_dir is None:
        tls_dir = own_dir = Path(tempfile.mkdtemp(prefix="opsbook-kubeapi-"))
    tls = generate(tls_dir)
    cluster = Cluster(nodes=nodes, ready_delay=ready_delay, root_ca_pem=tls.ca_pem)  # what pods trust
    ctl = Controllers(cluster)
    ctl.start()
    http = serve(cluster, port=port, log_follow_seconds=log_follow_seconds, tls=tls.server_context())
    from . import schema

    schema.preload()  # the OpenAPI schema's index (some 0.05 s), now rather than on the first write
    return RunningServer(cluster, http, ctl, tls, own_dir)
