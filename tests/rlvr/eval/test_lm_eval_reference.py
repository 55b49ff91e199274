"""Against lm-evaluation-harness itself, when it is importable (it is not a project dependency):

    pip install --no-deps --target /tmp/lmeval lm-eval   # plus its light deps: evaluate, sacrebleu, sqlitedict, ...
    PYTHONPATH=/tmp/lmeval pytest tests/rlvr/eval/test_lm_eval_reference.py --run-slow

lm-eval's own task code builds the ARC, HellaSwag and GSM8K requests from the rows of ../shared/data (converted to
the hub's layout where needed), and its HFLM scores log-likelihoods; ours must be identical."""

from __future__ import annotations

import json

import pytest

from rlvr.eval.data import load_task_docs
from rlvr.eval.tasks.gsm8k_lm_eval import fewshot_contexts
from rlvr.eval.tasks.multiple_choice import REQUESTS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lm_eval_task():
    try:
        import yaml
        from lm_eval.api.task import ConfigurableTask
    except ImportError as err:
        pytest.skip(f"lm-eval is not importable here ({err})")
    from importlib.util import find_spec
    from pathlib import Path

    tasks_dir = Path(find_spec("lm_eval.tasks").submodule_search_locations[0])

    def make(yaml_path: str, data_files: dict, **extra):
        text = (tasks_dir / yaml_path).read_text().replace("!function utils.process_docs", "null")
        cfg = yaml.safe_load(text)
        cfg.pop("tag", None)
        cfg.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": data_files}, **extra)
        return ConfigurableTask(config=cfg)

    return make


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _requests_by_doc(task):
    task.build_all_requests(limit=None, rank=0, world_size=1)
    by_doc: dict[int, list] = {}
    for inst in task.instances:
        by_doc.setdefault(inst.doc_id, []).append(inst.args)
    return [by_doc[i] for i in sorted(by_doc)]


def _ours(task, docs):
    out = []
    for doc in docs:
        context, choices = REQUESTS[task](doc)
        out.append([(context, " " + c) for c in choices])
    return out


@pytest.mark.parametrize("name", ["arc_easy", "arc_challenge"])
def test_arc_requests_identical(lm_eval_task, shared_data, tmp_path, name):
    docs = load_task_docs(name, data_dir=shared_data)
    hub_rows = [{"id": d["id"], "question": d["question"],
                 "choices": {"text": d["choices"], "label": list("ABCDE")[:len(d["choices"])]},
                 "answerKey": "ABCDE"[d["gold"]]} for d in docs]
    f = _write(tmp_path / f"{name}.jsonl", hub_rows)
    theirs = _requests_by_doc(lm_eval_task("arc/arc_easy.yaml", {"test": f, "train": f, "validation": f}))
    assert len(theirs) == len(docs) and theirs == _ours(name, docs)


def test_hellaswag_requests_identical(lm_eval_task, shared_data):
    from lm_eval.tasks.hellaswag import utils

    path = str(sorted((shared_data / "hellaswag").glob("*.jsonl"))[0])
    task = lm_eval_task("hellaswag/hellaswag.yaml", {"validation": path, "train": path},
                        process_docs=utils.process_docs)
    docs = load_task_docs("hellaswag", data_dir=shared_data)
    assert _requests_by_doc(task) == _ours("hellaswag", docs)


def test_gsm8k_prompts_identical(lm_eval_task, shared_data):
    files = {"train": str(shared_data / "gsm8k" / "train.jsonl"), "test": str(shared_data / "gsm8k" / "test.jsonl")}
    task = lm_eval_task("gsm8k/gsm8k.yaml", files)
    task.set_fewshot_seed(1234)  # lm-eval's default fewshot_random_seed
    task.build_all_requests(limit=None, rank=0, world_size=1)
    theirs = [inst.args for inst in sorted(task.instances, key=lambda i: i.doc_id)]
    docs = load_task_docs("gsm8k", data_dir=shared_data)
    ours = fewshot_contexts(docs, load_task_docs("gsm8k", data_dir=shared_data, split="train"))
    assert len(theirs) == 1319 and [a[0] for a in theirs] == ours
    assert theirs[0][1]["until"] == ["Question:", "</s>", "<|im_end|>"]


def test_loglikelihoods_equal_hflm(lm_eval_task, tiny_model_dir):
    """BOS-adding and plain tokenizers, empty contexts, a context starting with the BOS text."""
    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from tokenizers import processors
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from rlvr.eval.loglik import LoglikScorer

    plain, bos = AutoTokenizer.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)
    bos.add_special_tokens({"bos_token": "<s>"})
    bos.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos.convert_tokens_to_ids("<s>"))])
    pairs = [("Question: What is 2 + 3?\nAnswer:", " 5"), ("The answer is ", "42."), ("", "From nothing."),
             ("", " leading space"), ("<s>Already has BOS text:", " yes")]
    for tok in (plain, bos):
        torch.manual_seed(0)
        cfg = LlamaConfig(hidden_size=64, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                          num_hidden_layers=2, intermediate_size=128, vocab_size=len(tok), max_position_embeddings=512,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
        model = LlamaForCausalLM(cfg).train(False)
        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=4, device="cpu")
        theirs = [ll for ll, _ in lm.loglikelihood([Instance("loglikelihood", doc={}, arguments=p, idx=i)
                                                    for i, p in enumerate(pairs)])]
        assert LoglikScorer(model, tok, batch_size=3)(pairs) == pytest.approx(theirs, abs=1e-5)


def test_gsm8k_generation_equals_hflm(lm_eval_task, tiny_model_dir, shared_data):
    """Same contexts, greedy, lm-eval's stop strings: HFLM.generate_until and our generate_text agree."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from rlvr.eval.generation import EvalGenerator
    from rlvr.eval.tasks.gsm8k_lm_eval import UNTIL

    docs = load_task_docs("gsm8k", data_dir=shared_data)[:3]
    contexts = fewshot_contexts(docs, load_task_docs("gsm8k", data_dir=shared_data, split="train"))
    lm = HFLM(pretrained=str(tiny_model_dir), batch_size=1, device="cpu", dtype="float32")
    kwargs = {"until": list(UNTIL), "do_sample": False, "temperature": 0.0, "max_gen_toks": 16}
    theirs = lm.generate_until([Instance("generate_until", doc={}, arguments=(c, dict(kwargs)), idx=i)
                                for i, c in enumerate(contexts)])
    gen = EvalGenerator(str(tiny_model_dir), backend="hf", batch_size=2)
    assert gen.generate_text(contexts, 16, [*UNTIL, gen.tok.eos_token]) == theirs
