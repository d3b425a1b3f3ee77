"""Run a runbook inside the cluster as a Kubernetes Job: ``opsbook run ID --on-cluster``.

Why a Job: a long apply (a canary watched for an hour, an incident response) should not depend on a
laptop's VPN or lid. The Job runs the same ``opsbook run ID ...`` in the project's image; the CLI that
launched it follows its pod's log, waits for it and exits with its status.

What is rendered for one run (all labelled ``app.kubernetes.io/name=opsbook``,
``opsbook.io/runbook=ID``, ``opsbook.io/run-id=RUN``, all named ``opsbook-<run id>``):

* a ServiceAccount, in the Job's namespace;
* a Role + RoleBinding in the namespace the runbook acts on, with the runbook's ``opsbook.rbac.rules``
  (notebook metadata) plus ``get`` on each Secret a ``k8s:`` parameter names there; a Role + RoleBinding
  in any other namespace a ``k8s:`` parameter names (``get`` on that Secret only);
* a ClusterRole + ClusterRoleBinding only if the runbook declares ``cluster_rules``;
* a ConfigMap with the validated parameters (``parameters.json``, given to the in-pod run with
  ``--parameters-file``; secret parameters are references, never values), the target as the pod sees
  it (``targets.yaml``) and a kubeconfig that uses the pod's ServiceAccount token (``kubeconfig``, no
  credential in it: it names the token file);
* the Job: ``backoffLimit: 0`` (a runbook is never re-run by a controller), ``restartPolicy: Never``,
  ``activeDeadlineSeconds`` from ``--job-timeout``, ``ttlSecondsAfterFinished``, a non-root read-only
  container with an emptyDir at ``/tmp`` (papermill's staging folder, HOME for helm and jupyter).

Launch order: the Job is created suspended, then the other objects (those in the Job's namespace get
an ownerReference to it, so the TTL controller removes them with it), then the Job is resumed; the
pod never starts without its ServiceAccount or ConfigMap. The RBAC objects are deleted by the CLI as
soon as the Job has finished: the permissions last as long as the run.

The archive is S3 only: a record written inside a pod's filesystem would go with the pod. S3
credentials are Kubernetes Secret references (``--s3-secret``), mapped with ``secretKeyRef``.

Everything here is plain functions; the only side effects go through the :class:`~opsbook.clients.kube.Kube`
client passed in.

The package: ``job`` (the request, the Job and its RBAC as objects, launch and clean-up), ``follow``
(the Job's status and log), ``command`` (``opsbook run --on-cluster`` end to end).
"""

from __future__ import annotations

from opsbook.oncluster.follow import JobStatus, _ts_key, assess, follow
from opsbook.oncluster.job import (
    CONFIG_DIR,
    CONTAINER,
    ENV_IMAGE,
    EXIT_MEANING,
    FATAL_REASONS,
    IMAGE_REPO,
    IN_CLUSTER_CONTEXT,
    RBAC_API,
    RUN_AS_USER,
    S3_KEYS,
    SA_DIR,
    TIMEOUT_GRACE,
    JobRequest,
    container_args,
    default_image,
    in_cluster_kubeconfig,
    kubectl_hints,
    launch,
    parameters_file,
    parse_annotations,
    preflight,
    render,
    require_s3_outputs,
    revoke,
    role_rules,
    secret_refs,
    server_dry_run,
    stop,
    summary_rows,
    target_file,
)

__all__ = ["CONFIG_DIR", "CONTAINER", "ENV_IMAGE", "EXIT_MEANING", "FATAL_REASONS", "IMAGE_REPO", "IN_CLUSTER_CONTEXT",
           "RBAC_API", "RUN_AS_USER", "S3_KEYS", "SA_DIR", "TIMEOUT_GRACE", "JobRequest", "JobStatus", "_ts_key",
           "assess", "container_args", "default_image", "follow", "in_cluster_kubeconfig", "kubectl_hints", "launch",
           "parameters_file", "parse_annotations", "preflight", "render", "require_s3_outputs", "revoke",
           "role_rules", "secret_refs", "server_dry_run", "stop", "summary_rows", "target_file"]
