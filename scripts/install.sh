#!/usr/bin/env bash
# Set up molfold in a virtual environment (default .venv) from a source checkout.
#
#   bash scripts/install.sh [VENV_DIR]
#
# PyTorch is installed first, so that pip does not pull a build you did not choose:
# MOLFOLD_TORCH (default "torch==2.13.0") is passed to pip as is. For a CPU-only build on a
# machine with network access use e.g.
#   MOLFOLD_TORCH="torch --index-url https://download.pytorch.org/whl/cpu" bash scripts/install.sh
# and for a CUDA build the command from https://pytorch.org/get-started/locally/.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
# shellcheck disable=SC2086
"$venv/bin/python" -m pip install --quiet ${MOLFOLD_TORCH:-torch==2.13.0}
"$venv/bin/python" -m pip install --quiet -e ".[dev]"
"$venv/bin/python" -c "import molfold, torch; print(f'molfold {molfold.__version__} with torch {torch.__version__} in $venv')"
