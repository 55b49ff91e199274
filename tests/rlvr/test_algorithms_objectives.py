"""The objectives of issue 22, each against a plain-Python computation of its paper's formula (loops over rows and
tokens, no tensor ops), over random seeds: the four loss reductions (verl's loss_agg_mode), dual-clip PPO, GSPO,
CISPO, REINFORCE++ (and its group baseline), DAPO's overlong punishment and group filter, the train/inference
mismatch weights (TIS, sequence masking) and gap, the adaptive KL controller. Then the sharding/accumulation
invariance of every policy loss under every reduction: one batch == micro-batches summed with the step's units ==
the mean of two ranks' gradients with units / 2."""

from __future__ import annotations

import math

import pytest
import torch

from core.losses import LOSS_AGG_MODES, aggregate_loss, loss_units
from rlvr.algorithms import (
    AdvantageParams,
    adaptive_kl_coef,
    cispo_policy_loss,
    compute_advantages,
    gspo_policy_loss,
    informative_groups,
    logprob_gap,
    overlong_penalty,
    ppo_policy_loss,
    sequence_mask_weights,
    truncated_is_weights,
)


def _batch(seed: int, B: int = 6, T: int = 7):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    values = torch.randn(B, T, generator=g)
    return g, mask, values, [int(n) for n in lengths]


def _rows(x: torch.Tensor, lengths: list[int]) -> list[list[float]]:
    return [x[i, :n].tolist() for i, n in enumerate(lengths)]


# ---- loss reductions ----

def agg_reference(rows: list[list[float]], mode: str, horizon: int) -> float:
    """verl's loss_agg_mode by its definition (Dr. GRPO's constant normaliser per sequence)."""
    seqs = [r for r in rows if r]
    if mode == "token-mean":
        return sum(sum(r) for r in seqs) / sum(len(r) for r in seqs)
    if mode == "seq-mean-token-sum":
        return sum(sum(r) for r in seqs) / len(seqs)
    if mode == "seq-mean-token-mean":
        return sum(sum(r) / len(r) for r in seqs) / len(seqs)
    return sum(sum(r) / horizon for r in seqs) / len(seqs)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_aggregate_loss_matches_each_modes_definition(mode, seed):
    _, mask, values, lengths = _batch(seed)
    mask[3] = 0  # an empty row is no unit
    lengths[3] = 0
    got = aggregate_loss(values, mask, mode=mode, horizon=16).item()
    assert got == pytest.approx(agg_reference(_rows(values, lengths), mode, 16), rel=1e-5)
    units = {"token-mean": sum(lengths), "seq-mean-token-sum": 5, "seq-mean-token-mean": 5,
             "seq-mean-token-sum-norm": 5 * 16}[mode]
    assert loss_units(mask, mode, horizon=16) == units
    with pytest.raises(ValueError, match="loss_agg_mode"):
        aggregate_loss(values, mask, mode="seq-sum")


def test_seq_mean_token_sum_norm_defaults_to_the_mask_width():
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    assert aggregate_loss(torch.ones(1, 3), mask, mode="seq-mean-token-sum-norm").item() == pytest.approx(2 / 3)


# ---- policy losses ----

def ratio_reference(lp: float, old: float, clip: float = 20.0) -> float:
    return math.exp(max(-clip, min(clip, lp - old)))


@pytest.mark.parametrize("seed", range(4))
def test_dual_clip_ppo_matches_the_formula(seed):
    _, mask, lp, lengths = _batch(seed)
    g = torch.Generator().manual_seed(100 + seed)
    old = lp + 1.5 * torch.randn(lp.shape, generator=g)  # wide ratios: the dual clip engages
    adv = torch.randn(lp.shape, generator=g) * 2
    eps, high, c = 0.2, 0.28, 3.0
    loss, m = ppo_policy_loss(lp, old, adv, mask, clip_eps=eps, clip_eps_high=high, clip_ratio_c=c)
    rows, capped = [], 0
    for i, n in enumerate(lengths):
        row = []
        for t in range(n):
            r, a = ratio_reference(lp[i, t].item(), old[i, t].item()), adv[i, t].item()
            term = max(-a * r, -a * min(max(r, 1 - eps), 1 + high))
            if a < 0:
                capped += term > -a * c
                term = min(term, -a * c)
            row.append(term)
        rows.append(row)
    assert loss.item() == pytest.approx(agg_reference(rows, "token-mean", 0), rel=1e-5)
    assert m["policy/clipfrac_lower"] == pytest.approx(capped / sum(lengths)) and capped > 0
    plain, _ = ppo_policy_loss(lp, old, adv, mask, clip_eps=eps, clip_eps_high=high)
    assert plain.item() > loss.item()  # the cap only lowers losses of negative-advantage tokens


