"""The two orders of combining Boundary Expanding and Boundary Shrink (from the slides of
Chen et al., "Boundary Unlearning", CVPR 2023).

A combination takes every setting of both stages: ``expand_<name>`` for Boundary Expanding's
``<name>``, ``shrink_<name>`` for Boundary Shrink's, and the plain ``<name>`` for a setting
only one stage has (``eps``, ``attack``, ``head``, ``label_rule``, ...) or, for a setting
both have (``lr``, ``max_steps``, ``seed``, ``bn``, ...), for both at once; a prefixed value
wins over a plain one. ``None`` leaves a stage's own default (as its ``preset`` sets it).
``preset`` applies to both stages. ``depth`` is the exception: the feature stage runs once,
at the end, so the first stage runs ``depth="outputs"`` and a plain ``depth`` is the second
stage's (``expand_depth`` / ``shrink_depth`` still set either stage).
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

from torch import nn

from ..data.split import UnlearningData
from ..recipe import RunOptions
from ._common import require_retain
from ._registry import MethodSpec, get_method, register_method
from ._stats import ForgettingWarning, set_unlearning_stats
from ._stats import unlearning_stats as stats_of
from .boundary_expanding import boundary_expanding
from .boundary_shrink import boundary_shrink

__all__ = ["expand_shrink", "shrink_expand", "stage_keywords"]

_PREFIX = {"boundary_expanding": "expand", "boundary_shrink": "shrink"}
# The stages (their modules, imported above, registered them).
EXPAND = get_method(boundary_expanding.__name__)
SHRINK = get_method(boundary_shrink.__name__)
# The presets both stages have; a combination's preset applies to both.
Preset = Literal["default", "paper"]


def stage_keywords(stages: tuple[MethodSpec, MethodSpec]) -> dict[str, tuple[Any, Any]]:
    """The settings a combination takes besides ``preset``: every stage setting plain (for
    both stages, or the one that has it) and prefixed (``expand_lr``, ``shrink_eps``), each
    ``None`` by default (the stage's own default) and typed as the stage declares it.

    Args:
        stages: the two stages, in order.

    Returns:
        Name -> ``(default, annotation)``, as :func:`register_method` takes ``keywords``.

    Example:
        >>> keywords = stage_keywords((EXPAND, SHRINK))
        >>> keywords["eps"][0], keywords["shrink_eps"][0], "expand_eps" in keywords
        (None, None, False)
    """
    own = [{k: spec.hints.get(k, Any) for k in spec.hyperparameters if k != "preset"}
           for spec in stages]  # fmt: skip
    plain = {name: hint for hints in own for name, hint in hints.items()}
    out = {name: (None, plain[name] | None) for name in sorted(plain)}
    for spec, hints in zip(stages, own, strict=True):
        prefix = _PREFIX[spec.name]
        out.update({f"{prefix}_{name}": (None, hints[name] | None) for name in sorted(hints)})
    return out


def _stage_settings(
    spec: MethodSpec, preset: str, values: dict[str, Any], *, first: bool
) -> dict[str, Any]:
    prefix = _PREFIX[spec.name]
    out: dict[str, Any] = {"preset": preset}
    if first:  # the feature stage runs once, after the second stage
        out["depth"] = "outputs"
    for name in spec.hyperparameters:
        if name == "preset":
            continue
        prefixed = values.get(f"{prefix}_{name}")
        plain = None if first and name == "depth" else values.get(name)
        if prefixed is not None:
            out[name] = prefixed
        elif plain is not None:
            out[name] = plain
    return out


def _run_stages(
    name: str,
    stages: tuple[MethodSpec, MethodSpec],
    model: nn.Module,
    data: UnlearningData,
    preset: str,
    options: RunOptions,
    settings: dict[str, Any],
) -> nn.Module:
    given = [_stage_settings(spec, preset, settings, first=i == 0) for i, spec in enumerate(stages)]
    if any(stages[i].resolve(given[i])["depth"] == "features" for i in (0, 1)):
        require_retain(data, name)  # refused under the combination's name, before any stage
    with warnings.catch_warnings():  # the combination warns once, for both stages
        warnings.simplefilter("ignore", ForgettingWarning)
        first = stages[0](model, data, **given[0], **vars(options))
        out = stages[1](first, data, **given[1], **vars(options))
    # each stage's own values (Shrink's attack_success_ratio); the registry adds the steps
    # and forget-accuracy trace of both stages' training
    set_unlearning_stats(out, {**stats_of(first), **stats_of(out)})
    return out


@register_method("expand_shrink", cost="sample", keywords=stage_keywords((EXPAND, SHRINK)))
def expand_shrink(
    model: nn.Module, data: UnlearningData, *, preset: Preset = "default",
    options: RunOptions = RunOptions(), **settings: Any,
) -> nn.Module:  # fmt: skip
    """Expanding then Shrink: Boundary Expanding, then Boundary Shrink on its result (the
    neighbour search runs on the expanded-and-pruned model). The slides name this order the
    more promising combination.

    Chen et al., "Boundary Unlearning", CVPR 2023 (slides). With the default forgetting
    target each stage's output stage trains until the target or its budget: Shrink always
    takes at least one step, even when Expanding already reached the target. With the
    default ``depth="features"`` Shrink then runs the feature stage (once, at the end; see
    the module docstring). Records Boundary Shrink's ``attack_success_ratio`` and the steps
    and forget-accuracy trace of both stages.

    Args:
        model: the original classifier; never modified.
        data: the class split; only ``data.forget`` is used.
        preset: applies to both stages (``"paper"``: their published loops).
        options: progress bar and speed options, for both stages.
        **settings: any setting of either stage (:func:`stage_keywords`, the module
            docstring): ``expand_lr``, ``shrink_eps`` or ``eps``, ``max_steps`` for both, ...

    Returns:
        A new model in eval mode.
    """
    return _run_stages("expand_shrink", (EXPAND, SHRINK), model, data, preset, options, settings)


@register_method("shrink_expand", cost="sample", keywords=stage_keywords((SHRINK, EXPAND)))
def shrink_expand(
    model: nn.Module, data: UnlearningData, *, preset: Preset = "default",
    options: RunOptions = RunOptions(), **settings: Any,
) -> nn.Module:  # fmt: skip
    """Shrink then Expanding: Boundary Shrink, then Boundary Expanding on its result.

    Chen et al., "Boundary Unlearning", CVPR 2023 (slides). Takes what
    :func:`expand_shrink` takes and records what it records; here too each stage takes at
    least one step.
    """
    return _run_stages("shrink_expand", (SHRINK, EXPAND), model, data, preset, options, settings)
