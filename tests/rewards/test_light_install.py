"""The light install: `pip install ./packages/smoltulu-rewards` into a fresh venv brings the verifiers without torch, Ray,
DeepSpeed or vLLM; the three trainer adapters and the `rlvr-verify` command work there."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "ray", "deepspeed", "vllm", "transformers")

SMOKE = r'''
import importlib.util, json, os, sys
os.environ["RLVR_REWARD_DATASET"] = "from_label"
import rewards.adapters
from rewards.adapters import verl
from rewards.adapters.trl import make_reward_func

spec = importlib.util.spec_from_file_location("reward_func", os.path.join(os.path.dirname(rewards.adapters.__file__),
                                                                         "openrlhf.py"))
openrlhf = importlib.util.module_from_spec(spec)
spec.loader.exec_module(openrlhf)  # as OpenRLHF loads it

IFEVAL = {"instruction_id_list": ["startend:end_checker"], "kwargs": [{"end_phrase": "Any other questions?"}]}
GOOD = ["Half of 36 is 18.\n#### 18", "Here it is. Any other questions?"]
BAD = ["#### 17", "Here it is."]
out = {
    "trl": make_reward_func()(["Q", "Q", "Q", "Q"], GOOD + BAD, ground_truth=["18", json.dumps(IFEVAL)] * 2,
                              dataset=["gsm8k", "ifeval"] * 2),
    "verl": [verl.compute_score(s, r, g)["score"] for s, r, g in
             zip(["openai/gsm8k", "google/IFEval"] * 2, GOOD + BAD, ["18", IFEVAL] * 2)],
    "openrlhf": openrlhf.reward_func(["P" + r + "<|im_end|>" for r in GOOD + BAD], ["P"] * 4,
                                     [json.dumps({"dataset": d, "ground_truth": g})
                                      for d, g in zip(["gsm8k", "ifeval"] * 2, ["18", IFEVAL] * 2)])["rewards"],
    "heavy_imported": sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY}),
}
print(json.dumps(out))
'''.replace("{HEAVY}", repr(set(HEAVY)))


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)


@pytest.mark.slow
def test_light_install_in_a_fresh_venv(tmp_path):
    src, venv = tmp_path / "src", tmp_path / "venv"
    # pip builds in the source folder: build a copy (its `rewards` link resolved) and keep the repository clean
    shutil.copytree(REPO / "packages" / "smoltulu-rewards", src, symlinks=False,
                    ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    assert _run([sys.executable, "-m", "venv", str(venv)]).returncode == 0
    py, bindir = venv / "bin" / "python", venv / "bin"
    install = _run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(src)])
    assert install.returncode == 0, install.stderr[-3000:]

    for module in HEAVY:
        probe = _run([str(py), "-c", f"import {module}"], cwd=tmp_path)
        assert probe.returncode == 1 and f"No module named '{module}'" in probe.stderr, module

    smoke = _run([str(py), "-c", SMOKE], cwd=tmp_path)
    assert smoke.returncode == 0, smoke.stderr[-3000:]
    result = json.loads(smoke.stdout.strip().splitlines()[-1])
    assert result["trl"] == result["verl"] == result["openrlhf"] == [1.0, 1.0, 0.0, 0.0]
    assert result["heavy_imported"] == []

    rows = tmp_path / "responses.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in [
        {"response": "#### 18", "ground_truth": "18", "dataset": "gsm8k"},
        {"response": "Done. Any other questions?", "ground_truth": {"instruction_id_list": ["startend:end_checker"],
                                                                   "kwargs": [{"end_phrase": "Any other questions?"}]},
         "dataset": "ifeval"},
    ]))
    verify = _run([str(bindir / "rlvr-verify"), "--dataset-field", "dataset", "--input", str(rows)], cwd=tmp_path)
    assert verify.returncode == 0, verify.stderr[-2000:]
    assert "score: 2 / 2" in verify.stdout
    missing = _run([str(py), "-m", "rewards", "--verifier", "gsm8k", "--input", str(rows), "--response-field", "text"],
                   cwd=tmp_path)
    assert missing.returncode == 2 and "no row of" in missing.stderr
