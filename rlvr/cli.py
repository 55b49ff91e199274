"""`rlvr` command line. Each subcommand lives in its own module, imported only when that subcommand runs, so
`rlvr --help` is instant. A module provides `add_cli_arguments(parser)` and `cli_main(args) -> int`."""

from __future__ import annotations

import argparse
import importlib
import sys

from core.config import ConfigError
from core.logging import setup_logging

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "sft": ("sft_dpo.cli", "supervised fine-tuning on chat data (loss on assistant tokens)"),
    "dpo": ("sft_dpo.cli", "direct preference optimisation (sigmoid or length-normalised dpo_norm)"),
    "rm": ("sft_dpo.cli", "train a Bradley-Terry reward model (later the PPO value model)"),
    "train": ("rlvr.driver", "RLVR training: PPO or GRPO with verifiable rewards on Ray"),
    "pipeline": ("rlvr.pipeline", "SFT -> DPO (-> RM) -> RLVR from one config, resumable per stage"),
    "eval": ("rlvr.eval.cli", "evaluate a model on GSM8K, IFEval, ARC, HellaSwag"),
    "compare": ("rlvr.eval.compare", "compare two IFEval evaluations: accuracies with intervals, per instruction, "
                "lengths, samples"),
    "sweep": ("rlvr.sweep", "learning-rate x batch-size sweep on Ray Tune, with CSV and plots"),
    "verify": ("rlvr.verify", "score a jsonl of responses with a verifier"),
    "data": ("rlvr.data.cli", "procedural task data and contamination reports"),
    "models": ("core.models", "list and prepare bundled models"),
}


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlvr",
        description="Post-training for small language models: SFT -> DPO -> RLVR (PPO/GRPO) with verifiable rewards.",
        epilog="Run 'rlvr COMMAND --help' for a command's options.",
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            importlib.import_module(module).add_cli_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    if selected is not None and selected not in COMMANDS:
        selected = None  # argparse reports the invalid choice
    parser = build_parser(selected)
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.cli_main(args) or 0)
    except ConfigError as err:  # a user mistake in a config or override: say what and where, no traceback
        print(f"rlvr {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
