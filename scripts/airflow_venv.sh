#!/usr/bin/env bash
# Build (or reuse) the virtualenv the Airflow provider's tests run in: Airflow 3 and the
# railyard-airflow provider (integrations/airflow, installed editable), and no Ray or pyarrow.
# It is cached outside the clone, keyed on the pins below, so a second run on the same machine
# takes seconds. Prints the virtualenv's path as its last line.
#   --no-build                   fail (exit 1) instead of building when it is missing: what the
#                                tests call to find it.
#   RAILYARD_AIRFLOW_VENV=/path  use (or build) that virtualenv instead of the cached one.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
[[ "${1:-}" == "--no-build" ]] && build=0

# The pins: the latest Airflow 3 release for Python 3.11 when this was written, and the versions
# of everything it pulls in (constraints-3.11.txt, as Airflow's own constraint files do; update
# it with `pip freeze --exclude-editable` of a virtualenv that passes the tests). Changing either
# changes the cache key, so the next run builds a fresh virtualenv.
pins=(
  "apache-airflow==3.3.2"
  "pytest==8.4.2"
)
constraints="integrations/airflow/constraints-3.11.txt"

source scripts/lib.sh
python_bin="$(find_python311 airflow_venv)"

# The key: the pins, the Python, the constraints and the provider's metadata (its dependencies).
key="$( { printf '%s\n' "${pins[@]}"; "$python_bin" -c 'import sys; print(sys.version)'; \
          cat "$constraints" integrations/airflow/pyproject.toml; } | sha256sum | cut -c1-12)"
venv="${RAILYARD_AIRFLOW_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/railyard/airflow-venv-$key}"
stamp="$venv/.railyard-airflow-installed"

if [[ ! -f "$stamp" && $build == 0 ]]; then
  echo "airflow_venv: no Airflow virtualenv at $venv; build it with: bash scripts/airflow_venv.sh" >&2
  exit 1
fi
if [[ ! -f "$stamp" ]]; then
  echo "airflow_venv: building $venv (Airflow is large: the first run takes several minutes)" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python_bin" -m venv "$venv"
  venv_pip_install "$venv" --upgrade pip setuptools
  venv_pip_install "$venv" "${pins[@]}" -c "$constraints"
  touch "$stamp"
fi

# The provider, editable from this clone (re-pointed when the cache was built from another one).
provider_dir="$(pwd)/integrations/airflow"
installed_from="$("$venv/bin/python" -I -c \
  'import pathlib, railyard_airflow; print(pathlib.Path(railyard_airflow.__file__).resolve().parents[2])' \
  2>/dev/null || true)"
if [[ "$installed_from" != "$provider_dir" ]]; then
  venv_pip_install "$venv" --no-build-isolation -e "$provider_dir"
fi

# The point of the provider: Airflow with it installed carries no Ray, no pyarrow, no Railyard.
for forbidden in ray pyarrow railyard; do
  if "$venv/bin/python" -I -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$forbidden') is None)"; then
    echo "airflow_venv: $forbidden is installed in $venv; the provider must not need it" >&2
    exit 1
  fi
done
echo "$venv"
