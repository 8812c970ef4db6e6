#!/usr/bin/env bash
# Every check and test: ruff, the import-linter contracts and mypy (scripts/check.sh), then the
# unit tests and the integration tests against a real Postgres, a real S3-compatible server and a
# real Ray cluster, all started by the tests themselves. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --test
# Airflow 3 + the railyard-airflow provider, no Ray (tests/integration/test_airflow_provider.py);
# cached in ~/.cache/railyard between runs, so a second run takes well under a second.
bash scripts/airflow_venv.sh >/dev/null
# The `mlflow server` the integration tests start (its own virtualenv: full MLflow pins an
# older pyarrow than Railyard's), cached the same way.
bash scripts/mlflow_venv.sh >/dev/null
bash scripts/check.sh
echo "=== pytest"
exec .venv/bin/python -m pytest tests "$@"
