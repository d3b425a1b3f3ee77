"""Simulated control plane: one controller per kind (a module each), the scheduler, the kubelets and
the node lifecycle. One background thread ticks them in a fixed order every ~0.1 s (sooner after a
write), writing through the same store as API clients, so watches see every change."""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable

from ..store import Cluster
from .autoscalers import AutoscalerController
from .bootstrap import bootstrap
from .common import MIN_TICK, TICK
from .cronjobs import CronJobController
from .daemonsets import DaemonSetController
from .deployments import DeploymentController
from .endpoints import EndpointsController
from .garbage import GarbageCollector
from .jobs import JobController
from .kubelet import Kubelet
from .namespaces import NamespaceController
from .nodes import NodeLifecycle
from .replicasets import ReplicaSetController
from .scheduler import Scheduler
from .statefulsets import StatefulSetController
from .tokens import TokenController
from .volumes import VolumeController

__all__ = ["Controllers"]


class Controllers:
    def __init__(self, cluster: Cluster):
        self.c = cluster
        self.thread = threading.Thread(target=self._loop, name="kubeapi-controllers", daemon=True)
        self.last_rv = -1
        self.namespaces = NamespaceController(cluster)
        # the order of one tick: owners before what they own, the kubelets after the scheduler
        self.steps: list[Callable[[], None]] = [
            self.namespaces.sync,
            TokenController(cluster).sync,  # off unless a test turns it on (admin: token-controller)
            GarbageCollector(cluster).sync,
            DeploymentController(cluster).sync,
            ReplicaSetController(cluster).sync,
            DaemonSetController(cluster).sync,
            StatefulSetController(cluster).sync,
            AutoscalerController(cluster).sync,
            CronJobController(cluster).sync,
            JobController(cluster).sync,
            Scheduler(cluster).sync,
            Kubelet(cluster).sync,
            EndpointsController(cluster).sync,
            VolumeController(cluster).sync,
            NodeLifecycle(cluster).sync,
        ]

    def start(self) -> None:
        with self.c.lock:
            bootstrap(self.c)
            self.namespaces.sync()
        self.thread.start()

    def tick(self) -> None:
        for step in self.steps:
            step()

    def _loop(self) -> None:
        while not self.c.stopping:
            t0 = time.time()
            try:
                with self.c.lock:
                    self.tick()
            except Exception:  # keep the world moving; print for the log
                traceback.print_exc()
            # next tick after TICK, or sooner when something was written (but not more often than
            # every MIN_TICK, so that the controllers' own writes cannot make this a busy loop)
            time.sleep(max(0.0, MIN_TICK - (time.time() - t0)))
            with self.c.lock:
                seen = self.c.rv
                if self.c.rv == self.last_rv:
                    self.c.cond.wait(max(0.0, TICK - (time.time() - t0)))
                self.last_rv = seen