def gspo_reference(lp, old, adv, lengths, eps, high):
    """GSPO's sequence objective (paper eq. 5-7): s_i = exp(mean_t log ratio), J = mean_i min(s A, clip(s) A)."""
    total = 0.0
    for i, n in enumerate(lengths):
        s = math.exp(sum(lp[i][t] - old[i][t] for t in range(n)) / n)
        a = adv[i]
        total += max(-a * s, -a * min(max(s, 1 - eps), 1 + high))
    return total / len(lengths)


@pytest.mark.parametrize("seed", range(4))
def test_gspo_matches_the_sequence_objective_in_value_and_gradient(seed):
    g, mask, lp0, lengths = _batch(seed)
    old = lp0 + 0.02 * torch.randn(lp0.shape, generator=g)  # some sequences inside the band, some clipped
    adv_seq = torch.randn(len(lengths), generator=g)
    adv = adv_seq[:, None] * mask  # GRPO's advantages: one per sequence
    eps, high = 0.01, 0.015
    lp = lp0.clone().requires_grad_()
    loss, metrics = gspo_policy_loss(lp, old, adv, mask, clip_eps=eps, clip_eps_high=high)
    want = gspo_reference(_rows(lp0, lengths), _rows(old, lengths), adv_seq.tolist(), lengths, eps, high)
    assert loss.item() == pytest.approx(want, rel=1e-5, abs=1e-7)
    loss.backward()
    # the gradient of the sequence-level formula, written with autograd on plain per-row sums
    lp_ref = lp0.clone().requires_grad_()
    total = 0.0
    for i, n in enumerate(lengths):
        s = torch.exp((lp_ref[i, :n] - old[i, :n]).sum() / n)
        a = adv_seq[i]
        total = total + torch.maximum(-a * s, -a * s.clamp(1 - eps, 1 + high))
    (total / len(lengths)).backward()
    torch.testing.assert_close(lp.grad, lp_ref.grad, rtol=1e-5, atol=1e-7)
    assert 0 < metrics["policy/seq_clipfrac"] < 1


@pytest.mark.parametrize("seed", range(4))
def test_cispo_matches_the_formula_and_keeps_the_gradient_of_clipped_tokens(seed):
    g, mask, lp0, lengths = _batch(seed)
    lp0 = -lp0.abs()  # log-probs
    old = lp0 + 0.5 * torch.randn(lp0.shape, generator=g)
    adv = torch.randn(lp0.shape, generator=g)
    eps, high = 0.2, 0.28
    lp = lp0.clone().requires_grad_()
    loss, metrics = cispo_policy_loss(lp, old, adv, mask, clip_eps=eps, clip_eps_high=high)
    rows, grads, clipped = [], torch.zeros_like(lp0), 0
    for i, n in enumerate(lengths):
        row = []
        for t in range(n):
            r = ratio_reference(lp0[i, t].item(), old[i, t].item())
            w = min(max(r, 1 - eps), 1 + high)
            clipped += w != r
            row.append(-w * adv[i, t].item() * lp0[i, t].item())
            grads[i, t] = -w * adv[i, t].item() / sum(lengths)  # d/dlp of the token-mean
        rows.append(row)
    assert loss.item() == pytest.approx(agg_reference(rows, "token-mean", 0), rel=1e-5)
    loss.backward()
    torch.testing.assert_close(lp.grad, grads, rtol=1e-5, atol=1e-7)
    assert metrics["policy/clipfrac"] == pytest.approx(clipped / sum(lengths)) and clipped > 0
    assert (lp.grad[mask.bool()] != 0).all()  # no token is dropped by the clip


# ---- advantages ----

def _scored(seed: int, B: int = 8, T: int = 5):
    g, mask, lp, lengths = _batch(seed, B, T)
    scores = torch.randint(0, 2, (B,), generator=g).float()
    finished = torch.rand(B, generator=g) > 0.3
    ref = lp + 0.3 * torch.randn(lp.shape, generator=g)
    return {"mask": mask, "logprobs": lp * mask, "ref_logprobs": ref * mask, "scores": scores,
            "finished": finished}, lengths


def whiten_reference(rows: list[list[float]]) -> list[list[float]]:
    flat = [x for r in rows for x in r]
    mean = sum(flat) / len(flat)
    std = math.sqrt(sum((x - mean) ** 2 for x in flat) / len(flat) + 1e-8)
    return [[(x - mean) / std for x in r] for r in rows]


