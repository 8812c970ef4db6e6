"""The model registry on the real stack (REST on Ray Serve, Postgres, Ray jobs, the S3 server):
two jobs of one model are versions 1 and 2; the promotion gate scores the incumbent on the new
job's holdout (the incumbent's own holdout score when the data and split are the same) and the
alias follows its decision; an incumbent that cannot score is a recorded decision; aliases move
by hand (CLI and REST), every move is recorded; other teams get 403s."""

from __future__ import annotations

import copy

import pytest

from railyard.client.sdk import RailyardClient
from railyard.data.demo import fraud_table, sample_spec
from railyard.errors import ForbiddenError
from railyard.jobstore import tokens
from tests.integration.support import DATA_BUCKET, invoke_cli, upload_table

TEAM, OTHER = "registry-team", "registry-other"
MODEL = "gated-fraud"
TOKENS: dict[str, str] = {}


@pytest.fixture(scope="module")
def data_uri(platform) -> str:
    return upload_table(fraud_table(6000, seed=21), DATA_BUCKET, "registry/fraud", files=3)


@pytest.fixture(scope="module")
def team_client(platform):
    token, _ = tokens.issue(platform.engine, team=TEAM)
    TOKENS[TEAM] = token
    with RailyardClient(platform.api_url, token=token) as c:
        yield c


@pytest.fixture(scope="module")
def other_client(platform):
    token, _ = tokens.issue(platform.engine, team=OTHER)
    with RailyardClient(platform.api_url, token=token) as c:
        yield c


def gated_spec(data_uri: str, **params) -> dict:
    spec = sample_spec(data_uri, source="s3")
    spec.update(owner=TEAM, model_name=MODEL,
                promotion={"alias": "production", "metric": "auc", "min_delta": 0.0})
    spec["train"]["custom_params"].update(n_estimators=20, seed=42, nthread=1, **params)
    return spec


def run(client: RailyardClient, spec: dict) -> dict:
    job = client.wait(client.submit(spec)["id"], timeout=180)
    assert job["status"] == "SUCCEEDED", (job["error"], client.events(job["id"]))
    return job


def test_versions_gate_and_aliases(platform, data_uri, team_client, other_client):
    first = run(team_client, gated_spec(data_uri))
    gate = first["metrics"]["promotion"]
    assert gate["promoted"] is True and gate["incumbent_version"] is None
    assert gate["candidate"] == first["metrics"]["holdout"]["auc"]

    # The same spec again: the incumbent (v1) is scored on this job's holdout, which is the
    # same rows, so it scores exactly its own holdout AUC; a tie does not promote.
    second = run(team_client, gated_spec(data_uri))
    gate = second["metrics"]["promotion"]
    assert gate["incumbent_version"] == 1
    assert gate["incumbent"] == first["metrics"]["holdout"]["auc"]
    assert gate["candidate"] == second["metrics"]["holdout"]["auc"]
    assert gate["promoted"] is False and "does not beat" in gate["reason"]
    assert any(e["kind"] == "promotion" and e["message"].startswith("keep production")
               for e in team_client.events(second["id"]))

    model = team_client.registered_model(TEAM, MODEL)
    assert [(v["version"], v["job_id"]) for v in model["versions"]] == [
        (1, first["id"]), (2, second["id"])]
    assert model["aliases"] == {"production": 1}
    assert [(e["to_version"], e["reason"], e["actor"], e["job_id"])
            for e in model["alias_events"]] == [(1, "gate", "gate", first["id"])]

    # A differently tuned model: promoted exactly when it beats v1 on its holdout.
    third = run(team_client, gated_spec(data_uri, max_depth=2, learning_rate=0.3))
    gate = third["metrics"]["promotion"]
    assert gate["incumbent"] == first["metrics"]["holdout"]["auc"]
    assert gate["promoted"] == (gate["candidate"] > gate["incumbent"])
    expected = 3 if gate["promoted"] else 1
    assert team_client.alias(TEAM, MODEL, "production")["version"] == expected

    # By hand: REST, then the CLI (as the team's token), each recorded as a person's move.
    moved = team_client.set_alias(TEAM, MODEL, "production", 2, message="roll back")
    assert (moved["version"], moved["job_id"]) == (2, second["id"])
    result = invoke_cli(["models", "alias", f"{TEAM}/{MODEL}", "staging", "3"],
                        env={"RAILYARD_API_URL": platform.api_url,
                             "RAILYARD_TOKEN": TOKENS[TEAM]})
    assert result.exit_code == 0, result.output
    assert f"{TEAM}/{MODEL}@staging -> v3" in result.output
    model = team_client.registered_model(TEAM, MODEL)
    assert model["aliases"] == {"production": 2, "staging": 3}
    assert [e["reason"] for e in model["alias_events"]][-2:] == ["person", "person"]
    listed = invoke_cli(["models", "show", f"{TEAM}/{MODEL}"],
                        env={"RAILYARD_API_URL": platform.api_url,
                             "RAILYARD_TOKEN": TOKENS[TEAM]})
    assert listed.exit_code == 0 and "roll back" in listed.output, listed.output
    assert [m["name"] for m in team_client.registered_models(q="gated")] == [MODEL]

    # Another team reads and moves none of it.
    assert other_client.registered_models() == []
    for call in (lambda: other_client.registered_model(TEAM, MODEL),
                 lambda: other_client.alias(TEAM, MODEL, "production"),
                 lambda: other_client.set_alias(TEAM, MODEL, "production", 1),
                 lambda: other_client.delete_alias(TEAM, MODEL, "staging"),
                 lambda: other_client.registered_models(owner=TEAM),
                 lambda: other_client.lineage(first["id"]),
                 lambda: other_client.rerun(first["id"])):
        with pytest.raises(ForbiddenError):
            call()
    assert team_client.alias(TEAM, MODEL, "production")["version"] == 2

    # An incumbent that needs a column this job does not read: a decision, not a crash.
    narrow = gated_spec(data_uri)
    narrow["data"]["features"][0]["names"].remove("charge_country")
    narrow["train"]["classifier_features"].remove("charge_country")
    fourth = run(team_client, copy.deepcopy(narrow))
    gate = fourth["metrics"]["promotion"]
    assert gate["promoted"] is False and gate["incumbent_version"] == 2
    assert gate["incumbent"] is None and "charge_country" in gate["reason"]
    assert team_client.registered_model(TEAM, MODEL)["versions"][-1]["version"] == 4
    assert team_client.alias(TEAM, MODEL, "production")["version"] == 2


def test_predict_takes_a_model_reference(platform, data_uri, team_client, tmp_path):
    """`railyard predict models:/OWNER/NAME@ALIAS` scores with the alias's model, exactly as
    with its job id."""
    import pyarrow.parquet as pq

    rows = tmp_path / "rows.parquet"
    pq.write_table(fraud_table(50, seed=3), rows)
    env = {"RAILYARD_API_URL": platform.api_url,
           "RAILYARD_TOKEN": TOKENS[TEAM]}
    if not team_client.registered_models(q=MODEL):
        run(team_client, gated_spec(data_uri))
    target = team_client.alias(TEAM, MODEL, "production")
    outputs = {}
    for ref in (f"models:/{TEAM}/{MODEL}@production", target["job_id"]):
        out = tmp_path / f"out-{len(outputs)}.parquet"
        result = invoke_cli(["predict", ref, str(rows), str(out)], env=env)
        assert result.exit_code == 0, result.output
        outputs[ref] = pq.read_table(out)["prediction"].to_pylist()
    assert len(set(map(tuple, outputs.values()))) == 1
