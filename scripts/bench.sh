#!/usr/bin/env bash
# Every speed benchmark in one command: bash scripts/bench.sh [--quick] [--jit] [--help]
# Writes reports/bench/<device>-<date>[-quick].md and .json (see scripts/bench_all.py).
# Python: $PYTHON if set, else .venv/bin/python; with neither, .venv is created and the
# package installed into it first (scripts/_venv.sh). The checkout's code is what runs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ ! -x "$ROOT/.venv/bin/python" ]; then
    EXTRAS="cpu,test" source "$ROOT/scripts/_venv.sh"
  fi
  PYTHON="$ROOT/.venv/bin/python"
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"
exec "$PYTHON" scripts/bench_all.py "$@"
