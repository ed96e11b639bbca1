#!/usr/bin/env bash
# Create bench/work/dvc-venv with DVC 3.x (+ dvc-s3 for the remote benchmark), and
# bench/work/pivot-venv with this checkout installed non-editable, as users install it
# (bench/pivot_venv.py; run_bench.py times it and reinstalls it when the checkout changed).
# Idempotent. DVC lives in its own venv so its dependencies never mix with Pivot's.
#   PYTHON=python3.11 bench/setup.sh      # choose the interpreter (default: python3)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/work/dvc-venv"
python="${PYTHON:-python3}"

if [[ -x "$venv/bin/dvc" ]] && "$venv/bin/python" - <<'PY' 2>/dev/null; then
import importlib.metadata as m, sys
v = m.version("dvc"); m.version("dvc-s3")
sys.exit(0 if v.startswith("3.") else 1)
PY
    echo "DVC venv ready: $("$venv/bin/dvc" --version) at $venv"
else
    mkdir -p "$here/work"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet 'dvc>=3,<4' 'dvc-s3'
    echo "DVC venv ready: $("$venv/bin/dvc" --version) at $venv"
fi

PYTHON="$python" "$python" "$here/pivot_venv.py"
