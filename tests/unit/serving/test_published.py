"""Published models: each built-in and example is trained in-process and published into a
directory shaped like the artifact store's ``<job>/model`` (model files + the runner's
manifest.json); loading it through railyard.serving.published predicts exactly what the
trained model object predicts and what the framework's own loader predicts. Also the SDK's
load_model, the ``railyard predict`` command and the serving helpers (without Serve); a model
directory on S3 is in tests/integration/test_artifacts_s3.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import joblib
import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import typer
import xgboost as xgb
from typer.testing import CliRunner

from railyard.artifacts.integrity import sha256_hex
from railyard.cli.models import predict as predict_command
from railyard.cli.models import serve_model as serve_model_command
from railyard.client.sdk import RailyardClient
from railyard.errors import DataSourceError, NotFoundError
from railyard.serving import model_server
from railyard.serving.published import (
    PartitionedModel,
    json_kind,
    load_published,
    prediction_columns,
)
from railyard.training.builtin.torch_mlp import TabularMLP
from railyard.training.encoding import encode, to_matrix
from railyard.training.workflow import TrainContext
from tests.builders import (
    FEATURES,
    FORECAST,
    corpus,
    forecast_data,
    make,
    publish,
    sales_table,
    split,
    trained,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def encoding_of(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "encoding.json").read_text())


def native_xgboost(directory: Path, table: pa.Table) -> np.ndarray:
    booster = xgb.Booster()
    booster.load_model(str(directory / "model.json"))
    frame = encode(table, encoding_of(directory)["encoding"])
    return booster.predict(xgb.DMatrix(frame, enable_categorical=True))


def native_lightgbm(directory: Path, table: pa.Table) -> np.ndarray:
    booster = lgb.Booster(model_file=str(directory / "model.txt"))
    return booster.predict(encode(table, encoding_of(directory)["encoding"]))


def native_sklearn(directory: Path, table: pa.Table) -> np.ndarray:
    saved = joblib.load(directory / "model.joblib")
    matrix = to_matrix(encode(table, saved["encoding"]), categorical=saved["categorical"])
    proba = saved["pipeline"].predict_proba(matrix.to_numpy())
    return proba[:, 1] if saved["task"] == "binary" else proba


def native_torch(directory: Path, table: pa.Table) -> np.ndarray:
    """Rebuild the network from config.json and the state_dict, preprocess by hand."""
    config = json.loads((directory / "config.json").read_text())
    module = TabularMLP(len(config["numeric"]), config["cardinalities"],
                        config["embedding_dims"], config["one_hot"], config["hidden_sizes"],
                        config["dropout"], config["n_out"])
    module.load_state_dict(torch.load(directory / "model.pt", weights_only=True))
    frame = encode(table, config["encoding"])
    numeric = np.nan_to_num((frame[config["numeric"]].to_numpy(dtype="float64")
                             - config["mean"]) / config["std"])
    codes = np.stack([frame[c].cat.codes.to_numpy() + 1 for c in config["categorical"]], 1)
    with torch.no_grad():
        out = module.eval()(torch.as_tensor(numeric, dtype=torch.float32),
                            torch.as_tensor(codes, dtype=torch.int64))
    return torch.sigmoid(out[:, 0]).numpy() if config["task"] == "binary" \
        else torch.softmax(out, 1).numpy()


NATIVE = {"xgboost": native_xgboost, "lightgbm": native_lightgbm, "sklearn": native_sklearn,
          "torch": native_torch}


def vouch(directory: Path) -> dict[str, str]:
    """What the publish phase adds (railyard.execution.publish): the manifest's digests of the
    other files; returns the job's ``artifacts`` that vouch for the manifest (a scikit-learn
    pickle loads only then)."""
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["digests"] = {p.name: sha256_hex(p.read_bytes()) for p in sorted(directory.iterdir())
                           if p.is_file() and p.name != "manifest.json"}
    raw = json.dumps(manifest, indent=2).encode()
    (directory / "manifest.json").write_bytes(raw)
    return {"model_dir": str(directory), "manifest_sha256": sha256_hex(raw)}


@pytest.mark.parametrize("task", ["binary", "multiclass"])
@pytest.mark.parametrize("name", ["xgboost", "lightgbm", "sklearn", "torch"])
def test_published_predictions_equal_the_model_and_the_native_loader(name, task, tmp_path):
    workflow, model, data = trained(name, task)
    directory = publish(workflow, model, data, tmp_path / "job-1" / "model")
    published = load_published(directory, trusted=vouch(directory))
    assert published.job_id == "job-1" and published.task == task
    assert published.manifest["framework"] == name
    rows = data.holdout
    scores = published.predict(rows)
    assert np.array_equal(scores, workflow.predict(model, rows))
    native = NATIVE[name](directory, rows)
    if name == "torch":  # float32 network; preprocessing recomputed by hand in float64
        assert np.allclose(scores, native, atol=1e-6)
    else:
        assert np.array_equal(scores, native)
    out = published.predict_table(rows)
    assert out.column_names[:rows.num_columns] == rows.column_names
    if task == "binary":
        assert out.column_names[rows.num_columns:] == ["prediction"]
        assert np.array_equal(out["prediction"].to_numpy(), scores)
    else:
        assert out.column_names[rows.num_columns:] == [
            "prediction", "probability_0", "probability_1", "probability_2"]
        assert out["prediction"].to_pylist() == scores.argmax(axis=1).tolist()
        assert np.array_equal(out["probability_2"].to_numpy(), scores[:, 2])


def test_published_regression_from_pandas_and_records(tmp_path):
    workflow, model, data = trained("lightgbm", "regression")
    published = load_published(publish(workflow, model, data, tmp_path / "model"))
    rows = data.holdout.select(FEATURES).slice(0, 5)
    expected = workflow.predict(model, rows)
    assert np.array_equal(published.predict(rows.to_pandas()), expected)
    records = rows.to_pylist()
    assert [r["prediction"] for r in published.predict_records(records)] == expected.tolist()
    assert published.describe()["input_columns"] == FEATURES


def test_published_forecaster_and_word2vec(tmp_path):
    forecaster = make("TimeSeriesForecaster", "sales", ["promo", "day_of_week"], **FORECAST)
    history = sales_table(300)
    data = forecast_data(forecaster, history)
    model = forecaster.fit(data, TrainContext())
    published = load_published(publish(forecaster, model, data, tmp_path / "f" / "model"))
    assert published.task == "forecasting" and published.input_columns == ["promo"]
    # Raw history in, lag features built inside, same forecasts as the prepared rows give.
    scores = published.predict(history)
    assert np.allclose(scores, forecaster.predict(model, forecaster.prepare(history)))
    booster = lgb.Booster(model_file=str(published.directory / "model.txt"))
    inner = encoding_of(published.directory)["encoding"]
    assert np.allclose(scores, booster.predict(encode(forecaster.prepare(history), inner)))
    with pytest.raises(DataSourceError, match="sales"):
        published.predict(history.drop_columns(["sales"]))
    # Rows as JSON records: a workflow that derives columns may read keys beyond its features
    # (here the date, store and sales history); its features are still type-checked.
    records = history.to_pylist()
    served = published.predict_records(records)
    assert np.allclose([r["prediction"] for r in served], scores)
    with pytest.raises(DataSourceError, match="row 1: feature 'promo' must be an integer"):
        published.predict_records([records[0], dict(records[1], promo="yes")])

    w2v = make("Word2Vec", "text", ["text"], epochs=1, embedding_dim=8)
    text = split(corpus(600), "text", ["text"], holdout=100)
    model = w2v.fit(text, TrainContext())
    published = load_published(publish(w2v, model, text, tmp_path / "w" / "model"))
    out = published.predict_table(pa.table({"text": ["cat", "zebra"]}), keep_input=False)
    vectors = np.array(out["prediction"].to_pylist(), dtype="float32")
    table = pq.read_table(published.directory / "embeddings.parquet")
    stored = dict(zip(table["token"].to_pylist(), table["vector"].to_pylist(), strict=True))
    assert np.array_equal(vectors[0], np.array(stored["cat"], dtype="float32"))
    assert np.isnan(vectors[1]).all()


def test_missing_columns_and_types_are_checked(tmp_path):
    workflow, model, data = trained("xgboost", "binary")
    published = load_published(publish(workflow, model, data, tmp_path / "model"))
    with pytest.raises(DataSourceError, match="lacks column\\(s\\) c, flag") as info:
        published.predict(pa.table({"x1": [1.0], "x2": [0.5]}))
    assert [d["field"] for d in info.value.details] == ["c", "flag"]
    # JSON-ish input (ints for doubles) is cast to the trained types.
    as_ints = published.predict([{"x1": 1, "c": "red", "x2": 0, "flag": False}])
    as_floats = published.predict([{"x1": 1.0, "c": "red", "x2": 0.0, "flag": False}])
    assert np.array_equal(as_ints, as_floats)
    with pytest.raises(DataSourceError, match="'x1' is string"):
        published.predict([{"x1": "not a number", "c": "red", "x2": 0.0, "flag": False}])
    with pytest.raises(NotFoundError, match="manifest.json"):
        load_published(tmp_path / "nothing-here")


def test_records_are_checked_by_row_and_feature(tmp_path):
    workflow, model, data = trained("xgboost", "binary")
    published = load_published(publish(workflow, model, data, tmp_path / "model"))
    schema = published.record_schema()
    assert schema.required == {"x1": "number", "c": "string", "x2": "number", "flag": "bool"}
    assert schema.closed and schema.ignored == {"y_binary"}
    row = {"x1": 1.0, "c": "red", "x2": 0.5, "flag": True}
    published.check_records([row, dict(row, x1=None, y_binary=0)])
    with pytest.raises(DataSourceError) as info:
        published.check_records([row, dict(row, c=5, x1="abc", extra=1), "not a row"])
    assert [(d["row"], d["field"]) for d in info.value.details] == [
        (1, "x1"), (1, "c"), (1, "extra"), (2, "(row)")]
    assert info.value.message.startswith("4 problem(s) in the rows: row 1: feature 'x1' must "
                                         "be a number (the model was trained on double), got "
                                         "a string 'abc'")
    # A fan-out's rows: the partition column (any scalar) and the partitions' features.
    fanout = PartitionedModel(manifest={"job_id": "job-f", "partitioned_by": "region"},
                              column="region", models={"eu": published, "us": published})
    assert list(fanout.record_schema().required) == ["region", "x1", "c", "x2", "flag"]
    scores = fanout.predict_records([dict(row, region="eu"), dict(row, region="mars")])
    assert scores[0]["prediction"] == pytest.approx(float(published.predict([row])[0]))
    assert scores[1]["prediction"] is None or np.isnan(scores[1]["prediction"])
    with pytest.raises(DataSourceError, match="row 0: feature 'region' is missing"):
        fanout.check_records([row])
    with pytest.raises(DataSourceError, match="row 0: feature 'region' must be a string, "
                                              "number or boolean, got an object"):
        fanout.check_records([dict(row, region={"a": 1})])


@pytest.mark.parametrize("type_name, kind", [
    ("string", "string"), ("large_string", "string"), ("int64", "integer"),
    ("uint8", "integer"), ("double", "number"), ("float", "number"),
    ("decimal128(10, 2)", None), ("bool", "bool"), ("timestamp[us]", "temporal"),
    ("timestamp[ns, tz=UTC]", "temporal"), ("date32[day]", "temporal"),
    ("dictionary<values=string, indices=int32, ordered=0>", "string"),
    ("list<item: float>", None), (None, None)])
def test_json_kind_of_trained_types(type_name, kind):
    assert json_kind(type_name) == kind


def test_prediction_columns_by_task():
    assert list(prediction_columns("binary", np.array([0.2, 0.9]))) == ["prediction"]
    multi = prediction_columns("multiclass", np.array([[0.2, 0.8], [0.6, 0.4]]))
    assert multi["prediction"].to_pylist() == [1, 0]
    embedding = prediction_columns("embedding", np.ones((2, 3)))
    assert embedding["prediction"].type == pa.list_(pa.float32(), 3)


# --------------------------------------------------------------------------- SDK and CLI

def fake_api(monkeypatch: pytest.MonkeyPatch, jobs: dict[str, dict[str, Any]]) -> None:
    """Point RailyardClient() at an in-memory API serving ``jobs``."""

    def handler(request: httpx.Request) -> httpx.Response:
        job_id = request.url.path.rsplit("/", 1)[-1]
        if job_id in jobs:
            return httpx.Response(200, json=jobs[job_id])
        return httpx.Response(404, json={"error": {"type": "NotFoundError",
                                                   "message": f"no job {job_id}",
                                                   "details": None}})

    class Client(RailyardClient):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__("http://api.test", transport=httpx.MockTransport(handler))

    monkeypatch.setattr("railyard.client.sdk.RailyardClient", Client)


def test_client_load_model_and_predict_command(monkeypatch, tmp_path, job_database):
    workflow, model, data = trained("sklearn", "multiclass")
    directory = publish(workflow, model, data, tmp_path / "artifacts" / "job-1" / "model")
    artifacts = vouch(directory)
    job_database("job-1", artifacts)   # the pickle loads once the job's record vouches for it
    fake_api(monkeypatch, {
        "job-1": {"id": "job-1", "status": "SUCCEEDED", "artifacts": artifacts},
        "job-2": {"id": "job-2", "status": "FAILED", "artifacts": {}}})
    from railyard.client import sdk as client_module

    with client_module.RailyardClient() as client:
        loaded = client.load_model("job-1")
        assert np.array_equal(loaded.predict(data.holdout), workflow.predict(model, data.holdout))
        with pytest.raises(NotFoundError, match="FAILED"):
            client.load_model("job-2")

    app = typer.Typer()
    app.command("predict")(predict_command)
    app.command("serve-model")(serve_model_command)
    source, target = tmp_path / "in.parquet", tmp_path / "out" / "scored.parquet"
    pq.write_table(data.holdout, source)
    result = CliRunner().invoke(app, ["predict", "job-1", str(source), str(target)])
    assert result.exit_code == 0, result.output
    scored = pq.read_table(target)
    assert scored.column_names == data.holdout.column_names + [
        "prediction", "probability_0", "probability_1", "probability_2"]
    assert np.array_equal(scored["probability_1"].to_numpy(),
                          workflow.predict(model, data.holdout)[:, 1])
    result = CliRunner().invoke(app, ["predict", "job-2", str(source), str(target)])
    assert result.exit_code == 1 and "no published model" in result.output
    result = CliRunner().invoke(app, ["predict", "job-9", str(source), str(target)])
    assert result.exit_code == 1 and "no job job-9" in result.output


# --------------------------------------------------------------------------- serving (no Serve)

def test_serve_config_keeps_running_apps_and_http_options(monkeypatch, tmp_path):
    api_app = {"name": "railyard", "route_prefix": "/", "import_path": "serve_app.deployment:app"}
    old = {"name": model_server.app_name("job-1")}
    details = {"http_options": {"host": "0.0.0.0", "port": 8123}, "proxy_location": "HeadOnly",
               "applications": {"railyard": {"deployed_app_config": api_app},
                                # a deploy from before serving keys, then the current one
                                "model-job-1": {"deployed_app_config": {"name": "model-job-1"}},
                                old["name"]: {"deployed_app_config": old},
                                "model-x": {"deployed_app_config": {"name": "model-x"}}}}
    deployed: list[dict[str, Any]] = []

    class FakeServeClient:
        def __init__(self, address: str) -> None:
            assert address == "http://ray:8265"

        def get_serve_details(self) -> dict[str, Any]:
            return details

        def deploy_applications(self, config: dict[str, Any]) -> None:
            deployed.append(config)

    monkeypatch.setattr("ray.dashboard.modules.serve.sdk.ServeSubmissionClient",
                        FakeServeClient)
    asked: list[tuple[str, dict[str, str]]] = []

    def get(url: str, *, headers: dict[str, str], timeout: float) -> httpx.Response:
        asked.append((url, headers))
        return httpx.Response(200, json={})

    monkeypatch.setattr(httpx, "get", get)
    from railyard.config import Settings

    url = model_server.deploy_model(Settings(home=tmp_path), job_id="job-1",
                                     model_dir="s3://m/job-1/model", address="http://ray:8265",
                                     port=9999, num_replicas=2, token="ry_secret")
    key = model_server.serving_key("job-1")
    assert url == f"http://127.0.0.1:8123/models/{key}" and "job-1" not in url
    assert asked == [(f"{url}/", {"Authorization": "Bearer ry_secret"})]
    config = deployed[0]
    assert config["http_options"] == {"host": "0.0.0.0", "port": 8123}
    assert config["proxy_location"] == "HeadOnly"
    assert [a["name"] for a in config["applications"]] == ["railyard", "model-x", f"model-{key}"]
    assert config["applications"][0] == api_app
    model_app = config["applications"][2]
    assert model_app["import_path"] == "railyard.serving.model_server:build_app"
    assert model_app["route_prefix"] == f"/models/{key}"
    assert model_app["args"] == {"model_dir": "s3://m/job-1/model", "job_id": "job-1"}
    # The replicas get the API's runtime env (none here: the API reads the nodes' environment),
    # not the deployer's settings, so they check tokens in the API's job database.
    assert "runtime_env" not in model_app
    api_app["runtime_env"] = {"env_vars": {"RAILYARD_DATABASE_URL": "postgresql://api/db"}}
    model_server.deploy_model(Settings(home=tmp_path, database_url="sqlite:///x.db"),
                              job_id="job-1", model_dir="s3://m/job-1/model",
                              address="http://ray:8265")
    assert deployed[1]["applications"][-1]["runtime_env"] == api_app["runtime_env"]
    assert model_server.api_runtime_env({}, "serve_app.deployment:app") is None
    # No API found: the deployer's settings (as a Ray job gets them).
    fallback = model_server.model_app_config(Settings(home=tmp_path), job_id="job-1",
                                             model_dir="/m")
    assert fallback["runtime_env"] == {"env_vars": Settings(home=tmp_path).runtime_env_vars()}
    assert model_app["deployments"] == [{"name": "RailyardModel", "num_replicas": 2}]
    # With Serve not running yet, the asked-for port is used.
    fresh = model_server.serve_config_with({}, model_app, drop="", host="127.0.0.1", port=9999)
    assert fresh["http_options"] == {"host": "127.0.0.1", "port": 9999}
    assert "proxy_location" not in fresh


def test_serving_helpers():
    assert model_server.json_ready({"a": [1.0, float("nan")], "b": float("inf"), "c": "x"}) \
        == {"a": [1.0, None], "b": None, "c": "x"}
    assert type(model_server.build_app({"model_dir": "/m"})).__name__ == "Application"
    assert type(model_server.build_app({"model_dir": "/m", "job_id": "job-1"})).__name__ \
        == "Application"
    with pytest.raises(ValueError):
        model_server.PredictRequest(rows=[])


def test_the_temporary_copy_goes_with_the_loaded_model(tmp_path):
    import gc

    workflow, model, data = trained("xgboost", "binary")
    source = publish(workflow, model, data, tmp_path / "model")
    published = load_published(source)
    copy = published.directory
    assert copy.is_dir() and not copy.is_relative_to(tmp_path)
    del published
    gc.collect()
    assert not copy.exists()
    kept = load_published(source, into=tmp_path / "mine")   # a directory the caller chose stays
    del kept
    gc.collect()
    assert (tmp_path / "mine" / "manifest.json").is_file()
