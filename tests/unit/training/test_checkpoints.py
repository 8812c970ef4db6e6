"""Checkpoints: the store (a local directory here; S3 in
tests/integration/test_artifacts_s3.py), built-in workflows resuming a killed attempt's
training from the last checkpoint, and refusing one whose files changed after it was saved."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from railyard.artifacts.artifact_store import ArtifactStore
from railyard.artifacts.checkpoints import CheckpointStore
from railyard.artifacts.integrity import ArtifactIntegrityError
from railyard.spec import TrainSpec
from railyard.training.registry import get_workflow
from railyard.training.resume import training_fingerprint
from railyard.training.workflow import TrainContext, TrainingData, Workflow

FEATURES = ["x1", "c", "x2", "flag"]


pytestmark = pytest.mark.usefixtures("one_thread")


def table(rows: int = 1200, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=rows), rng.uniform(size=rows)
    c = rng.choice(["red", "green", "blue"], rows)
    flag = rng.random(rows) < 0.3
    logit = 2.0 * x1 + 1.5 * (c == "red") - 1.0 * flag
    return pa.table({"x1": x1, "c": pa.array(c.tolist()), "x2": x2, "flag": flag,
                     "y": (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("int64")})


def training_data(rows: int = 1200) -> TrainingData:
    t = table(rows)
    return TrainingData(train=t.slice(0, rows - 300), holdout=t.slice(rows - 300),
                        features=FEATURES, label="y")


def make(name: str, **params: Any) -> Workflow:
    return get_workflow(name)(TrainSpec(workflow_name=name, label="y",
                                        classifier_features=FEATURES, custom_params=params))


def job_store(root: Any, job_id: str = "job-1") -> CheckpointStore:
    """What the runner builds for each attempt: the same prefix every time."""
    return CheckpointStore(ArtifactStore(str(root)), job_id, "checkpoints")


class AttemptKilled(Exception):
    """Stands for the driver process dying mid-training."""


def context(store: CheckpointStore | None, messages: list[str], kill_at: str | None = None,
            interval: float = 0.0) -> TrainContext:
    def on_progress(message: str) -> None:
        messages.append(message)
        if kill_at is not None and message.startswith(kill_at):
            raise AttemptKilled(message)

    return TrainContext(on_progress=on_progress, min_interval_s=0, checkpoints=store,
                        checkpoint_interval_s=interval)


# --------------------------------------------------------------------------- the store

def test_save_then_latest_reads_the_newest_checkpoint(tmp_path):
    store = job_store(tmp_path)
    assert store.latest() is None
    store.save(10, {"model.bin": b"ten", "sub/extra.json": b"{}"}, meta={"round": 10},
               fingerprint="fp")
    source = tmp_path / "local"
    (source / "nested").mkdir(parents=True)
    (source / "model.bin").write_bytes(b"twenty")
    (source / "nested" / "opt.bin").write_bytes(b"opt")
    store.save(20, source, meta={"round": 20}, fingerprint="fp")

    latest = job_store(tmp_path).latest("fp")  # a new attempt: a new store object
    assert (latest.step, latest.meta, latest.files) == (20, {"round": 20},
                                                         ["model.bin", "nested/opt.bin"])
    assert latest.read("model.bin") == b"twenty"
    out = latest.download(tmp_path / "restored")
    assert (out / "nested" / "opt.bin").read_bytes() == b"opt"
    with pytest.raises(KeyError, match="no file"):
        latest.read("missing.bin")


def test_retention_keeps_the_last_two_and_a_repeated_step_does_not_overwrite(tmp_path):
    store = job_store(tmp_path)
    for step in range(1, 6):
        store.save(step, {"m": str(step).encode()}, fingerprint="fp")
    base = tmp_path / "job-1" / "checkpoints"
    assert sorted(p.name for p in base.iterdir()) == ["latest.json", "step-4", "step-5"]
    store.save(5, {"m": b"5 again"}, fingerprint="fp")  # the kept step-5 stays intact
    dirs = sorted(p.name for p in base.iterdir() if p.is_dir())
    assert len(dirs) == 2 and "step-5" in dirs and (base / "step-5" / "m").read_bytes() == b"5"
    assert job_store(tmp_path).latest().read("m") == b"5 again"


def test_a_half_written_checkpoint_is_ignored_and_cleaned_up(tmp_path):
    store = job_store(tmp_path)
    store.save(10, {"m": b"ten"}, fingerprint="fp")
    # attempt 1 died while writing step 20: its files are there, latest.json never moved
    half = tmp_path / "job-1" / "checkpoints" / "step-20"
    half.mkdir()
    (half / "m").write_bytes(b"tw")
    retry = job_store(tmp_path)
    assert retry.latest("fp").step == 10
    retry.save(15, {"m": b"fifteen"}, fingerprint="fp")
    assert not half.exists()
    assert job_store(tmp_path).latest("fp").step == 15


def test_a_checkpoint_of_another_training_or_an_unreadable_pointer_is_ignored(tmp_path, caplog):
    store = job_store(tmp_path)
    store.save(10, {"m": b"ten"}, fingerprint="params-a")
    with caplog.at_level(logging.INFO, logger="railyard.artifacts.checkpoints"):
        assert job_store(tmp_path).latest("params-b") is None
    assert "different training" in caplog.text
    other = job_store(tmp_path)
    other.save(3, {"m": b"three"}, fingerprint="params-b")  # replaces the other training's
    base = tmp_path / "job-1" / "checkpoints"
    assert sorted(p.name for p in base.iterdir() if p.is_dir()) == ["step-3"]

    (base / "latest.json").write_text("{not json")
    assert job_store(tmp_path).latest() is None


def test_a_failed_save_is_logged_and_training_goes_on(tmp_path, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store's directory should be")
    store = CheckpointStore(ArtifactStore(str(blocker)), "job-1", "checkpoints")
    with caplog.at_level(logging.ERROR, logger="railyard.artifacts.checkpoints"):
        assert store.save(1, {"m": b"x"}) is None
    assert "could not save the checkpoint at step 1" in caplog.text


def test_should_checkpoint_is_throttled_by_time(tmp_path):
    assert not TrainContext().should_checkpoint(1)  # no store: never
    slow = TrainContext(checkpoints=job_store(tmp_path), checkpoint_interval_s=30)
    assert not any(slow.should_checkpoint(step) for step in range(1, 100))
    every = TrainContext(checkpoints=job_store(tmp_path), checkpoint_interval_s=0)
    assert all(every.should_checkpoint(step) for step in range(1, 5))


def test_a_training_shorter_than_the_interval_writes_no_checkpoint(tmp_path):
    messages: list[str] = []
    make("xgboost", n_estimators=20, nthread=1).fit(
        training_data(), context(job_store(tmp_path), messages, interval=30.0))
    assert not (tmp_path / "job-1").exists()
    assert not any("resumed" in m for m in messages)


def test_the_fingerprint_follows_params_features_and_data():
    data = training_data()
    base = training_fingerprint(make("xgboost", max_depth=3), data)
    assert base == training_fingerprint(make("xgboost", max_depth=3), training_data())
    assert base != training_fingerprint(make("xgboost", max_depth=4), data)
    assert base != training_fingerprint(make("xgboost", max_depth=3), training_data(1100))
    assert base != training_fingerprint(make("xgboost", max_depth=3), TrainingData(
        data.train, data.holdout, FEATURES[:3], "y"))


# --------------------------------------------------------------------------- resuming

# name → (params, total steps, the progress line at which attempt 1 dies, step unit)
RESUMABLE = {
    "xgboost": ({"n_estimators": 60, "nthread": 1, "max_depth": 3}, 60, "iteration 25/",
                "round"),
    "lightgbm": ({"n_estimators": 60, "n_jobs": 1, "num_leaves": 8}, 60, "iteration 25/",
                 "round"),
    "torch": ({"max_epochs": 8, "hidden_sizes": [16], "batch_size": 128,
               "learning_rate": 0.01, "patience": 100}, 8, "epoch 4/", "epoch"),
}


def _steps_trained(messages: list[str]) -> list[int]:
    """The iteration/epoch numbers a run's progress lines name."""
    return [int(m.split()[1].split("/")[0]) for m in messages
            if m.startswith(("iteration ", "epoch "))]


