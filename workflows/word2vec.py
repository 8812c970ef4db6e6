"""Word2Vec: skip-gram with negative sampling in plain PyTorch, over a token or text column.

The one ``train.classifier_features`` column holds either one token per row (the rows, in
order, form the sequence: ``mode: tokens``) or a text per row (split into lower-cased words:
``mode: text``); ``auto`` picks text when values contain spaces. The label is unused by the
objective; name the same column::

    "train": {"workflow_name": "Word2Vec", "classifier_features": ["text"], "label": "text",
              "custom_params": {"embedding_dim": 32, "window": 2, "epochs": 5, "min_count": 2}}

The model is the embedding table, saved as ``embeddings.parquet`` (token, count, vector).
Predicting gives each row's token vector, or the mean vector of a text's known words (NaN
where none is known).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from pydantic import AliasChoices, Field
from torch import nn

from railyard.training.builtin.torch_mlp import resolve_device
from railyard.training.registry import register_workflow
from railyard.training.workflow import Task, TrainContext, TrainingData, Workflow, WorkflowParams

WORD = re.compile(r"\w+", re.UNICODE)
EMBEDDINGS_FILE = "embeddings.parquet"
CONFIG_FILE = "word2vec.json"


class Word2VecParams(WorkflowParams):
    """Embedding size, context window, passes over the data and vocabulary cut-offs."""

    embedding_dim: int = Field(default=32, ge=2, le=1024,
                               validation_alias=AliasChoices("embedding_dim", "vector_size"))
    window: int = Field(default=2, ge=1, le=20)
    epochs: int = Field(default=5, ge=1, le=1000)
    min_count: int = Field(default=2, ge=1)
    max_vocab: int = Field(default=50_000, ge=2)
    negative: int = Field(default=5, ge=1, le=50)
    learning_rate: float = Field(default=0.01, gt=0, le=1,
                                 validation_alias=AliasChoices("learning_rate", "lr"))
    batch_size: int = Field(default=1024, ge=1)
    mode: Literal["auto", "tokens", "text"] = "auto"
    lowercase: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0


class SkipGram(nn.Module):
    """Centre-word and context-word embedding tables; the centre table is the model."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.centre = nn.Embedding(vocab_size, dim, sparse=True)
        self.context = nn.Embedding(vocab_size, dim, sparse=True)
        nn.init.uniform_(self.centre.weight, -0.5 / dim, 0.5 / dim)
        nn.init.zeros_(self.context.weight)

    def forward(self, centre: torch.Tensor, context: torch.Tensor,
                negatives: torch.Tensor) -> torch.Tensor:
        """Mean negative-sampling loss of (centre, context) pairs."""
        v = self.centre(centre)                                   # (B, D)
        positive = (self.context(context) * v).sum(dim=1)          # (B,)
        negative = torch.bmm(self.context(negatives), v.unsqueeze(2)).squeeze(2)  # (B, K)
        return -(nn.functional.logsigmoid(positive)
                 + nn.functional.logsigmoid(-negative).sum(dim=1)).mean()


