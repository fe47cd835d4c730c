"""YAML configuration files for ``bunlearn run --config FILE.yaml``.

A config file is a YAML mapping whose keys are the fields of
:class:`~boundary_unlearning.experiment.ExperimentConfig` (the same options as the command
line flags; a flag given on the command line overrides the file). It is read with
``yaml.safe_load`` only, so a file can never construct Python objects. Unknown keys and values
of the wrong type raise :class:`~boundary_unlearning.errors.ConfigError` with one line that
names the key, the expected type and the value.

YAML 1.1 (what PyYAML implements) reads ``1e-3`` -- an exponent without a decimal point -- as
a *string*; such strings are read as the numbers they spell, everywhere in the file.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import yaml

from ._utils import atomic_write_text
from .errors import ConfigError

if typing.TYPE_CHECKING:
    from .experiment import ExperimentConfig

__all__ = [
    "check_config_values",
    "config_from_file",
    "load_config_file",
    "parse_number_strings",
    "write_resolved_config",
]

# Numbers PyYAML leaves as strings: an exponent with no decimal point (1e-3, 5E+2, -2e10).
_EXPONENT_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def parse_number_strings(value: Any) -> Any:
    """Turn strings such as ``"1e-3"`` (anywhere in nested dicts/lists) into floats."""
    if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, dict):
        return {k: parse_number_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [parse_number_strings(v) for v in value]
    return value


def _type_name(tp: Any) -> str:
    """A readable name for a type annotation (``list[int | str]``, ``float``, ...)."""
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """``(ok, value)``: whether ``value`` fits annotation ``tp`` (ints count as floats)."""
    if tp is Any:
        return True, value
    if tp is type(None):
        return value is None, value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        for arg in args:
            ok, out = _coerce(value, arg)
            if ok:
                return True, out
        return False, value
    if origin is list:
        if not isinstance(value, list):
            return False, value
        items = []
        for item in value:
            ok, out = _coerce(item, args[0] if args else Any)
            if not ok:
                return False, value
            items.append(out)
        return True, items
    if origin is dict:
        if not isinstance(value, dict):
            return False, value
        key_t, val_t = args if args else (Any, Any)
        result = {}
        for key, item in value.items():
            ok_k, out_k = _coerce(key, key_t)
            ok_v, out_v = _coerce(item, val_t)
            if not (ok_k and ok_v):
                return False, value
            result[out_k] = out_v
        return True, result
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if tp is str:
        return isinstance(value, str), value
    return isinstance(value, tp), value


def check_config_values(
    cls: type[Any], values: Mapping[str, Any], *, source: str = "config"
) -> dict[str, Any]:
    """Check ``values`` against the fields of dataclass ``cls``; return them normalised.

    Raises :class:`ConfigError` naming unknown keys (and listing the valid ones) or the first
    key whose value has the wrong type (with the expected type and the value).
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    bad_keys = [k for k in values if not isinstance(k, str)]
    unknown = [str(k) for k in values if k not in fields]
    if unknown or bad_keys:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(repr(k) for k in unknown)}; valid keys: "
            f"{', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for key, value in values.items():
        ok, normalised = _coerce(parse_number_strings(value), hints[key])
        if not ok:
            raise ConfigError(
                f"{source}: key '{key}' expects {_type_name(hints[key])}, got {value!r} "
                f"({type(value).__name__}); fix the value"
            )
        out[key] = normalised
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict (``yaml.safe_load``; empty file -> ``{}``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; check the --config path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read ({exc}); pass a YAML file") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{line}; fix the syntax") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of option: value, got a "
            f"{type(values).__name__}"
        )
    _check_size(values, path)
    return values


def _check_size(values: Any, path: Path, limit: int = 10_000) -> None:
    """Refuse YAML whose aliases make it recursive or explosively large (``&a [*a]``,
    "billion laughs"): walking it would never end."""
    stack, seen = [(values, 0)], 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > limit or depth > 50:
            raise ConfigError(
                f"config file {path} is recursive or too large (YAML aliases); write the "
                "values out plainly"
            )
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in [*value.keys(), *value.values()])
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def config_from_file(
    path: str | Path, overrides: Mapping[str, Any] | None = None
) -> ExperimentConfig:
    """The :class:`ExperimentConfig` of a YAML file, with ``overrides`` (e.g. command line
    flags the user gave) replacing the file's values."""
    from .experiment import ExperimentConfig

    values = check_config_values(ExperimentConfig, load_config_file(path), source=str(path))
    if overrides:
        values.update(check_config_values(ExperimentConfig, overrides, source="command line"))
    return ExperimentConfig(**values)


def write_resolved_config(config: ExperimentConfig, out_dir: str | Path) -> Path:
    """Write the fully resolved config as ``out_dir/config.yaml`` (atomically); it can be
    passed back to ``--config`` to repeat the run."""
    path = Path(out_dir) / "config.yaml"
    text = yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=False)
    atomic_write_text(path, "# resolved configuration of this run (bunlearn run --config)\n" + text)
    return path
