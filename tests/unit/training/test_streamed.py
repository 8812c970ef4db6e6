"""The streamed path's block summaries agree with what the in-memory path computes from the
whole table (the Ray Data side is in tests/integration/test_workflows_e2e.py)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc

from railyard.data.demo import fraud_table
from railyard.training.encoding import fit_encoding
from railyard.training.streamed import StreamedData, Summary, _summarise_block
from railyard.training.workflow import infer_task

FEATURES = ["charge_type", "charge_amount", "charge_country"]


def summary_of(table: pa.Table, label: str, categorical: list[str], blocks: int) -> Summary:
    summary = Summary()
    step = -(-table.num_rows // blocks)
    for i in range(blocks):
        row = _summarise_block(table.slice(i * step, step), label=label,
                               categorical=categorical)
        summary.merge(json.loads(row["summary"][0].as_py()))
    return summary


def test_block_summaries_merge_to_the_whole_tables_figures():
    table = fraud_table(5000, seed=11)
    table = table.append_column("is_fraud", table["has_fraud_dispute"].cast(pa.int64()))
    train, holdout = table.slice(0, 4000), table.slice(4000)
    categorical = ["charge_type", "charge_country"]
    data = StreamedData(train=None, holdout=None, features=FEATURES, label="is_fraud",
                        schema=table.schema,
                        train_summary=summary_of(train, "is_fraud", categorical, blocks=7),
                        holdout_summary=summary_of(holdout, "is_fraud", [], blocks=3))
    assert data.encoding() == fit_encoding(train, FEATURES)
    assert data.task() == infer_task(train["is_fraud"]) == "binary"
    assert data.train_summary.rows == 4000 and data.holdout_summary.rows == 1000
    for name in table.column_names:
        assert data.train_summary.null_counts[name] + data.holdout_summary.null_counts[name] \
            == table[name].null_count
    counts = {str(r["values"]): r["counts"] for r in pc.value_counts(train["is_fraud"])
              .to_pylist()}
    assert data.train_summary.label_counts == counts


def test_a_continuous_label_is_regression_from_its_sampled_values():
    table = fraud_table(3000, seed=2)
    data = StreamedData(train=None, holdout=None, features=FEATURES, label="charge_amount",
                        schema=table.schema,
                        train_summary=summary_of(table, "charge_amount", [], blocks=4),
                        holdout_summary=Summary())
    assert data.task() == "regression"
    assert data.train_summary.label_counts == {}      # too many values to count


def test_a_large_source_is_right_sized_to_streamed_workers():
    from railyard.cluster.placement import training_workers
    from railyard.data.demo import sample_spec
    from railyard.spec import parse_spec

    spec = parse_spec(sample_spec("/data/fraud"))
    gib = 2**30
    decide = dict(min_bytes=8 * gib, auto_workers=2)
    assert training_workers(spec, streams=True, data_bytes=1 * gib, **decide) == (1, None)
    workers, reason = training_workers(spec, streams=True, data_bytes=20 * gib, **decide)
    assert workers == 2 and "20.0 GiB" in reason and "RAILYARD_DISTRIBUTED_MIN_BYTES" in reason
    # A workflow that cannot stream, a sweep, or an explicit count is left as asked.
    assert training_workers(spec, streams=False, data_bytes=20 * gib, **decide) == (1, None)
    swept = parse_spec({**sample_spec("/data/fraud"), "train": {
        **sample_spec("/data/fraud")["train"],
        "tune": {"search_space": {"max_depth": {"randint": [2, 6]}}, "num_samples": 2}}})
    assert training_workers(swept, streams=True, data_bytes=20 * gib, **decide) == (1, None)
    four = spec.model_copy(update={"train": spec.train.model_copy(update={
        "resources": spec.train.resources.model_copy(update={"num_workers": 4})})})
    assert training_workers(four, streams=True, data_bytes=20 * gib, **decide) == (4, None)
