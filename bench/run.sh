#!/usr/bin/env bash
# Side-by-side benchmark, modelyard vs MLflow (`make bench` runs this).
#
#   bash bench/run.sh            # full run (~15-25 min on 2 cores)
#   bash bench/run.sh --quick    # smoke run (~3 min once MLflow is installed)
#   bash bench/run.sh --help     # every option of bench/run.py
#
# Installs MLflow into its own virtualenv bench/.venv-mlflow the first time
# (only if it is missing or holds another version), then hands over to
# bench/run.py under the project's interpreter, then bench/search_scale.py (search at
# 100,000 runs on SQLite and PostgreSQL). See bench/README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
MLFLOW_VERSION="${MLFLOW_VERSION:-3.17.2}"
VENV="$HERE/.venv-mlflow"
PY="${MODELYARD_PYTHON:-$ROOT/.venv/bin/python}"

log() { printf '[bench.sh %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

if [ ! -x "$PY" ]; then
    log "missing $PY: create the project virtualenv (and pip install -e '.[test]') first"
    exit 1
fi

have_mlflow() {
    [ -x "$VENV/bin/python" ] && [ -x "$VENV/bin/mlflow" ] &&
        "$VENV/bin/python" - "$MLFLOW_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if version("mlflow") == sys.argv[1] else 1)
PY
}

if have_mlflow; then
    log "MLflow $MLFLOW_VERSION already installed in $VENV"
else
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating virtualenv $VENV"
        "$PY" -m venv "$VENV"
    fi
    log "installing mlflow==$MLFLOW_VERSION into $VENV (takes a few minutes)..."
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q --upgrade pip
    timeout 1800 "$VENV/bin/python" -m pip install --disable-pip-version-check \
        --progress-bar off "mlflow==$MLFLOW_VERSION" 2>&1 |
        grep -E --line-buffered '^(Collecting|Installing|Successfully|ERROR|error)' || true
    if ! have_mlflow; then
        log "MLflow installation failed (see the pip output above)"
        exit 1
    fi
    log "MLflow $MLFLOW_VERSION installed"
fi

status=0
"$PY" "$HERE/run.py" "$@" || status=$?
case " $* " in
    *" --help "*|*" -h "*|*" --from-json "*) exit "$status" ;;
esac
[ "$status" -eq 130 ] && exit 130
# Search at 100,000 runs on SQLite and PostgreSQL (modelyard only: see search_scale.py).
scale_args=()
case " $* " in *" --quick "*) scale_args=(--runs 10000 --searches 5) ;; esac
"$PY" "$HERE/search_scale.py" "${scale_args[@]}" || status=$?
exit "$status"
