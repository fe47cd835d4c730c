"""Forgetting below the head: the feature stage of Boundary Shrink and Boundary Expanding
(their default, ``depth="features"``).

Training the final layer alone makes the model stop predicting a class, but the features
below it still single the class out: a few labelled images bring it back, and a fresh linear
probe on the features still recognises it (:mod:`boundary_unlearning.metrics.probe`). The
feature stage applies the Boundary idea below the head. After the output stage has sent each
forget sample across its nearest boundary (Boundary Shrink: to its adversarial neighbour's
class; Boundary Expanding: to the class it falls into once the shadow output is pruned), the
upper half of the network (its layers in forward order; BatchNorm statistics frozen) is
trained so that each forget sample's *features* (the head's inputs) move towards where the
original model puts that class: the class's centroid over a sample of retained images, until
most of the way is gone (``feature_settle``: 10 to 60 steps). Each step pairs the forget
batch with a batch of retained images (as large, by default) whose features and labels are
held where the original had them, so the other classes stay put; the head's rows of the
forgotten classes start again from a fresh initialisation, as in a model that never learnt
them. Cost: D_f, plus a bounded sample of D_r: one seeded sample of at most
:data:`RETAIN_SAMPLES` retained images, whatever the size of D_r (:class:`RetainPool`),
whose features the original computes once (docs/methods.md has the measurements).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from .._utils import model_device
from ..checks import AtLeastOne, Growth, NonNegative, Positive, UnitFraction
from ..data.split import UnlearningData
from ..data.streaming import inputs_and_labels, tensor_backed, with_columns
from ..errors import DivergenceError, ModelError
from ..heads import find_head, frozen_below
from ..recipe import ForgetRecipe, Recipe, RunOptions
from ..stopping import AllOf, ForgetTarget, NotBefore, Settled, StoppingRule
from ..training import Batch, fit
from ._common import FORGET_RECIPE, require_retain
from ._feature_data import (
    RETAIN_SAMPLES,
    WATCHED,
    RetainPool,
    _retained_labels,
    _watched,
    _way_to_go,
)
from ._replay import FrozenPrefix
from ._stats import ForgettingWarning

__all__ = [
    "COLLAPSE",
    "FEATURE_RECIPE",
    "LR_HALVINGS",
    "RETAIN_SAMPLES",
    "SETTLE_WINDOW",
    "WATCHED",
    "Depth",
    "FeatureRecipe",
    "RetainPool",
    "forget_in_features",
    "reset_rows",
]

Depth = Literal["features", "outputs"]
# The feature stage's steps whose remaining way is averaged to decide that it has settled.
SETTLE_WINDOW = 5
# How often the feature stage may start again at half its learning rate after a divergence.
LR_HALVINGS = 3
# The feature stage is undone (the final-layer result kept, with a ForgettingWarning) when the
# retained images' accuracy in its last steps falls this far below the original's on them.
COLLAPSE = 0.2


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeatureRecipe(ForgetRecipe):
    """Boundary Shrink's and Expanding's training: the output stage's :class:`ForgetRecipe`
    (the final layer, until the forgetting target) and the feature stage's settings.

    Args:
        feature_steps: the most steps of the feature stage (each a forget batch and a
            retained batch) before it ends whether settled or not; it goes on past them only
            while the forget set is above the target, for at most ``max_steps`` more.
        min_feature_steps: the fewest steps of the feature stage.
        feature_settle: the stage ends (from ``min_feature_steps`` on, once the forget set
            is at the target) when the forget samples' remaining way to their new classes'
            centroids, averaged over the last :data:`SETTLE_WINDOW` steps, is at most this
            share of the way at the start (:class:`~boundary_unlearning.stopping.Settled`).
            Going further gathers the features on the centroid, where a fresh probe finds
            the class again on some networks (docs/methods.md). ``None``: run
            ``feature_steps``.
        feature_batch_size: forget images, and retained images, per feature step.
        feature_lr: the feature stage's SGD learning rate (``momentum``, ``weight_decay``,
            ``bn`` and ``seed`` as the recipe's).
        feature_weight: weight of the pull of each forget sample's features to its new
            class's centroid: the squared distance, over its mean at the start (the way the
            forget samples have to go), so the pull starts at ``feature_weight`` whatever the
            features' scale.
        retain_weight: weight of the anchor holding each retained image's features where the
            original had them (the squared distance on the same scale); the retained images'
            cross-entropy is added too.
        reset_rows: start the head's rows of the forgotten classes from a fresh
            initialisation (bias 0), as a model that never learnt them has.
        feature_layers: the share of the network's parameterised layers, counted down from
            the head in the order the forward pass runs them, that the feature stage trains
            (:func:`frozen_below`; 1.0: the whole network). The layers below keep the
            original's weights, which held ResNet-18's retained classes where training the
            whole network lost 4.6 points of D_tr, and makes each step cheaper.
        retain_batch_size: retained images per feature step (the anchor's batch).
        feature_clip: clip each feature step's gradient norm to this multiple of the first
            step's (``None``: no clipping). The pull steepens as the features move; without
            the clip a rate large enough to go deep in 50 steps overshoots and costs the
            retained classes (docs/methods.md).
        **recipe: the :class:`ForgetRecipe` fields (the output stage).

    Example:
        >>> FEATURE_RECIPE.feature_steps, FEATURE_RECIPE.stage().lr
        (60, 0.003)
    """

    feature_steps: AtLeastOne = 60
    min_feature_steps: AtLeastOne = 10
    feature_settle: UnitFraction | None = 0.25
    feature_batch_size: AtLeastOne = 64
    feature_lr: Positive = 3e-3
    feature_weight: NonNegative = 30.0
    retain_weight: NonNegative = 60.0
    reset_rows: bool = True
    feature_clip: Growth | None = 1.0
    feature_layers: UnitFraction = 0.5
    retain_batch_size: AtLeastOne = 64

    def stage(self) -> Recipe:
        """The feature stage's optimisation: constant ``feature_lr``, at most
        ``feature_steps + max_steps`` steps (exactly ``feature_steps`` without a forgetting
        target).

        Returns:
            The stage's :class:`Recipe`.

        Example:
            >>> FEATURE_RECIPE.replace(feature_steps=5).stage().max_steps  # 5 + max_steps
            1005
        """
        extra = 0 if self.target_forget_acc is None else (self.max_steps or 0)
        steps = self.feature_steps + extra
        return Recipe(
            epochs=None, max_steps=steps, lr=self.feature_lr, lr_growth=1.0,
            optimizer="sgd", momentum=self.momentum, weight_decay=self.weight_decay,
            batch_size=self.feature_batch_size, seed=self.seed, bn=self.bn,
            clip_to_first=self.feature_clip,
        )  # fmt: skip


# The default of Boundary Shrink / Expanding: the forget recipe for the output stage, then
# the feature stage until it settles (10 to 60 steps; docs/methods.md: "Forgetting in the
# features").
FEATURE_RECIPE = FeatureRecipe(**dataclasses.asdict(FORGET_RECIPE))


def forget_in_features(
    model: nn.Module,
    original: nn.Module,
    data: UnlearningData,
    labels: torch.Tensor,
    *,
    recipe: FeatureRecipe,
    head: str | None,
    options: RunOptions,
    desc: str,
) -> dict[str, float]:
    """The feature stage (see the module docstring): train ``model`` (the method's working
    copy, after its output stage) in place so that each forget sample's features move to the
    centroid of the class ``labels`` gives it, with a retained batch per step holding the
    other classes where ``original`` had them. Should the loss stop being finite (a weakly
    trained original can make ``feature_lr`` too large), the stage starts again from where
    it began at half the learning rate, at most :data:`LR_HALVINGS` times; past the last
    halving the stage is undone (the output stage's result kept) with a
    :class:`ForgettingWarning`, as when it breaks the retained classes.

    Args:
        model: the working copy, trained in place.
        original: the original model (frozen: its features of retained images are the anchor
            and its class centroids the targets).
        data: the class split; D_f and D_r are read (a bounded sample of D_r).
        labels: each forget sample's new class (a forgotten class is replaced by the retained
            class whose centroid its features are nearest).
        recipe: the stage's settings (:class:`FeatureRecipe`).
        head: the head's dotted name, or ``None`` to search.
        options: progress bar and speed options (``compile_model`` is not supported here).
        desc: the method's name, for the progress bar and errors.

    Returns:
        What the stage did, for :func:`~boundary_unlearning.unlearning_stats`:
        ``feature_lr`` (the rate it ran at: ``feature_lr`` or a halving of it),
        ``feature_stage_steps`` (its steps) and ``feature_stage_undone`` (1.0 when it
        broke the retained classes and was undone, else 0.0).

    Raises:
        DataError: D_r is empty.
        ModelError: no head is found, or the head's inputs cannot be read
            (``compile_model``).

    Example:
        >>> from boundary_unlearning.data import toy_problem
        >>> from boundary_unlearning.methods._common import working_copy
        >>> data, net = toy_problem()
        >>> labels = torch.full((len(data.forget),), 2)  # every forget sample to class 2
        >>> new = working_copy(net)
        >>> forget_in_features(new, net, data, labels,
        ...                    recipe=FEATURE_RECIPE.replace(feature_steps=3),
        ...                    head=None, options=RunOptions(), desc="demo")
        {'feature_lr': 0.003, 'feature_stage_steps': 3.0, 'feature_stage_undone': 0.0}
        >>> bool(new[1].weight[1].ne(net[1].weight[1]).all())  # class 1's row started afresh
        True
    """
    require_retain(data, desc)
    if options.compile_model:
        raise ModelError(
            f"{desc}: depth='features' reads the head's inputs, which torch.compile hides; "
            "pass compile_model=False, or depth='outputs'"
        )
    k = data.num_classes
    x, y = inputs_and_labels(data.forget)
    pool = RetainPool(original, data, head=head, seed=recipe.seed)
    centroids = pool.centroids()
    labels = _retained_labels(labels.cpu(), original, x, centroids, data, head)
    spread = _way_to_go(original, x, labels, centroids, data, head, recipe.seed)
    _, trained = find_head(model, k, head)
    before = {name: t.detach().clone() for name, t in model.state_dict().items()}
    if recipe.reset_rows:
        reset_rows(trained, data.forget_classes, seed=recipe.seed)
    with frozen_below(model, x, recipe.feature_layers):
        stage = (x, y, labels, pool, centroids, spread)
        return _run_stage(model, stage, before, recipe, head, options, desc)


def _run_stage(
    model: nn.Module,
    stage: tuple[
        torch.Tensor | Dataset[Any], torch.Tensor, torch.Tensor, RetainPool, torch.Tensor, float
    ],
    before: dict[str, torch.Tensor],
    recipe: FeatureRecipe,
    head: str | None,
    options: RunOptions,
    desc: str,
) -> dict[str, float]:
    """The feature stage's training (``stage``: the forget inputs, their labels and new
    labels, the pool, the centroids and the unit of distance) with its restarts at half the
    rate, undone back to ``before`` should it break the retained classes (see
    :func:`forget_in_features`, which returns what this returns)."""
    x, y, labels, pool, centroids, spread = stage
    k = pool.num_classes
    trained, new_labels, watched = _watched(x, labels, recipe.seed, model_device(model))
    start = {name: t.detach().clone() for name, t in model.state_dict().items()}
    for attempt in range(LR_HALVINGS + 1):
        pool.generator.manual_seed(recipe.seed + 1)  # every attempt draws the same batches
        replay = _replay(trained, pool, recipe)
        loss_fn = _FeatureLoss(model, pool, centroids, spread, recipe, head, watched, replay)
        stop = _stage_rule(recipe, loss_fn, x, y, k)
        rows = torch.arange(len(new_labels))  # names each forget image for the replay
        try:
            fit(
                model, with_columns(trained, new_labels, rows), loss_fn, recipe=recipe.stage(),
                options=options, stop=stop, desc=f"{desc} (features)", shard=False,
            )  # fmt: skip
            undone = _undo_a_collapse(model, before, loss_fn, desc)
            return {"feature_lr": recipe.feature_lr, "feature_stage_steps": float(len(loss_fn.way)),
                    "feature_stage_undone": float(undone)}  # fmt: skip
        except DivergenceError as error:
            if attempt == LR_HALVINGS:
                _undo(model, before, desc, f"its loss stopped being finite at every rate down "
                      f"to {recipe.feature_lr:.3g} ({error})")  # fmt: skip
                return {"feature_lr": recipe.feature_lr, "feature_stage_steps": 0.0,
                        "feature_stage_undone": 1.0}  # fmt: skip
            model.load_state_dict(start)  # start the stage again, at half the rate
            recipe = dataclasses.replace(recipe, feature_lr=recipe.feature_lr / 2)
        finally:
            loss_fn.close()
    raise AssertionError("unreachable")  # pragma: no cover


def _replay(
    trained: torch.Tensor | Dataset[Any], pool: RetainPool, recipe: FeatureRecipe
) -> FrozenPrefix | None:
    """The stage's replay of its frozen layers (:mod:`._replay`), when every image it reads
    is held as a tensor, in memory or as stored pixel bytes read batch by batch (another
    dataset may transform an image differently each time it is read), and only when the
    stage comes back to its forget images (fewer of them than its steps take): a forget
    image seen once must go through the frozen layers anyway, and on the full
    Fashion-MNIST request (6,000 forget images) replaying the retained and watched images
    alone saved no time and cost 33 MB (docs/performance.md)."""

    def fixed(images: torch.Tensor | Dataset[Any]) -> bool:
        return isinstance(images, torch.Tensor) or tensor_backed(images, budget=sys.maxsize)

    seen_again = len(trained) < recipe.feature_steps * recipe.feature_batch_size  # type: ignore[arg-type]
    if not seen_again or not fixed(trained) or not fixed(pool.inputs):
        return None
    return FrozenPrefix()


def _stage_rule(
    recipe: FeatureRecipe,
    loss_fn: _FeatureLoss,
    x: torch.Tensor | Dataset[Any],
    y: torch.Tensor,
    k: int,
) -> StoppingRule:
    """When the feature stage ends: from ``min_feature_steps`` on, once it has settled
    (or at ``feature_steps``) and the forget set is at the target (when there is one)."""
    settle = -math.inf if recipe.feature_settle is None else recipe.feature_settle
    rule: StoppingRule = Settled(
        loss_fn.way, below=settle, by=recipe.feature_steps, window=SETTLE_WINDOW
    )
    if recipe.target_forget_acc is not None:
        target = ForgetTarget(x, y, k, recipe.target_forget_acc, seed=recipe.seed)
        rule = AllOf(rule, target)
    return NotBefore(min(recipe.min_feature_steps, recipe.feature_steps), rule)


def _undo_a_collapse(
    model: nn.Module, before: dict[str, torch.Tensor], loss_fn: _FeatureLoss, desc: str
) -> bool:
    """Put ``model`` back to ``before`` (the output stage's result) with a
    :class:`ForgettingWarning` when the retained images' accuracy over the stage's last 10
    steps ended more than :data:`COLLAPSE` below their accuracy at its first step (both in
    the stage's own train mode): the stage then broke the network (seen on an Adam-trained
    EfficientNet-B0) rather than forgot. Returns whether it did."""
    if len(loss_fn.right) < 2:
        return False
    first, last = float(loss_fn.right[0]), float(torch.stack(loss_fn.right[-10:]).mean())
    if last >= first - COLLAPSE:
        return False
    _undo(model, before, desc, f"it broke the retained classes (their accuracy fell from "
          f"{first:.0%} at its start to {last:.0%} in its last steps)")  # fmt: skip
    return True


def _undo(model: nn.Module, before: dict[str, torch.Tensor], desc: str, why: str) -> None:
    """Put ``model`` back to the output stage's result with a :class:`ForgettingWarning`
    saying ``why`` the feature stage was undone."""
    model.load_state_dict(before)
    warnings.warn(
        f"{desc}: the feature stage was undone because {why}; the final-layer result is "
        "kept, which may only hide the class; try a lower feature_lr or feature_layers, or "
        "depth='outputs'",
        ForgettingWarning,
        stacklevel=3,
    )


def reset_rows(head: nn.Linear, classes: Sequence[int], *, seed: int) -> None:
    """Re-initialise ``head``'s rows of ``classes`` as a fresh ``nn.Linear`` would draw them
    (uniform in ±1/sqrt(in_features), seeded) and zero their biases.

    Args:
        head: the final layer (changed in place).
        classes: the rows to reset.
        seed: draws the new rows.

    Example:
        >>> head = nn.Linear(4, 3)
        >>> reset_rows(head, [1], seed=0)
        >>> head.bias[1].item(), bool(head.weight[1].abs().max() <= 0.5)
        (0.0, True)
    """
    bound = 1.0 / math.sqrt(head.in_features)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for c in classes:
            row = (torch.rand(head.in_features, generator=gen) * 2 - 1) * bound
            head.weight[c] = row.to(head.weight)
            if head.bias is not None:
                head.bias[c] = 0.0


class _HeadInput:
    """Keeps the input of ``head`` from the first forward pass since it was last taken (the
    step's own pass: the replay's checks of its first step come after it)."""

    def __init__(self, head: nn.Module) -> None:
        self.value: torch.Tensor | None = None
        self._hook = head.register_forward_hook(self._keep)

    def _keep(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...], _out: Any) -> None:
        if self.value is None:
            self.value = inputs[0].flatten(1)

    def take(self, desc: str) -> torch.Tensor:
        value, self.value = self.value, None
        if value is None:
            raise ModelError(f"{desc}: the head's inputs were not seen in the forward pass")
        return value

    def close(self) -> None:
        self._hook.remove()


class _FeatureLoss:
    """One step's loss: the forget batch's cross-entropy on its new labels plus the pull of
    its features to their class centroids, and a pooled retained batch's cross-entropy plus
    the anchor of its features to the original's."""

    def __init__(
        self,
        model: nn.Module,
        pool: RetainPool,
        centroids: torch.Tensor,
        spread: float,
        recipe: FeatureRecipe,
        head: str | None,
        watched: tuple[torch.Tensor, torch.Tensor] | None = None,
        replay: FrozenPrefix | None = None,
    ) -> None:
        self.pool, self.spread, self.watched, self.replay = pool, spread, watched, replay
        self.centroids = centroids.to(model_device(model))
        self.weights = (recipe.feature_weight, recipe.retain_weight)
        self.batch_size = recipe.retain_batch_size
        self.new = _HeadInput(find_head(model, pool.num_classes, head)[1])
        self.right: list[torch.Tensor] = []  # retained images predicted right, per step
        # the remaining way of the watched forget samples (else the forget batch's), per step
        self.way: list[torch.Tensor] = []

    def __call__(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        x, labels = batch[0], batch[1]
        pooled = self.pool.draw(self.batch_size)
        x_r, y_r, kept = self.pool.batch(pooled)
        n = len(x)  # one forward pass over both batches, the forget rows first (the
        # stopping rule reads the first rows of the step's first forward pass)
        parts = [x, x_r.to(dtype=x.dtype)]
        if self.watched is not None:  # read in the same pass; no loss on them
            parts.append(self.watched[0].to(dtype=x.dtype))
        if self.replay is None:
            out = net(torch.cat(parts))
        else:  # each image named for the replay of the frozen layers (batch[2]: forget rows)
            keys = [("forget", i) for i in batch[2].tolist()]
            keys += [("pool", i) for i in pooled.tolist()]
            keys += [("watched", i) for i in range(len(parts[2]) if self.watched else 0)]
            out = self.replay.forward(net, torch.cat(parts), keys)
        feats = self.new.take("feature stage")
        m = n + len(x_r)
        pull = ((feats[:n] - self.centroids[labels]) ** 2).sum(1).mean()
        anchor = ((feats[n:m] - kept) ** 2).sum(1).mean()
        out, out_r = out[:n], out[n:m]
        self.right.append((out_r.detach().argmax(1) == y_r).float().mean())
        way = pull
        if self.watched is not None:
            way = ((feats[m:] - self.centroids[self.watched[1]]) ** 2).sum(1).mean()
        self.way.append((way / self.spread).detach())
        w_f, w_r = self.weights
        loss = (
            F.cross_entropy(out, labels) + w_f * pull / self.spread
            + F.cross_entropy(out_r, y_r) + w_r * anchor / self.spread
        )  # fmt: skip
        return loss

    def close(self) -> None:
        self.new.close()