def _total(name: str, model: dict[str, Any]) -> int:
    if name == "xgboost":
        return model["booster"].num_boosted_rounds()
    if name == "lightgbm":
        return model["booster"].current_iteration()
    return -1


@pytest.mark.parametrize("name", sorted(RESUMABLE))
def test_a_retried_attempt_resumes_from_the_last_checkpoint(name, tmp_path):
    params, total, kill_at, unit = RESUMABLE[name]
    workflow, data = make(name, **params), training_data()

    attempt_1: list[str] = []
    with pytest.raises(AttemptKilled):
        workflow.fit(data, context(job_store(tmp_path), attempt_1, kill_at=kill_at))
    saved = job_store(tmp_path).latest()
    killed_at = _steps_trained(attempt_1)[-1]
    assert saved is not None and saved.step == killed_at - 1  # saved every step till then

    attempt_2: list[str] = []
    model = workflow.fit(data, context(job_store(tmp_path), attempt_2))
    assert attempt_2[0] == f"resumed from checkpoint at {unit} {saved.step} of {total}"
    assert _steps_trained(attempt_2) == list(range(saved.step + 1, total + 1))
    if name != "torch":
        assert _total(name, model) == total

    uninterrupted = workflow.fit(data, TrainContext())
    assert np.allclose(workflow.predict(model, data.holdout),
                       workflow.predict(uninterrupted, data.holdout), rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", sorted(RESUMABLE))
def test_a_checkpoint_of_other_params_is_not_resumed(name, tmp_path):
    params, total, kill_at, _ = RESUMABLE[name]
    with pytest.raises(AttemptKilled):
        make(name, **params).fit(training_data(),
                                 context(job_store(tmp_path), [], kill_at=kill_at))
    assert job_store(tmp_path).latest() is not None
    other = dict(params, **({"max_epochs": total + 1} if name == "torch"
                            else {"n_estimators": total + 1}))
    messages: list[str] = []
    make(name, **other).fit(training_data(), context(job_store(tmp_path), messages))
    assert not any("resumed" in m for m in messages)
    assert _steps_trained(messages)[0] == 1


def test_xgboost_with_early_stopping_resumes(tmp_path):
    workflow = make("xgboost", n_estimators=200, nthread=1, max_depth=6, learning_rate=0.3,
                    early_stopping_rounds=5)
    data = training_data()
    with pytest.raises(AttemptKilled):
        workflow.fit(data, context(job_store(tmp_path), [], kill_at="iteration 4/"))
    messages: list[str] = []
    model = workflow.fit(data, context(job_store(tmp_path), messages))
    assert messages[0] == "resumed from checkpoint at round 3 of 200"
    rounds = model["booster"].num_boosted_rounds()
    assert 3 < rounds < 200 and json.loads(
        json.dumps(workflow.evaluate(model, data)))["best_iteration"] < rounds


@pytest.mark.parametrize("name", sorted(RESUMABLE))
def test_a_checkpoint_file_changed_after_it_was_saved_is_refused(name, tmp_path, caplog):
    """The pointer's SHA-256 of each file: a changed file is not loaded; the training starts
    over and the log says why."""
    params, _, kill_at, _ = RESUMABLE[name]
    workflow, data = make(name, **params), training_data()
    with pytest.raises(AttemptKilled):
        workflow.fit(data, context(job_store(tmp_path), [], kill_at=kill_at))
    saved = job_store(tmp_path).latest()
    assert saved is not None
    for file in saved.files:
        path = tmp_path / "job-1" / "checkpoints" / saved.uri.rsplit("/", 1)[-1] / file
        path.write_bytes(path.read_bytes() + b" ")
    with pytest.raises(ArtifactIntegrityError, match="does not match the SHA-256"):
        job_store(tmp_path).latest().read(saved.files[0])
    messages: list[str] = []
    with caplog.at_level(logging.WARNING):
        workflow.fit(data, context(job_store(tmp_path), messages))
    assert not any("resumed" in m for m in messages)
    assert _steps_trained(messages)[0] == 1
    assert "does not match the SHA-256" in caplog.text
