#!/usr/bin/env bash
# Creates bench/peers/.venv-feast with Feast 0.67 (DuckDB offline store, Redis online store).
# Feast pins pandas < 3 and many extras of its own: it lives in this venv, never in the project's.
# Idempotent: a venv whose feast import works is kept.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv-feast"
python="${FEAST_PYTHON:-python3.11}"
if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c 'import feast, duckdb, redis' 2>/dev/null; then
  exit 0
fi
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet "feast[duckdb,redis]==0.67.0" "psutil"
"$venv/bin/python" -c 'import feast; print("feast", feast.__version__)'
