"""What Airflow's ProvidersManager reads from the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

INTEGRATION = "Railyard"
# The connection form: the API URL and the token; nothing else is used. Airflow 3's UI reads
# this from the provider info; RailyardHook.get_ui_field_behaviour returns the same.
HIDDEN_FIELDS = ["schema", "login", "port", "extra"]
RELABELING = {"host": "API URL", "password": "API token"}
PLACEHOLDERS = {"host": "https://railyard.internal:8000",
                "password": "ry_… (railyard token issue --team <team>)"}


def get_provider_info() -> dict[str, Any]:
    """The provider's modules, its ``railyard`` connection type and its extra links."""
    return {
        "package-name": "railyard-airflow",
        "name": "Railyard",
        "description": "Train models on `Railyard <https://stripe.com/blog/railyard-training-"
                       "models>`__ (on Ray) from Airflow: a hook, a (deferrable) operator, a "
                       "trigger and a sensor over its REST API.",
        "versions": ["0.1.0"],
        "integrations": [{"integration-name": INTEGRATION, "tags": ["service"]}],
        "hooks": [{"integration-name": INTEGRATION,
                   "python-modules": ["railyard_airflow.hooks"]}],
        "operators": [{"integration-name": INTEGRATION,
                       "python-modules": ["railyard_airflow.operators"]}],
        "sensors": [{"integration-name": INTEGRATION,
                     "python-modules": ["railyard_airflow.sensors"]}],
        "triggers": [{"integration-name": INTEGRATION,
                      "python-modules": ["railyard_airflow.triggers"]}],
        "connection-types": [{
            "hook-class-name": "railyard_airflow.hooks.RailyardHook",
            "hook-name": "Railyard",
            "connection-type": "railyard",
            "ui-field-behaviour": {"hidden-fields": HIDDEN_FIELDS, "relabeling": RELABELING,
                                   "placeholders": PLACEHOLDERS},
        }],
        "extra-links": ["railyard_airflow.links.RailyardJobLink"],
    }
