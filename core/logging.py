"""One logger per package (`rewards`, `core`, `sft_dpo`, `rlvr`), configured once with a level from config or CLI."""

from __future__ import annotations

import logging
import os
import sys

PACKAGES = ("rewards", "core", "sft_dpo", "rlvr")
_FORMAT = "%(asctime)s %(levelname).1s %(name)s: %(message)s"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of each record, not the stream current at set-up (a test
    harness or a redirect may swap and close that one)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_logging(level: str | int | None = None) -> None:
    """Configure the package loggers. `level` falls back to $RLVR_LOG_LEVEL, then INFO."""
    level = level or os.environ.get("RLVR_LOG_LEVEL", "INFO")
    if isinstance(level, str):
        resolved = logging.getLevelName(level.upper())
        if not isinstance(resolved, int):
            raise ValueError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING or ERROR")
        level = resolved
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
    for name in PACKAGES:
        log = logging.getLogger(name)
        log.handlers[:] = [handler]
        log.setLevel(level)
        log.propagate = False


def get_logger(name: str) -> logging.Logger:
    """`get_logger(__name__)`: a child of its package's logger."""
    return logging.getLogger(name)
