"""The two orders of combining Boundary Expanding and Boundary Shrink (from the slides of
Chen et al., "Boundary Unlearning", CVPR 2023).

A combination takes every setting of both stages: ``expand_<name>`` for Boundary Expanding's
``<name>``, ``shrink_<name>`` for Boundary Shrink's, and the plain ``<name>`` for a setting
only one stage has (``eps``, ``attack``, ``head``, ``label_rule``, ...) or, for a setting
both have (``lr``, ``max_steps``, ``seed``, ``bn``, ...), for both at once; a prefixed value
wins over a plain one. ``None`` leaves a stage's own default (as its ``preset`` sets it).
``preset`` applies to both stages.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

from torch import nn

from ..data.split import UnlearningData
from ..recipe import RunOptions
from ._registry import (
    ForgettingWarning,
    MethodSpec,
    get_method,
    register_method,
    set_unlearning_stats,
)
from ._registry import unlearning_stats as stats_of

__all__ = ["expand_shrink", "shrink_expand"]

_PREFIX = {"boundary_expanding": "expand", "boundary_shrink": "shrink"}


def _stage_parameters(stages: tuple[MethodSpec, MethodSpec]) -> list[inspect.Parameter]:
    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("preset", keyword, default="default", annotation=str)]
    names = [set(s.hyperparameters) - {"preset"} for s in stages]
    plain: dict[str, Any] = {}
    for spec, own in zip(stages, names, strict=True):
        plain.update({name: spec.hints.get(name, Any) for name in own})
    for name in sorted(plain):
        params.append(inspect.Parameter(name, keyword, default=None, annotation=plain[name] | None))
    for spec, own in zip(stages, names, strict=True):
        prefix = _PREFIX[spec.name]
        for name in sorted(own):
            hint = spec.hints.get(name, Any) | None
            params.append(
                inspect.Parameter(f"{prefix}_{name}", keyword, default=None, annotation=hint)
            )
    return params


def _stage_settings(spec: MethodSpec, values: dict[str, Any]) -> dict[str, Any]:
    prefix = _PREFIX[spec.name]
    out: dict[str, Any] = {"preset": values["preset"]}
    for name in spec.hyperparameters:
        if name == "preset":
            continue
        prefixed = values.get(f"{prefix}_{name}")
        plain = values.get(name)
        if prefixed is not None:
            out[name] = prefixed
        elif plain is not None:
            out[name] = plain
    return out


def _combination(order: tuple[str, str]) -> Callable[..., nn.Module]:
    stages = (get_method(order[0]), get_method(order[1]))

    def run(model: nn.Module, data: UnlearningData, **values: Any) -> nn.Module:
        options: RunOptions = values.pop("options")
        with warnings.catch_warnings():  # the combination warns once, for both stages
            warnings.simplefilter("ignore", ForgettingWarning)
            first = stages[0](model, data, **_stage_settings(stages[0], values), **vars(options))
            out = stages[1](first, data, **_stage_settings(stages[1], values), **vars(options))
        # each stage's own values (Shrink's attack_success_ratio); the registry adds the steps
        # and forget-accuracy trace of both stages' training
        set_unlearning_stats(out, {**stats_of(first), **stats_of(out)})
        return out

    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("model", positional, annotation=nn.Module),
            inspect.Parameter("data", positional, annotation=UnlearningData),
            *_stage_parameters(stages),
            inspect.Parameter("options", inspect.Parameter.KEYWORD_ONLY, annotation=RunOptions),
        ]
    )
    return run


def _register(name: str, order: tuple[str, str], doc: str) -> Callable[..., nn.Module]:
    run = _combination(order)
    run.__name__ = run.__qualname__ = name
    run.__doc__ = doc
    run.__module__ = __name__
    return register_method(name, cost="forget", presets={"paper": {}})(run)


expand_shrink = _register(
    "expand_shrink",
    ("boundary_expanding", "boundary_shrink"),
    """Expanding then Shrink: Boundary Expanding, then Boundary Shrink on its result (the
    neighbour search runs on the expanded-and-pruned model). The slides name this order the
    more promising combination.

    Chen et al., "Boundary Unlearning", CVPR 2023 (slides). Settings: see the module
    docstring (``expand_lr``, ``shrink_eps``/``eps``, ``max_steps`` for both, ...). With the
    default forgetting target, Shrink only trains if Expanding stopped above it. Records
    Boundary Shrink's ``attack_success_ratio`` and the steps and forget-accuracy trace of
    both stages.
    """,
)

shrink_expand = _register(
    "shrink_expand",
    ("boundary_shrink", "boundary_expanding"),
    """Shrink then Expanding: Boundary Shrink, then Boundary Expanding on its result.

    Chen et al., "Boundary Unlearning", CVPR 2023 (slides). Settings as for
    :func:`expand_shrink`. Records Boundary Shrink's ``attack_success_ratio`` and the steps
    and forget-accuracy trace of both stages.
    """,
)
