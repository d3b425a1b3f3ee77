"""What a kubeconfig says about TLS, read cheaply, and the one urllib3 warning it makes moot.

A kubeconfig whose cluster says ``insecure-skip-tls-verify: true`` makes urllib3 warn
(``InsecureRequestWarning``) on every request the Python client sends: dozens of identical lines,
with this machine's venv path, in every archived notebook and on the terminal. The operator needs
to hear it once, where the run starts (the CLI's banner, from :func:`insecure_cluster`), and the
record needs it once (its target line), not per request. :func:`quiet_insecure_warning` silences
that warning for the one API host the banner named, nothing else.

:func:`insecure_cluster` reads the kubeconfig itself rather than through the ``kubernetes`` package:
the CLI calls it before the kernel starts, and importing that package takes a second or more.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

__all__ = ["insecure_cluster", "quiet_insecure_warning", "INSECURE_WARNING_PREFIX"]

# urllib3's message (connectionpool.py); the filter matches its start, for one host
INSECURE_WARNING_PREFIX = "Unverified HTTPS request is being made to host "


def _load(path: Path) -> dict[str, Any]:
    from opsbook import safeyaml

    try:
        data = safeyaml.load_file(str(path), where=f"kubeconfig {path}")
    except (OSError, safeyaml.YamlInputError):
        return {}  # loading the client reports it, with the reason; this is only about the banner
    return data if isinstance(data, dict) else {}


def _named(items: Any, name: Any) -> dict[str, Any]:
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("name") == name:
            return item
    return {}


def insecure_cluster(kubeconfig: str | os.PathLike[str] | None, context: str | None) -> str | None:
    """The name of the cluster that ``context`` (default: the current one) reaches with TLS
    verification off (``insecure-skip-tls-verify``), or None. The files are the ones the client
    reads: ``kubeconfig``, else ``$KUBECONFIG``, else ``~/.kube/config``, each a list separated by
    ``os.pathsep`` whose first definition of a name wins, as kubectl merges them."""
    spec = str(kubeconfig) if kubeconfig else os.environ.get("KUBECONFIG") or "~/.kube/config"
    docs = [_load(Path(p).expanduser()) for p in spec.split(os.pathsep) if p]
    if context is None:
        context = next((d["current-context"] for d in docs if d.get("current-context")), None)
    ctx = next((c for d in docs if (c := _named(d.get("contexts"), context))), {}).get("context")
    name = ctx.get("cluster") if isinstance(ctx, dict) else None
    cluster = next((c for d in docs if (c := _named(d.get("clusters"), name))), {}).get("cluster")
    # truthy, not just True: the Python client turns verification off for any truthy value
    if not isinstance(cluster, dict) or not cluster.get("insecure-skip-tls-verify"):
        return None
    return str(name)


def quiet_insecure_warning(host: str) -> None:
    """Ignore urllib3's ``InsecureRequestWarning`` about ``host`` from now on, in this process.

    A filter, not ``urllib3.disable_warnings()``: that would silence every unverified request of
    every client, this one names a host the operator was warned about. Idempotent and cheap, so the
    client calls it before each request: a test framework that resets the warning filters between
    tests (pytest does) must not bring the warning back."""
    from urllib3.exceptions import InsecureRequestWarning

    pattern = re.escape(f"{INSECURE_WARNING_PREFIX}'{host}'")
    for action, message, category, _module, _lineno in warnings.filters:
        if action == "ignore" and category is InsecureRequestWarning and getattr(message, "pattern", None) == pattern:
            return
    warnings.filterwarnings("ignore", message=pattern, category=InsecureRequestWarning)
