"""Task functions for BoundedPool tests (module-level so spawn workers can import them)."""

from __future__ import annotations

import os
import time


def square(x):
    return x * x


def sleep_then(x, seconds):
    time.sleep(seconds)
    return x


def hang_in_c():
    # a pure-C busy loop that holds the GIL: no Python-level signal or thread can interrupt it
    (10 ** 10 ** 8) % 7  # noqa: B018


def boom(msg):
    raise ValueError(msg)


def hard_exit(code):
    os._exit(code)


def allocate(mb):
    return len(bytearray(mb * 2**20))


def unpicklable_result():
    return lambda: None


def pid():
    return os.getpid()


def boom_init():
    raise RuntimeError("init failed on purpose")


def parent_cannot_unpickle():
    # an instance of a class from a module that exists only in the worker: the parent cannot unpickle it
    import sys
    import types

    mod = types.ModuleType("only_in_worker_xyz")
    mod.Thing = type("Thing", (), {"__module__": "only_in_worker_xyz"})
    sys.modules["only_in_worker_xyz"] = mod
    return mod.Thing()


def loaded_modules(names):
    """Which of `names` this worker has imported."""
    import sys

    return sorted(n for n in names if n in sys.modules)
