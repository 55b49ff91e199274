"""`rlvr eval` beside lm-evaluation-harness 0.4.13: request strings, BOS and empty-context tokenisation, and the
GSM8K protocol (gsm8k_lm_eval). The literals below are what lm-eval 0.4.13's own task code produced for these
documents of ../shared/data (its arc_easy, arc_challenge, hellaswag and gsm8k tasks run on the same rows)."""

from __future__ import annotations

import pytest

from rlvr.eval import evaluate
from rlvr.eval.data import load_task_docs
from rlvr.eval.runner import format_results
from rlvr.eval.tasks.gsm8k_lm_eval import exact_match, fewshot_contexts, flexible_extract, strict_match
from rlvr.eval.tasks.multiple_choice import REQUESTS


def _requests(task, doc):
    context, choices = REQUESTS[task](doc)
    return [(context, " " + c) for c in choices]  # as evaluate_multiple_choice sends them


# ---- ARC and HellaSwag request strings ----
def test_arc_requests_are_lm_evals(shared_data):
    easy = load_task_docs("arc_easy", data_dir=shared_data)[0]
    q = "Question: Which statement best explains why photosynthesis is the foundation of most food webs?\nAnswer:"
    assert _requests("arc_easy", easy) == [
        (q, " Sunlight is the source of energy for nearly all ecosystems."),
        (q, " Most ecosystems are found on land instead of in water."),
        (q, " Carbon dioxide is more available than other gases."),
        (q, " The producers in all ecosystems are plants."),
    ]
    challenge = load_task_docs("arc_challenge", data_dir=shared_data)[0]
    q = ("Question: An astronomer observes that a planet rotates faster after a meteorite impact. Which is the most "
         "likely effect of this increase in rotation?\nAnswer:")
    assert _requests("arc_challenge", challenge)[2] == (q, " Planetary days will become shorter.")


def test_hellaswag_requests_are_lm_evals(shared_data):
    docs = load_task_docs("hellaswag", data_dir=shared_data)
    q = ("Pole vault: Pole vault is a sport where you run with a pole and stop and swing your body. A few women")
    assert _requests("hellaswag", docs[0]) == [
        (q, " go down a rock and stop."), (q, " watch from around a pole vault."), (q, " are in the wading pool."),
        (q, " are in the gym practicing to do this pole vault, trying to do their best."),
    ]
    # a WikiHow row: [title] becomes ". ", other [..] markers vanish (leaving a leading space in some endings)
    q = ("Sports and Fitness: How to bowl the leg spinner's variations. To bowl a googly, you grip the ball the same "
         "as you would for a leg break but hold it so your palm faces away from you. As you bowl, you bring your "
         "elbow close to your head and cock your wrist so that back of your hand faces the batsman. You spin the "
         "ball by rotating the fingers.")
    requests = _requests("hellaswag", docs[3])
    assert requests[0] == (q, "  If you're outside, the batsman only looks at the batsman as they dribble.. If you're "
                              "inside, the batsman lets you line up the batsman with you.")
    assert requests[2] == (q, " If done properly, the ball should turn from off to leg for right handers. If the "
                              "batsman comes out of his crease and misses the googly, he can be stumped.")
    assert docs[3]["gold"] == 2


