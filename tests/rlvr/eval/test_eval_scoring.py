"""Log-likelihood scorer against a manual computation; multiple-choice picking with a fake scorer."""

from __future__ import annotations

import pytest
import torch

from rlvr.eval.loglik import LoglikScorer, continuation_logprob
from rlvr.eval.tasks.multiple_choice import arc_request, evaluate_multiple_choice, pick


def test_continuation_logprob_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 11, generator=g)
    ids = torch.randint(0, 11, (2, 6), generator=g)
    seq_lens, cont_lens = [6, 4], [2, 3]
    got = continuation_logprob(logits, ids, cont_lens, seq_lens)
    for b in range(2):
        want = 0.0
        for t in range(seq_lens[b] - cont_lens[b], seq_lens[b]):
            want += torch.log_softmax(logits[b, t - 1], -1)[ids[b, t]].item()
        assert got[b].item() == pytest.approx(want, abs=1e-5)


@pytest.fixture(scope="module")
def scorer(tiny_model_dir):
    return LoglikScorer.from_pretrained(str(tiny_model_dir), batch_size=3)


def test_scorer_matches_manual_forward_and_is_batch_invariant(scorer):
    pairs = [("The answer is", " 42."), ("Natalia sold clips to 48 of her friends", " in April"),
             ("Question: What is 2 + 3?\nAnswer:", " 5"), ("Write a poem ", "about the sea"),
             ("x", " 1000 + 100 = 1100")]
    batched = scorer(pairs)
    for (context, continuation), got in zip(pairs, batched):
        # manual: tokenise, one unpadded forward pass, sum log-softmax at the continuation tokens
        ctx = context.rstrip()
        cont = context[len(ctx):] + continuation
        whole = scorer.tok(ctx + cont, add_special_tokens=False)["input_ids"]
        n_ctx = len(scorer.tok(ctx, add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            logp = scorer.model(input_ids=torch.tensor([whole])).logits[0].log_softmax(-1)
        want = sum(logp[t - 1, whole[t]].item() for t in range(n_ctx, len(whole)))
        assert got == pytest.approx(want, abs=1e-4)
    one_by_one = [scorer([p])[0] for p in pairs]
    assert batched == pytest.approx(one_by_one, abs=1e-4)


def test_trailing_context_space_moves_to_continuation(scorer):
    ids_a, n_a = scorer.encode_pair("Write a poem ", "about the sea")
    ids_b, n_b = scorer.encode_pair("Write a poem", " about the sea")
    assert (ids_a, n_a) == (ids_b, n_b)


def test_pick_raw_and_length_normalised():
    # raw favours the short choice; per character, the long one wins
    assert pick([-3.0, -4.0], ["ab", "abcdefgh"]) == (0, 1)
    assert pick([-1.0, -1.0], ["a", "b"]) == (0, 0)  # ties go to the first


def test_multiple_choice_uses_the_scorer_logliks():
    docs = [
        {"id": "a", "question": "Q1", "choices": ["red", "a very long answer"], "gold": 1},
        {"id": "b", "question": "Q2", "choices": ["x", "y", "z"], "gold": 2},
        {"id": "c", "question": "Q3", "choices": ["one", "two"], "gold": 0},
    ]
    table = {("Q1", "red"): -2.0, ("Q1", "a very long answer"): -6.0,
             ("Q2", "x"): -5.0, ("Q2", "y"): -4.0, ("Q2", "z"): -1.0,
             ("Q3", "one"): -3.0, ("Q3", "two"): -1.0}
    seen = []

    def fake_scorer(pairs):
        seen.extend(pairs)
        out = []
        for context, continuation in pairs:
            question = context.split("Question: ")[1].split("\n")[0]
            assert continuation.startswith(" ")
            out.append(table[(question, continuation[1:])])
        return out

    metrics, records = evaluate_multiple_choice("arc_easy", docs, fake_scorer)
    assert len(seen) == 7 and seen[0] == (arc_request(docs[0])[0], " red")
    assert [r["pred"] for r in records] == [0, 2, 1]
    assert [r["pred_norm"] for r in records] == [1, 2, 1]  # -6/18 > -2/3
    assert metrics == {"acc": pytest.approx(1 / 3), "acc_norm": pytest.approx(2 / 3), "n": 3}


def test_multiple_choice_rejects_a_wrong_number_of_scores():
    docs = [{"id": "a", "question": "Q", "choices": ["x", "y"], "gold": 0}]
    with pytest.raises(RuntimeError, match="1 scores for 2 requests"):
        evaluate_multiple_choice("arc_easy", docs, lambda pairs: [0.0])
