#!/usr/bin/env bash
# Every check and test: ruff, the import-linter contracts and mypy (scripts/check.sh), then the
# unit tests and the integration tests against a real Postgres, a real S3-compatible server and a
# real Ray cluster, all started by the tests themselves. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --test
bash scripts/check.sh
echo "=== pytest"
exec .venv/bin/python -m pytest tests "$@"
