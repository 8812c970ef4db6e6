"""Data-parallel XGBoost over N Ray Train workers (``train.resources.num_workers > 1``).

Small jobs never come here: they train in the job's driver with no distributed setup.
Every worker encodes its shard with the categories learned on the whole training set, so
the model sees the same codes everywhere; Ray Train wires XGBoost's collective together.
"""

from __future__ import annotations

from typing import Any

import xgboost as xgb

from railyard.training.encoding import encode
from railyard.training.workflow import TrainContext, TrainingData


def fit_distributed(data: TrainingData, context: TrainContext, *, params: dict[str, Any],
                    encoding: dict[str, Any], rounds: int) -> xgb.Booster:
    """Train the in-memory tables with Ray Train's XGBoostTrainer."""
    import ray
    import ray.data

    from railyard.data.fetch import ensure_ray

    ensure_ray()
    columns = [*data.features, data.label]
    datasets = {"train": ray.data.from_arrow(data.train.select(columns))}
    if data.holdout.num_rows:
        datasets["holdout"] = ray.data.from_arrow(data.holdout.select(columns))
    return fit_on_datasets(datasets, context, params=params, encoding=encoding, rounds=rounds,
                           label=data.label)


def fit_on_datasets(datasets: dict[str, Any], context: TrainContext, *, params: dict[str, Any],
                    encoding: dict[str, Any], rounds: int, label: str) -> xgb.Booster:
    """Train on Ray Datasets (``train`` and optionally ``holdout``), each worker reading its
    shard where the data is; return the booster of the final checkpoint."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.xgboost import RayTrainReportCallback, XGBoostTrainer

    cpus = float(context.resources.get("cpus_per_worker") or 1)
    config = {"params": {**params, "nthread": max(1, int(cpus))}, "encoding": encoding,
              "label": label, "rounds": rounds, "has_holdout": "holdout" in datasets}

    trainer = XGBoostTrainer(
        _train_loop, train_loop_config=config, datasets=datasets,
        scaling_config=ScalingConfig(num_workers=context.num_workers,
                                     resources_per_worker={"CPU": cpus},
                                     **context.worker_placement),
        run_config=RunConfig(storage_path=context.storage_path, name="xgboost"),
    )
    context.report(f"distributed training on {context.num_workers} Ray Train workers",
                   force=True)
    result = trainer.fit()
    assert result.checkpoint is not None, "ReportAtEnd reports the model at the end"
    return RayTrainReportCallback.get_model(result.checkpoint)


def _train_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: its shard → DMatrix → xgboost.train."""
    import pyarrow as pa
    import ray.train
    from ray.train.xgboost import RayTrainReportCallback

    def dmatrix(name: str) -> xgb.DMatrix:
        batches = list(ray.train.get_dataset_shard(name).iter_batches(
            batch_format="pyarrow", batch_size=None))
        table = pa.concat_tables(batches)
        label = table[config["label"]].to_numpy(zero_copy_only=False).astype("float64")
        return xgb.DMatrix(encode(table, config["encoding"]), label=label,
                           enable_categorical=True)

    class ReportAtEnd(RayTrainReportCallback):
        """Ray Train's callback, minus its report after every boosting round: each
        ``ray.train.report`` is a barrier across the workers with the controller, which cost
        about 2 s per round on 2 cores (100 rounds: minutes). One report, with the model, at
        the end."""

        def after_iteration(self, model: Any, epoch: int,
                            evals_log: xgb.callback.TrainingCallback.EvalsLog) -> bool:
            self._evals_log = evals_log  # type: ignore[assignment]  # Ray sets it to None, untyped
            return False

    evals = [(dmatrix("holdout"), "holdout")] if config["has_holdout"] else []
    dtrain = dmatrix("train")
    # Ray forwards this to the job's driver, whose log (and its durable copy) shows it.
    print(f"railyard train worker {ray.train.get_context().get_world_rank()}: "
          f"{dtrain.num_row()} training rows in its shard", flush=True)
    xgb.train(config["params"], dtrain, num_boost_round=config["rounds"],
              evals=evals, verbose_eval=False, callbacks=[ReportAtEnd(frequency=0)])
