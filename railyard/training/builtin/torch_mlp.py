"""The built-in tabular MLP in plain PyTorch: standardized numerics, embeddings (or one-hot)
for categorical columns, early stopping on a validation split carved from the training rows.

Saved as ``model.pt`` (the state_dict) and ``config.json`` (architecture and preprocessing).
"""

from __future__ import annotations

import copy
import io
import json
import logging
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pyarrow as pa
import torch
from pydantic import AliasChoices, Field
from torch import nn

from railyard.artifacts.checkpoints import Checkpoint
from railyard.training.encoding import encode, fit_encoding
from railyard.training.metrics import permutation_importance
from railyard.training.registry import register_workflow
from railyard.training.resume import training_fingerprint
from railyard.training.workflow import TrainContext, TrainingData, Workflow, WorkflowParams

log = logging.getLogger(__name__)

PREDICT_BATCH = 8192
# A checkpoint's one file: model, optimiser, best-so-far, early-stopping and RNG state.
STATE_FILE = "state.pt"


class TorchMLPParams(WorkflowParams):
    """MLP size, optimiser, early stopping and device."""

    hidden_sizes: list[int] = Field(default=[64, 32], min_length=1, max_length=8)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    learning_rate: float = Field(default=1e-3, gt=0.0, le=1.0,
                                 validation_alias=AliasChoices("learning_rate", "lr"))
    weight_decay: float = Field(default=0.0, ge=0.0)
    batch_size: int = Field(default=256, ge=1, le=1_000_000)
    max_epochs: int = Field(default=100, ge=1, le=10_000,
                            validation_alias=AliasChoices("max_epochs", "epochs"))
    patience: int = Field(default=5, ge=1)
    validation_fraction: float = Field(default=0.1, ge=0.0, lt=0.5)
    categorical_encoding: Literal["embedding", "one_hot"] = "embedding"
    embedding_dim: int | None = Field(default=None, ge=1, le=512)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = Field(default=0, validation_alias=AliasChoices("seed", "random_state"))


def resolve_device(choice: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.custom_params.device is 'cuda' but no CUDA device is visible; "
                         "use 'auto' or 'cpu', or give the job gpus_per_worker")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


class TabularMLP(nn.Module):
    """Numeric inputs plus one embedding (or one-hot block) per categorical column → MLP."""

    def __init__(self, n_numeric: int, cardinalities: list[int], embedding_dims: list[int],
                 one_hot: bool, hidden_sizes: list[int], dropout: float, n_out: int) -> None:
        super().__init__()
        self.one_hot, self.cardinalities = one_hot, cardinalities
        self.embeddings = nn.ModuleList(
            [] if one_hot else [nn.Embedding(c, d) for c, d in
                                zip(cardinalities, embedding_dims, strict=True)])
        width = n_numeric + (sum(cardinalities) if one_hot else sum(embedding_dims))
        layers: list[nn.Module] = []
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, n_out))
        self.mlp = nn.Sequential(*layers)

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Raw outputs (logits, or the standardized target for regression)."""
        parts = [numeric]
        for i, cardinality in enumerate(self.cardinalities):
            column = codes[:, i]
            parts.append(nn.functional.one_hot(column, cardinality).float() if self.one_hot
                         else self.embeddings[i](column))
        return self.mlp(torch.cat(parts, dim=1))


def _inputs(table: pa.Table, config: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(standardized numerics with NaN → 0, category codes with 0 = missing or unseen)."""
    frame = encode(table, config["encoding"])
    if config["numeric"]:
        raw = frame[config["numeric"]].to_numpy(dtype="float64")
        numeric = np.nan_to_num((raw - config["mean"]) / config["std"], nan=0.0)
    else:
        numeric = np.zeros((table.num_rows, 0))
    codes = np.stack([frame[c].cat.codes.to_numpy().astype("int64") + 1
                      for c in config["categorical"]], axis=1) if config["categorical"] \
        else np.zeros((table.num_rows, 0), dtype="int64")
    return torch.as_tensor(numeric, dtype=torch.float32), torch.as_tensor(codes)


