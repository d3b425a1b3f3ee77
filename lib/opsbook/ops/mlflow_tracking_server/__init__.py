"""The `mlflow-tracking-server` runbook's logic: MLflow with a PostgreSQL backend store and an S3
artifact store, deployed to Kubernetes, then verified by really tracking an experiment and a model.

Why manifests rendered here and not a Helm chart: the deployment is one Deployment, one Service and
an optional Ingress, and the part that matters (the ``mlflow server`` command line, the credentials
taken from Secrets by ``secretKeyRef``) is exactly what a chart would hide behind values. Rendering
plain dicts keeps that visible in the plan record, needs no chart repository (community MLflow charts
are third-party and change their values often), and is applied with server-side apply through
``clients.kube``, so a re-run is idempotent and the plan is the server's own dry run.

Where the server under test is (``cluster``, ``url`` or ``embedded``) is decided once by the
:class:`Context` (see :mod:`.context`). On the embedded server there is no PostgreSQL or S3: those
checks are skipped with the reason, and the local equivalents are checked instead.

No credential is ever rendered into a manifest: the Deployment reads the database password and the
S3 keys from Kubernetes Secrets (``secretKeyRef``), and the backend store URI is built by Kubernetes'
``$(MLFLOW_DB_PASSWORD)`` expansion inside the container. The runbook itself resolves the same
secret references only to check connectivity (preflight) and to read the database back
(verification); every resolved value is registered with the redactor by the context's resolver.

The package, in the order the notebook runs it: :mod:`.manifests` (settings and manifests),
:mod:`.preflight`, :mod:`.cluster` (deploy), :mod:`.embedded` (the local stand-in), :mod:`.stores`
(backend and artifact stores) and :mod:`.verify` (the probe experiment and model).
"""

from __future__ import annotations

from opsbook.ops.mlflow_tracking_server.cluster import deploy, plan_deploy
from opsbook.ops.mlflow_tracking_server.context import (
    APP,
    PORT,
    VERIFY_ALIAS,
    VERIFY_MODEL,
    VERIFY_TAG,
    Context,
    Probe,
)
from opsbook.ops.mlflow_tracking_server.embedded import embedded_status, plan_embedded, start_embedded
from opsbook.ops.mlflow_tracking_server.manifests import (
    manifests,
    render_manifests,
    required_secrets,
    settings_report,
)
from opsbook.ops.mlflow_tracking_server.preflight import preflight
from opsbook.ops.mlflow_tracking_server.stores import artifact_store, backend_store
from opsbook.ops.mlflow_tracking_server.verify import (
    artifact_path,
    finish_probe,
    health,
    log_model,
    model_from_registry,
    model_in_bucket,
    run_in_database,
    run_link,
    track_experiment,
)

__all__ = ["APP", "PORT", "VERIFY_ALIAS", "VERIFY_MODEL", "VERIFY_TAG", "Context", "Probe", "artifact_path",
           "artifact_store", "backend_store", "deploy", "embedded_status", "finish_probe", "health", "log_model",
           "manifests", "model_from_registry", "model_in_bucket", "plan_deploy", "plan_embedded", "preflight",
           "render_manifests", "required_secrets", "run_in_database", "run_link", "settings_report",
           "start_embedded", "track_experiment"]
