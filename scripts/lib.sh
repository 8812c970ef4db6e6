# Shell functions the scripts share; `source scripts/lib.sh` (it sets no options of its own).

# Print the Python 3.11 on the PATH (Ray 2.60 wheels are pinned for it), or fail naming the
# script ($1) that needs it.
find_python311() {
  local candidate
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && \
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
      echo "$candidate"; return 0
    fi
  done
  echo "$1: Python 3.11 is required (Ray 2.60 wheels are pinned for it)" >&2
  return 1
}

# pip install quietly into the virtualenv $1 (the other arguments go to pip), its output on
# stderr without setuptools' "is ignored: it is neither …" noise.
venv_pip_install() {
  local venv="$1"; shift
  "$venv/bin/python" -m pip install --quiet "$@" 2>&1 \
    | { grep -v "is ignored: it is neither" || true; } >&2
}
