#!/usr/bin/env bash
# Set up (or reuse) the environment, lint, and run the whole test suite, slow tests included.
# Extra arguments go to pytest, e.g. scripts/test.sh -k verifier -x
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false RAY_AUTH_MODE=disabled DS_ACCELERATOR=cpu
ruff check .
python -m pytest --run-slow "$@"
