"""Checks of a run's inputs before anything heavy starts (no Ray, no model load; a second or two).

`preflight_rlvr(cfg)` (rlvr train) and `preflight_stage(cfg)` (rlvr sft / dpo / rm) check, in this order:
  * every model input (model, tokenizer, value/reference model) is a Hugging Face folder with a config.json, or a
    hub name in the local cache or on the hub;
  * every local data file exists, is UTF-8 text (jsonl/json; the error names file:line and column) and is not
    empty (parquet: readable with at least one row);
  * output_dir can be created and written, and its filesystem has room for one checkpoint, estimated from the
    parameter count read from the model's safetensors headers (`checkpoint_bytes`);
  * option combinations that only fail later (on_nonfinite=skip needs ZeRO stage 0).
Each failure raises PreflightError with one line naming the config key and the input; the CLIs exit 2.
Resume compatibility (a checkpoint trained on other data) is checked by each trainer when it picks the checkpoint,
still before Ray or the model start (rlvr.trainer.RLVRTrainer.plan_resume, sft_dpo.trainer.train).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

from huggingface_hub import model_info, snapshot_download
from huggingface_hub.utils import HFValidationError, validate_repo_id

from core.checkpoint import format_bytes
from core.models import BUNDLED, resolve_model
from rewards.jsonl import JsonlError, text_lines

# Bytes a checkpoint holds per parameter of a trained model: DeepSpeed's module state (fp32) and the AdamW moments
# (2 x fp32), plus the HF copy of the policy (fp32 on CPU; bf16 weights + fp32 master copy on GPU: the same sum).
BYTES_PER_PARAM_WITH_HF = 16
BYTES_PER_PARAM_STATE_ONLY = 12  # a trained model saved without an HF copy (the PPO critic)
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
               "F8_E4M3": 1, "F8_E5M2": 1}


class PreflightError(ValueError):
    """An input of the run is unusable; the message is one line naming the config key and the input."""


# ---- models ----

def check_model(name: str, key: str = "model") -> Path | None:
    """The model folder (local, or the hub cache's snapshot), or None for a hub model that exists but is not cached.
    A local-looking path that does not exist, a folder without config.json or an unknown hub name raise."""
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise PreflightError(f"{key}: {name} is a file; expected a Hugging Face model folder (with config.json)")
        if not (path / "config.json").is_file():
            raise PreflightError(f"{key}: {name} has no config.json; expected a Hugging Face model folder")
        return path
    if name.startswith(("/", "./", "../", "~")) or name.count("/") > 1:
        raise PreflightError(f"{key}: model folder {name} not found")
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise PreflightError(f"{key}: {name!r} is not a folder here and not a hub model name (OWNER/NAME)") from None
    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - any cache miss: ask the hub below
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise PreflightError(f"{key}: {name} is not a local folder and not in the Hugging Face cache "
                             "(HF_HUB_OFFLINE is set)")
    try:
        model_info(name, timeout=10)
    except Exception as err:  # noqa: BLE001 - repository missing, gated, or the hub unreachable: all one answer
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        bundled = "" if "/" in name else f"; bundled models: {', '.join(sorted(BUNDLED))}"
        raise PreflightError(f"{key}: {name} is not a local folder, not in the Hugging Face cache, and the hub "
                             f"did not confirm it ({type(err).__name__}: {first}){bundled}") from None
    return None


def parameter_count(folder: Path | None) -> int | None:
    """Parameters stored in a model folder, from the safetensors headers (no tensor is read); None if unknown."""
    if folder is None:
        return None
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        weights = sorted(folder.glob("*.bin"))
        return sum(f.stat().st_size for f in weights) // 4 or None  # fp32 assumed
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
        for name, info in header.items():
            if name != "__metadata__":
                begin, end = info["data_offsets"]
                total += (end - begin) // DTYPE_BYTES.get(info["dtype"], 4)
    return total


def checkpoint_bytes(policy_params: int | None, *, critic_params: int | None = None) -> int | None:
    """Estimated size of one checkpoint: the trained model with its HF copy, plus a critic (state only)."""
    if not policy_params:
        return None
    return policy_params * BYTES_PER_PARAM_WITH_HF + (critic_params or 0) * BYTES_PER_PARAM_STATE_ONLY


# ---- data ----

def _local_file(spec: str, suffixes: tuple[str, ...]) -> Path | None:
    """The local file a data source names, None for generated or hub sources; a missing file raises."""
    if spec.startswith(("procedural:", "hf:")):
        return None
    if spec.startswith("gsm8k:"):
        spec = spec[len("gsm8k:"):]
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.suffix.lower() in suffixes or path.is_dir() or spec.startswith(("/", "./", "../", "~")):
        raise FileNotFoundError(spec)
    return None  # a hub dataset name: its loader reports problems


def check_data_file(path: Path, key: str) -> None:
    """UTF-8 (naming file:line), at least one non-blank line; parquet: readable with at least one row."""
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq  # lazy: only parquet inputs need it

            rows = pq.ParquetFile(path).metadata.num_rows
        except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise PreflightError(f"{key}: {path} is not a readable parquet file ({type(err).__name__})") from None
        if rows == 0:
            raise PreflightError(f"{key}: {path} is empty (0 rows)")
        return
    rows = 0
    try:
        for _, text in text_lines(path):  # rewards.jsonl: names file:line, byte and column
            rows += bool(text.strip())
    except JsonlError as err:
        raise PreflightError(f"{key}: {err}") from None
    except OSError as err:
        raise PreflightError(f"{key}: {path}: cannot be read ({err.strerror})") from None
    if rows == 0:
        raise PreflightError(f"{key}: {path} is empty (no rows)")


def check_data(sources: list[str] | str, key: str, suffixes: tuple[str, ...] = (".jsonl", ".json", ".parquet")) -> None:
    for spec in [sources] if isinstance(sources, str) else sources:
        try:
            path = _local_file(spec, suffixes)
        except FileNotFoundError:
            raise PreflightError(f"{key}: data file not found: {spec} (relative paths resolve against "
                                 f"{Path.cwd()})") from None
        if path is not None:
            check_data_file(path, key)


# ---- output folder ----

def check_output_dir(output_dir: str, needed_bytes: int | None) -> None:
    """Creatable, writable (a probe file is written, synced and removed), and room for `needed_bytes`."""
    out = Path(output_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PreflightError(f"output_dir: cannot create {out} ({err.strerror or err})") from None
    probe = out / f".rlvr-write-test-{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise PreflightError(f"output_dir: {out} is not writable ({err.strerror or err})") from None
    finally:
        probe.unlink(missing_ok=True)
    free = shutil.disk_usage(out).free
    if needed_bytes and free < needed_bytes:
        raise PreflightError(f"output_dir: {out} has {format_bytes(free)} free; one checkpoint of this model needs "
                             f"about {format_bytes(needed_bytes)}")


# ---- per command ----

def check_options(cfg) -> None:
    """Option combinations of a core.run.RunConfig that would only fail later."""
    if cfg.on_nonfinite == "skip" and cfg.engine.zero_stage != 0:
        raise PreflightError("on_nonfinite=skip needs engine.zero_stage=0 (ZeRO keeps gradients inside DeepSpeed's "
                             "optimiser); use on_nonfinite=stop")


def preflight_rlvr(cfg) -> int | None:
    """`rlvr train`'s inputs (an RLVRConfig with `model` already resolved). Returns the checkpoint estimate."""
    policy = check_model(cfg.model, "model")
    if cfg.tokenizer:
        check_model(cfg.tokenizer, "tokenizer")
    critic = None
    if cfg.use_critic:
        critic = check_model(cfg.value_model, "value_model") if cfg.value_model else policy
    check_data(cfg.data.train, "data.train")
    check_data(cfg.data.eval, "data.eval")
    check_options(cfg)
    need = checkpoint_bytes(parameter_count(policy), critic_params=parameter_count(critic) if critic else None)
    check_output_dir(cfg.output_dir, need)
    return need


def preflight_stage(cfg, model_path: str | None = None) -> int | None:
    """`rlvr sft|dpo|rm`'s inputs (a PreludeConfig; `model_path`: its model resolved, core.models.resolve_model).
    Returns the checkpoint estimate."""
    model = check_model(model_path or cfg.model, "model")
    reference = getattr(cfg, "reference_model", None)
    if reference:
        check_model(resolve_model(reference), "reference_model")
    check_data(cfg.data.path, "data.path")
    check_options(cfg)
    params = parameter_count(model)
    need = checkpoint_bytes(params) if (cfg.checkpoints.save_every or cfg.stop_after_steps) else (params or 0) * 4 or None
    check_output_dir(cfg.output_dir, need)
    return need
