"""The lineage of a SQL source: the connection's name (never its URL), the query as it runs
(literal values in), and when it ran; the holdout seed among the seeds."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

from railyard.config import Settings
from railyard.data import lineage
from railyard.data.demo import fraud_table, sample_spec
from railyard.data.read_plan import plan_read
from railyard.spec import parse_spec


def test_sql_lineage_names_the_connection_and_the_query_as_run(tmp_path):
    db = tmp_path / "warehouse.db"
    with sqlite3.connect(db) as con:
        fraud_table(200).drop_columns(["created_at"]).to_pandas().to_sql("charges", con,
                                                                          index=False)
    spec = sample_spec("/unused")
    spec["data"] = {
        "features": [{"names": ["charge_type", "charge_amount", "charge_country",
                                "has_fraud_dispute"],
                      "source": "sql", "connection": "wh", "table": "charges"}],
        "filters": [{"feature_name": "charge_amount", "predicate": "Gt",
                     "feature_value": {"float_val": 10.5}}],
        "holdout_sampling": {"sampling_function": "RANDOM",
                             "random_sampling": {"fraction": 0.2, "seed": 5}}}
    parsed = parse_spec(spec)
    plan = plan_read(parsed, derived={"is_fraudulent": ["has_fraud_dispute"]},
                     settings=Settings(sql_connections={"wh": f"sqlite:///{db}"}))
    ran_at = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    got = lineage.record(plan, spec=parsed.model_dump(mode="json"), spec_hash="h",
                         workflow=object(), ran_at=ran_at)
    assert got["sources"] == []
    (query,) = got["sql"]
    assert query["connection"] == "wh" and query["ran_at"] == ran_at.isoformat()
    assert "charges" in query["query"] and "10.5" in query["query"]
    assert str(db) not in str(got)
    assert got["seeds"]["data.holdout_sampling.random_sampling.seed"] == 5
