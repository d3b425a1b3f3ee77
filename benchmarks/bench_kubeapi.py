"""What strictness costs the Kubernetes API test server: creating Deployments in its in-process store
with every body checked against Kubernetes 1.37's OpenAPI schema (types, unknown fields), against the
same creates with the check switched off, in the same process. The whole suite creates tens of
thousands of objects, so the check must stay a fraction of a create.

    python benchmarks/bench_kubeapi.py [--objects 2000]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timings import print_timings  # noqa: E402

DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "x", "labels": {"app": "web", "tier": "a"}, "annotations": {"a": "b"}},
    "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
             "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
             "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                 "containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"],
                                 "env": [{"name": "A", "value": "1"},
                                         {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                                 "ports": [{"containerPort": 8080, "name": "http"}],
                                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                               "limits": {"memory": "128Mi"}},
                                 "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 5}}],
                 "volumes": [{"name": "v", "emptyDir": {}}]}}}}


def per_create(n: int, *, check: bool, reps: int = 5) -> float:
    """Best of ``reps``: CPU seconds per ``Cluster.create`` of a Deployment with fieldValidation=Strict."""
    from opsbook.testing.kubeapi import store
    from opsbook.testing.kubeapi.resources import res
    from opsbook.testing.kubeapi.store import Cluster

    ns, dep = res("v1", "namespaces"), res("apps/v1", "deployments")
    real = store.check_fields  # the store's own reference: what it calls on every write
    best = float("inf")
    try:
        if not check:
            store.check_fields = lambda *a, **k: None  # type: ignore[assignment]
        for _ in range(reps):
            c = Cluster(nodes=1)
            c.create(ns, "", {"metadata": {"name": "b"}})
            bodies = [copy.deepcopy(DEPLOYMENT) for _ in range(n)]
            for i, b in enumerate(bodies):
                b["metadata"]["name"] = f"d{i}"
            t = time.process_time()
            for b in bodies:
                c.create(dep, "b", b, validation="Strict")
            best = min(best, (time.process_time() - t) / n)
    finally:
        store.check_fields = real  # type: ignore[assignment]
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=2000)
    args = ap.parse_args(argv)
    per_create(50, check=True, reps=1)  # the schema loaded and compiled before any timing
    checked = per_create(args.objects, check=True)
    bare = per_create(args.objects, check=False)
    print_timings(f"test API server: {args.objects} Deployment creates (CPU, best of 5)",
                  [("1,000 creates, schema checked", checked * 1000, 0.5),
                   ("1,000 creates, check off", bare * 1000, None)],
                  "checked vs check off", checked / bare)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
