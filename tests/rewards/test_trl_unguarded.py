"""TRL's quickstart style: a GRPOTrainer script with no `if __name__ == "__main__":` guard, our reward function,
a tiny model, two training steps. Spawned reward workers used to re-run such a script and die starting
(`PoolStartError: worker died while starting`) at the first reward call."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = '''
import json, sys
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer
from rewards.adapters.trl import make_reward_func

model_dir, out_dir = sys.argv[1], sys.argv[2]
data = Dataset.from_list([{"prompt": f"What is {a} + {a}?", "ground_truth": str(2 * a)} for a in range(4)])
args = GRPOConfig(output_dir=out_dir, per_device_train_batch_size=2, num_generations=2, max_completion_length=8,
                  max_steps=2, logging_steps=1, report_to="none", save_strategy="no", use_cpu=True,
                  dataloader_num_workers=0, disable_tqdm=True)
trainer = GRPOTrainer(model=model_dir, reward_funcs=[make_reward_func("gsm8k")], args=args, train_dataset=data)
trainer.train()
print("RESULT", json.dumps({"steps": trainer.state.global_step,
                            "rewards": [h["rewards/rlvr_gsm8k_reward/mean"] for h in trainer.state.log_history
                                        if "rewards/rlvr_gsm8k_reward/mean" in h]}), flush=True)
'''


@pytest.mark.slow
def test_unguarded_trl_script_trains_two_steps(tiny_model_dir, tmp_path):
    pytest.importorskip("trl")
    import json

    script = tmp_path / "train_grpo.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "RLVR_REWARD_WORKERS": "1", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(script), str(tiny_model_dir), str(tmp_path / "out")], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["steps"] == 2
    assert len(result["rewards"]) == 2 and all(0.0 <= r <= 1.0 for r in result["rewards"])