@register_workflow
class Word2Vec(Workflow):
    """Token embeddings learnt by skip-gram with negative sampling."""

    name = "Word2Vec"
    framework = "torch"
    Params = Word2VecParams

    def task(self, data: TrainingData) -> Task:
        return "embedding"

    def _column(self, data: TrainingData) -> str:
        if len(data.features) != 1:
            raise ValueError("Word2Vec takes one train.classifier_features column (the tokens "
                             f"or texts); got {len(data.features)}")
        return data.features[0]

    def fit(self, data: TrainingData, context: TrainContext) -> dict[str, Any]:
        p: Word2VecParams = self.params  # type: ignore[assignment]
        column = self._column(data)
        values = data.train[column].cast(pa.string()).to_pylist()
        mode = p.mode if p.mode != "auto" else (
            "text" if any(v and any(ch.isspace() for ch in v.strip()) for v in values)
            else "tokens")
        config = {"column": column, "mode": mode, "lowercase": p.lowercase,
                  "embedding_dim": p.embedding_dim, "window": p.window}
        sentences = tokenize(values, config)
        counts = Counter(t for s in sentences for t in s)
        vocab = [t for t, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                 if c >= p.min_count][:p.max_vocab]
        if len(vocab) < 2:
            raise ValueError(f"only {len(vocab)} token(s) occur at least min_count="
                             f"{p.min_count} times; lower train.custom_params.min_count")
        index = {t: i for i, t in enumerate(vocab)}
        centre, ctx = skipgram_pairs(sentences, index, p.window, one_sequence=mode == "tokens")
        if len(centre) == 0:
            raise ValueError("no (word, context) pairs: the texts are too short for the window")
        device = resolve_device(p.device)
        torch.manual_seed(p.seed)
        generator = torch.Generator().manual_seed(p.seed)
        freq = torch.tensor([counts[t] for t in vocab], dtype=torch.float64) ** 0.75
        module = SkipGram(len(vocab), p.embedding_dim).to(device)
        optimizer = torch.optim.SparseAdam(list(module.parameters()), lr=p.learning_rate)
        centre_t, ctx_t = torch.as_tensor(centre), torch.as_tensor(ctx)
        losses = []
        for epoch in range(p.epochs):
            order = torch.randperm(len(centre_t), generator=generator)
            total = 0.0
            for start in range(0, len(order), p.batch_size):
                rows = order[start:start + p.batch_size]
                negatives = torch.multinomial(freq, len(rows) * p.negative, replacement=True,
                                              generator=generator).view(len(rows), p.negative)
                optimizer.zero_grad()
                loss = module(centre_t[rows].to(device), ctx_t[rows].to(device),
                              negatives.to(device))
                loss.backward()
                optimizer.step()
                total += loss.item() * len(rows)
            losses.append(total / len(order))
            context.report(f"epoch {epoch + 1}/{p.epochs} loss={losses[-1]:.5f}",
                           force=epoch + 1 == p.epochs)
        vectors = module.centre.weight.detach().cpu().numpy().astype("float32")
        config |= {"losses": losses, "pairs_per_epoch": int(len(centre))}
        return {"config": config, "vocab": vocab, "index": index,
                "counts": [counts[t] for t in vocab], "vectors": vectors,
                "module": module.cpu(), "freq": freq}

    def predict(self, model: dict[str, Any], table: pa.Table) -> np.ndarray:
        config, vectors, index = model["config"], model["vectors"], model["index"]
        values = table[config["column"]].cast(pa.string()).to_pylist()
        out = np.full((len(values), vectors.shape[1]), np.nan, dtype="float32")
        for row, tokens in enumerate(tokenize(values, config)):
            known = [index[t] for t in tokens if t in index]
            if known:
                out[row] = vectors[known].mean(axis=0)
        return out

    def evaluate(self, model: dict[str, Any], data: TrainingData) -> dict[str, float]:
        """Final training loss, vocabulary size and, on the holdout rows, the share of known
        tokens and the negative-sampling loss of their pairs (fixed negatives)."""
        config = model["config"]
        metrics = {"final_loss": float(config["losses"][-1]),
                   "vocab_size": float(len(model["vocab"])),
                   "pairs_per_epoch": float(config["pairs_per_epoch"])}
        if data.holdout.num_rows == 0 or "module" not in model:
            return metrics
        sentences = tokenize(data.holdout[config["column"]].cast(pa.string()).to_pylist(),
                             config)
        index = model["index"]
        tokens = [t for s in sentences for t in s]
        metrics["holdout_rows"] = float(data.holdout.num_rows)
        metrics["holdout_coverage"] = (sum(t in index for t in tokens) / len(tokens)
                                       if tokens else 0.0)
        centre, ctx = skipgram_pairs(sentences, index, config["window"],
                                     one_sequence=config["mode"] == "tokens")
        if len(centre):
            generator = torch.Generator().manual_seed(0)
            negatives = torch.multinomial(model["freq"], len(centre) * 5, replacement=True,
                                          generator=generator).view(len(centre), 5)
            with torch.no_grad():
                metrics["holdout_loss"] = float(model["module"](
                    torch.as_tensor(centre), torch.as_tensor(ctx), negatives))
        return metrics

    def write_reports(self, model: dict[str, Any], data: TrainingData,
                      directory: Path) -> dict[str, Any]:
        """The five nearest neighbours (cosine) of the 20 most frequent tokens."""
        vectors = model["vectors"]
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        top = min(20, len(model["vocab"]))
        similarity = unit[:top] @ unit.T
        neighbours = {}
        for i in range(top):
            best = [j for j in np.argsort(-similarity[i]) if j != i][:5]
            neighbours[model["vocab"][i]] = [
                {"token": model["vocab"][j], "cosine": round(float(similarity[i, j]), 4)}
                for j in best]
        (directory / "neighbours.json").write_text(json.dumps(neighbours, indent=2))
        return {"neighbours": "neighbours.json", "vocab_size": len(model["vocab"])}

    def save(self, model: dict[str, Any], directory: Path) -> str:
        vectors = model["vectors"]
        pq.write_table(pa.table({
            "token": pa.array(model["vocab"], pa.string()),
            "count": pa.array(model["counts"], pa.int64()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)),
                                                        vectors.shape[1]),
        }), directory / EMBEDDINGS_FILE)
        (directory / CONFIG_FILE).write_text(json.dumps(model["config"], indent=2))
        return EMBEDDINGS_FILE

    def load(self, directory: Path) -> dict[str, Any]:
        table = pq.read_table(directory / EMBEDDINGS_FILE)
        config = json.loads((directory / CONFIG_FILE).read_text())
        flat = table["vector"].combine_chunks().flatten().to_numpy()
        vectors = flat.reshape(table.num_rows, config["embedding_dim"]).astype("float32")
        vocab = table["token"].to_pylist()
        return {"config": config, "vocab": vocab, "index": {t: i for i, t in enumerate(vocab)},
                "counts": table["count"].to_pylist(), "vectors": vectors}


def tokenize(values: list[str | None], config: dict[str, Any]) -> list[list[str]]:
    """Text mode: one list of words per row. Token mode: one token per row."""
    lower = config["lowercase"]
    if config["mode"] == "tokens":
        return [[(v.lower() if lower else v)] if v else [] for v in values]
    return [WORD.findall(v.lower() if lower else v) if v else [] for v in values]


def skipgram_pairs(sentences: list[list[str]], index: dict[str, int], window: int, *,
                   one_sequence: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Every (centre, context) id pair within ``window`` positions of a sentence (with
    ``one_sequence``, as in token mode, all rows form one); unknown tokens are dropped first."""
    ids: list[int] = []
    sentence: list[int] = []
    for n, tokens in enumerate(sentences):
        known = [index[t] for t in tokens if t in index]
        ids.extend(known)
        sentence.extend([0 if one_sequence else n] * len(known))
    ids_a, sent_a = np.asarray(ids, dtype="int64"), np.asarray(sentence, dtype="int64")
    centre, context = [], []
    for offset in range(1, window + 1):
        same = sent_a[:-offset] == sent_a[offset:] if len(ids_a) > offset \
            else np.zeros(0, dtype=bool)
        left, right = ids_a[:-offset][same], ids_a[offset:][same]
        centre += [left, right]
        context += [right, left]
    if not centre:
        return np.zeros(0, dtype="int64"), np.zeros(0, dtype="int64")
    return np.concatenate(centre), np.concatenate(context)
