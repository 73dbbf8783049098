#!/usr/bin/env bash
# Run the device side of the test suite under other Python versions than the venvs' own.
#
#   tools/python-versions.sh [VERSION ...]      # default: 3.10 3.12 3.13
#
# For each VERSION: finds an interpreter ($PYTHON_<major><minor>, e.g.
# PYTHON_313=/usr/bin/python3.13, else python$VERSION on PATH, else a pyenv install under
# ~/.pyenv/versions), makes build/py$VERSION, a
# fresh venv with `pip install -e ".[cpu,test,fleet]"` from this checkout (the fleet extra
# installs nothing below 3.11: Flower needs it, and the fleet tests skip), and runs pytest
# there as `make test`'s second run does: the device suite on the micro bundles the workstation
# run cached in build/test-bundles (run `make test` first). Prints one line per version and
# exits non-zero if any failed or had no interpreter. README's and pyproject's Python range
# are what passed here.
set -uo pipefail
cd "$(dirname "$0")/.."
VERSIONS=("$@")
(( ${#VERSIONS[@]} )) || VERSIONS=(3.10 3.12 3.13)
log() { printf '[python-versions] %s\n' "$*" >&2; }

[[ -d build/test-bundles ]] || { log "no build/test-bundles: run make test first"; exit 2; }
declare -A RESULT
status=0
for v in "${VERSIONS[@]}"; do
  var="PYTHON_${v//./}"
  py="${!var:-}"
  for cand in "$(command -v "python$v" || true)" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python"$v"; do
    [[ -z "$py" && -x "$cand" ]] && "$cand" -c 'import sys' 2>/dev/null && py="$cand"
  done
  if [[ -z "$py" ]] || ! "$py" -c 'import sys' 2>/dev/null; then
    RESULT[$v]="no interpreter (set $var=/path/to/python$v, or install one: pyenv, Debian trixie's python3.13)"
    status=1
    continue
  fi
  venv="build/py$v"
  log "$v: $("$py" -V 2>&1) at $py -> $venv"
  rm -rf "$venv"
  if ! "$py" -m venv "$venv" || ! "$venv/bin/python" -m pip install -q -e '.[cpu,test,fleet]'; then
    RESULT[$v]="install failed"
    status=1
    continue
  fi
  out="build/py$v.log"
  "$venv/bin/python" -m pytest -q -p no:cacheprovider >"$out" 2>&1
  rc=$?
  ort=$("$venv/bin/python" -c 'import onnxruntime as o; print(o.__version__)' 2>/dev/null)
  RESULT[$v]="pytest exit $rc: $(tail -1 "$out") (onnxruntime $ort; log $out)"
  (( rc == 0 )) || status=1
done
for v in "${VERSIONS[@]}"; do
  echo "Python $v: ${RESULT[$v]}"
done
exit $status
