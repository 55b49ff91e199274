"""The learner (no Ray) with the objectives of issue 22: every loss_agg_mode, with a different policy loss and
mismatch correction each, gives the same loss and gradient norm on one micro-batch, on eight accumulated ones and
on two ranks (two processes on gloo); the TIS correction and the overlong filter's sample mask make the update the
pure functions give by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from learner_ranks import ADVANTAGES, COMBOS, OFFSETS, PROMPTS, RESPONSES, run_combos

from core.config import config_to_dict
from core.engine import free_port
from rlvr.actors.learner import Learner
from rlvr.algorithms import ppo_policy_loss, truncated_is_weights

HERE = Path(__file__).resolve().parent


def test_every_loss_agg_mode_is_invariant_to_micro_batches_and_ranks(tiny_model_dir, tmp_path):
    one = run_combos(0, 1, free_port(), str(tiny_model_dir), micro=8)
    many = run_combos(0, 1, free_port(), str(tiny_model_dir), micro=1)
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), str(HERE)])}
    procs = [subprocess.Popen([sys.executable, str(HERE / "learner_ranks.py"), "--rank", str(r), "--world", "2",
                               "--port", str(port), "--micro", "2", "--model", str(tiny_model_dir),
                               "--out", str(tmp_path / f"rank{r}.json")], env=env) for r in (0, 1)]
    for p in procs:
        assert p.wait(timeout=300) == 0
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for i, combo in enumerate(COMBOS):
        ref = one[i]
        assert ref["grad_norm"] > 0, combo
        assert many[i]["loss"] == pytest.approx(ref["loss"], rel=1e-5, abs=1e-7), combo
        assert many[i]["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-4), combo
        # the driver averages the ranks' losses; the gradient is averaged by DeepSpeed, its norm the same on both
        two = (ranks[0][i]["loss"] + ranks[1][i]["loss"]) / 2
        assert two == pytest.approx(ref["loss"], rel=1e-5, abs=1e-7), combo
        assert ranks[0][i]["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-4), combo
        assert ranks[1][i]["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-4), combo
        if combo["mismatch_correction"] != "off":  # the corrections cut something, the same on every layout
            assert ref["truncated"] > 0
            assert ranks[0][i]["truncated"] + ranks[1][i]["truncated"] == ref["truncated"]
    assert len({round(r["loss"], 6) for r in one}) == len(COMBOS)  # the combinations are different objectives


def _learner(tiny_model_dir, tmp_path, *extra):
    from core.config import load_config
    from rlvr.config import RLVRConfig

    cfg = load_config(RLVRConfig, HERE.parents[1] / "configs" / "rlvr" / "tiny_grpo.yaml", [
        f"model={tiny_model_dir}", f"output_dir={tmp_path}", "rollout.prompts_per_step=4",
        "rollout.samples_per_prompt=2", "rollout.temperature=1.0", "ppo.num_mini_batches=1", "ppo.kl_coef=0",
        "optim.per_device_batch_size=4", "optim.lr=0", *extra])
    return Learner(config_to_dict(cfg), 0, 1, "127.0.0.1", free_port()), cfg


def _samples(learner):
    vocab = learner.policy.module.config.vocab_size
    out = []
    for p, r, off in zip(PROMPTS, RESPONSES, OFFSETS):
        p, r = [t % vocab for t in p], [t % vocab for t in r]
        own = learner.sequence_logprobs(p, r)
        out.append({"prompt_ids": p, "response_ids": r, "logprobs": [x + off for x in own], "own": own})
    return out


def _padded(rows):
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [0.0] * (width - len(r)) for r in rows])


def test_tis_weights_the_update_by_the_truncated_ratio_of_learner_to_generator(tiny_model_dir, tmp_path):
    learner, cfg = _learner(tiny_model_dir, tmp_path, "ppo.mismatch_correction=tis", "ppo.tis_cap=1.2")
    assert learner.old_logprobs_source == "recompute"  # one update, but the weights need pi_old
    samples = _samples(learner)
    prep = learner.prepare(samples)
    mask = prep["mask"]
    own, gen = _padded([s["own"] for s in samples]), _padded([s["logprobs"] for s in samples])
    torch.testing.assert_close(prep["logprobs"], own * mask, atol=1e-5, rtol=1e-5)
    adv = torch.tensor(ADVANTAGES)[:, None] * mask
    out = learner.update(1, adv)
    weights, stats = truncated_is_weights(own, gen, mask, cap=1.2)
    want, _ = ppo_policy_loss(own, own, adv, mask, weights=weights, num_units=mask.sum())
    assert out["policy/loss"] == pytest.approx(want.item(), rel=1e-4, abs=1e-6)
    assert out["sum/is_truncated"] == stats["truncated"] > 0
    assert out["sum/gap_abs"] / out["sum/gap_tokens"] == pytest.approx(
        sum(abs(o) * len(r) for o, r in zip(OFFSETS, RESPONSES)) / sum(map(len, RESPONSES)), rel=1e-4)
    assert out["max/gap_max"] == pytest.approx(max(abs(o) for o in OFFSETS), rel=1e-4)
    unweighted, _ = ppo_policy_loss(own, own, adv, mask, num_units=mask.sum())
    assert abs(unweighted.item() - want.item()) > 1e-3  # the weights changed the objective


def test_sample_mask_takes_samples_out_of_the_loss_and_its_normaliser(tiny_model_dir, tmp_path):
    learner, _ = _learner(tiny_model_dir, tmp_path)
    samples = _samples(learner)
    mask = learner.prepare(samples)["mask"]
    adv = torch.tensor(ADVANTAGES)[:, None] * mask
    keep = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0])  # two cut-off samples (rewards.overlong_filter)
    out = learner.update(1, adv, None, keep)
    kept = mask * keep[:, None]
    # ratio 1: the loss is -sum(A) over the kept tokens / their count
    assert out["policy/loss"] == pytest.approx(-(adv * kept).sum().item() / kept.sum().item(), rel=1e-5)
    learner.prepare(samples)
    full = learner.update(1, adv)  # without the mask: every token
    assert full["policy/loss"] == pytest.approx(-(adv * mask).sum().item() / mask.sum().item(), rel=1e-5)
    assert abs(full["policy/loss"] - out["policy/loss"]) > 1e-3
