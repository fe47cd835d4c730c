"""The settings of one experiment: :class:`ExperimentConfig` (the schema of ``bunlearn run``
and of its ``--config FILE.yaml``), the checks of its values, the device and input
normalisation they resolve to, and the YAML files that hold them.

A config file is a YAML mapping whose keys are the fields of :class:`ExperimentConfig` (the
same options as the command line flags; a flag given on the command line overrides the file).
It is read with ``yaml.safe_load`` only, so a file can never construct Python objects. Unknown
keys and values of the wrong type raise :class:`~boundary_unlearning.errors.ConfigError` with
one line that names the key, the expected type and the value.

YAML 1.1 (what PyYAML implements) reads ``1e-3`` -- an exponent without a decimal point -- as
a *string*; such strings are read as the numbers they spell, everywhere in the file.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Union

import torch
import yaml

from ._utils import atomic_write_text
from .checks import Range, Seed, check_setting, fits
from .data.normalization import Normalization, check_normalization
from .errors import ConfigError
from .models import is_user_model
from .recipe import Recipe

__all__ = [
    "ExperimentConfig",
    "check_config_values",
    "config_from_file",
    "input_normalization",
    "load_config_file",
    "parse_number_strings",
    "resolve_device",
    "write_resolved_config",
]


@dataclass
class ExperimentConfig:
    """Everything that defines one run of ``bunlearn run`` (also its YAML schema)."""

    dataset: str = "digits"
    data_root: str | None = None
    download: bool = False
    model: str = "cnn"
    model_options: dict[str, Any] = field(default_factory=dict)
    # Input normalisation inside the model; None = the training set's per-channel statistics
    # (the paper's CIFAR-10 setting is mean = std = 0.5).
    mean: list[float] | None = None
    std: list[float] | None = None
    forget_classes: list[int | str] = field(default_factory=lambda: [3])
    forget_fraction: float = 1.0
    methods: list[str] = field(default_factory=lambda: ["boundary_shrink", "boundary_expanding"])
    hyperparameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int = 0
    # Several seeds: each trains its own original and retrained model and runs every method;
    # the report gives mean and std across them. None = just ``seed``.
    seeds: list[int] | None = None
    # An original model needs at least one epoch: zero would "unlearn" an untrained model.
    epochs: Annotated[int, Range(low=1, text="a whole number >= 1")] = 20
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    device: str = "auto"
    cache_dir: str | None = None
    progress: bool = True
    # Metrics: the relearn-time test (a short fine-tune per model), the few-shot feature probe
    # (a linear classifier on the frozen features) and the slow, opt-in U-LiRA
    # membership-inference attack with shadow models.
    relearn: bool = True
    probe: bool = True
    ulira: bool = False
    # Read every image of every set for the metrics (exact accuracies). False: D_r and D_tr
    # on seeded samples sized for intervals of about ±1.5 points that hold together at 95%,
    # D_f and D_tf whole up to 2,000 images; the reports print each interval and sample
    # size (as `bunlearn unlearn`).
    full_eval: bool = False
    # Figure data (entropy histograms, t-SNE, confusion matrices) of the first seed's models.
    figures: bool = True
    # Record the original's parameter updates per class while training it (needed by
    # amnesiac; switched on automatically when a method of cost "record" is run).
    record_updates: bool = False
    # Train (and split) on a seeded, class-balanced subset of this many training images: a
    # quick first try on a large data set. None = the whole training set.
    subset: int | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExperimentConfig:
        """A config from a dict (e.g. a YAML file): unknown keys or values of the wrong type
        raise :class:`ConfigError` naming the key, the expected type and the value."""
        return cls(**check_config_values(cls, values))

    def seed_list(self) -> list[int]:
        """The seeds this run covers: ``seeds`` if given, else ``[seed]``."""
        seeds = [self.seed] if self.seeds is None else list(self.seeds)
        if not seeds:
            raise ConfigError("seeds is empty; give at least one seed, e.g. --seeds 0,1,2")
        for s in seeds:
            check_setting("seed", s, Seed)
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"seeds {seeds} repeat a seed; give each seed once")
        return seeds

    def method_list(self) -> list[str]:
        """The methods a run compares with the original and the retrained model: ``methods``
        in order, each once, without ``retrain`` (which every run trains anyway)."""
        return [m for m in dict.fromkeys(self.methods) if m != "retrain"]

    def for_seed(self, seed: int) -> ExperimentConfig:
        """This config with a single ``seed`` (what one seed of a multi-seed run uses)."""
        return dataclasses.replace(self, seed=seed, seeds=None)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check_training(self, what: str) -> None:
        """Refuse a training recipe of the original (and retrained) model that is out of
        range, before any work: each value against its declared range (``epochs`` here,
        the rest on :class:`~boundary_unlearning.recipe.Recipe`).

        Args:
            what: names the run in the message (``"train"``, ``"original/retrain recipe"``).

        Raises:
            HyperparameterError: a value out of range.

        Example:
            >>> ExperimentConfig(epochs=0).check_training("train")  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            boundary_unlearning.errors.HyperparameterError: train: epochs=0 must be a whole ...
        """
        hint = typing.get_type_hints(ExperimentConfig, include_extras=True)["epochs"]
        check_setting("epochs", self.epochs, hint, where=what)
        Recipe(**self.training_recipe()).check(what)

    def training_recipe(self) -> dict[str, Any]:
        """The original's (and the retrained model's) recipe, as a dict of Recipe fields."""
        return {
            "epochs": self.epochs,
            "lr": self.lr,
            "optimizer": self.optimizer,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "batch_size": self.batch_size,
            "seed": self.seed,
        }


def resolve_device(name: str) -> torch.device:
    """The device a config's ``device`` setting names.

    Args:
        name: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``.

    Returns:
        The :class:`torch.device`; :class:`ConfigError` if the name is unknown or asks for
        CUDA where there is none.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}'; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but CUDA is not available; use cpu")
    return device


def input_normalization(
    model: str, mean: Sequence[float] | None, std: Sequence[float] | None
) -> Normalization | None:
    """How the data are normalised before a user architecture (``MODULE:FUNCTION``) sees
    them: ``(mean, std)`` from ``--mean``/``--std``, or ``None`` (pixels in [0, 1]). A zoo
    model normalises inside, so its data stay pixels (its ``mean``/``std`` go into it).

    Args:
        model: a zoo model name or ``"MODULE:FUNCTION"``.
        mean: the per-channel mean from ``--mean`` (or the config), or ``None``.
        std: the per-channel standard deviation from ``--std``, or ``None``.

    Returns:
        The checked ``(mean, std)`` for a user architecture given both, else ``None``.
    """
    if not is_user_model(model) or (mean is None and std is None):
        return None
    if mean is None or std is None:
        raise ConfigError("give both --mean and --std (or neither: the model eats pixels)")
    return check_normalization((tuple(mean), tuple(std)))


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
        ok, normalised = fits(parse_number_strings(value), hints[key], nan_ok=True)
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
