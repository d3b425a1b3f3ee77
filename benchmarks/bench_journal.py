"""What recording an apply for its undo costs: a server-side apply of N ConfigMaps through
``ctx.journal`` (a GET before and after each object, and a copy of both kept) against the same apply
through the bare client, in the same process, against the Kubernetes API test server on loopback
(with TLS). And what the undo's own check costs per object (one GET and a comparison).

    python benchmarks/bench_journal.py [--objects 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timings import print_timings  # noqa: E402


def _cms(n: int, tag: str) -> list[dict]:
    return [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{tag}-{i}", "labels": {"a": "b"}},
             "data": {"config.yaml": "key: value\n" * 20}} for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=200)
    args = ap.parse_args(argv)
    from types import SimpleNamespace

    from opsbook.clients import Clients
    from opsbook.clients.kube import Kube
    from opsbook.ops import undo
    from opsbook.ops.journal import JOURNAL, Journal
    from opsbook.testing.kubeapi import start
    from opsbook.testing.kubeapi.__main__ import write_kubeconfig

    srv = start(port=0, nodes=1, ready_delay=0.1)
    with tempfile.TemporaryDirectory() as tmp:
        kc = Path(tmp) / "kubeconfig"
        write_kubeconfig(str(kc), srv.url, srv.ca_pem, context="bench")
        kube = Kube(kubeconfig=str(kc), context="bench")
        try:
            kube.ensure_namespace(name="bench")
            kube.apply(_cms(5, "warm"), namespace="bench")  # discovery and connections warm
            best_bare = best_journal = best_check = float("inf")
            for rep in range(3):
                t = time.perf_counter()
                kube.apply(_cms(args.objects, f"bare{rep}"), namespace="bench")
                best_bare = min(best_bare, time.perf_counter() - t)
                j = Journal()
                t = time.perf_counter()
                j.apply(kube, _cms(args.objects, f"journal{rep}"), namespace="bench")
                best_journal = min(best_journal, time.perf_counter() - t)
                ctx = undo.Context(settings=SimpleNamespace(undo_of="x", target="t", mode="plan"),
                                   clients=Clients(None, kube=kube))
                t = time.perf_counter()
                states = [JOURNAL.status(ctx, e).state for e in j.entries]
                best_check = min(best_check, time.perf_counter() - t)
                assert states == ["as-left"] * args.objects
        finally:
            kube.close()
            srv.stop()
    n = args.objects
    print_timings(f"apply of {n} ConfigMaps to the test API server (wall clock, best of 3)",
                  [(f"{n} objects, bare server-side apply", best_bare, None),
                   (f"{n} objects, through ctx.journal", best_journal, None),
                   (f"{n} objects, the undo's as-left check", best_check, None)],
                  "journal vs bare apply", best_journal / best_bare)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
