"""Registry from a row's `dataset` name (case-insensitive) to its verifier.

Three ways in:
- `@register("name", "alias")` on a function in an imported module (the built-ins do this);
- a `"package.module:function"` string wherever a verifier name is accepted (configs, CLI);
- the `rlvr.verifiers` entry-point group of any installed package (`name = "pkg.mod:func"`).

An unknown name raises `UnknownVerifierError` listing the known ones, so a bad config fails at start-up.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from importlib.metadata import entry_points

from rewards.base import Verifier

ENTRY_POINT_GROUP = "rlvr.verifiers"
# Modules whose import registers the built-in verifiers. Imported on first lookup, not at `import rewards`.
BUILTIN_MODULES = ("rewards.gsm8k", "rewards.math", "rewards.ifeval", "rewards.verl_compat", "rewards.code")

_registry: dict[str, Verifier] = {}
_loaded = False
_load_lock = threading.Lock()
_loading_thread: int | None = None


class UnknownVerifierError(KeyError):
    def __str__(self) -> str:  # KeyError's str() would add quotes around the message
        return str(self.args[0])


def register(name: str, *aliases: str) -> Callable[[Verifier], Verifier]:
    """Decorator: register `fn` under `name` and `aliases` (case-insensitive). Re-registering a name replaces it."""

    def decorate(fn: Verifier) -> Verifier:
        for key in (name, *aliases):
            _registry[key.lower()] = fn
        return fn

    return decorate


def _load_builtins_and_plugins() -> None:
    """Import the built-ins and scan entry points once. Thread-safe: concurrent first lookups (e.g. OpenRLHF calling
    the reward function from several threads) wait for the load instead of seeing a half-filled registry."""
    global _loaded, _loading_thread
    if _loaded or _loading_thread == threading.get_ident():  # done, or re-entered from a module being imported
        return
    with _load_lock:
        if _loaded:
            return
        _loading_thread = threading.get_ident()
        try:
            for module in BUILTIN_MODULES:
                try:
                    importlib.import_module(module)
                except ModuleNotFoundError as err:
                    if err.name != module:  # a real missing dependency inside the module: say so
                        raise
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                if ep.name.lower() not in _registry:
                    _registry[ep.name.lower()] = _LazyEntryPoint(ep)
            _loaded = True
        finally:
            _loading_thread = None


class _LazyEntryPoint:
    """Loads a plug-in's verifier on first call, so a broken plug-in only fails when it is used."""

    def __init__(self, ep):
        self.ep = ep
        self._fn: Verifier | None = None

    def load(self) -> Verifier:
        if self._fn is None:
            self._fn = resolve_callable(self.ep.value, origin=f"entry point {self.ep.name!r}")
        return self._fn

    @property
    def warm_up(self):
        """The plug-in's own `warm_up` attribute, once it is loaded (not loaded just to ask)."""
        return getattr(self._fn, "warm_up", None)

    def __call__(self, response, ground_truth, *, prompt=None):
        return self.load()(response, ground_truth, prompt=prompt)


def resolve_callable(spec: str, *, origin: str = "") -> Callable:
    """Import `package.module:function`; errors name the spec and where it came from."""
    where = f" (from {origin})" if origin else ""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UnknownVerifierError(f"{spec!r}{where} is not of the form 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UnknownVerifierError(f"cannot import module {module_name!r} for verifier {spec!r}{where}: {err}") from err
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UnknownVerifierError(f"module {module_name!r} has no attribute {attr!r} (verifier {spec!r}{where})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UnknownVerifierError(f"verifier {spec!r}{where} is not callable")
    return obj


def get_verifier(name: str) -> Verifier:
    """The verifier for a dataset name, alias, or `module:function` spec."""
    if ":" in name:
        fn = resolve_callable(name)
        _registry.setdefault(name.lower(), fn)
        return fn
    _load_builtins_and_plugins()
    try:
        return _registry[name.lower()]
    except KeyError:
        raise UnknownVerifierError(
            f"unknown verifier {name!r}; known: {', '.join(known_verifiers())} "
            "(or give 'package.module:function')"
        ) from None


def load_verifier(name: str) -> Verifier:
    """`get_verifier`, and for an entry-point plug-in also import it now: set-up code uses this so that a broken
    plug-in fails at start-up with UnknownVerifierError instead of on every call."""
    fn = get_verifier(name)
    if isinstance(fn, _LazyEntryPoint):
        fn.load()
    return fn


def known_verifiers() -> list[str]:
    _load_builtins_and_plugins()
    return sorted(k for k in _registry if ":" not in k)
