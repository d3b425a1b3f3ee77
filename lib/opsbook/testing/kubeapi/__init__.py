"""A Kubernetes API test server: the real REST API over HTTP, with simulated nodes and controllers.

Start it with ``python -m opsbook.testing.kubeapi --port 0`` (prints ``READY http://127.0.0.1:PORT``), or
in-process with :func:`start`. See README.md next to this file for what it implements and its gaps.
"""

from __future__ import annotations

from dataclasses import dataclass

from .controllers import Controllers
from .server import KubeServer, serve
from .store import Cluster

__all__ = ["Cluster", "RunningServer", "start"]


@dataclass
class RunningServer:
    cluster: Cluster
    http: KubeServer
    controllers: Controllers

    @property
    def url(self) -> str:
        host, port = self.http.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{host}:{port}"

    def stop(self) -> None:
        with self.cluster.lock:
            self.cluster.stopping = True
            self.cluster.cond.notify_all()
        self.http.shutdown()
        self.http.server_close()


def start(port: int = 0, nodes: int = 3, ready_delay: float = 0.3, log_follow_seconds: float = 30.0) -> RunningServer:
    cluster = Cluster(nodes=nodes, ready_delay=ready_delay)
    ctl = Controllers(cluster)
    ctl.start()
    http = serve(cluster, port=port, log_follow_seconds=log_follow_seconds)
    # import the client's models (field validation) now rather than on the first write
    import threading

    from .schema import model_for
    threading.Thread(target=model_for, args=("v1", "Pod"), daemon=True).start()
    return RunningServer(cluster, http, ctl)
