#!/usr/bin/env bash
# The whole test suite: unit tests, then integration tests against a real Postgres, a real
# S3-compatible server and a real Ray cluster, all started by the tests themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --test
exec .venv/bin/python -m pytest tests "$@"
