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
