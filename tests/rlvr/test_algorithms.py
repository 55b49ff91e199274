"""The RL algorithms against hand-computed values on tiny tensors, plain-loop references over random seeds, and
the sharding/accumulation invariance of the loss reduction."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.algorithms import (
    ADVANTAGE_ESTIMATORS,
    aggregate_loss,
    compute_gae,
    entropy_from_logits,
    group_advantages,
    kl_estimate,
    logprobs_from_logits,
    masked_mean,
    masked_whiten,
    ppo_policy_loss,
    sequence_rewards,
    shape_token_rewards,
    value_loss,
)


def test_logprobs_and_entropy_match_definitions():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    labels = torch.randint(0, 5, (2, 3))
    ref = torch.log_softmax(logits, -1).gather(-1, labels[..., None])[..., 0]
    torch.testing.assert_close(logprobs_from_logits(logits, labels), ref)
    p = torch.softmax(logits, -1)
    torch.testing.assert_close(entropy_from_logits(logits), -(p * p.log()).sum(-1))
    # uniform over 4 -> entropy log 4
    assert entropy_from_logits(torch.zeros(1, 1, 4)).item() == pytest.approx(math.log(4))


def test_masked_stats():
    x = torch.tensor([[1.0, 3.0, 100.0]])
    m = torch.tensor([[1, 1, 0]])
    assert masked_mean(x, m).item() == 2.0
    w = masked_whiten(x, m)
    assert w[0, 2].item() == 0.0
    assert w[0, :2].tolist() == pytest.approx([-1.0, 1.0], abs=1e-6)


def test_kl_estimators_by_hand():
    lp, ref = torch.tensor([[-1.0]]), torch.tensor([[-2.0]])
    assert kl_estimate(lp, ref, "k1").item() == pytest.approx(1.0)
    assert kl_estimate(lp, ref, "k2").item() == pytest.approx(0.5)
    assert kl_estimate(lp, ref, "k3").item() == pytest.approx(math.exp(-1) + 1 - 1)
    with pytest.raises(ValueError, match="k1"):
        kl_estimate(lp, ref, "k9")


def test_sequence_rewards_replace_score_when_cut_off():
    r = sequence_rewards(torch.tensor([1.0, 0.0, 1.0]), torch.tensor([True, True, False]))
    assert r.tolist() == [10.0, 0.0, -10.0]


def test_shape_token_rewards_by_hand():
    scores = torch.tensor([1.0, 0.0])
    finished = torch.tensor([True, False])
    kl = torch.tensor([[0.2, 0.4, 0.0], [1.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    rewards, metrics = shape_token_rewards(scores, finished, kl, mask, kl_coef=0.5)
    expected = torch.tensor([[-0.1, -0.2 + 10.0, 0.0], [-0.5 - 10.0, 0.0, 0.0]])
    torch.testing.assert_close(rewards, expected)
    assert metrics["reward/no_eos_fraction"] == 0.5


def gae_reference(r, v, gamma, lam):
    """Textbook GAE for one unpadded sequence."""
    T = len(r)
    adv = [0.0] * T
    last = 0.0
    for t in reversed(range(T)):
        nv = v[t + 1] if t + 1 < T else 0.0
        delta = r[t] + gamma * nv - v[t]
        last = delta + gamma * lam * last
        adv[t] = last
    return adv


def test_gae_by_hand():
    r = torch.tensor([[0.0, 1.0]])
    v = torch.tensor([[0.5, 0.25]])
    adv, ret = compute_gae(r, v, torch.ones(1, 2), gamma=1.0, lam=0.5)
    # t=1: delta = 1 - 0.25 = 0.75; t=0: delta = 0 + 0.25 - 0.5 = -0.25, A = -0.25 + 0.5*0.75 = 0.125
    assert adv.tolist() == [[pytest.approx(0.125), pytest.approx(0.75)]]
    assert ret.tolist() == [[pytest.approx(0.625), pytest.approx(1.0)]]


@pytest.mark.parametrize("seed", range(5))
def test_gae_matches_loop_with_padding(seed):
    g = torch.Generator().manual_seed(seed)
    B, T = 4, 7
    r, v = torch.randn(B, T, generator=g), torch.randn(B, T, generator=g)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    adv, ret = compute_gae(r, v, mask, gamma=0.99, lam=0.9)
    for b in range(B):
        n = int(lengths[b])
        ref = gae_reference(r[b, :n].tolist(), v[b, :n].tolist(), 0.99, 0.9)
        assert adv[b, :n].tolist() == pytest.approx(ref, abs=1e-5)
        assert adv[b, n:].abs().sum() == 0 and ret[b, n:].abs().sum() == 0
        assert ret[b, :n].tolist() == pytest.approx([a + x for a, x in zip(ref, v[b, :n].tolist())], abs=1e-5)


def test_group_advantages_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 5.0, 5.0])
    grpo = group_advantages(r, 3)
    std = torch.tensor([1.0, 0.0, 0.0]).std().item()
    assert grpo[:3].tolist() == pytest.approx([(1 - 1 / 3) / std, -1 / 3 / std, -1 / 3 / std], rel=1e-4)
    std2 = math.sqrt((100 / 9 + 25 / 9 + 25 / 9) / 2)  # unbiased std of (0, 5, 5)
    assert grpo[3:].tolist() == pytest.approx([-10 / 3 / std2, 5 / 3 / std2, 5 / 3 / std2], rel=1e-4)
    rloo = group_advantages(r, 3, estimator="rloo")
    # leave-one-out: 1 - mean(0,0) = 1; 0 - mean(1,0) = -0.5
    assert rloo[:3].tolist() == pytest.approx([1.0, -0.5, -0.5])
    # identical rewards carry no signal
    assert group_advantages(torch.ones(4), 4).abs().max().item() < 1e-4
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(torch.ones(6), 4)
    assert set(ADVANTAGE_ESTIMATORS) == {"gae", "grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline"}


def test_ppo_policy_loss_by_hand():
    old = torch.zeros(1, 2)
    lp = torch.log(torch.tensor([[1.5, 0.5]]))  # ratios 1.5, 0.5
    adv = torch.tensor([[1.0, 1.0]])
    loss, m = ppo_policy_loss(lp, old, adv, torch.ones(1, 2), clip_eps=0.2)
    # token 0: max(-1.5, -1.2) = -1.2 (clipped); token 1: max(-0.5, -0.8) = -0.5
    assert loss.item() == pytest.approx((-1.2 - 0.5) / 2)
    assert m["policy/clipfrac"] == pytest.approx(0.5)
    loss_hi, _ = ppo_policy_loss(lp, old, adv, torch.ones(1, 2), clip_eps=0.2, clip_eps_high=0.4)
    assert loss_hi.item() == pytest.approx((-1.4 - 0.5) / 2)


def test_ppo_policy_loss_gradient_is_zero_when_clipped():
    lp = torch.log(torch.tensor([[2.0]])).requires_grad_()
    loss, _ = ppo_policy_loss(lp, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1))
    loss.backward()
    assert lp.grad.item() == 0.0


def test_value_loss_by_hand():
    v, old, ret = torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[1.0]])
    loss, m = value_loss(v, old, ret, torch.ones(1, 1), clip_eps=0.2)
    # unclipped (1-1)^2 = 0; clipped value 0.2 -> (0.2-1)^2 = 0.64; 0.5 * max = 0.32
    assert loss.item() == pytest.approx(0.32)
    assert m["value/clipfrac"] == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_loss_reduction_is_invariant_to_sharding_and_accumulation(seed):
    """Gradient of one big batch == sum of gradients of micro-batches normalised by the global token count,
    and == the mean over 2 'ranks' of their shards' gradients (DDP averaging) with num_tokens / world_size."""
    g = torch.Generator().manual_seed(seed)
    B, T = 8, 6
    logits_w = torch.randn(B, T, generator=g, requires_grad=True)
    old = torch.randn(B, T, generator=g)
    adv = torch.randn(B, T, generator=g)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).float()

    def loss_of(rows, num_tokens):
        return ppo_policy_loss(logits_w[rows], old[rows], adv[rows], mask[rows], num_tokens=num_tokens)[0]

    full = torch.autograd.grad(loss_of(slice(None), None), logits_w)[0]
    total = mask.sum()
    accum = sum(torch.autograd.grad(loss_of(slice(i, i + 2), total), logits_w)[0] for i in range(0, B, 2))
    torch.testing.assert_close(accum, full)
    world = 2
    ranks = [torch.autograd.grad(loss_of(slice(r * 4, r * 4 + 4), total / world), logits_w)[0] for r in range(world)]
    torch.testing.assert_close(sum(ranks) / world, full)
    # and the naive per-micro-batch mean is NOT invariant when lengths differ (why the global count matters)
    naive = sum(torch.autograd.grad(loss_of(slice(i, i + 2), None), logits_w)[0] for i in range(0, B, 2)) / 4
    if not torch.all(lengths == lengths[0]):
        assert not torch.allclose(naive, full)


