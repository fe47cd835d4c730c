"""The one path from a run's settings to what it works on, shared by ``bunlearn unlearn``,
``bunlearn run`` and ``bunlearn reproduce`` (whose studies are runs): an
:class:`~boundary_unlearning.config.ExperimentConfig` gives the data (loaded, cut to a
subset, normalised for a user architecture, split into D_f/D_r/D_tf/D_tr), the architecture,
and each method's settings (the user's and the run's seed, checked before any work); a
method then runs timed the same way everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from ._utils import model_device, synchronize
from .config import ExperimentConfig, input_normalization
from .data import DatasetInfo, UnlearningData, class_split, load_dataset
from .data.split import balanced_subset
from .data.streaming import normalized
from .errors import HyperparameterError
from .methods import get_method, unlearn, validate_hyperparameters
from .models import create_model

__all__ = [
    "build_model",
    "check_methods",
    "load_data",
    "method_settings",
    "prepare_data",
    "split_data",
    "timed_unlearn",
]


def load_data(config: ExperimentConfig) -> tuple[Dataset[Any], Dataset[Any], DatasetInfo]:
    """The data set's ``(train, test, info)``: the training set cut to ``config.subset``,
    both normalised where a user architecture eats normalised inputs (``mean``/``std``).

    Args:
        config: the run's settings (one seed).

    Returns:
        ``(train set, test set, info)``.

    Example:
        >>> train_set, test_set, info = load_data(ExperimentConfig(subset=100))
        >>> len(train_set), info.name
        (100, 'digits')
    """
    train_set: Dataset[Any]
    test_set: Dataset[Any]
    train_set, test_set, info = load_dataset(
        config.dataset, config.data_root, download=config.download
    )
    if config.subset is not None:
        train_set = balanced_subset(train_set, config.subset, seed=config.seed)
    norm = input_normalization(config.model, config.mean, config.std)
    if norm is not None:
        train_set, test_set = normalized(train_set, norm), normalized(test_set, norm)
    return train_set, test_set, info


def split_data(
    config: ExperimentConfig,
    train_set: Dataset[Any],
    test_set: Dataset[Any],
    info: DatasetInfo,
    *,
    forgotten: Sequence[int] = (),
) -> UnlearningData:
    """The class split of ``config.forget_classes`` (indices or names), with the run's
    forget fraction and seed and the normalisation the data carry.

    Args:
        config: the run's settings (one seed).
        train_set: the training set (from :func:`load_data`).
        test_set: the test set.
        info: the data set's description (class names, class count).
        forgotten: classes an earlier request made the model forget (kept out of every
            retained set).

    Returns:
        The :class:`~boundary_unlearning.data.UnlearningData`.
    """
    return class_split(
        train_set,
        test_set,
        [info.class_index(c) for c in config.forget_classes],
        forget_fraction=config.forget_fraction,
        seed=config.seed,
        num_classes=info.num_classes,
        normalization=input_normalization(config.model, config.mean, config.std),
        forgotten=forgotten,
    )


def prepare_data(
    config: ExperimentConfig,
) -> tuple[UnlearningData, DatasetInfo, Dataset[Any], Dataset[Any]]:
    """Load the data set and split it: ``(data, info, train set, test set)``.

    Args:
        config: the run's settings (one seed).

    Returns:
        The split, the data set's description and the two sets it was made from.

    Example:
        >>> data, info, _, _ = prepare_data(ExperimentConfig(forget_classes=["3"]))
        >>> data.forget_classes, data.sizes()["forget"]
        ((3,), 146)
    """
    train_set, test_set, info = load_data(config)
    return split_data(config, train_set, test_set, info), info, train_set, test_set


def build_model(config: ExperimentConfig, info: DatasetInfo) -> nn.Module:
    """The run's architecture, freshly initialised (seeded with ``config.seed``): a zoo
    model normalises inside with ``config.mean``/``std`` or the data set's; a user
    architecture takes the data as they are.

    Args:
        config: the run's settings (model name and options, seed).
        info: the data set's description.

    Returns:
        The untrained model.

    Example:
        >>> from boundary_unlearning.data import load_dataset
        >>> info = load_dataset("digits")[2]
        >>> build_model(ExperimentConfig(model="mlp"), info).head.out_features
        10
    """
    return create_model(
        config.model,
        info.num_classes,
        info.in_channels,
        info.image_size,
        info.mean if config.mean is None else config.mean,
        info.std if config.std is None else config.std,
        seed=config.seed,
        **config.model_options,
    )


def method_settings(name: str, config: ExperimentConfig) -> dict[str, Any]:
    """The hyperparameters method ``name`` runs with in this run: the run's seed (when the
    method has one) and the user's values for it, checked against the method's declarations;
    a zero step budget is refused (the report would call an unchanged model unlearned).

    Args:
        name: a registered method.
        config: the run's settings (``seed``, ``hyperparameters[name]``).

    Returns:
        The values to pass to the method (normalised).

    Raises:
        UnknownNameError: an unknown method.
        HyperparameterError: an unknown or invalid hyperparameter, or a zero step budget.

    Example:
        >>> given = {"finetune": {"lr": 1}}
        >>> method_settings("finetune", ExperimentConfig(hyperparameters=given))
        {'seed': 0, 'lr': 1.0}
        >>> given = {"finetune": {"epochs": 0}}
        >>> method_settings("finetune", ExperimentConfig(hyperparameters=given))
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        boundary_unlearning.errors.HyperparameterError: finetune: epochs=0 would return the ...
    """
    spec = get_method(name)
    given = validate_hyperparameters(name, dict(config.hyperparameters.get(name, {})))
    for key in spec.step_budgets:
        value = given.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value == 0:
            raise HyperparameterError(
                f"{name}: {key}=0 would return the model unchanged (no unlearning step); "
                f"give {key} >= 1"
            )
    seed = {"seed": config.seed} if "seed" in spec.hyperparameters else {}
    return {**seed, **given}


def check_methods(config: ExperimentConfig) -> None:
    """Before any work: every method the run names (in ``methods`` or in
    ``hyperparameters``) is registered, and its settings are valid.

    Args:
        config: the run's settings.

    Raises:
        UnknownNameError: an unknown method.
        HyperparameterError: an invalid hyperparameter.
    """
    for name in config.methods:
        method_settings(name, config)
    for name in config.hyperparameters:
        get_method(name)


def timed_unlearn(
    name: str,
    model: nn.Module,
    data: UnlearningData,
    hparams: dict[str, Any],
    *,
    progress: bool = False,
) -> tuple[nn.Module, float]:
    """Run method ``name`` and return the new model and its wall-clock seconds, measured
    between device synchronisations (so queued GPU work is counted). Used by ``run``,
    ``unlearn`` and the benchmark, so every reported time means the same thing.

    Args:
        name: a registered method.
        model: the trained classifier; never modified.
        data: the class split.
        hparams: the method's hyperparameters (:func:`method_settings`).
        progress: show progress bars.

    Returns:
        ``(new model, seconds)``.

    Example:
        >>> from boundary_unlearning import toy_problem, unlearning_stats
        >>> data, net = toy_problem()
        >>> new, seconds = timed_unlearn("finetune", net, data, {"epochs": 2})
        >>> unlearning_stats(new), type(seconds).__name__
        ({'steps': 2}, 'float')
    """
    device = model_device(model)
    synchronize(device)
    start = time.perf_counter()
    out = unlearn(name, model, data, **hparams, progress=progress)
    synchronize(device)
    return out, time.perf_counter() - start
