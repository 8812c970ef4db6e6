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

python_bin=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 && \
     "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
    python_bin="$candidate"; break
  fi
done
if [[ -z "$python_bin" ]]; then
  echo "airflow_venv: Python 3.11 is required" >&2
  exit 1
fi

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
  "$venv/bin/python" -m pip install --quiet --upgrade pip setuptools 2>&1 \
    | { grep -v "is ignored: it is neither" || true; } >&2
  "$venv/bin/python" -m pip install --quiet "${pins[@]}" -c "$constraints" 2>&1 \
    | { grep -v "is ignored: it is neither" || true; } >&2
  touch "$stamp"
fi

# The provider, editable from this clone (re-pointed when the cache was built from another one).
provider_dir="$(pwd)/integrations/airflow"
installed_from="$("$venv/bin/python" -I -c \
  'import pathlib, railyard_airflow; print(pathlib.Path(railyard_airflow.__file__).resolve().parents[2])' \
  2>/dev/null || true)"
if [[ "$installed_from" != "$provider_dir" ]]; then
  "$venv/bin/python" -m pip install --quiet --no-build-isolation -e "$provider_dir" 2>&1 \
    | { grep -v "is ignored: it is neither" || true; } >&2
fi

# The point of the provider: Airflow with it installed carries no Ray, no pyarrow, no Railyard.
for forbidden in ray pyarrow railyard; do
  if "$venv/bin/python" -I -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$forbidden') is None)"; then
    echo "airflow_venv: $forbidden is installed in $venv; the provider must not need it" >&2
    exit 1
  fi
done
echo "$venv"
