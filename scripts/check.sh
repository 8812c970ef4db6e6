#!/usr/bin/env bash
# The static checks: ruff (lint), the import-linter layer contracts, mypy. ./scripts/test.sh runs
# them before the tests; run this alone for a fast answer (about a minute, mostly mypy).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x .venv/bin/ruff ]] || bash scripts/bootstrap.sh --test
echo "=== ruff check"
.venv/bin/ruff check .
echo "=== lint-imports (layers, no cycles)"
.venv/bin/lint-imports
echo "=== mypy"
.venv/bin/mypy
# The Airflow provider is its own distribution: typed against Airflow's real types, in the
# virtualenv scripts/airflow_venv.sh builds (Airflow 3, no Ray).
if airflow_venv="$(bash scripts/airflow_venv.sh --no-build 2>/dev/null)"; then
  echo "=== mypy (Airflow provider)"
  .venv/bin/mypy --python-executable "$airflow_venv/bin/python" \
    integrations/airflow/src/railyard_airflow integrations/airflow/tests \
    tests/integration/airflow_dags examples/airflow
else
  echo "=== mypy (Airflow provider): skipped, no Airflow virtualenv; scripts/test.sh builds it"
fi
