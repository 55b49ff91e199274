"""One learner rank without Ray, run in this process (world size 1) or as a script (one process per rank of a
world of 2, tests/rlvr/test_learner_objectives.py): the same 8 samples, advantages and generator log-probs on
every rank, each rank updating its contiguous shard, once per (policy loss, loss_agg_mode, mismatch correction)
combination at lr 0 (the weights never move, so every combination sees the same policy). Returns each update's
policy loss (this rank's share) and gradient norm."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
PROMPTS = [[5, 6, 7, 8], [5, 6, 7, 8], [11, 12, 13], [11, 12, 13], [9, 10], [9, 10], [14, 15, 16], [14, 15, 16]]
RESPONSES = [[20, 21, 22], [23, 24, 25, 26, 27], [28], [29, 30], [31, 32, 33, 34], [35], [36, 37], [38, 39, 40]]
ADVANTAGES = [1.0, -1.0, 0.7, -0.7, -1.2, 1.2, 0.4, -0.4]
OFFSETS = [-0.4, 0.5, 0.05, 0.0, 0.9, -0.2, 0.3, -0.6]  # generator minus learner log-prob, per sample
COMBOS = [
    {"policy_loss": "ppo", "loss_agg_mode": "token-mean", "mismatch_correction": "off"},
    {"policy_loss": "dual_clip", "loss_agg_mode": "seq-mean-token-sum", "mismatch_correction": "off",
     "clip_ratio_c": 1.5},
    {"policy_loss": "gspo", "loss_agg_mode": "seq-mean-token-mean", "mismatch_correction": "tis",
     "clip_eps": 0.1, "clip_eps_high": 0.2, "tis_cap": 1.2},
    {"policy_loss": "cispo", "loss_agg_mode": "seq-mean-token-sum-norm", "mismatch_correction": "mask",
     "mismatch_mask_threshold": 1.5},
]


def _config(model_dir: str, world: int, micro: int):
    from core.config import load_config
    from rlvr.config import RLVRConfig

    return load_config(RLVRConfig, REPO / "configs" / "rlvr" / "tiny_grpo.yaml", [
        f"model={model_dir}", "output_dir=/tmp/unused", "rollout.prompts_per_step=4", "rollout.samples_per_prompt=2",
        "rollout.temperature=1.0", "rollout.async_steps=1", "ppo.num_mini_batches=1", "ppo.kl_coef=0.1",
        f"optim.per_device_batch_size={micro}", "optim.lr=0", f"dist.world_size={world}"])


def run_combos(rank: int, world: int, port: int, model_dir: str, micro: int) -> list[dict]:
    from core.config import config_to_dict
    from rlvr.actors.learner import Learner
    from rlvr.rollouts import _chunks

    cfg = _config(model_dir, world, micro)
    learner = Learner(config_to_dict(cfg), rank, world, "127.0.0.1", port)
    vocab = learner.policy.module.config.vocab_size
    samples = []
    for p, r, off in zip(PROMPTS, RESPONSES, OFFSETS):
        p, r = [t % vocab for t in p], [t % vocab for t in r]
        own = learner.sequence_logprobs(p, r)  # the policy's log-probs (temperature 1 = the config's)
        samples.append({"prompt_ids": p, "response_ids": r, "logprobs": [x + off for x in own]})
    rows = _chunks(list(range(len(samples))), world)[rank]
    out = []
    for combo in COMBOS:
        learner.cfg = cfg.model_copy(update={"ppo": cfg.ppo.model_copy(update=combo)})
        prep = learner.prepare([samples[i] for i in rows])
        adv = torch.tensor([ADVANTAGES[i] for i in rows])[:, None] * prep["mask"]
        result = learner.update(1, adv)
        out.append({"loss": result["policy/loss"], "grad_norm": result["policy/grad_norm"],
                    "truncated": result.get("sum/is_truncated", 0.0), "gap_tokens": result.get("sum/gap_tokens")})
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    for name in ("rank", "world", "port", "micro"):
        ap.add_argument(f"--{name}", type=int, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    sys.path.insert(0, str(REPO))
    Path(args.out).write_text(json.dumps(run_combos(args.rank, args.world, args.port, args.model, args.micro)))
