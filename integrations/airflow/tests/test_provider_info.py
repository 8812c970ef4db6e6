"""The provider as Airflow's ProvidersManager sees it, from the installed entry point."""

from __future__ import annotations

import json
from pathlib import Path

import airflow
import jsonschema
from airflow.providers_manager import ProvidersManager
from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

from railyard_airflow.get_provider_info import get_provider_info
from railyard_airflow.hooks import RailyardHook
from railyard_airflow.triggers import RailyardJobTrigger


def test_provider_info_matches_airflows_schema() -> None:
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_providers_manager_registers_the_connection_type_and_link() -> None:
    manager = ProvidersManager()   # the API server's view: connection types, extra links
    assert "railyard-airflow" in manager.providers
    assert manager.field_behaviours["railyard"]["relabeling"] == {"host": "API URL",
                                                                  "password": "API token"}
    hook = ProvidersManagerTaskRuntime().hooks["railyard"]   # a worker's view
    assert hook is not None
    assert hook.hook_class_name == "railyard_airflow.hooks.RailyardHook"
    assert hook.connection_id_attribute_name == "railyard_conn_id"
    assert "railyard_airflow.links.RailyardJobLink" in manager.extra_links_class_names
    behaviour = RailyardHook.get_ui_field_behaviour()
    assert behaviour["relabeling"] == {"host": "API URL", "password": "API token"}


def test_trigger_serializes_to_what_recreates_it() -> None:
    trigger = RailyardJobTrigger("j1", "my_conn", poll_interval=2.5, max_poll_errors=3)
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    again = getattr(__import__(module, fromlist=[name]), name)(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert classpath == "railyard_airflow.triggers.RailyardJobTrigger"
