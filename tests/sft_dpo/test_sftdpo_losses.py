"""Loss functions against hand computations (plain Python math, independent of torch's implementation)."""

from __future__ import annotations

import math

import pytest
import torch

from sft_dpo.losses import bradley_terry_loss, dpo_loss, last_token_values, sequence_logps, sft_loss_sum


def _logsig(x):
    return -math.log1p(math.exp(-x))


PC, PR, RC, RR = [-10.0, -20.0, -7.0], [-12.0, -15.0, -7.5], [-11.0, -18.0, -6.0], [-11.0, -16.0, -9.0]
NC, NR = [4.0, 5.0, 2.0], [2.0, 10.0, 3.0]
T = torch.tensor


@pytest.mark.parametrize("beta", [0.1, 5.0])
def test_dpo_sigmoid_matches_hand_computation(beta):
    loss, m = dpo_loss(T(PC), T(PR), T(RC), T(RR), beta=beta, loss_type="dpo")
    for i in range(3):
        h = (PC[i] - PR[i]) - (RC[i] - RR[i])
        assert loss[i].item() == pytest.approx(-_logsig(beta * h), rel=1e-6)
        assert m["rewards/chosen"][i].item() == pytest.approx(beta * (PC[i] - RC[i]), rel=1e-6)
        assert m["rewards/rejected"][i].item() == pytest.approx(beta * (PR[i] - RR[i]), rel=1e-6)
        assert m["rewards/margins"][i].item() == pytest.approx(beta * h, rel=1e-6, abs=1e-9)
        assert m["rewards/accuracies"][i].item() == float(beta * h > 0)


def test_dpo_norm_divides_each_logp_by_its_response_length():
    beta = 5.0
    loss, m = dpo_loss(T(PC), T(PR), T(RC), T(RR), beta=beta, loss_type="dpo_norm",
                       chosen_tokens=T(NC), rejected_tokens=T(NR))
    for i in range(3):
        h = (PC[i] / NC[i] - PR[i] / NR[i]) - (RC[i] / NC[i] - RR[i] / NR[i])
        assert loss[i].item() == pytest.approx(-_logsig(beta * h), rel=1e-6)
        assert m["rewards/chosen"][i].item() == pytest.approx(beta * (PC[i] - RC[i]) / NC[i], rel=1e-6)
        assert m["rewards/rejected"][i].item() == pytest.approx(beta * (PR[i] - RR[i]) / NR[i], rel=1e-6)
    # the two losses genuinely differ on these numbers
    plain, _ = dpo_loss(T(PC), T(PR), T(RC), T(RR), beta=beta, loss_type="dpo")
    assert not torch.allclose(plain, loss)
    with pytest.raises(ValueError, match="token counts"):
        dpo_loss(T(PC), T(PR), T(RC), T(RR), beta=beta, loss_type="dpo_norm")


def test_label_smoothing_and_identical_policy_gives_log2():
    loss, m = dpo_loss(T(RC), T(RR), T(RC), T(RR), beta=5.0)
    assert torch.allclose(loss, torch.full((3,), math.log(2.0)))
    assert m["rewards/accuracies"].sum() == 0
    eps, beta = 0.2, 0.5
    loss, _ = dpo_loss(T(PC), T(PR), T(RC), T(RR), beta=beta, label_smoothing=eps)
    h = (PC[0] - PR[0]) - (RC[0] - RR[0])
    assert loss[0].item() == pytest.approx(-(1 - eps) * _logsig(beta * h) - eps * _logsig(-beta * h), rel=1e-6)


def test_bradley_terry_matches_hand_computation():
    loss, m = bradley_terry_loss(T([1.0, -0.5]), T([0.0, 2.0]))
    assert loss.tolist() == pytest.approx([-_logsig(1.0), -_logsig(-2.5)], rel=1e-6)
    assert m["accuracy"].tolist() == [1.0, 0.0]


def test_sequence_logps_and_sft_loss_on_masked_tokens():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g)
    ids = torch.randint(0, 7, (2, 5), generator=g)
    mask = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 0, 1, 1]])
    sums, counts = sequence_logps(logits, ids, mask)
    logp = torch.log_softmax(logits, -1)
    for b in range(2):
        want = sum(logp[b, t - 1, ids[b, t]].item() for t in range(1, 5) if mask[b, t])
        assert sums[b].item() == pytest.approx(want, rel=1e-5)
        assert counts[b].item() == mask[b, 1:].sum().item()
    assert sft_loss_sum(logits, ids, mask).item() == pytest.approx(-sums.sum().item(), rel=1e-5)


def test_last_token_values_uses_attention_mask():
    values = torch.arange(12, dtype=torch.float32).reshape(2, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    assert last_token_values(values, mask).tolist() == [2.0, 11.0]
