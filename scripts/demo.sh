#!/usr/bin/env bash
# The demo on embedded defaults: local Ray, SQLite and artifacts under $RAILYARD_HOME
# (default ~/.railyard), a generated fraud dataset, the blog's sample request over HTTP.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/railyard demo "$@"
