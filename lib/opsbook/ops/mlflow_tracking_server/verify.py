"""The verification: the server is healthy, and it really tracks. A probe experiment and run are
created, a small model is logged and registered, read back through the registry, and then found
where it must be: its files in the artifact store (listed with the S3 client, not through MLflow)
and its rows in the backend store. Everything after the health check writes to the server, so it
runs in apply mode only; the probe is kept (tagged) or deleted at the end (``cleanup``).
"""

from __future__ import annotations

import datetime as _dt
import secrets as _random
from pathlib import Path
from typing import Any

from opsbook.errors import OpsbookError
from opsbook.ops.base import Link, Result, check, step
from opsbook.ops.mlflow_tracking_server.context import (
    PLAN_ONLY,
    VERIFY_ALIAS,
    VERIFY_MODEL,
    VERIFY_TAG,
    Context,
    Probe,
    no_probe,
)
from opsbook.ops.mlflow_tracking_server.embedded import sqlite_rows
from opsbook.ops.mlflow_tracking_server.manifests import artifacts_destination
from opsbook.ops.mlflow_tracking_server.stores import no_bucket, no_database


@check("server-health", "Server health")
def health(ctx: Context) -> Result:
    """``/health`` of the server, through its URL."""
    if ctx.embedded and not ctx.local.running():
        if ctx.applying:
            return Result(summary=f"nothing answers at {ctx.local.url}", outcome="failed")
        return Result(summary=f"no embedded server at {ctx.local.url} yet: it would start in apply mode",
                      outcome="skipped")
    ml = ctx.mlflow()
    h = ml.health()
    version = ml.server_version()
    return Result(summary=f"{ml.tracking_uri}/health answered {h['status']} {h['body']!r} in {h['seconds']} s"
                  + (f"; MLflow {version}" if version else ""), outcome="ok", details={**h, "version": version})


@step("track-experiment", "Track an experiment", skip_if=lambda ctx: None if ctx.applying else PLAN_ONLY)
def track_experiment(ctx: Context) -> Result:
    """Create an experiment with a unique name and log a run: parameters, metrics and a metric history;
    read it back. The probe it makes is what the later verification steps check (``ctx.probe``)."""
    ml = ctx.mlflow()
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"opsbook-verify-{stamp}-{_random.token_hex(3)}"
    exp_id = ml.create_experiment(name, tags={VERIFY_TAG: "true", "opsbook.runbook": "mlflow-tracking-server"})
    params = {"alpha": "0.5", "l1_ratio": "0.1", "runbook": "mlflow-tracking-server"}
    history = [1.0, 0.62, 0.41, 0.30, 0.26]
    run_id = ml.log_run(exp_id, run_name="verification", params=params, metrics={"accuracy": 0.93},
                        history={"loss": history}, tags={VERIFY_TAG: "true"})
    back = ml.get_run(run_id)
    got_params = dict(back.data.params)
    got_hist = [v for _, v in ml.metric_history(run_id, "loss")]
    ok = got_params == params and got_hist == history and back.data.metrics.get("accuracy") == 0.93
    probe = ctx.probe = Probe(exp_id, name, run_id, ml.run_url(exp_id, run_id), params, history)
    rows = [{"step": i, "loss": v} for i, v in enumerate(got_hist)]
    return Result(summary=f"experiment {name} ({exp_id}), run {run_id}: {len(got_params)} params, accuracy "
                  f"{back.data.metrics.get('accuracy')}, loss history of {len(got_hist)} steps"
                  + ("" if ok else f"; READ BACK DIFFERS: params {got_params}, loss {got_hist}"),
                  outcome="ok" if ok else "failed", rows=rows, value=probe,
                  details={"experiment_id": exp_id, "run_id": run_id, "url": probe.url})


def _probe(ctx: Context) -> Probe:
    if ctx.probe is None:  # the declarations skip these steps without a probe; a direct call says why
        raise OpsbookError(str(no_probe(ctx)))
    return ctx.probe


