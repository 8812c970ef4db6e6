"""A generated fraud dataset in the shape of the blog's sample request (no download needed)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

COUNTRIES = np.array(["US", "CA", "GB", "DE", "FR", "MX", "BR", "JP"])
CHARGE_TYPES = np.array(["card_present", "online", "recurring", "wallet"])
START = np.datetime64("2017-07-01T00:00:00", "us")
SPAN_US = int(np.timedelta64(730, "D") / np.timedelta64(1, "us"))

SAMPLE_SPEC_PATH = Path(__file__).resolve().parents[2] / "examples" / "fraud_spec.json"


def fraud_table(rows: int, seed: int = 0) -> pa.Table:
    """Charges from 2017-07 to 2019-06 with a fraud-dispute flag that depends on the features."""
    rng = np.random.default_rng(seed)
    created = START + rng.integers(0, SPAN_US, rows).astype("timedelta64[us]")
    country = COUNTRIES[rng.choice(len(COUNTRIES), rows, p=[.45, .15, .1, .08, .07, .06, .05, .04])]
    ctype = CHARGE_TYPES[rng.integers(0, len(CHARGE_TYPES), rows)]
    amount = np.round(rng.lognormal(3.5, 1.2, rows), 2)
    logit = (-4.0 + 0.35 * np.log1p(amount) + 1.2 * (ctype == "online")
             + 0.8 * (country == "MX") + 0.6 * (country == "BR") - 0.5 * (ctype == "recurring"))
    fraud = rng.random(rows) < 1 / (1 + np.exp(-logit))
    return pa.table({
        "created_at": pa.array(created, type=pa.timestamp("us")),
        "charge_type": pa.array(ctype),
        "charge_amount": pa.array(amount),
        "charge_country": pa.array(country),
        "merchant_id": pa.array(rng.integers(1, 5000, rows)),
        "has_fraud_dispute": pa.array(fraud),
    })


def write_fraud_dataset(directory: Path, rows: int, files: int = 4, seed: int = 0) -> Path:
    """Write ``rows`` charges as ``files`` Parquet files under ``directory``; return it."""
    directory.mkdir(parents=True, exist_ok=True)
    table = fraud_table(rows, seed)
    step = -(-rows // files)
    for i in range(files):
        pq.write_table(table.slice(i * step, step), directory / f"part-{i:04d}.parquet")
    return directory


def sample_spec(path: str, source: str = "local") -> dict[str, Any]:
    """The blog's sample request (examples/fraud_spec.json) pointed at ``path``."""
    spec = copy.deepcopy(json.loads(SAMPLE_SPEC_PATH.read_text()))
    spec["data"]["features"][0]["source"] = source
    spec["data"]["features"][0]["path"] = path
    return spec
