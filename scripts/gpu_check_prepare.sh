#!/usr/bin/env bash
# Prepare what scripts/gpu_check.sh needs on a GPU machine that has only torch (CUDA), transformers and their
# dependencies: a few MB, written to DIR (default .gpu_check/, ignored by git), carried there beside the repository.
#
#   scripts/gpu_check_prepare.sh [--no-wheels] [DIR]
#
# DIR/wheels/   DeepSpeed 0.19.8 built here as a pure-Python wheel (`pip wheel --no-deps`: PyPI has only its
#               sdist) and the wheels of what DeepSpeed and our configs import that such a machine lacks
#               (pydantic + pydantic-core, annotated-types, typing-inspection, hjson, einops, msgpack, py-cpuinfo,
#               and the typing-extensions pydantic needs, newer than some machines have),
#               for the GPU machine's Python (GPU_CHECK_PYTHON_VERSION, default 3.12) on manylinux x86_64. The
#               check unpacks them into a folder of its own; nothing is installed into that machine's Python.
# DIR/smollm2/  SmolLM2-135M-Instruct's config.json, tokenizer and generation config, no weights (the check
#               builds random ones of that shape on the GPU), from `rlvr models prepare smollm2-135m-instruct`.
#
# --no-wheels: smollm2/ only (offline; what `scripts/gpu_check.sh --device cpu` needs beside this repository's .venv).
# Needs: this repository's .venv (scripts/setup_env.sh) and pip's access to PyPI. Exit 1 when something could
# not be fetched or the result exceeds 16 MiB (the GPU machine takes 64 MiB per call, repository included).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS=1
if [[ "${1:-}" == --no-wheels ]]; then WHEELS=0; shift; fi
DIR="${1:-$REPO/.gpu_check}"
PY="${PYTHON:-$REPO/.venv/bin/python}"
PYVER="${GPU_CHECK_PYTHON_VERSION:-3.12}"
die() { echo "gpu_check_prepare: $*" >&2; exit 1; }
[[ -x "$PY" ]] || die "no Python at $PY (run scripts/setup_env.sh, or set PYTHON)"

# pinned to what this repository's environment runs, so the check exercises the same versions
pin() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
PINS=("pydantic==$(pin pydantic)" "pydantic-core==$(pin pydantic-core)" "annotated-types==$(pin annotated-types)"
      "typing-inspection==$(pin typing-inspection)" "hjson==$(pin hjson)" "einops==$(pin einops)"
      "msgpack==$(pin msgpack)" "py-cpuinfo==$(pin py-cpuinfo)" "typing-extensions==$(pin typing-extensions)")

rm -rf "$DIR/wheels" "$DIR/smollm2"
mkdir -p "$DIR/wheels" "$DIR/smollm2"
if ((WHEELS)); then
echo "gpu_check_prepare: building deepspeed==0.19.8 (pure Python, no ops compiled)"
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DIR/wheels" deepspeed==0.19.8 \
  || die "pip could not build the deepspeed 0.19.8 wheel"
echo "gpu_check_prepare: fetching ${PINS[*]} for CPython $PYVER manylinux x86_64"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$DIR/wheels" "${PINS[@]}" || die "pip could not download ${PINS[*]} for Python $PYVER"
fi

"$PY" - "$DIR/smollm2" <<'EOF'
import shutil
import sys
from pathlib import Path

from core.models import prepare_model

src, out = Path(prepare_model("smollm2-135m-instruct")), Path(sys.argv[1])
names = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
         "special_tokens_map.json", "chat_template.jinja"]
for name in names:
    if (src / name).is_file():
        shutil.copy(src / name, out / name)
missing = [n for n in ("config.json", "tokenizer.json", "tokenizer_config.json") if not (out / n).is_file()]
if missing:
    raise SystemExit(f"gpu_check_prepare: {src} has no {', '.join(missing)}")
EOF

size=$(du -sb "$DIR" | cut -f1)
((size <= 16 * 1024 * 1024)) || die "$DIR holds $((size / 1024)) KiB, over the 16 MiB this check allows itself"
echo "gpu_check_prepare: $DIR ready, $((size / 1024)) KiB:"
(cd "$DIR" && find . -type f | sort | sed 's/^/  /')
