"""Helpers the methods share: input checks, copying, locating the classification head."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from .._utils import eval_mode, model_device
from ..data.split import UnlearningData
from ..data.streaming import iterate_batches
from ..errors import DataError, ModelError
from ..heads import find_head
from ..recipe import ForgetRecipe, RunOptions
from ..stopping import ForgetTarget
from ..training import LossFn, cross_entropy_loss, fit

__all__ = [
    "FORGET_RECIPE",
    "PAPER_FINETUNE",
    "Layers",
    "check_inputs",
    "find_head",
    "fit_forget",
    "published_loop",
    "replace_module",
    "require_retain",
    "train_only",
    "working_copy",
]

Layers = Literal["head", "all"]

# The default recipe of the forget-only methods (with layers="head"): train the final layer
# until at most 5% of D_f is still predicted as its own class, within a step budget;
# BatchNorm statistics frozen (forget-only batches would replace them with one class's).
# docs/methods.md has the measurements.
FORGET_RECIPE = ForgetRecipe(
    max_steps=1000, lr=1e-3, lr_growth=1.05, max_lr=0.1, momentum=0.9, weight_decay=0.0,
    batch_size=64, bn="freeze", target_forget_acc=0.05,
)  # fmt: skip


def published_loop(*, epochs: int, lr: float) -> dict[str, Any]:
    """A ``preset`` that replaces the forgetting-target defaults by a published fixed loop:
    ``epochs`` passes at a constant ``lr``, the whole network, BatchNorm in train mode, no
    early stop (SGD momentum 0.9, batch 64, no weight decay, as the forget recipe).

    Args:
        epochs: passes over D_f.
        lr: the constant learning rate.

    Returns:
        The preset's hyperparameter values.

    Example:
        >>> published_loop(epochs=10, lr=1e-5)["target_forget_acc"] is None
        True
    """
    return {
        "epochs": epochs, "max_steps": None, "lr": lr, "lr_growth": 1.0, "bn": "train",
        "target_forget_acc": None, "layers": "all",
    }  # fmt: skip


# The paper's fine-tuning (Chen et al., CVPR 2023, Boundary Shrink and Expanding): SGD
# lr 1e-5, momentum 0.9, batch 64, 10 epochs, BatchNorm in train mode, no early stop.
PAPER_FINETUNE = published_loop(epochs=10, lr=1e-5)


def fit_forget(
    model: nn.Module,
    data: UnlearningData,
    train_set: Sequence[torch.Tensor] | Dataset[Any],
    loss_fn: LossFn = cross_entropy_loss,
    *,
    forget: tuple[torch.Tensor | Dataset[Any], torch.Tensor],
    layers: Layers,
    head: str | None,
    recipe: ForgetRecipe,
    options: RunOptions,
    desc: str,
    outputs: int | None = None,
    shard: bool = True,
) -> nn.Module:
    """The forget-only methods' shared training: :func:`fit` ``model`` (the method's working
    copy, trained in place) on ``train_set`` with ``recipe``, only its head for
    ``layers="head"`` (:func:`train_only`), and, when the recipe has a target, stopped by a
    :class:`~boundary_unlearning.stopping.ForgetTarget` on D_f that knows that head.

    A forget-only method is then its idea (what it trains D_f towards) over this call.

    Args:
        model: the working copy to train.
        data: the class split (gives the number of classes).
        train_set: what to train on (e.g. D_f with new labels, from ``with_columns``).
        loss_fn: the loss of one batch of ``train_set``.
        forget: D_f's inputs (a tensor or a dataset read batch by batch) and true labels,
            which the stopping rule watches.
        layers: ``"head"`` or ``"all"``.
        head: the head's dotted name, or ``None`` to search.
        recipe: the training recipe; its ``target_forget_acc`` and ``seed`` drive the
            stopping rule.
        options: progress bar and speed options.
        desc: the progress bar's label.
        outputs: the head's number of outputs when it differs from the class count (a widened
            head).
        shard: whether a batch may be split across ranks (``False`` for a loss over the
            whole batch).

    Returns:
        ``model``, trained, in eval mode.

    Raises:
        ModelError: ``layers="head"`` and no head is found.

    Example:
        >>> from boundary_unlearning.data import toy_problem
        >>> from boundary_unlearning.data.streaming import inputs_and_labels, with_columns
        >>> data, net = toy_problem()
        >>> x, y = inputs_and_labels(data.forget)
        >>> new = fit_forget(
        ...     working_copy(net), data, with_columns(x, (y + 1) % 4), forget=(x, y),
        ...     layers="head", head=None, recipe=FORGET_RECIPE, options=RunOptions(), desc="demo",
        ... )
        >>> new.training
        False
    """
    k = outputs or data.num_classes
    trained_head = find_head(model, k, head)[1] if layers == "head" else None
    stop = None
    if recipe.target_forget_acc is not None:
        stop = ForgetTarget(
            *forget, data.num_classes, recipe.target_forget_acc, seed=recipe.seed,
            head=trained_head,
        )  # fmt: skip
    with train_only(model, trained_head) as params:
        return fit(
            model, train_set, loss_fn, recipe=recipe, options=options, parameters=params,
            stop=stop, desc=desc, shard=shard,
        )  # fmt: skip


def require_retain(data: UnlearningData, method: str) -> None:
    """Refuse an empty D_r for a method that trains on it (the registry calls this for
    every ``retain`` and ``reference`` method; a method whose use of D_r is optional calls
    it when it does).

    Args:
        data: the class split.
        method: the method's name, for the error message.

    Raises:
        DataError: the retain set is empty.

    Example:
        >>> from boundary_unlearning.data import toy_problem
        >>> data, net = toy_problem(n=8, num_classes=2)
        >>> require_retain(data, "demo")
    """
    if len(data.retain) == 0:  # type: ignore[arg-type]
        raise DataError(
            f"{method}: the retain set is empty; this method needs the remaining training data"
        )


def check_inputs(model: nn.Module, data: UnlearningData, method: str) -> None:
    """Fail early, with a clear message, if ``model`` cannot classify ``data``.

    Runs the model on two forget samples.

    Args:
        model: the classifier.
        data: the class split.
        method: the method's name, for the error message.

    Raises:
        DataError: the forget set is empty.
        ModelError: the model fails on the inputs or has the wrong number of outputs.

    Example:
        >>> from boundary_unlearning.data import toy_problem
        >>> data, net = toy_problem(n=8, num_classes=2)
        >>> check_inputs(net, data, "demo")
        >>> three_outputs = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> check_inputs(three_outputs, data, "demo")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        boundary_unlearning.errors.ModelError: demo: the model outputs (3,) values per image ...
    """
    if len(data.forget) == 0:  # type: ignore[arg-type]
        raise DataError(
            f"{method}: the forget set is empty; choose a forget class with training samples "
            "or a larger forget fraction"
        )
    x = next(iterate_batches(data.forget, 2, order=[0, 1][: len(data.forget)]))[0]  # type: ignore[arg-type]
    probe = x.to(model_device(model))
    try:
        with eval_mode(model), torch.inference_mode():
            out = model(probe)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(
            f"{method}: the model cannot take images of shape {tuple(x.shape[1:])} ({first}); "
            "use a model built for this data set's channels and size"
        ) from None
    if out.dim() != 2 or out.shape[1] != data.num_classes:
        raise ModelError(
            f"{method}: the model outputs {tuple(out.shape[1:])} values per image but the data "
            f"has {data.num_classes} classes; use a model with {data.num_classes} outputs"
        )


def working_copy(model: nn.Module) -> nn.Module:
    """A deep copy to train; the caller's model is never touched.

    Args:
        model: the model to copy.

    Returns:
        The copy, every parameter with ``requires_grad`` on.

    Example:
        >>> model = nn.Linear(2, 2).requires_grad_(False)
        >>> copy = working_copy(model)
        >>> copy is model, copy.weight.requires_grad, model.weight.requires_grad
        (False, True, False)
    """
    clone = copy.deepcopy(model)
    for p in clone.parameters():
        p.requires_grad_(True)
    return clone


@contextlib.contextmanager
def train_only(model: nn.Module, head: nn.Module | None) -> Iterator[list[nn.Parameter] | None]:
    """The parameters to train: ``None`` (all of them) without a ``head``; else the head's,
    with every other parameter's ``requires_grad`` off for the block (the backward pass then
    stops at the head) and restored after.

    Args:
        model: the classifier.
        head: the layer that trains alone (as :func:`find_head` finds it), or ``None``.

    Returns:
        A context manager giving the parameters to train (``None``: all).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3))
        >>> with train_only(net, net[2]) as params:
        ...     len(params), [p.requires_grad for p in net.parameters()]
        (2, [False, False, True, True])
        >>> [p.requires_grad for p in net.parameters()]
        [True, True, True, True]
    """
    if head is None:
        yield None
        return
    chosen = list(head.parameters())
    keep = {id(p) for p in chosen}
    frozen = [p for p in model.parameters() if id(p) not in keep and p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield chosen
    finally:
        for p in frozen:
            p.requires_grad_(True)


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Swap the submodule at dotted path ``name`` for ``new``.

    Args:
        model: the model, changed in place.
        name: the submodule's dotted path (e.g. ``"fc"`` or ``"classifier.2"``).
        new: the module to put there.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 4), nn.ReLU())
        >>> replace_module(net, "1", nn.Tanh())
        >>> net[1]
        Tanh()
    """
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)
