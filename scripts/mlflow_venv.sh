#!/usr/bin/env bash
# Build (or reuse) the virtualenv the tests run `mlflow server` from. Full `mlflow` (the server)
# needs pyarrow<26 while Railyard pins pyarrow 26, so the server lives in its own virtualenv and
# Railyard's .venv carries only the client, `mlflow-skinny` (the `railyard[mlflow]` extra).
# It is cached outside the clone, keyed on the pins below, so a second run on the same machine
# takes seconds. Prints the virtualenv's path as its last line.
#   --no-build                  fail (exit 1) instead of building when it is missing: what the
#                               tests call to find it.
#   RAILYARD_MLFLOW_VENV=/path  use (or build) that virtualenv instead of the cached one.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
[[ "${1:-}" == "--no-build" ]] && build=0

# The pins: the server at the same release as the client in the railyard[mlflow] extra, and boto3
# for its S3 artifact store (the tests point it at the S3-compatible server).
pins=(
  "mlflow==3.17.2"
  "boto3==1.44.8"
)

source scripts/lib.sh
python_bin="$(find_python311 mlflow_venv)"

key="$( { printf '%s\n' "${pins[@]}"; "$python_bin" -c 'import sys; print(sys.version)'; } \
        | sha256sum | cut -c1-12)"
venv="${RAILYARD_MLFLOW_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/railyard/mlflow-venv-$key}"
stamp="$venv/.railyard-mlflow-installed"

if [[ ! -f "$stamp" && $build == 0 ]]; then
  echo "mlflow_venv: no MLflow server virtualenv at $venv; build it with: bash scripts/mlflow_venv.sh" >&2
  exit 1
fi
if [[ ! -f "$stamp" ]]; then
  echo "mlflow_venv: building $venv (the first run takes a few minutes)" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python_bin" -m venv "$venv"
  venv_pip_install "$venv" --upgrade pip setuptools
  venv_pip_install "$venv" "${pins[@]}"
  "$venv/bin/mlflow" --version >&2
  touch "$stamp"
fi
echo "$venv"
