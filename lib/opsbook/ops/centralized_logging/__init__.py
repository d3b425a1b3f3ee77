"""The `centralized-logging` runbook's logic: a Fluent Bit collector on every node, forwarding every
container's log to the log store (OpenSearch / Elasticsearch, or Loki), verified by searching the store.

The handbook leaves two choices open; here they are parameters with defaults:

* the collector: **Fluent Bit** (the handbook also names Fluentd and Filebeat). One small static
  binary per node, a built-in CRI parser and Kubernetes metadata filter, filesystem buffering, and
  outputs for all three stores. Only Fluent Bit is rendered; ``collector_image`` picks its version.
* the backend: ``backend_kind`` = ``opensearch`` (default through the target), ``elasticsearch`` or
  ``loki``.

What is rendered (plain manifests, applied with server-side apply through ``clients.kube``, so that
the plan is the server's own dry run and a re-run is idempotent):

* ServiceAccount ``fluent-bit``, ClusterRole ``fluent-bit-read-<namespace>`` (get/list/watch pods and
  namespaces: all the ``kubernetes`` filter needs) and its ClusterRoleBinding;
* ConfigMap ``fluent-bit-config`` with ``fluent-bit.yaml`` - Fluent Bit's **YAML** configuration
  format (not the classic ``.conf``), chosen because it is data: rendered from a dict here and parsed
  back with ``yaml.safe_load`` by the tests. ``tail`` on ``/var/log/containers/*.log`` with the
  ``cri`` (and ``docker``) multiline parsers, the ``kubernetes`` filter (namespace, pod, container,
  labels), and one output: ``opensearch`` / ``es`` (``Logstash_Format`` indices
  ``<index_prefix>-YYYY.MM.DD``, ``Suppress_Type_Name On``, ``Replace_Dots On``) or ``loki`` (labels
  namespace, pod, container, app). Buffering: ``storage.type filesystem`` on the input, the buffer on a
  hostPath so that it survives a restart of the pod, ``storage.total_limit_size`` = ``buffer_size``
  per output and ``Retry_Limit no_limits``: while the store is down, chunks wait on disk and are
  retried for ever; what does not fit in ``buffer_size`` is dropped, oldest first.
* DaemonSet ``fluent-bit``: tolerations for every ``NoSchedule`` / ``NoExecute`` taint (so it also
  lands on control-plane nodes), read-only hostPath mounts of ``/var/log/containers`` and
  ``/var/log/pods``, backend credentials only as ``secretKeyRef`` (Secret ``log-store-credentials``,
  key ``password``, or the Secret a ``k8s:`` reference names), health probes on Fluent Bit's
  HTTP server (port 2020).

Verification reads the store through ``clients.logstore``: a marker line with a unique request id,
printed by a short-lived pod, must become searchable within ``marker_timeout`` seconds; counts per
service over the last ``window_minutes`` (expected services without logs are flagged); the search the
operator asked for (``search_service`` / ``search_request_id``).

Undo (``opsbook undo RUN_ID``): ``deploy-collectors`` applies through ``ctx.journal``, object by
object (also recorded when the apply or the wait fails halfway): the undo deletes what it created (the
cluster-scoped ClusterRole and ClusterRoleBinding included, which outlive the namespace) and puts back
what it changed. ``emit-marker`` records its pod (the generic journal): the run deletes it after
the search, so the undo normally has nothing to do; one left behind is deleted.

The package follows those seams: ``context`` (the names, the run's :class:`Context` and the settings
step), ``config`` (configuration and manifests, rendered without touching anything), ``deploy``
(preflight, dry run, apply, one collector per node) and ``verify`` (marker, counts, search).
"""

from opsbook.ops.centralized_logging.config import (
    SELECTOR,
    config_text,
    configuration,
    credentials_ref,
    document_for,
    index_for,
    manifests,
    render_config,
    render_manifests,
)
from opsbook.ops.centralized_logging.context import (
    APP,
    CONFIG_FILE,
    CONFIG_MAP,
    CREDENTIALS_KEY,
    CREDENTIALS_SECRET,
    HTTP_PORT,
    IN_CLUSTER_DEFAULTS,
    MARKER_IMAGE,
    MARKER_LABEL,
    STATE_DIR,
    Context,
    settings_report,
)
from opsbook.ops.centralized_logging.deploy import (
    collectors_on_every_node,
    deploy,
    plan_deploy,
    preflight,
    wait_daemonset,
)
from opsbook.ops.centralized_logging.verify import (
    Marker,
    counts_per_service,
    emit_marker,
    marker_line,
    marker_pod,
    marker_searchable,
    new_request_id,
    plan_marker,
    search,
)

__all__ = [
    "APP", "CONFIG_FILE", "CONFIG_MAP", "CREDENTIALS_KEY", "CREDENTIALS_SECRET", "HTTP_PORT", "IN_CLUSTER_DEFAULTS",
    "MARKER_IMAGE", "MARKER_LABEL", "SELECTOR", "STATE_DIR", "Context", "Marker", "collectors_on_every_node",
    "config_text", "configuration", "counts_per_service", "credentials_ref", "deploy", "document_for",
    "emit_marker", "index_for", "manifests", "marker_line", "marker_pod", "marker_searchable", "new_request_id",
    "plan_deploy", "plan_marker", "preflight", "render_config", "render_manifests", "search", "settings_report",
    "wait_daemonset",
]