@step("log-model", "Log and register a model", skip_if=no_probe)
def log_model(ctx: Context) -> Result:
    """Log a small pyfunc model to the probe run and register it (alias ``verified``)."""
    probe = _probe(ctx)
    ml = ctx.mlflow()
    probe.model = ml.log_probe_model(probe.run_id)
    probe.version = ml.register(probe.model.model_uri, VERIFY_MODEL, alias=VERIFY_ALIAS,
                                tags={VERIFY_TAG: "true", "opsbook.experiment": probe.experiment_name})
    rows = [{"field": "logged model", "value": probe.model.model_id},
            {"field": "model URI", "value": probe.model.model_uri},
            {"field": "stored at", "value": probe.model.artifact_location},
            {"field": "registered as", "value": f"{VERIFY_MODEL} v{probe.version.version} @{VERIFY_ALIAS}"}]
    return Result(summary=f"{probe.model.model_id} registered as {VERIFY_MODEL} v{probe.version.version}",
                  rows=rows, value=probe, details={"model_id": probe.model.model_id,
                                                   "version": probe.version.version})


@check("model-from-registry", "Model reads back from the registry", skip_if=no_probe)
def model_from_registry(ctx: Context) -> Result:
    """Read the model back through the registry (by alias) and make it predict."""
    probe = _probe(ctx)
    ml = ctx.mlflow()
    mv = ml.get_version_by_alias(VERIFY_MODEL, VERIFY_ALIAS)
    uri = f"models:/{VERIFY_MODEL}@{VERIFY_ALIAS}"
    pred = ml.load_and_predict(uri, [1.0, 2.0])
    problems = []
    if mv.version != probe.version.version:
        problems.append(f"alias points at v{mv.version}, not v{probe.version.version}")
    if mv.source != probe.model.model_uri and mv.model_id != probe.model.model_id:
        problems.append(f"version source {mv.source} is not {probe.model.model_uri}")
    if pred != [2.0, 3.0]:
        problems.append(f"predicted {pred} for [1, 2], expected [2, 3]")
    return Result(summary=f"{uri} is v{mv.version} ({mv.status}, source {mv.source}); predicts {pred} for [1.0, 2.0]"
                  + (": " + "; ".join(problems) if problems else ""), outcome="failed" if problems else "ok",
                  details={"version": mv.version, "source": mv.source, "prediction": pred})


def artifact_path(location: str) -> tuple[str, str]:
    """('proxied'|'s3'|'file', path) of a logged model's artifact location."""
    if location.startswith("mlflow-artifacts:"):
        path = location.split(":", 1)[1]
        if path.startswith("//"):  # mlflow-artifacts://host:port/path
            path = "/" + path[2:].split("/", 1)[1] if "/" in path[2:] else "/"
        return "proxied", path.lstrip("/")
    if location.startswith("s3://"):
        return "s3", location[5:]
    if location.startswith("file:"):
        from urllib.parse import urlparse

        return "file", urlparse(location).path
    return "file", location


@check("model-in-bucket", "Model files are in the artifact store",
       skip_if=lambda ctx: no_probe(ctx) or no_bucket(ctx, "the bucket"))