@register_workflow
class TorchMLPWorkflow(Workflow):
    """A feed-forward network for binary, multiclass and regression labels."""

    name = "torch"
    framework = "torch"
    Params = TorchMLPParams

    def _config(self, data: TrainingData, task: str) -> dict[str, Any]:
        p = cast(TorchMLPParams, self.params)
        encoding = fit_encoding(data.train, data.features)
        categorical = [c for c in data.features if encoding[c]["kind"] == "categorical"]
        numeric = [c for c in data.features if c not in categorical]
        raw = encode(data.train, encoding)[numeric].to_numpy(dtype="float64")
        with np.errstate(all="ignore"):
            mean = np.nan_to_num(np.nanmean(raw, axis=0)) if numeric else np.zeros(0)
            std = np.nan_to_num(np.nanstd(raw, axis=0)) if numeric else np.zeros(0)
        cardinalities = [len(encoding[c]["categories"]) + 1 for c in categorical]
        label = data.label_array("train")
        return {
            "encoding": encoding, "numeric": numeric, "categorical": categorical,
            "mean": mean.tolist(), "std": np.where(std > 0, std, 1.0).tolist(), "task": task,
            "cardinalities": cardinalities,
            "embedding_dims": [p.embedding_dim or min(16, (c + 1) // 2) for c in cardinalities],
            "one_hot": p.categorical_encoding == "one_hot", "hidden_sizes": p.hidden_sizes,
            "dropout": p.dropout,
            "n_out": int(np.nanmax(label)) + 1 if task == "multiclass" else 1,
            "target_mean": float(np.nanmean(label)) if task == "regression" else 0.0,
            "target_std": float(np.nanstd(label) or 1.0) if task == "regression" else 1.0,
        }

    def fit(self, data: TrainingData, context: TrainContext) -> dict[str, Any]:
        p = cast(TorchMLPParams, self.params)
        device = resolve_device(p.device)
        torch.manual_seed(p.seed)
        task = self.task(data)
        config = self._config(data, task)
        module = _build(config).to(device)
        label = data.label_array("train")
        keep = np.flatnonzero(~np.isnan(label))
        numeric, codes = _inputs(data.train, config)
        target = torch.as_tensor((label - config["target_mean"]) / config["target_std"],
                                 dtype=torch.float32)
        generator = torch.Generator().manual_seed(p.seed)
        order = keep[torch.randperm(len(keep), generator=generator).numpy()]
        n_val = int(len(order) * p.validation_fraction) if len(order) >= 20 else 0
        val, fit_rows = order[:n_val], order[n_val:]
        loss_fn = _loss(task)
        optimizer = torch.optim.AdamW(module.parameters(), lr=p.learning_rate,
                                      weight_decay=p.weight_decay)
        batches = _Batches(numeric, codes, target, device)
        best = (float("inf"), copy.deepcopy(module.state_dict()), 0)
        stale, first_epoch = 0, 0
        fingerprint = training_fingerprint(self, data) if context.checkpoints else None
        state = _resume(context.resume_checkpoint(fingerprint), context, p.max_epochs,
                        device) if fingerprint else None
        if state is not None:  # a retried attempt: continue after the last saved epoch
            module.load_state_dict(state["module"])
            optimizer.load_state_dict(state["optimizer"])
            best, stale, first_epoch = (state["best_loss"], state["best_state"],
                                        state["best_epoch"]), state["stale"], state["epoch"]
            generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])  # dropout draws from the global generator
            if "cuda_rng" in state and device.type == "cuda":
                torch.cuda.set_rng_state(state["cuda_rng"], device)
        for epoch in range(first_epoch, p.max_epochs):
            module.train()
            perm = torch.randperm(len(fit_rows), generator=generator).numpy()
            train_loss = 0.0
            for start in range(0, len(fit_rows), p.batch_size):
                x_num, x_cat, y = batches.take(fit_rows[perm[start:start + p.batch_size]])
                optimizer.zero_grad()
                loss = loss_fn(_shape(module(x_num, x_cat), task), _target(y, task))
                loss.backward()
                optimizer.step()
                train_loss += loss.item() * len(y)
            train_loss /= max(len(fit_rows), 1)
            val_loss = _evaluate_loss(module, batches, val, loss_fn, task) if n_val \
                else train_loss
            context.report(f"epoch {epoch + 1}/{p.max_epochs} train_loss={train_loss:.5f} "
                           f"val_loss={val_loss:.5f}", force=epoch + 1 == p.max_epochs)
            if val_loss < best[0] - 1e-6:
                best, stale = (val_loss, copy.deepcopy(module.state_dict()), epoch + 1), 0
            else:
                stale += 1
                if n_val and stale >= p.patience:
                    context.report(f"early stop at epoch {epoch + 1}; best epoch {best[2]}",
                                   force=True)
                    break
            if epoch + 1 < p.max_epochs and context.should_checkpoint(epoch + 1):
                context.save_checkpoint(
                    epoch + 1, {STATE_FILE: _state_bytes(
                        module, optimizer, generator, epoch=epoch + 1, best=best, stale=stale)},
                    meta={"epoch": epoch + 1, "epochs": p.max_epochs}, fingerprint=fingerprint)
        module.load_state_dict(best[1])
        module.eval()
        config["best_epoch"], config["best_val_loss"] = best[2], best[0]
        return {"module": module, "config": config, "device": str(device)}

    def predict(self, model: dict[str, Any], table: pa.Table) -> np.ndarray:
        module: TabularMLP = model["module"]
        config = model["config"]
        device = next(module.parameters()).device
        numeric, codes = _inputs(table, config)
        outputs = []
        module.eval()
        with torch.no_grad():
            for start in range(0, table.num_rows, PREDICT_BATCH):
                out = module(numeric[start:start + PREDICT_BATCH].to(device),
                             codes[start:start + PREDICT_BATCH].to(device))
                outputs.append(out.cpu())
        out = torch.cat(outputs) if outputs else torch.zeros((0, config["n_out"]))
        task = config["task"]
        if task == "binary":
            return torch.sigmoid(out[:, 0]).double().numpy()
        if task == "multiclass":
            return torch.softmax(out, dim=1).double().numpy()
        return (out[:, 0].double() * config["target_std"] + config["target_mean"]).numpy()

    def evaluate(self, model: dict[str, Any], data: TrainingData) -> dict[str, float]:
        metrics = super().evaluate(model, data)
        if metrics:
            metrics["best_epoch"] = float(model["config"]["best_epoch"])
        return metrics

    def write_reports(self, model: dict[str, Any], data: TrainingData,
                      directory: Path) -> dict[str, Any]:
        """Permutation importance on the holdout rows; ROC and PR curves for binary labels."""
        importance = permutation_importance(
            lambda t: self.predict(model, t), data.holdout, data.features,
            data.label_array("holdout"), model["config"]["task"]) if data.holdout.num_rows \
            else None
        return self.holdout_reports(model, data, directory, importance, "permutation")

    def save(self, model: dict[str, Any], directory: Path) -> str:
        state = {k: v.cpu() for k, v in model["module"].state_dict().items()}
        torch.save(state, directory / "model.pt")
        (directory / "config.json").write_text(json.dumps(model["config"], indent=2))
        return "model.pt"

    def load(self, directory: Path) -> dict[str, Any]:
        config = json.loads((directory / "config.json").read_text())
        module = _build(config)
        module.load_state_dict(torch.load(directory / "model.pt", map_location="cpu",
                                          weights_only=True))
        # Predict on CUDA when there is one, unless the parameters say cpu; a model trained on
        # a GPU still loads on a machine without one.
        p = cast(TorchMLPParams, self.params)
        device = torch.device("cpu") if p.device == "cpu" else resolve_device("auto")
        return {"module": module.to(device).eval(), "config": config, "device": str(device)}