def test_aggregate_loss_default_is_token_mean():
    x = torch.tensor([[1.0, 2.0, 9.0]])
    assert aggregate_loss(x, torch.tensor([[1, 1, 0]])).item() == 1.5


def test_advantages_without_old_logprobs_need_the_kl_outside_the_reward():
    """The learner leaves the policy's log-probs out of `prepare` when its first update computes them: the group
    estimators then run without them (the learner reports the KL); the KL in the reward cannot."""
    from rlvr.algorithms import AdvantageParams, compute_advantages

    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    batch = {"mask": mask, "logprobs": None, "ref_logprobs": -torch.ones(2, 3), "scores": torch.tensor([1.0, 0.0]),
             "finished": torch.tensor([True, True])}
    adv, _, metrics = compute_advantages("grpo", batch, AdvantageParams(group_size=2, kl_in_reward=False))
    assert "kl/token_mean" not in metrics and adv[0, 0] > 0 > adv[1, 0]
    with pytest.raises(ValueError, match="KL penalty in the reward"):
        compute_advantages("grpo", batch, AdvantageParams(group_size=2, kl_in_reward=True, kl_coef=0.1))
    no_ref = {**batch, "ref_logprobs": None}  # kl_coef 0: no reference, KL 0
    _, _, metrics = compute_advantages("rloo", no_ref, AdvantageParams(group_size=2, kl_in_reward=True, kl_coef=0))
    assert metrics["kl/token_mean"] == 0.0 and metrics["kl/sequence_mean"] == 0.0
