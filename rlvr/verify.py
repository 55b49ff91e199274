"""`rlvr verify`: score a jsonl of responses with a verifier. The command lives in `rewards.cli`, so that the light
install (`rewards` alone, without torch or this package) has it too, as `rlvr-verify`; see that module for the
options, exit codes and hooks."""

from __future__ import annotations

from rewards.cli import CHUNK, HOOKS, Row, add_cli_arguments, cli_main, fill_fields, read_rows

__all__ = ["CHUNK", "HOOKS", "Row", "add_cli_arguments", "cli_main", "fill_fields", "read_rows"]
