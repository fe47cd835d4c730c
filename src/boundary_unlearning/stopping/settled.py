"""A stopping rule on a value the loss records each step: stop once its running mean has
come down to a threshold (or at a step cap).

The feature stage of Boundary Shrink and Expanding records, each step, how much of their
way the forget samples' features still have to go to their new classes' centroids (the
pull over its value at the start). :class:`Settled` ends the stage once the mean of the last
few values is at most ``below``: the features have moved most of the way, and going on
gathers them on the centroid, where a fresh probe finds them again on some networks
(docs/methods.md, "When the feature stage ends").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .rule import FitRun

__all__ = ["Settled"]


class Settled:
    """Stop once the mean of the last ``window`` entries of ``values`` is at most
    ``below``, or from step ``by`` on, whichever comes first. ``values`` is a list the loss
    appends to once per step (0-d tensors or floats); once ``window`` of them are in, every
    step reads their mean (on an accelerator, one wait for the device per step, as the
    forgetting target's monitor already has). It gives no verdict of its own.

    Args:
        values: the per-step values (appended to by the loss as the run goes).
        below: the threshold of their running mean.
        by: the step from which the rule passes whatever the values.
        window: how many of the latest values are averaged.

    Example:
        >>> seen = [torch.tensor(v) for v in (1.0, 0.5, 0.3, 0.2, 0.1)]
        >>> rule = Settled(seen, below=0.25, by=100, window=2)
        >>> rule.after_step(5, torch.arange(2)), rule.check(nn.Linear(1, 1), 5)
        (True, True)
        >>> Settled(seen[:3], below=0.25, by=100, window=2).check(nn.Linear(1, 1), 3)
        False
        >>> Settled(seen[:3], below=0.25, by=3, window=2).check(nn.Linear(1, 1), 3)
        True
    """

    def __init__(
        self, values: Sequence[torch.Tensor | float], *, below: float, by: int, window: int = 5
    ) -> None:
        self.values, self.below, self.by, self.window = values, below, by, window

    def _settled(self, step: int) -> bool:
        if step >= self.by:
            return True
        latest = self.values[-self.window :]
        if len(latest) < self.window:
            return False
        return float(torch.stack([torch.as_tensor(v) for v in latest]).mean()) <= self.below

    def start(self, run: FitRun) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self, step: int, rows: torch.Tensor) -> bool:
        return self._settled(step)

    def check(self, model: nn.Module, step: int) -> bool:
        return self._settled(step)

    def finish(self, model: nn.Module, step: int, stopped: bool) -> bool | None:
        return None

    def close(self) -> None:
        pass
