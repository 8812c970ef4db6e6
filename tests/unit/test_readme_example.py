"""The complete workflow example in README.md runs as written: it trains, reports progress,
checkpoints, resumes, predicts, saves and loads."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from railyard.artifacts.artifact_store import ArtifactStore
from railyard.artifacts.checkpoints import CheckpointStore
from railyard.data.demo import fraud_table
from railyard.spec import TrainSpec
from railyard.training.workflow import TrainContext, TrainingData

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_workflow_class():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    source = next(b for b in blocks if "class Ridge(Workflow)" in b)
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(source, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    return namespace["Ridge"]


class Stop(Exception):
    pass


def test_the_readme_workflow_trains_resumes_and_round_trips(tmp_path):
    ridge = readme_workflow_class()
    table = fraud_table(2000, seed=3)
    table = table.append_column("y", table["charge_amount"])
    features = ["charge_amount", "charge_country"]
    data = TrainingData(train=table.slice(0, 1500), holdout=table.slice(1500), features=features,
                        label="y")
    spec = TrainSpec.model_validate({"workflow_name": "Ridge", "label": "y",
                                     "classifier_features": features,
                                     "custom_params": {"epochs": 30, "learning_rate": 1e-5}})
    workflow = ridge(spec)
    store = CheckpointStore(ArtifactStore(str(tmp_path / "artifacts")), "job", "checkpoints")
    progress: list[str] = []

    def stop_at_epoch_10(message: str) -> None:
        progress.append(message)
        if message.startswith("epoch 10/"):
            raise Stop

    killed = TrainContext(on_progress=stop_at_epoch_10, min_interval_s=0, checkpoints=store,
                          checkpoint_interval_s=0)
    with pytest.raises(Stop):
        workflow.fit(data, killed)
    assert store.latest() is not None and store.latest().step == 9

    resumed_progress: list[str] = []
    model = workflow.fit(data, TrainContext(on_progress=resumed_progress.append,
                                            min_interval_s=0, checkpoints=store,
                                            checkpoint_interval_s=0))
    assert resumed_progress[0] == "epoch 10/30"
    straight = workflow.fit(data, TrainContext())
    assert np.allclose(model["w"], straight["w"])

    main = workflow.save(model, tmp_path)
    loaded = workflow.load(tmp_path)
    assert main == "ridge.json"
    assert np.allclose(workflow.predict(loaded, data.holdout), workflow.predict(model,
                                                                                 data.holdout))
    assert "rmse" in workflow.evaluate(model, data)
