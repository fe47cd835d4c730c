"""Typed errors: every user mistake raises a subclass of :class:`UnlearningError`.

Each message names the problem *and* the fix in one line; the CLI prints it and exits 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DivergenceError",
    "HyperparameterError",
    "ModelError",
    "NotApplicableError",
    "OutputError",
    "UnknownNameError",
    "UnlearningError",
    "did_you_mean",
    "unknown_name",
]


class UnlearningError(Exception):
    """Base class of every error this library raises on bad input.

    Example:
        >>> from boundary_unlearning import load_dataset
        >>> try:
        ...     load_dataset("mnits")
        ... except UnlearningError as exc:  # catches every bad-input error of the library
        ...     print(type(exc).__name__)
        UnknownNameError
    """


class UnknownNameError(UnlearningError, KeyError):
    """An unknown dataset, model or method name.

    Example:
        >>> err = unknown_name("model", "cnm", ["cnn", "mlp"])
        >>> isinstance(err, KeyError), str(err)
        (True, "unknown model 'cnm' (did you mean 'cnn'?); known models: cnn, mlp")
    """

    def __str__(self) -> str:  # KeyError would quote the message
        """The message, unquoted (``KeyError`` would print its ``repr``).

        Returns:
            The first argument as a string, or ``""``.

        Example:
            >>> str(UnknownNameError("unknown model 'x'"))
            "unknown model 'x'"
        """
        return str(self.args[0]) if self.args else ""


class DataError(UnlearningError, ValueError):
    """Missing or malformed data, or a forget/retain split that cannot work.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from boundary_unlearning import class_split
        >>> ds = TensorDataset(torch.rand(4, 2), torch.tensor([0, 1, 0, 1]))
        >>> class_split(ds, ds, 5)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        boundary_unlearning.errors.DataError: forget class 5 is outside the dataset's classes ...
    """


class ModelError(UnlearningError, ValueError):
    """A model that does not fit the data or the method.

    Example:
        >>> from boundary_unlearning.models import create_model
        >>> create_model("mlp", 1)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        boundary_unlearning.errors.ModelError: num_classes=1; a classifier needs ...
    """


class HyperparameterError(UnlearningError, ValueError):
    """An unknown, mistyped or out-of-range setting: a method's hyperparameter, a recipe
    field, a seed, a fraction (each declares its range once, on its annotation:
    :mod:`boundary_unlearning.checks`).

    Example:
        >>> from boundary_unlearning import Recipe
        >>> Recipe(epochs=1, lr=-1).check("train")
        Traceback (most recent call last):
        ...
        boundary_unlearning.errors.HyperparameterError: train: lr=-1.0 must be a positive number
    """


class CheckpointError(UnlearningError, ValueError):
    """A missing, corrupt, unsafe or mismatched checkpoint.

    Example:
        >>> import tempfile
        >>> from boundary_unlearning import load_checkpoint
        >>> load_checkpoint(tempfile.mkdtemp())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        boundary_unlearning.errors.CheckpointError: ...model.json not found, so the architecture ...
    """


class ConfigError(UnlearningError, ValueError):
    """A configuration file with unknown keys or wrong types.

    Example:
        >>> from boundary_unlearning.config import ExperimentConfig
        >>> ExperimentConfig.from_dict({"epoch": 3})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        boundary_unlearning.errors.ConfigError: config: unknown key(s) 'epoch'; valid keys: ...
    """


class OutputError(UnlearningError, OSError):
    """An output location that cannot be written or would be overwritten.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from boundary_unlearning.output_dir import check_output_dir
        >>> out = Path(tempfile.mkdtemp())
        >>> _ = (out / "report.json").write_text("{}")  # an earlier run's
        >>> try:
        ...     check_output_dir(out)
        ... except OSError as exc:  # callers may catch it as an OSError
        ...     print(type(exc).__name__)
        OutputError
    """


class DivergenceError(UnlearningError, FloatingPointError):
    """The loss became NaN or infinite during training.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from boundary_unlearning.training import fit
        >>> x, y = torch.full((4, 2), float("nan")), torch.tensor([0, 1, 0, 1])
        >>> fit(nn.Linear(2, 2), (x, y), epochs=1, batch_size=4)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        boundary_unlearning.errors.DivergenceError: ...
    """


class NotApplicableError(DataError):
    """A method that cannot do this request exactly (e.g. Amnesiac unlearning asked to forget
    several classes whose recorded batches overlap without nesting). ``bunlearn run`` reports
    that method as not applicable, with the reason, and the study goes on.

    Example:
        >>> issubclass(NotApplicableError, DataError)
        True
    """


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest known name, or ``""``.

    Args:
        name: the name given.
        known: the valid names.

    Returns:
        The hint, to append to an error message.

    Example:
        >>> did_you_mean("fgms", ["fgsm", "pgd"]), did_you_mean("zzz", ["fgsm", "pgd"])
        (" (did you mean 'fgsm'?)", '')
    """
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UnknownNameError:
    """The one-line error for an unknown name: the closest match and every valid one.

    Args:
        kind: what was named (``"dataset"``, ``"model"``, ``"method"``).
        name: the name given.
        known: the valid names.

    Returns:
        The error, for the caller to raise.

    Example:
        >>> print(unknown_name("method", "ssdd", ["ssd", "scrub"]))
        unknown method 'ssdd' (did you mean 'ssd'?); known methods: scrub, ssd
    """
    known = sorted(known)
    return UnknownNameError(
        f"unknown {kind} '{name}'{did_you_mean(name, known)}; known {kind}s: {', '.join(known)}"
    )
