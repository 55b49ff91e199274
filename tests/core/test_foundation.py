"""Config loading, overrides and errors; the CLI; model preparation; the tiny-model fixture."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import Field, ValidationError

from core.config import ConfigError, FrozenConfig, load_config, save_config


class Optim(FrozenConfig):
    lr: float = Field(1e-5, description="peak learning rate")
    batch_size: int = 8


class Run(FrozenConfig):
    name: str = Field(description="required: run name")
    optim: Optim = Optim()
    tags: list[str] = []


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_yaml_and_overrides_are_typed(tmp_path):
    p = write(tmp_path, "name: a\noptim:\n  lr: 1e-4\n")  # PyYAML reads 1e-4 as a string: coerced to float
    cfg = load_config(Run, p, ["optim.batch_size=16", "tags=[x, y]"])
    assert cfg.optim.lr == pytest.approx(1e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.optim.batch_size == 16 and cfg.tags == ["x", "y"]
    with pytest.raises(ValidationError):
        cfg.name = "b"  # frozen


def test_unknown_key_names_path_and_file(tmp_path):
    p = write(tmp_path, "name: a\noptim:\n  lrr: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(Run, p)
    msg = str(e.value)
    assert "optim.lrr" in msg and "unknown key" in msg and str(p) in msg and "lr" in msg


def test_wrong_type_names_the_override(tmp_path):
    p = write(tmp_path, "name: a\n")
    with pytest.raises(ConfigError) as e:
        load_config(Run, p, ["optim.batch_size=lots"])
    assert "optim.batch_size" in str(e.value) and "override 'optim.batch_size=lots'" in str(e.value)


def test_missing_required_value(tmp_path):
    p = write(tmp_path, "optim: {lr: 0.1}\n")
    with pytest.raises(ConfigError) as e:
        load_config(Run, p)
    assert "name: required value is missing" in str(e.value)


def test_bad_override_syntax_and_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="KEY.PATH=VALUE"):
        load_config(Run, None, ["name"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(Run, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(Run, write(tmp_path, "- 1\n- 2\n"))


def test_save_round_trip(tmp_path):
    cfg = load_config(Run, None, ["name=x", "optim.lr=0.5"])
    path = save_config(cfg, tmp_path / "out" / "config.yaml")
    assert load_config(Run, path) == cfg


def test_cli_help_at_every_level():
    out = subprocess.run([sys.executable, "-m", "rlvr.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "verify" in out.stdout and "models" in out.stdout
    out = subprocess.run([sys.executable, "-m", "rlvr.cli", "models", "prepare", "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "--out" in out.stdout


def test_models_prepare_unknown_name_lists_available(capsys):
    from rlvr.cli import main

    assert main(["models", "prepare", "gpt-17"]) == 2
    out = capsys.readouterr().out
    assert "gpt-17" in out and "smollm2-135m-instruct" in out and "tiny-random" in out


def test_resolve_model_passes_through_hub_names_and_folders(tmp_path):
    from core.models import resolve_model

    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model(str(tmp_path)) == str(tmp_path)


def test_prepare_is_idempotent_and_generates(tmp_path):
    from core.models import MARKER, check_generates, prepare_model

    out = prepare_model("tiny-random", tmp_path / "m")
    assert (out / MARKER).is_file() and (out / "model.safetensors").is_file()
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert prepare_model("tiny-random", tmp_path / "m") == out
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp  # second call does not rebuild
    assert isinstance(check_generates(out, max_new_tokens=4), str)


def test_tiny_fixture_is_chatml_and_vllm_compatible(tiny_model_dir):
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    assert cfg.head_dim >= 32 and cfg.num_hidden_layers == 2
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>"


@pytest.mark.slow
def test_smollm2_conversion_loads_and_generates(smollm2_dir):
    from transformers import AutoConfig

    from core.models import check_generates

    cfg = AutoConfig.from_pretrained(smollm2_dir)
    assert cfg.num_hidden_layers == 30 and cfg.hidden_size == 576
    assert check_generates(smollm2_dir, max_new_tokens=4).strip()