# ---- BOS and empty context (lm-eval's HFLM rule) ----
@pytest.fixture(scope="module")
def tokenizers(tiny_model_dir):
    """The tiny model's tokenizer (no BOS, EOS <|im_end|>) and a Llama-style copy that adds a BOS by default."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(tiny_model_dir)
    bos = AutoTokenizer.from_pretrained(tiny_model_dir)
    bos.add_special_tokens({"bos_token": "<s>"})
    bos_id = bos.convert_tokens_to_ids("<s>")
    bos.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)])
    assert bos("hi")["input_ids"][0] == bos_id and plain("hi")["input_ids"] == plain("hi", add_special_tokens=False)["input_ids"]
    return plain, bos


def _scorer(tok, **kw):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlvr.eval.loglik import LoglikScorer

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, num_attention_heads=2, num_key_value_heads=1, head_dim=32, num_hidden_layers=1,
                      intermediate_size=128, vocab_size=len(tok), max_position_embeddings=256)
    return LoglikScorer(LlamaForCausalLM(cfg), tok, batch_size=4, **kw)


def test_bos_added_when_the_tokenizer_adds_one(tokenizers):
    import torch

    plain, bos = tokenizers
    scorer = _scorer(bos)
    ids, n_cont = scorer.encode_pair("Question: What is 2 + 3?\nAnswer:", " 5")
    body = bos("Question: What is 2 + 3?\nAnswer: 5", add_special_tokens=False)["input_ids"]
    assert ids == [bos.bos_token_id, *body] and n_cont == 1
    with torch.no_grad():
        logp = scorer.model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
    assert scorer([("Question: What is 2 + 3?\nAnswer:", " 5")])[0] == pytest.approx(logp[-2, ids[-1]].item(), abs=1e-5)
    # a context that already starts with the BOS text gets no second BOS; add_special_tokens=False turns it off
    ids, _ = scorer.encode_pair("<s>Already there:", " yes")
    assert ids[0] == bos.bos_token_id and ids[1] != bos.bos_token_id
    assert _scorer(bos, add_special_tokens=False).encode_pair("Q:", " 5")[0] == bos("Q: 5", add_special_tokens=False)["input_ids"]
    assert _scorer(plain).encode_pair("Q:", " 5")[0] == plain("Q: 5")["input_ids"]  # no BOS where none is added


def test_empty_context_is_bos_else_eos(tokenizers):
    plain, bos = tokenizers
    cont = " A sentence from nothing."
    ids, n = _scorer(bos).encode_pair("", cont)
    assert ids == [bos.bos_token_id, *bos(cont, add_special_tokens=False)["input_ids"]] and n == len(ids) - 1
    ids, n = _scorer(plain).encode_pair("", cont)
    assert ids == [plain.eos_token_id, *plain(cont, add_special_tokens=False)["input_ids"]] and n == len(ids) - 1
    ids, n = _scorer(bos).encode_pair("", "<s> starts with it")  # the continuation's own BOS is the context
    assert ids[0] == bos.bos_token_id and ids[1] != bos.bos_token_id and n == len(ids) - 1


# ---- GSM8K: lm-eval's protocol ----
def test_gsm8k_fewshot_contexts_are_lm_evals(shared_data):
    docs = load_task_docs("gsm8k", data_dir=shared_data)
    train = load_task_docs("gsm8k", data_dir=shared_data, split="train")
    contexts = fewshot_contexts(docs[:2], train)
    first_shots = ["Jen and Tyler are gymnasts practicing flips.", "Four people in a law firm are planning a party.",
                   "A charcoal grill burns fifteen coals to ash every", "A bear is preparing to hibernate for the winter",
                   "Brendan can cut 8 yards of grass per day, he bough"]
    blocks = contexts[0].split("\n\n")
    assert len(contexts[0]) == 3187 and len(contexts[1]) == 3320 and len(blocks) == 6
    for block, start in zip(blocks, first_shots):
        shot = next(t for t in train if t["question"].startswith(start))
        assert block == f"Question: {shot['question']}\nAnswer: {shot['raw_answer']}"
    assert blocks[5] == f"Question: {docs[0]['question']}\nAnswer:"
    assert contexts[1].startswith("Question: Steve finds 100 gold bars while visiting Oregon.")
    assert fewshot_contexts(docs[:1], train) == contexts[:1]  # --limit keeps the first prompts of a full run


@pytest.mark.parametrize("response, strict, flexible", [
    ("She makes 9 * 2 = $18.\n#### 18", "18", "18"),
    ("#### 1,234.\n\nQuestion", "1,234.", "1,234."),
    ("The answer is $18.00.", "[invalid]", "$18.00."),
    ("Costs 5 then 7", "[invalid]", "7"),
    ("no digits at all", "[invalid]", "[invalid]"),
    ("#### -3 and later 4", "-3", "4"),
])
def test_gsm8k_filters(response, strict, flexible):
    assert strict_match(response) == strict and flexible_extract(response) == flexible


def test_gsm8k_exact_match_ignores_commas_dollars_and_the_final_dot():
    reference = "Some working <<2*9=18>>18.\n#### 1,018"
    assert exact_match("1018", reference) == 1.0
    assert exact_match("$1,018.", reference) == 1.0
    assert exact_match("1018.0", reference) == 0.0
    assert exact_match("[invalid]", reference) == 0.0


class CannedTextGenerator:
    """Plain-text generation stub: answers doc i with responses[i], records prompts and stop strings."""

    tok = None

    def __init__(self, responses):
        self.responses, self.calls = responses, []

    def generate_text(self, prompts, max_new_tokens, stop=()):
        self.calls.append((list(prompts), max_new_tokens, list(stop)))
        return list(self.responses[:len(prompts)])


def test_gsm8k_lm_eval_task_beside_ours(shared_data):
    docs = load_task_docs("gsm8k", data_dir=shared_data)[:3]
    gen = CannedTextGenerator([f"Working.\n#### {docs[0]['answer']}", f"so {docs[1]['answer']}", "#### 0"])
    records = {}
    results = evaluate("unused", "gsm8k_lm_eval", limit=3, data_dir=shared_data, generator=gen, records_out=records)
    assert results["gsm8k_lm_eval"] == {"exact_match,strict-match": pytest.approx(1 / 3),
                                        "exact_match,flexible-extract": pytest.approx(2 / 3), "n": 3, "num_fewshot": 5}
    prompts, max_new, stop = gen.calls[0]
    assert max_new == 256 and stop == ["Question:", "</s>", "<|im_end|>"]
    assert prompts == fewshot_contexts(docs, load_task_docs("gsm8k", data_dir=shared_data, split="train"))
    table = format_results(results)
    assert "exact_match,strict-match" in table and "exact_match,flexible-extract" in table and "5-shot" in table
    assert records["gsm8k_lm_eval"][1]["flexible-extract"] == docs[1]["answer"]


def test_generate_text_stops_like_a_full_generation_cut_afterwards(tiny_model_dir):
    """HF generation with stop strings gives what generating every token and cutting at the stops gives."""
    import torch

    from rlvr.eval.generation import EvalGenerator, cut_at_stop

    gen = EvalGenerator(str(tiny_model_dir), backend="hf", batch_size=2)
    prompts = ["Question: What is 2 + 3?\nAnswer:", "Write a poem", "The answer is 42. Final Answer:"]
    stop = ["Question:", "::::", "poem poem poem"]  # this random model repeats ':' and ' poem'
    got = gen.generate_text(prompts, 24, stop)
    cut = 0
    for prompt, text in zip(prompts, got):
        ids = torch.tensor([gen.tok(prompt)["input_ids"]])
        with torch.no_grad():
            full = gen.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=24,
                                      do_sample=False, pad_token_id=gen.pad_id)
        whole = gen.tok.decode(full[0, ids.shape[1]:], skip_special_tokens=True)
        assert text == cut_at_stop(whole, stop)
        assert not any(s in text for s in stop)
        cut += len(text) < len(whole)
    assert cut >= 2  # the stops did fire


def test_gsm8k_lm_eval_end_to_end_on_tiny_model(tiny_model_dir, shared_data, capsys):
    from rlvr.cli import main

    assert main(["eval", "--model", str(tiny_model_dir), "--tasks", "gsm8k_lm_eval", "--limit", "2", "--data-dir",
                 str(shared_data), "--backend", "hf", "--max-new-tokens", "6"]) == 0
    out = capsys.readouterr().out
    assert "gsm8k_lm_eval  exact_match,strict-match" in out and "(n=2, 5-shot)" in out
