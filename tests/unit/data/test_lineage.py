"""A job's lineage from a real read plan over local Parquet files, and the pin check a rerun
makes (changed, vanished and new files)."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from railyard.data import lineage
from railyard.data.demo import sample_spec, write_fraud_dataset
from railyard.data.read_plan import plan_read
from railyard.errors import ConflictError
from railyard.spec import parse_spec


class FakeWorkflow:
    """Stands for a workflow object: its name, its module (this file) and its params."""

    name = "Fake"

    class params:  # the attribute name workflows use
        @staticmethod
        def model_dump(mode: str = "json") -> dict:
            return {"seed": 7, "max_depth": 3}


@pytest.fixture()
def data_dir(tmp_path):
    return write_fraud_dataset(tmp_path / "fraud", 400, files=3)


def record(data_dir):
    spec = parse_spec(sample_spec(str(data_dir)))
    plan = plan_read(spec, derived={"is_fraudulent": ["has_fraud_dispute"]})
    return lineage.record(plan, spec=spec.model_dump(mode="json"), spec_hash=spec.spec_hash(),
                          workflow=FakeWorkflow(), ran_at=datetime.now(UTC))


def test_lineage_lists_every_file_read_with_size_and_mtime(data_dir):
    got = record(data_dir)
    (source,) = got["sources"]
    assert source["uri"] == str(data_dir)
    files = sorted(source["files"], key=lambda f: f["path"])
    assert [os.path.basename(f["path"]) for f in files] == [
        "part-0000.parquet", "part-0001.parquet", "part-0002.parquet"]
    for f in files:
        stat = os.stat(f["path"])
        assert f["size"] == stat.st_size and f["etag"] is None and f["mtime"]
    assert got["sql"] == []
    code = got["code"]
    assert code["workflow"]["name"] == "Fake" and code["workflow"]["module"] == __name__
    assert len(code["workflow"]["sha256"]) == 64
    assert code["packages"]["pyarrow"] and "xgboost" in code["packages"]
    assert got["seeds"]["train.params.seed"] == 7
    assert got["spec_hash"] == parse_spec(sample_spec(str(data_dir))).spec_hash()


def test_pins_hold_until_a_file_changes_vanishes_or_appears(data_dir):
    pinned = lineage.pins(record(data_dir))
    lineage.check_pins(pinned, lineage.current_facts(pinned), job_id="job-1")   # unchanged
    first, second = sorted(f["path"] for f in next(iter(pinned.values())))[:2]
    with open(first, "ab") as out:
        out.write(b"x")
    os.remove(second)
    with pytest.raises(ConflictError) as info:
        lineage.check_pins(pinned, lineage.current_facts(pinned), job_id="job-1")
    assert info.value.status_code == 409 and first in info.value.message
    assert "allow_changed_data" in info.value.message
    assert {(d["path"], d["problem"]) for d in info.value.details} == {
        (first, "changed"), (second, "missing")}
    # What a run reads now, against the pins: a new file under the source is named too.
    now = {uri: files + [{"path": "/new.parquet", "size": 1}] for uri, files in pinned.items()}
    assert lineage.pin_problems(pinned, now) == [
        {"uri": str(data_dir), "path": "/new.parquet", "problem": "added"}]


def test_s3_facts_compare_etag_and_size_not_mtime():
    pinned = {"s3://b/k": [{"path": "s3://b/k/a", "size": 3, "etag": "e1", "version_id": None,
                            "mtime": "2026-01-01"}]}
    same = {"s3://b/k": [{"path": "s3://b/k/a", "size": 3, "etag": "e1", "version_id": None,
                          "mtime": "2026-02-02"}]}
    assert lineage.pin_problems(pinned, same) == []
    other = {"s3://b/k": [{**same["s3://b/k"][0], "etag": "e2"}]}
    assert lineage.pin_problems(pinned, other)[0]["problem"] == "changed"


def test_seeds_are_found_anywhere_in_the_spec():
    spec = {"data": {"holdout": {"random": {"fraction": 0.2, "seed": 3}}},
            "train": {"custom_params": {"random_state": 11, "depth": 2}}}
    assert lineage.seeds(spec, {"seed": None}) == {
        "data.holdout.random.seed": 3, "train.custom_params.random_state": 11,
        "train.params.seed": None}


def test_s3_listings_stay_under_the_files_common_directory():
    assert lineage.listing_prefixes(["d/part-0.parquet"]) == ["d/part-0.parquet"]
    # "fraud/" and not "fraud": a sibling prefix (fraud-big/) is not listed.
    assert lineage.listing_prefixes(["fraud/a.parquet", "fraud/y=1/b.parquet"]) == ["fraud/"]
    assert lineage.listing_prefixes(["a/x.parquet", "b/x.parquet", "top.parquet"]) == [
        "a/", "b/", "top.parquet"]
