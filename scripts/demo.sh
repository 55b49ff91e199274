#!/usr/bin/env bash
# Set up (or reuse) the environment and run the main job: an RLVR run of the bundled SmolLM2-135M-Instruct on
# procedural tasks, with a local Ray. Extra arguments are config overrides, e.g. scripts/demo.sh rl.num_steps=4
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh
rlvr models prepare smollm2-135m-instruct
rlvr train --config configs/demo.yaml "$@"
