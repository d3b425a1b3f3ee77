"""The ``mlflow_server`` fixture is a real MLflow server: runs land in PostgreSQL, models in the bucket."""

import pandas as pd
import psycopg
import pytest
import requests

pytestmark = pytest.mark.services


def _model():
    import mlflow.pyfunc

    # Real type hints (evaluated now: no `from __future__ import annotations` in this module), so
    # MLflow infers the signature and does not warn.
    class AddOne(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
            return model_input + 1

    return AddOne()


@pytest.mark.filterwarnings("ignore:Operation with range is deprecated")
def test_run_and_logged_model_land_in_postgres_and_s3(mlflow_server):
    import mlflow

    with mlflow_server.activate():
        experiment_id = mlflow.create_experiment("platform-test")
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_param("alpha", "0.5")
            mlflow.log_metric("accuracy", 0.93)
            mlflow.log_text("hello from the platform test\n", "notes/hello.txt")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=_model(),
                input_example=pd.DataFrame({"x": [1.0, 2.0]}),
            )
        run_id = run.info.run_id

        # The model loads back through the server (artifact proxy) and predicts.
        loaded = mlflow.pyfunc.load_model(info.model_uri)
        assert list(loaded.predict(pd.DataFrame({"x": [1.0]}))["x"]) == [2.0]

    # Artifacts are proxied by the server: the experiment's location is mlflow-artifacts:
    experiment = mlflow_server.client().get_experiment(experiment_id)
    assert experiment.artifact_location.startswith("mlflow-artifacts:")

    # ... and really are in the bucket, under the artifacts destination.
    prefix = f"artifacts/{experiment_id}/"
    keys = mlflow_server.s3.list_keys(prefix)
    assert f"{prefix}{run_id}/artifacts/notes/hello.txt" in keys
    model_keys = [k for k in keys if k.startswith(f"{prefix}models/{info.model_id}/")]
    assert info.model_id.startswith("m-")
    assert any(k.endswith("/MLmodel") for k in model_keys), keys
    body = (
        mlflow_server.s3.client()
        .get_object(Bucket=mlflow_server.s3.bucket, Key=f"{prefix}{run_id}/artifacts/notes/hello.txt")["Body"]
        .read()
    )
    assert body == b"hello from the platform test\n"

    # The run and the logged model are rows in the server's PostgreSQL database.
    with psycopg.connect(mlflow_server.postgres.dsn(mlflow_server.database)) as conn:
        run_row = conn.execute(
            "SELECT status, experiment_id FROM runs WHERE run_uuid = %s", (run_id,)
        ).fetchone()
        metric = conn.execute(
            "SELECT value FROM latest_metrics WHERE run_uuid = %s AND key = 'accuracy'", (run_id,)
        ).fetchone()
        model_row = conn.execute(
            "SELECT source_run_id FROM logged_models WHERE model_id = %s", (info.model_id,)
        ).fetchone()
    assert run_row == ("FINISHED", int(experiment_id))
    assert metric == (0.93,)
    assert model_row == (run_id,)


def test_unknown_run_is_the_servers_404(mlflow_server):
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as excinfo:
        mlflow_server.client().get_run("0" * 32)
    assert excinfo.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    resp = requests.get(
        f"{mlflow_server.tracking_uri}/api/2.0/mlflow/runs/get", params={"run_id": "0" * 32}, timeout=10
    )
    assert resp.status_code == 404


def test_client_env_and_backend(mlflow_server):
    env = mlflow_server.client_env()
    assert env["MLFLOW_TRACKING_URI"] == mlflow_server.tracking_uri
    assert env["MLFLOW_S3_ENDPOINT_URL"] == mlflow_server.s3.endpoint_url
    assert mlflow_server.backend_store_uri.startswith("postgresql+psycopg://")
    assert requests.get(f"{mlflow_server.tracking_uri}/health", timeout=5).text.strip() == "OK"