def _state_bytes(module: TabularMLP, optimizer: torch.optim.Optimizer,
                 generator: torch.Generator, *, epoch: int, best: tuple[float, Any, int],
                 stale: int) -> bytes:
    """Everything an epoch boundary needs to continue as if never stopped, as torch.save
    bytes (tensors moved to the CPU)."""
    def cpu(state: Any) -> Any:
        return {k: v.cpu() for k, v in state.items()}

    device = next(module.parameters()).device
    buffer = io.BytesIO()
    torch.save({"epoch": epoch, "module": cpu(module.state_dict()),
                "optimizer": optimizer.state_dict(), "best_loss": float(best[0]),
                "best_state": cpu(best[1]), "best_epoch": best[2], "stale": stale,
                "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                **({"cuda_rng": torch.cuda.get_rng_state(device)}
                   if device.type == "cuda" else {})},
               buffer)
    return buffer.getvalue()


def _resume(checkpoint: Checkpoint | None, context: TrainContext, epochs: int,
            device: torch.device) -> dict[str, Any] | None:
    """The training state of the job's last checkpoint, or None (none, unreadable, finished)."""
    if checkpoint is None:
        return None
    try:
        state = torch.load(io.BytesIO(checkpoint.read(STATE_FILE)), map_location=device,
                           weights_only=True)
        done = int(state["epoch"])
    except Exception:
        log.warning("could not load the checkpoint at epoch %d; training from scratch",
                    checkpoint.step, exc_info=True)
        return None
    if not 0 < done < epochs:
        return None
    for key in ("generator", "torch_rng", "cuda_rng"):  # RNG states are CPU byte tensors
        if key in state:
            state[key] = state[key].cpu()
    message = f"resumed from checkpoint at epoch {done} of {epochs}"
    log.info(message)
    context.report(message, force=True)
    return state


def _build(config: dict[str, Any]) -> TabularMLP:
    return TabularMLP(len(config["numeric"]), config["cardinalities"], config["embedding_dims"],
                      config["one_hot"], config["hidden_sizes"], config["dropout"],
                      config["n_out"])


class _Batches:
    """The training tensors, moved to the device once; ``take`` gathers rows."""

    def __init__(self, numeric: torch.Tensor, codes: torch.Tensor, target: torch.Tensor,
                 device: torch.device) -> None:
        self.numeric, self.codes = numeric.to(device), codes.to(device)
        self.target, self.device = target.to(device), device

    def take(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(rows, device=self.device)
        return self.numeric[index], self.codes[index], self.target[index]


def _loss(task: str) -> nn.Module:
    return {"binary": nn.BCEWithLogitsLoss(), "multiclass": nn.CrossEntropyLoss()}.get(
        task, nn.MSELoss())


def _shape(out: torch.Tensor, task: str) -> torch.Tensor:
    return out if task == "multiclass" else out[:, 0]


def _target(y: torch.Tensor, task: str) -> torch.Tensor:
    return y.long() if task == "multiclass" else y


def _evaluate_loss(module: TabularMLP, batches: _Batches, rows: np.ndarray, loss_fn: nn.Module,
                   task: str) -> float:
    module.eval()
    with torch.no_grad():
        x_num, x_cat, y = batches.take(rows)
        return float(loss_fn(_shape(module(x_num, x_cat), task), _target(y, task)))
