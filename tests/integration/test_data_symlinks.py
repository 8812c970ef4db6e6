"""Symbolic links against a token's data prefixes, on the real platform: a link that leads out
of the prefix is refused at submit (403 naming the file) for a directory, a glob and a ``**``
glob through a linked subdirectory; a link that stays inside trains, and the job carries the
token's access; a link swapped to point outside after the submit-time check fails the job in
its fetch phase, naming the file (the driver checks every file again before it reads).
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from railyard.client.sdk import RailyardClient
from railyard.data.demo import fraud_table, sample_spec
from railyard.errors import ForbiddenError
from railyard.jobstore import jobs, tokens
from railyard.spec import parse_spec
from tests.integration.support import expected_counts

TEAM = "team-links"
ROWS = 300


def write(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(fraud_table(ROWS, seed=seed), path)
    return path


def noop_spec(path: Path | str) -> dict:
    spec = sample_spec(str(path))
    spec["owner"] = TEAM
    spec["train"].update(workflow_name="NoOp", label="has_fraud_dispute", custom_params={})
    return spec


@pytest.fixture()
def layout(tmp_path) -> dict[str, Path]:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    write(allowed / "dir" / "part-0.parquet", seed=1)
    write(allowed / "tree" / "a" / "part-0.parquet", seed=2)
    write(outside / "secret.parquet", seed=3)
    write(outside / "deep" / "secret.parquet", seed=4)
    return {"allowed": allowed, "outside": outside}


@pytest.fixture()
def team_client(platform, layout):
    token, _ = tokens.issue(platform.engine, team=TEAM, data_prefixes=[str(layout["allowed"])])
    with RailyardClient(platform.api_url, token=token) as c:
        yield c


def test_links_out_of_the_token_prefix_are_403_at_submit(team_client, layout):
    allowed, outside = layout["allowed"], layout["outside"]
    os.symlink(outside / "secret.parquet", allowed / "dir" / "link.parquet")
    os.symlink(outside / "deep", allowed / "tree" / "sub")
    probes = [(allowed / "dir", allowed / "dir" / "link.parquet"),
              (f"{allowed}/dir/*.parquet", allowed / "dir" / "link.parquet"),
              (f"{allowed}/tree/**/*.parquet", allowed / "tree" / "sub" / "secret.parquet")]
    for path, bad in probes:
        with pytest.raises(ForbiddenError) as info:
            team_client.submit(noop_spec(path))
        assert info.value.status_code == 403
        assert str(bad) in info.value.message, info.value.message
        assert "data.features.0.path" in info.value.message
        assert info.value.details[0]["field"] == "data.features.0.path"
    assert team_client.list()["jobs"] == []


def test_a_link_inside_the_prefix_trains_and_the_job_keeps_the_token_access(
        platform, team_client, layout):
    allowed = layout["allowed"]
    os.symlink(allowed / "tree" / "a" / "part-0.parquet", allowed / "dir" / "inside.parquet")
    created = team_client.submit(noop_spec(allowed / "dir"))
    job = team_client.wait(created["id"], timeout=120)
    assert job["status"] == "SUCCEEDED", (job["error"], team_client.events(job["id"]))
    # Both files were read: the real one and the one behind the link.
    both = pa.concat_tables([fraud_table(ROWS, seed=1), fraud_table(ROWS, seed=2)])
    train_rows, holdout_rows = expected_counts(both)
    assert (job["dataset"]["train_rows"], job["dataset"]["holdout_rows"]) == \
        (train_rows, holdout_rows)
    row = jobs.get_job(platform.engine, job_id=created["id"])
    # A token narrowed by data prefixes and granted no SQL connection reads no SQL.
    assert (row.submitted_by, row.data_prefixes, row.sql_connections) == \
        (TEAM, [str(allowed)], [])


def test_a_link_swapped_out_after_submit_fails_the_job_in_fetch(platform, client, layout):
    """The job as the API stores it after its checks passed (the token's prefix on the row),
    whose link has since been swapped to point outside; the API then submits it to Ray."""
    allowed = layout["allowed"]
    link = allowed / "dir" / "link.parquet"
    os.symlink(allowed / "tree" / "a" / "part-0.parquet", link)
    spec = parse_spec(noop_spec(allowed / "dir"))
    job = jobs.create_job(platform.engine, spec=spec, submitted_by=TEAM,
                          data_prefixes=[str(allowed)], sql_connections=None)
    link.unlink()
    os.symlink(layout["outside"] / "secret.parquet", link)
    client.get(job.id)                    # reconciling a QUEUED job submits it to Ray
    done = client.wait(job.id, timeout=120)
    assert (done["status"], done["error_phase"]) == ("FAILED", "fetch"), done
    assert "ForbiddenError" in done["error"] and str(link) in done["error"]
    assert f"team {TEAM!r}" in done["error"]