def shaped_reference(batch, i, params) -> float:
    s = params.verified_reward * batch["scores"][i].item()
    if params.no_eos_penalty is not None and not batch["finished"][i]:
        s = params.no_eos_penalty
    return s


@pytest.mark.parametrize("seed", range(3))
def test_reinforce_pp_is_the_whitened_return_of_the_token_rewards(seed):
    batch, lengths = _scored(seed)
    params = AdvantageParams(kl_coef=0.1, kl_in_reward=True, kl_estimator="k1", gamma=0.9)
    adv, returns, _ = compute_advantages("reinforce_pp", batch, params)
    assert returns is None
    rows = []
    for i, n in enumerate(lengths):
        r = [-0.1 * (batch["logprobs"][i, t] - batch["ref_logprobs"][i, t]).item() for t in range(n)]
        r[-1] += shaped_reference(batch, i, params)
        g_t, row = 0.0, []
        for t in reversed(range(n)):  # G_t = r_t + gamma * G_{t+1}
            g_t = r[t] + 0.9 * g_t
            row.insert(0, g_t)
        rows.append(row)
    for got, want in zip(_rows(adv, lengths), whiten_reference(rows)):
        assert got == pytest.approx(want, abs=1e-4)
    assert adv[batch["mask"] == 0].abs().max() == 0


