"""railyard.cluster.node_env: the standby switch and Ray's preload list for a node."""

from __future__ import annotations

from railyard.cluster.node_env import (
    JOB_SUPERVISOR_MODULE,
    PRELOAD_ENV,
    preload_env,
    standby_enabled,
)


def test_standby_enabled_unless_turned_off() -> None:
    assert standby_enabled({}) and standby_enabled({"RAILYARD_STANDBY_SUPERVISOR": "true"})
    assert not standby_enabled({"RAILYARD_STANDBY_SUPERVISOR": "false"})
    assert not standby_enabled({"RAILYARD_STANDBY_SUPERVISOR": " Off "})


def test_the_job_supervisor_is_added_to_what_the_operator_preloads() -> None:
    assert preload_env({}) == {PRELOAD_ENV: JOB_SUPERVISOR_MODULE}
    assert preload_env({PRELOAD_ENV: "numpy,pandas"}) == {
        PRELOAD_ENV: f"numpy,pandas,{JOB_SUPERVISOR_MODULE}"}
    assert preload_env({PRELOAD_ENV: JOB_SUPERVISOR_MODULE}) == {
        PRELOAD_ENV: JOB_SUPERVISOR_MODULE}


def test_nothing_is_preloaded_without_standby_supervisors() -> None:
    assert preload_env({"RAILYARD_STANDBY_SUPERVISOR": "false", PRELOAD_ENV: "numpy"}) == {}
