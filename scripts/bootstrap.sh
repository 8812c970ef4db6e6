#!/usr/bin/env bash
# Create .venv and install Railyard into it (and, with --test, what the test suite needs:
# the test extras and PostgreSQL's server binaries). Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

want_tests=0
[[ "${1:-}" == "--test" ]] && want_tests=1

source scripts/lib.sh
python_bin="$(find_python311 bootstrap)"

if [[ ! -x .venv/bin/python ]]; then
  "$python_bin" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi

extras=""
[[ $want_tests == 1 ]] && extras="[test]"
stamp=".venv/.railyard-installed${extras}"
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
  echo "bootstrap: installing railyard${extras} into .venv (first run takes a few minutes)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras}"
  touch "$stamp"
fi

if [[ $want_tests == 1 ]]; then
  # Debian packages the tests start for real: PostgreSQL's server, and Chromium for the UI's
  # browser tests (Playwright drives /usr/bin/chromium; it never downloads a browser of its own).
  missing=()
  if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    missing+=(postgresql)
  fi
  [[ -x /usr/bin/chromium ]] || missing+=(chromium)
  if (( ${#missing[@]} )); then
    echo "bootstrap: installing ${missing[*]} (Debian packages) for the test suite"
    if [[ $(id -u) == 0 ]]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi
