"""The Ray Tune engine's resume and checkpoint loading, without Ray: a retried sweep resumes
from the trial records in the job database (the trials still owed, by count or grid point),
never from Tune's pickled experiment state; the best trial's checkpoint is loaded only once its
files match the digests the trial reported."""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ray.train import Checkpoint

from railyard.artifacts.integrity import ArtifactIntegrityError, directory_digests
from railyard.spec import TuneSpec
from railyard.training.sweeps.ray_tune import (
    CHECKPOINT_DIGESTS,
    GRID_KEY,
    TrialRecord,
    flat_config,
    kept_records,
    load_trial_checkpoint,
    remaining_space,
)
from tests.builders import trained

pytestmark = pytest.mark.usefixtures("one_thread")


def record(trial_id: str, status: str = "SUCCEEDED", **params: Any) -> TrialRecord:
    return TrialRecord(trial_id=trial_id, params=params, metrics={"auc": 0.7}, status=status,
                       duration_s=1.0)


def test_a_fresh_sweep_runs_the_whole_space():
    spec = TuneSpec.model_validate({"search_space": {"lr": {"uniform": [0.01, 0.3]}},
                                    "num_samples": 8})
    space, samples = remaining_space(spec, [])
    assert set(space) == {"lr"} and samples == 8


def test_a_resumed_random_sweep_runs_the_samples_still_owed():
    spec = TuneSpec.model_validate({"search_space": {"lr": {"uniform": [0.01, 0.3]}},
                                    "num_samples": 8, "search_alg": "optuna"})
    kept = [record("a", lr=0.1), record("b", "STOPPED", lr=0.2), record("c", "FAILED", lr=0.3)]
    space, samples = remaining_space(spec, kept)
    assert set(space) == {"lr"} and samples == 5
    assert remaining_space(spec, kept * 3)[1] == 0


def test_a_resumed_grid_sweep_runs_the_grid_points_no_kept_trial_covered():
    spec = TuneSpec.model_validate({"search_space": {"depth": {"grid": [2, 4]},
                                                     "lr": {"grid": [0.1, 0.3]},
                                                     "gamma": {"uniform": [0, 1]}},
                                    "num_samples": 2})
    kept = [record("a", depth=2, lr=0.1, gamma=0.5), record("b", depth=2, lr=0.1, gamma=0.2),
            record("c", depth=4, lr=0.3, gamma=0.9)]
    space, samples = remaining_space(spec, kept)
    assert samples == 1 and set(space) == {"gamma", GRID_KEY}
    owed = space[GRID_KEY]["grid_search"]
    assert sorted((p["depth"], p["lr"]) for p in owed) == [(2, 0.3), (2, 0.3), (4, 0.1),
                                                           (4, 0.1), (4, 0.3)]
    assert flat_config({"gamma": 0.4, GRID_KEY: owed[0]}) == {"gamma": 0.4, **owed[0]}
    grid_only = TuneSpec.model_validate({"search_space": {"depth": {"grid": [2, 4]}},
                                         "search_alg": "grid"})
    assert remaining_space(grid_only, [record("a", depth=2), record("b", depth=4)]) == ({}, 0)


def test_kept_records_are_the_finished_trials_as_recorded():
    stored = [asdict(record("a", lr=0.1)), {**asdict(record("b", lr=0.2)), "extra": 1},
              {"trial_id": "c", "status": "RUNNING"}]
    assert kept_records(stored) == [record("a", lr=0.1), record("b", lr=0.2)]


@dataclass
class FakeResult:
    """What the best trial's ray.tune.Result offers: its checkpoint and last metrics."""

    checkpoint: Checkpoint
    metrics: dict[str, Any]


class Payload:
    """A pickle that creates ``marker`` when it is unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return open, (str(self.marker), "w")


def test_the_best_trials_checkpoint_loads_only_when_it_matches_what_the_trial_reported(
        tmp_path):
    workflow, model, data = trained("sklearn", "binary")
    directory = tmp_path / "checkpoint_000000"
    directory.mkdir()
    workflow.save(model, directory)
    reported = {CHECKPOINT_DIGESTS: json.dumps(directory_digests(directory))}
    result = FakeResult(Checkpoint.from_directory(str(directory)), reported)
    loaded = load_trial_checkpoint(workflow, result, "t1")
    assert np.array_equal(workflow.predict(loaded, data.holdout),
                          workflow.predict(model, data.holdout))

    marker = tmp_path / "payload-ran"
    (directory / "model.joblib").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ArtifactIntegrityError, match="model.joblib does not match"):
        load_trial_checkpoint(workflow, result, "t1")
    with pytest.raises(ArtifactIntegrityError, match="trial t1 .* reported no digests"):
        load_trial_checkpoint(workflow, FakeResult(result.checkpoint, {}), "t1")
    assert not marker.exists()
