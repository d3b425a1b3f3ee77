"""``python -m opsbook.testing.kubeapi --port 0 --nodes 3 --ready-delay 0.3 [--kubeconfig-out PATH]``"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

from . import start


def write_kubeconfig(path: str, url: str, ca_pem: str, context: str = "opsbook-test",
                     namespace: str = "default") -> None:
    """A kubeconfig as a cluster's admin would have it: the https URL and the CA that verifies it."""
    import base64

    import yaml

    ca_data = base64.b64encode(ca_pem.encode()).decode()
    cfg = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": context, "cluster": {"server": url, "certificate-authority-data": ca_data}}],
        "users": [{"name": context, "user": {"token": "opsbook-test-token"}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context, "namespace": namespace}}],
        "current-context": context,
    }
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m opsbook.testing.kubeapi", description=__doc__)
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    ap.add_argument("--nodes", type=int, default=3, help="simulated nodes (first is a tainted control plane "
                                                         "when more than one)")
    ap.add_argument("--ready-delay", type=float, default=0.3, help="seconds from container start to Ready")
    ap.add_argument("--log-follow-seconds", type=float, default=30.0,
                    help="longest a `logs --follow` stream stays open")
    ap.add_argument("--kubeconfig-out", help="write a kubeconfig (context opsbook-test, https URL and the "
                                             "server's CA) to this path")
    ap.add_argument("--tls-dir", help="write the CA and the server's certificate and key here (default: a "
                                      "temporary folder, removed when the server stops)")
    ap.add_argument("--exit-with-parent", action="store_true",
                    help="stop when the parent process goes away (used by the pytest fixture)")
    args = ap.parse_args(argv)
    srv = start(port=args.port, nodes=args.nodes, ready_delay=args.ready_delay,
                log_follow_seconds=args.log_follow_seconds, tls_dir=args.tls_dir)
    if args.kubeconfig_out:
        write_kubeconfig(args.kubeconfig_out, srv.url, srv.ca_pem)
    print(f"READY {srv.url}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    if args.exit_with_parent:
        parent = os.getppid()

        def watch_parent() -> None:
            while not done.is_set():
                if os.getppid() != parent:
                    done.set()
                time.sleep(1.0)

        threading.Thread(target=watch_parent, daemon=True).start()
    done.wait()
    srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