@pytest.mark.parametrize("seed", range(3))
def test_reinforce_pp_baseline_subtracts_the_group_mean_then_whitens_over_the_batch(seed):
    batch, lengths = _scored(seed)
    params = AdvantageParams(group_size=4, kl_coef=0.0, kl_in_reward=False)
    adv, _, _ = compute_advantages("reinforce_pp_baseline", batch, params)
    seq = [shaped_reference(batch, i, params) for i in range(len(lengths))]
    centred = [seq[i] - sum(seq[i // 4 * 4:i // 4 * 4 + 4]) / 4 for i in range(len(seq))]
    rows = [[centred[i]] * n for i, n in enumerate(lengths)]
    for got, want in zip(_rows(adv, lengths), whiten_reference(rows)):
        assert got == pytest.approx(want, abs=1e-4)


def test_overlong_penalty_is_dapos_linear_ramp():
    lengths = torch.tensor([0, 11, 12, 13, 14, 15, 16])
    got = overlong_penalty(lengths, max_len=16, buffer=4, penalty=10.0).tolist()
    want = [0.0 if n <= 12 else -10.0 * (n - 12) / 4 for n in lengths.tolist()]  # (L - B - n) / B, x penalty
    assert got == pytest.approx(want)
    assert overlong_penalty(lengths, max_len=16, buffer=0, penalty=10.0).abs().sum() == 0
    # in the advantages: added to the shaped reward before the group baseline
    batch = {"mask": (torch.arange(16)[None] < torch.tensor([4, 16])[:, None]).float(), "logprobs": None,
             "ref_logprobs": None, "scores": torch.tensor([1.0, 1.0]), "finished": torch.tensor([True, True])}
    params = AdvantageParams(group_size=2, kl_coef=0.0, kl_in_reward=False, max_response_len=16, overlong_buffer=4,
                             overlong_penalty=5.0)
    adv, _, metrics = compute_advantages("grpo", batch, params)
    assert metrics["reward/overlong_penalty_mean"] == pytest.approx(-2.5)
    assert metrics["reward/overlong_penalised_fraction"] == 0.5
    assert adv[0, 0] > 0 > adv[1, 0]  # same score, the long one is punished


@pytest.mark.parametrize("seed", range(3))
def test_informative_groups_are_those_with_unequal_scores(seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 2, (40,), generator=g).float()
    scores[:4] = 1.0
    scores[4:8] = 0.0
    got = informative_groups(scores, 4).tolist()
    assert got == [len(set(scores[i:i + 4].tolist())) > 1 for i in range(0, 40, 4)]
    assert got[:2] == [False, False] and any(got)
    with pytest.raises(ValueError, match="groups of 3"):
        informative_groups(scores, 3)


# ---- train/inference mismatch ----

@pytest.mark.parametrize("seed", range(3))
def test_mismatch_gap_and_weights_match_loops(seed):
    g, mask, old, lengths = _batch(seed)
    gen = old + 0.6 * torch.randn(old.shape, generator=g)
    gap = logprob_gap(old, gen, mask)
    diffs = [[abs(old[i, t].item() - gen[i, t].item()) for t in range(n)] for i, n in enumerate(lengths)]
    assert gap["gap_abs"] == pytest.approx(sum(map(sum, diffs)), rel=1e-5)
    assert gap["gap_tokens"] == sum(lengths) and gap["gap_rows"] == len(lengths)
    assert gap["gap_max"] == pytest.approx(max(map(max, diffs)), rel=1e-6)
    assert gap["gap"] == pytest.approx(sum(sum(d) / len(d) for d in diffs), rel=1e-5)

    w, stats = truncated_is_weights(old, gen, mask, cap=1.5)
    ratios = [[math.exp(old[i, t].item() - gen[i, t].item()) for t in range(n)] for i, n in enumerate(lengths)]
    for i, n in enumerate(lengths):
        assert w[i, :n].tolist() == pytest.approx([min(r, 1.5) for r in ratios[i]], rel=1e-5)
        assert w[i, n:].abs().sum() == 0
    assert stats["truncated"] == sum(r > 1.5 for row in ratios for r in row) > 0

    rho = [math.prod(row) for row in ratios]
    threshold = sorted(rho)[len(rho) // 2]
    w, stats = sequence_mask_weights(old, gen, mask, threshold=threshold)
    for i, n in enumerate(lengths):
        want = rho[i] if rho[i] <= threshold else 0.0
        assert w[i, :n].tolist() == pytest.approx([want] * n, rel=1e-4)
    assert stats["truncated"] == sum(r > threshold for r in rho) > 0 and stats["units"] == len(lengths)


def test_adaptive_kl_controller_follows_the_target():
    # Ziegler et al.: e = clip(KL / target - 1, -0.2, 0.2); beta *= 1 + e * n / horizon
    assert adaptive_kl_coef(0.1, 9.0, target=6.0, horizon=100, n_steps=10) == pytest.approx(0.1 * (1 + 0.2 * 0.1))
    assert adaptive_kl_coef(0.1, 5.4, target=6.0, horizon=100, n_steps=10) == pytest.approx(0.1 * (1 - 0.1 * 0.1))
    assert adaptive_kl_coef(0.1, 0.0, target=6.0, horizon=100, n_steps=10) == pytest.approx(0.1 * (1 - 0.2 * 0.1))
    beta = 0.05
    for _ in range(50):  # the KL stays above target: beta only grows
        beta = adaptive_kl_coef(beta, 12.0, target=6.0, horizon=64, n_steps=64)
    assert beta == pytest.approx(0.05 * 1.2**50)


# ---- sharding / accumulation invariance of every loss under every reduction ----

LOSSES = {
    "ppo": lambda lp, old, adv, mask, **kw: ppo_policy_loss(lp, old, adv, mask, **kw),
    "dual_clip": lambda lp, old, adv, mask, **kw: ppo_policy_loss(lp, old, adv, mask, clip_ratio_c=2.0, **kw),
    "gspo": lambda lp, old, adv, mask, **kw: gspo_policy_loss(lp, old, adv, mask, clip_eps=0.05,
                                                              clip_eps_high=0.08, **kw),
    "cispo": lambda lp, old, adv, mask, **kw: cispo_policy_loss(lp, old, adv, mask, clip_eps=0.2,
                                                                clip_eps_high=0.28, **kw),
}


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_every_loss_and_reduction_is_invariant_to_sharding_and_accumulation(loss_name, mode):
    g, mask, old, lengths = _batch(7, B=8, T=6)
    base = (old + 0.3 * torch.randn(old.shape, generator=g)).requires_grad_()
    adv = torch.randn(8, generator=g)[:, None] * mask
    weights = torch.rand(old.shape, generator=g) + 0.5  # a mismatch correction rides along
    fn = LOSSES[loss_name]

    def grad(rows, num_units):
        loss, _ = fn(base[rows], old[rows], adv[rows], mask[rows], num_units=num_units, loss_agg_mode=mode,
                     weights=weights[rows])
        return torch.autograd.grad(loss, base)[0]

    total = loss_units(mask, mode, horizon=6)
    full = grad(slice(None), total)
    torch.testing.assert_close(full, grad(slice(None), None))  # the batch's own units by default
    accumulated = sum(grad(slice(i, i + 2), total) for i in range(0, 8, 2))
    torch.testing.assert_close(accumulated, full)
    ranks = [sum(grad(slice(r * 4 + i, r * 4 + i + 2), total / 2) for i in (0, 2)) for r in (0, 1)]
    torch.testing.assert_close(sum(ranks) / 2, full)  # DeepSpeed averages the ranks' gradients
    assert full.abs().sum() > 0
