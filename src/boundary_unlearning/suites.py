"""Suite files for ``bunlearn reproduce``: finding a suite (shipped in ``configs/`` or any
YAML file of the same form), reading it, merging its ``quick`` part, applying ``--set``
overrides by dotted path, and validating its keys (the suite's, each study's and the
experiment settings) so that a typo fails before anything runs. Running a loaded suite is
:func:`~boundary_unlearning.reproduce.run_suite`'s job."""

from __future__ import annotations

import copy
import dataclasses
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .config import ExperimentConfig
from .errors import ConfigError, did_you_mean

__all__ = ["apply_overrides", "list_suites", "load_suite", "suite_path"]


_SUITE_KEYS = {
    "name": "the suite's name",
    "description": "what the suite reproduces",
    "paper": "cifar10 / vggface2 / null: published numbers shown beside the main table",
    "paper_note": "how to read the comparison with the published numbers",
    "experiment": "ExperimentConfig settings shared by every study",
    "hyperparameters": "every method's hyperparameters",
    "studies": "name -> study",
    "quick": "a partial suite merged over this one by --quick",
}
_STUDY_KEYS = {
    "title": "heading in summary.md",
    "description": "what the study shows",
    "methods": "methods to run (unregistered ones are skipped and listed)",
    "seeds": "experiment seeds; more than one gives mean ± std",
    "vary": "sweep: KEY -> list of values (grid over all keys)",
    "experiment": "ExperimentConfig settings for this study only",
    "hyperparameters": "method hyperparameters for this study only",
    "compare_paper": "show the published numbers beside this study's table",
}


def _configs_dir() -> Path:
    return Path(str(resources.files("boundary_unlearning") / "configs"))


def list_suites() -> list[str]:
    """Names of the suites shipped with the package.

    Returns:
        The names, sorted.

    Example:
        >>> list_suites()
        ['cifar10-allcnn', 'digits', 'fashion-mnist', 'vggface2-resnet50']
    """
    return sorted(p.stem for p in _configs_dir().glob("*.yaml"))


def suite_path(name_or_path: str | Path) -> Path:
    """The YAML file of a shipped suite (by name) or a path to one.

    Args:
        name_or_path: a shipped suite's name, or a path to a ``.yaml`` / ``.yml`` file.

    Returns:
        The file's path.

    Raises:
        ConfigError: the file does not exist, or no suite has that name.

    Example:
        >>> suite_path("digits").name
        'digits.yaml'
        >>> suite_path("digit")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        boundary_unlearning.errors.ConfigError: unknown suite 'digit' (did you mean 'digits'?); ...
    """
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} or path.is_file():
        if not path.is_file():
            raise ConfigError(f"suite file {path} not found; pass a YAML file or a suite name")
        return path
    shipped = _configs_dir() / f"{name_or_path}.yaml"
    if not shipped.is_file():
        known = list_suites()
        raise ConfigError(
            f"unknown suite '{name_or_path}'{did_you_mean(str(name_or_path), known)}; "
            f"shipped suites: {', '.join(known)} (or pass a path to a suite YAML file)"
        )
    return shipped


def _merge(base: Any, over: Any) -> Any:
    """Deep merge of mappings; anything else in ``over`` replaces ``base``."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merge(base.get(key), value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(over)


def apply_overrides(suite: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted paths, e.g. ``{"experiment.epochs": 1, "studies.main.seeds": [0]}``.

    Missing mappings along a path are created.

    Args:
        suite: the suite (not modified).
        overrides: dotted path -> value; the first part must be a top-level suite key.

    Returns:
        A new suite with the values set.

    Raises:
        ConfigError: a path that does not start with a suite key, or runs through a value
            that is not a mapping.

    Example:
        >>> apply_overrides({"experiment": {"epochs": 20}},
        ...                 {"experiment.epochs": 1, "studies.main.seeds": [0]})
        {'experiment': {'epochs': 1}, 'studies': {'main': {'seeds': [0]}}}
    """
    out = copy.deepcopy(suite)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if parts[0] not in _SUITE_KEYS:
            raise ConfigError(
                f"--set {dotted}: the path must start with one of {', '.join(_SUITE_KEYS)}, "
                "e.g. experiment.epochs=5 or hyperparameters.boundary_shrink.eps=0.1"
            )
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {dotted}: '{part}' is not a mapping in the suite")
            node = child
        node[parts[-1]] = value
    return out


def _check_keys(where: str, values: Any, allowed: dict[str, str]) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(values).__name__}")
    unknown = [k for k in values if k not in allowed]
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(map(str, unknown))} in {where}; valid keys: "
            f"{', '.join(allowed)}"
        )


def _validate(suite: dict[str, Any], source: str) -> dict[str, Any]:
    _check_keys(f"suite {source}", suite, _SUITE_KEYS)
    experiment = suite.setdefault("experiment", {})
    fields = {f.name: f.name for f in dataclasses.fields(ExperimentConfig)}
    _check_keys(f"{source}: experiment", experiment, fields)
    for reserved in ("methods", "hyperparameters"):
        if reserved in experiment:
            raise ConfigError(
                f"{source}: set '{reserved}' per study or at the top level, not under experiment"
            )
    hparams = suite.setdefault("hyperparameters", {})
    _check_keys(f"{source}: hyperparameters", hparams, {k: k for k in hparams})
    studies = suite.get("studies")
    if not isinstance(studies, dict) or not studies:
        raise ConfigError(f"{source} has no studies; add a 'studies:' mapping")
    for name, study in studies.items():
        _check_keys(f"{source}: study '{name}'", study, _STUDY_KEYS)
        if not study.get("methods"):
            raise ConfigError(f"{source}: study '{name}' lists no methods")
        _check_keys(f"{source}: study '{name}' experiment", study.get("experiment", {}), fields)
        for key, values in study.get("vary", {}).items():
            if not isinstance(values, list) or not values:
                raise ConfigError(
                    f"{source}: study '{name}' vary.{key} must be a non-empty list of values"
                )
            if "." not in key and key not in fields:
                raise ConfigError(
                    f"{source}: study '{name}' varies '{key}', which is neither an experiment "
                    "setting nor METHOD.NAME / *.NAME (a hyperparameter)"
                )
    return suite


def load_suite(
    name_or_path: str | Path,
    *,
    quick: bool = False,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Read a suite, merge its ``quick`` part when asked, apply ``overrides``, validate.

    Args:
        name_or_path: a shipped suite's name or a YAML file.
        quick: merge the suite's ``quick`` section (a shorter run) over it.
        overrides: dotted path -> value, applied last (see :func:`apply_overrides`).

    Returns:
        The suite, with ``name`` (default: the file's stem) and ``hyperparameters`` set.

    Raises:
        ConfigError: a missing file, invalid YAML, unknown keys, or a study without methods.

    Example:
        >>> suite = load_suite("digits", quick=True, overrides={"experiment.epochs": 1})
        >>> suite["name"], suite["experiment"]["epochs"], "main" in suite["studies"]
        ('digits', 1, True)
    """
    path = suite_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({exc}); fix the file") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping with 'experiment' and 'studies'")
    suite = dict(raw)
    quick_part = suite.pop("quick", None) or {}
    if quick:
        suite = _merge(suite, quick_part)
    suite = apply_overrides(suite, overrides or {})
    suite.setdefault("name", path.stem)
    return _validate(suite, str(path))
