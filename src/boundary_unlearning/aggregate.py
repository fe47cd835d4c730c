"""A run over several seeds summarised: the mean and sample standard deviation of every
numeric result across the seeds, failed methods kept apart."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = ["aggregate_seeds"]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _combine(values: list[Any], how: Callable[[list[float]], float], key: str = "") -> Any:
    """Combine the same leaf across seeds: numbers by ``how`` (``None``s skipped), dicts key
    by key, anything else (and hyperparameters) taken from the first seed."""
    first = values[0]
    if key == "hyperparameters":
        return first
    if isinstance(first, dict):
        keys = list(dict.fromkeys(k for v in values if isinstance(v, dict) for k in v))
        return {
            k: _combine([v.get(k) for v in values if isinstance(v, dict)], how, k) for k in keys
        }
    numbers = [float(v) for v in values if _is_number(v)]
    if numbers and all(v is None or _is_number(v) for v in values):
        if len(values) == 1:
            return first if how is _mean else 0.0
        return how(numbers)
    return first


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def _std(values: list[float]) -> float:
    """Sample standard deviation (n - 1 in the denominator); 0 for a single value."""
    if len(values) < 2:
        return 0.0
    mean = _mean(values)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def aggregate_seeds(
    per_seed: dict[str, dict[str, dict[str, Any]]],
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """``(mean, std)`` across seeds of every numeric leaf of every model's entry.

    A method that failed on some seeds is averaged over the others and lists the failures in
    ``failed_seeds``; one that failed on every seed is ``{"failed": message}``.

    Args:
        per_seed: each seed's (as text) entries, one per model name, as a run's
            ``per_seed`` holds them.

    Returns:
        ``(mean, std)``: per model name, its entry with every number replaced by the mean
        (sample standard deviation) over the seeds; hyperparameters from the first seed.
    """
    names = list(dict.fromkeys(n for entries in per_seed.values() for n in entries))
    mean: dict[str, dict[str, Any]] = {}
    std: dict[str, dict[str, Any]] = {}
    for name in names:
        runs = {s: e[name] for s, e in per_seed.items() if name in e}
        ok = [e for e in runs.values() if "failed" not in e]
        failed = {s: e["failed"] for s, e in runs.items() if "failed" in e}
        if not ok:
            mean[name] = std[name] = {"failed": next(iter(failed.values()))}
            continue
        mean[name] = _combine(ok, _mean)
        std[name] = _combine(ok, _std)
        std[name].pop("hyperparameters", None)
        if failed:
            mean[name]["failed_seeds"] = failed
    return mean, std
