"""`rlvr sft|dpo|rm --config FILE [a.b=value ...]`: the command line of the prelude stages.

Light on purpose: the stage modules (torch, transformers, DeepSpeed: seconds to import) load only when a run
starts, so `rlvr sft --help` answers at once. Exit codes: 0 done (the final model's folder is printed), 2 bad input
in one line on stderr (config, data, the preflight, no usable checkpoint, the run folder in use, no space to
save), 1 a run stopped by non-finite values.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from core.checkpoint import DiskFullError, ResumeError
from core.config import ConfigError, load_config
from core.preflight import PreflightError
from core.runlock import RunLockedError
from sft_dpo.data import DataError

# command -> (stage module, its config class, its train function, an example config)
STAGES = {
    "sft": ("sft_dpo.sft", "SFTConfig", "train_sft", "configs/sft/tiny_cpu.yaml"),
    "dpo": ("sft_dpo.dpo", "DPOConfig", "train_dpo", "configs/dpo/tiny_cpu.yaml"),
    "rm": ("sft_dpo.reward_model", "RMConfig", "train_reward_model", "configs/rm/tiny_cpu.yaml"),
}


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    example = STAGES[parser.prog.split()[-1]][3]
    parser.add_argument("--config", help=f"YAML config, e.g. {example}")
    parser.add_argument("overrides", nargs="*", help="KEY.PATH=VALUE overrides, e.g. optim.lr=1e-5 max_steps=10")


def cli_main(args: argparse.Namespace) -> int:
    module_name, config_name, train_name, _ = STAGES[args.command]
    # lazy: the stage's module, with torch, transformers and DeepSpeed (see the module docstring)
    module = importlib.import_module(module_name)
    from core.finite import NonFiniteError

    try:
        cfg = load_config(getattr(module, config_name), args.config, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        result = getattr(module, train_name)(cfg)
    except (DataError, PreflightError, ResumeError, RunLockedError, DiskFullError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteError as err:
        print(f"error: the run stopped: {err}", file=sys.stderr)
        return 1
    print(result.model_dir)
    return 0
