"""Amnesiac unlearning (Graves et al., AAAI 2021): subtract the recorded updates of the
batches that held the forget class, then repair briefly on D_r."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .._utils import model_device
from ..checks import AtLeastOne, NonNegative, Positive, Seed, Whole
from ..data.split import UnlearningData
from ..errors import NotApplicableError
from ..recipe import BNMode, Recipe, RunOptions
from ..recording import RecordMissingError, UpdateRecord, load_record
from ..training import cross_entropy_loss, fit
from ._common import require_retain, working_copy
from ._registry import register_method
from ._stats import set_unlearning_stats

__all__ = ["amnesiac"]


@register_method("amnesiac", cost="record")
def amnesiac(
    model: nn.Module,
    data: UnlearningData,
    *,
    record: UpdateRecord | str | None = None,
    repair_epochs: Whole = 1,
    lr: Positive = 0.01,
    momentum: NonNegative = 0.9,
    weight_decay: NonNegative = 5e-4,
    batch_size: AtLeastOne = 64,
    seed: Seed = 0,
    bn: BNMode = "train",
    options: RunOptions = RunOptions(),
) -> nn.Module:
    """Amnesiac unlearning: subtract from the weights the sum of the parameter updates of
    every training batch that held a forget-class sample, then repair on D_r.

    Graves, Nagisetty and Ganesh, "Amnesiac Machine Learning", AAAI 2021; a baseline of
    Chen et al., "Boundary Unlearning", CVPR 2023. Needs the update record written while the
    original was trained (``bunlearn train --record-updates``; see
    :mod:`boundary_unlearning.recording`). When every batch held the forget class (usual with
    random batches over few classes) this reverts the model to its initialisation, and the
    repair is then a short retraining.

    Records ``subtracted_steps`` (see :func:`unlearning_stats`).

    Args:
        model: the original classifier, the one the record was made for; never modified.
        data: the class split; ``data.retain`` is repaired on.
        record: an :class:`~boundary_unlearning.recording.UpdateRecord`, or the path of the
            record file or of the checkpoint it was saved beside.
        repair_epochs: epochs of SGD on D_r afterwards (0: subtraction only).
        lr: the repair's SGD learning rate (the original's recipe).
        momentum: the repair's SGD momentum.
        weight_decay: the repair's SGD weight decay.
        batch_size: the repair's batch size.
        seed: repair batch order.
        bn: "train" or "freeze" BatchNorm statistics during repair.
        options: progress bar and speed options.

    Returns:
        A new model in eval mode.

    Raises:
        RecordMissingError: no record given, or no record file where one was named.
        CheckpointError: an unreadable record file.
        ModelError: the record was made for another architecture or other weights.
        DataError: a class outside the record.
        NotApplicableError: forget classes whose recorded batches overlap without nesting
            (see :mod:`~boundary_unlearning.recording`), or a model that already forgot
            other classes (its record would subtract their shared batches twice).

    Example:
        >>> from boundary_unlearning import toy_problem, unlearning_stats
        >>> data, net = toy_problem()
        >>> import torch  # the original's training set, as two tensors
        >>> x, y = (torch.cat(t) for t in zip(data.retain.tensors, data.forget.tensors))
        >>> from boundary_unlearning.recording import UpdateRecorder
        >>> from boundary_unlearning.training import fit
        >>> recorder = UpdateRecorder(net, num_classes=4)
        >>> _ = fit(net, (x, y), epochs=1, lr=0.01, batch_size=8, callbacks=[recorder])
        >>> from boundary_unlearning import unlearn
        >>> new = unlearn("amnesiac", net, data, record=recorder.record(net), repair_epochs=0)
        >>> stats = unlearning_stats(new)  # 5 batches of 8: those that held class 1 are undone
        >>> stats["recorded_steps"], 1 <= stats["subtracted_steps"] <= 5
        (5, True)
    """
    if data.forgotten_before:  # its record's batches held those classes too
        raise NotApplicableError(
            f"amnesiac: this model already forgot class(es) {list(data.forgotten_before)}; "
            "subtracting recorded batches again would take away the batches they shared a "
            "second time; run amnesiac on the original with every class to forget at once"
        )
    if record is None:
        raise RecordMissingError(
            "amnesiac needs the parameter updates recorded while training the original; "
            "train it with 'bunlearn train --record-updates' (or record_updates: true) and pass "
            "record=<checkpoint or updates.safetensors>"
        )
    if isinstance(record, (str, Path)):
        record = load_record(record, device=model_device(model))
    if not isinstance(record, UpdateRecord):
        raise RecordMissingError(
            f"record={type(record).__name__} is not an update record; pass the path of "
            "updates.safetensors or an UpdateRecord"
        )
    record.check_matches(model)
    update = record.forget_update(data.forget_classes)
    unlearned = working_copy(model)
    with torch.no_grad():
        for name, param in unlearned.named_parameters():
            if name in update:
                param.sub_(update[name].to(param.device, param.dtype))
    if repair_epochs > 0:
        require_retain(data, "amnesiac")
        repair = Recipe(epochs=repair_epochs, lr=lr, momentum=momentum, bn=bn,
                        weight_decay=weight_decay, batch_size=batch_size, seed=seed)  # fmt: skip
        fit(unlearned, data.retain, cross_entropy_loss, recipe=repair, options=options,
            desc="amnesiac repair")  # fmt: skip
    unlearned.eval()
    steps = record.steps_held(data.forget_classes)
    set_unlearning_stats(unlearned, {"subtracted_steps": steps, "recorded_steps": record.steps})
    return unlearned