def model_in_bucket(ctx: Context) -> Result:
    """The model's files really are in the artifact store: listed with the S3 client under the prefix
    (or in the embedded server's artifact folder)."""
    probe = _probe(ctx)
    s = ctx.settings
    kind, path = artifact_path(probe.model.artifact_location)
    if ctx.embedded:
        base = ctx.local.artifacts_dir / path if kind == "proxied" else Path(path)
        files = sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()) if base.is_dir() else []
        ok = "MLmodel" in files
        return Result(summary=f"{len(files)} file(s) in {base}" + ("" if ok else ": no MLmodel file"),
                      outcome="ok" if ok else "failed", rows=[{"file": f} for f in files[:30]])
    s3 = ctx.s3()
    if kind == "proxied":
        prefix = s.s3_prefix.strip("/")
        bucket, key = s.s3_bucket, (f"{prefix}/" if prefix else "") + path.rstrip("/") + "/"
    elif kind == "s3":
        bucket, _, key = path.partition("/")
        key = key.rstrip("/") + "/"
    else:
        return Result(summary=f"the model is stored at {probe.model.artifact_location}, not in a bucket: the server "
                      f"does not use {artifacts_destination(s)}", outcome="failed")
    objs = s3.list(bucket, key)
    names = [o["key"][len(key):] for o in objs]
    ok = "MLmodel" in names
    return Result(summary=f"{len(objs)} object(s) under s3://{bucket}/{key}" + ("" if ok else ": no MLmodel object"),
                  outcome="ok" if ok else "failed",
                  rows=[{"key": o["key"], "size": o["size"]} for o in objs[:30]],
                  details={"bucket": bucket, "prefix": key, "objects": len(objs)})


@check("run-in-database", "Run rows are in the backend store",
       skip_if=lambda ctx: no_probe(ctx) or no_database(ctx, "the database"))
def run_in_database(ctx: Context) -> Result:
    """The run's rows are in the backend store (PostgreSQL, or the embedded server's SQLite)."""
    probe = _probe(ctx)
    counts: dict[str, Any]
    if ctx.embedded:
        counts, where = sqlite_rows(ctx.local.db_path, probe.run_id), f"SQLite {ctx.local.db_path}"
    else:
        db = ctx.db()
        counts, where = db.run_rows(probe.run_id), db.dsn
    expected = {"runs": 1, "params": len(probe.params), "metrics": 1 + len(probe.history), "logged_models": 1}
    short = {k: f"{counts.get(k, 0)} < {v}" for k, v in expected.items() if counts.get(k, 0) < v}
    rows = [{"table": k, "rows for the run": v} for k, v in counts.items()]
    return Result(summary=f"{where}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
                  + (f"; missing: {short}" if short else ""), outcome="failed" if short else "ok", rows=rows,
                  details={"counts": counts})


@step("run-link", "Run in the MLflow UI", skip_if=no_probe)
def run_link(ctx: Context) -> Result:
    """The run's page in the MLflow UI."""
    probe = _probe(ctx)
    rows = [{"what": "experiment", "value": f"{probe.experiment_name} ({probe.experiment_id})"},
            {"what": "run", "value": probe.run_id}, {"what": "UI", "value": probe.url}]
    if probe.version is not None:
        rows.append({"what": "model", "value": f"{VERIFY_MODEL} v{probe.version.version}"})
    return Result(summary=probe.url, rows=rows, details={"url": probe.url}, show=[Link(probe.url, "Open the run")])


@step("finish-probe", "Clean up or tag the probe", skip_if=no_probe)
def finish_probe(ctx: Context) -> Result:
    """``cleanup``: delete the probe experiment (soft delete) and model version; otherwise keep them,
    tagged as a verification run."""
    probe = _probe(ctx)
    ml = ctx.mlflow()
    if ctx.settings.cleanup:
        if probe.version is not None:
            ml.delete_version(VERIFY_MODEL, probe.version.version)
        ml.delete_experiment(probe.experiment_id)
        return Result(summary=f"deleted experiment {probe.experiment_name} (soft delete: `mlflow gc` purges it)"
                      + (f" and {VERIFY_MODEL} v{probe.version.version}" if probe.version is not None else ""),
                      outcome="changed")
    tags = {VERIFY_TAG: "true", "opsbook.verified_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    ml.set_experiment_tags(probe.experiment_id, tags)
    return Result(summary=f"kept experiment {probe.experiment_name}, tagged {VERIFY_TAG}=true (cleanup=True deletes "
                  "it)", outcome="ok")

