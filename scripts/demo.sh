#!/usr/bin/env bash
# Set up (or reuse) the environment and run the main job: the demo pipeline SFT -> DPO -> RLVR (GRPO with the
# GSM8K checker) on the bundled SmolLM2-135M-Instruct, with data the product generates and a local Ray, on CPU.
# Extra arguments are pipeline overrides, e.g. scripts/demo.sh output_dir=runs/demo2
# The RLVR stage alone: rlvr train --config configs/demo.yaml
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} TOKENIZERS_PARALLELISM=false RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
rlvr models prepare smollm2-135m-instruct
rlvr pipeline --config configs/pipeline/demo.yaml "$@"
