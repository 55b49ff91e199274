"""Typed, frozen configs loaded from YAML with `a.b.c=value` command-line overrides.

Validation is pydantic's: every config class derives from `FrozenConfig`, which forbids unknown keys, freezes
instances and coerces YAML scalars to the annotated types. Errors are re-raised as `ConfigError`, one line per
problem, each naming the dotted key path and where the bad value came from (the YAML file or the override).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["ConfigError", "FrozenConfig", "load_config", "apply_overrides", "save_config", "config_to_dict"]


class ConfigError(ValueError):
    """A config file or override is invalid; the message names each bad key path and its source."""


class FrozenConfig(BaseModel):
    """Base for every config: immutable, unknown keys rejected, documented fields (`Field(description=...)`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, protected_namespaces=())

    def replace(self, **changes: Any) -> FrozenConfig:
        """A validated copy with top-level fields changed (frozen configs are never mutated in place)."""
        data = self.model_dump()
        data.update(changes)
        return type(self).model_validate(data)


C = TypeVar("C", bound=FrozenConfig)


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY.PATH=VALUE, for example optim.lr=1e-5")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise ConfigError(f"override {text!r}: empty part in key path {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {err}") from None
    return path, value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Apply `a.b.c=value` overrides (values parsed as YAML) to a nested dict.

    Returns the new dict and a map from each overridden dotted key to the override text, so that a validation
    error can say which override produced a bad value.
    """
    data = _deep_copy(data)
    sources: dict[str, str] = {}
    for text in overrides:
        path, value = _parse_override(text)
        node = data
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = ".".join(path[: i + 1])
                raise ConfigError(f"override {text!r}: {where} is a {type(child).__name__}, not a section")
            node = child
        node[path[-1]] = value
        sources[".".join(path)] = text
    return data, sources


def _deep_copy(data: Any) -> Any:
    if isinstance(data, Mapping):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys to values, got {type(data).__name__}")
    return data


def validate_config(cls: type[C], data: Mapping[str, Any], *, source: str = "<dict>",
                    override_sources: Mapping[str, str] | None = None) -> C:
    """Validate a nested dict into `cls`, turning pydantic errors into one readable `ConfigError`."""
    override_sources = override_sources or {}
    try:
        return cls.model_validate(dict(data))
    except ValidationError as err:
        lines = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"]) or "<top level>"
            msg = e["msg"]
            # a cross-field validator names the key it rejects: "Value error, ppo.kl_estimator: ..."
            named = re.match(r"(?:Value error, )?([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)+): (.*)", msg, re.S) \
                if not e["loc"] else None
            if named:
                key, msg = named.group(1), named.group(2)
            origin = next((f"override {t!r}" for k, t in override_sources.items()
                           if key == k or key.startswith(k + ".")), source)
            moved = getattr(cls, "MOVED_KEYS", {}).get(key)
            if e["type"] == "extra_forbidden" and moved:
                msg = f"this key is now {moved}"
            elif e["type"] == "extra_forbidden":
                known = _field_names(cls, e["loc"][:-1])
                msg = "unknown key" + (f" (known keys here: {', '.join(known)})" if known else "")
            elif e["type"] == "missing":
                msg = "required value is missing"
            elif not named:
                msg = f"{msg} (got {e.get('input')!r})"
            lines.append(f"  {key}: {msg}  [from {origin}]")
        raise ConfigError(f"invalid {cls.__name__} config:\n" + "\n".join(lines)) from None


def _field_names(cls: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    model: Any = cls
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return sorted(getattr(model, "model_fields", {}))


def load_config(cls: type[C], path: str | Path | None = None, overrides: Sequence[str] = (),
                *, base: Mapping[str, Any] | None = None) -> C:
    """Load `cls` from an optional YAML file (on top of `base`), then apply command-line overrides."""
    data: dict[str, Any] = _deep_copy(dict(base or {}))
    source = "defaults"
    if path is not None:
        data = _merge(data, read_yaml(path))
        source = str(path)
    data, sources = apply_overrides(data, overrides)
    return validate_config(cls, data, source=source, override_sources=sources)


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = _deep_copy(v)
    return out


def config_to_dict(cfg: FrozenConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


def save_config(cfg: FrozenConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML (saved with every run and checkpoint)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return path
