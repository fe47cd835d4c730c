"""Recording the parameter updates of training, for Amnesiac unlearning (Graves et al. 2021).

:class:`UpdateRecorder` is a :class:`~boundary_unlearning.training.StepCallback`: around every
optimiser step it takes ``delta = theta_after - theta_before`` and adds it to a running sum
for each class present in the batch. Memory is K copies of the parameters (plus one snapshot),
whatever the number of steps. ``recorder.record(model)`` freezes the sums into an
:class:`UpdateRecord`, saved beside a checkpoint as ``updates.safetensors``.

Multiple forget classes: a batch that held samples of two forget classes is in both classes'
sums, so adding the sums would subtract its update twice. The recorder therefore also counts,
for every pair of classes, the batches that held both (a K x K integer matrix), which tells
how the classes' sets of batches relate: nested (every batch that held ``a`` also held ``b``:
``co_batches[a, b] == batches[a]``) or disjoint (``co_batches[a, b] == 0``).
:meth:`UpdateRecord.forget_update` adds the sums of the requested classes whose batches are
not contained in another requested class's; when those are pairwise disjoint the result is
exactly the summed update of every batch that held any requested class, each once (the usual
case with random batches over few classes is that every batch held every class: all sets are
equal and one class's sum is the whole update). Sets that overlap without nesting cannot be
separated from per-class sums, unless every recorded batch held at least one of the requested
classes (no batch missed a pair of them, which the counts also tell): then the update is that
of every step, which the recorder sums too (one more copy of the parameters). Otherwise:
:class:`~boundary_unlearning.errors.NotApplicableError`, rather than subtracting a wrong
amount. With one forget class the record is always exact.

What "the update of a batch" means: the change the optimiser made at that step, which with
momentum or weight decay also carries a share of earlier batches' gradients; this is the
quantity Graves et al. record. Only floating-point parameters are recorded; BatchNorm running
statistics are not (Amnesiac's repair step on D_r re-estimates them).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ._record_sets import every_step_held_one, outermost
from ._utils import atomic_write_bytes
from .errors import CheckpointError, DataError, ModelError, UnlearningError

__all__ = [
    "RECORD_FILE",
    "RecordMissingError",
    "UpdateRecord",
    "UpdateRecorder",
    "load_record",
    "parameter_fingerprint",
    "record_path",
    "save_record",
]

RECORD_FILE = "updates.safetensors"
RECORD_FORMAT = "boundary-unlearning-updates/1"


class RecordMissingError(UnlearningError, FileNotFoundError):
    """Amnesiac unlearning was asked for but no update record exists.

    Example:
        >>> import tempfile
        >>> load_record(tempfile.mkdtemp())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        boundary_unlearning.recording.RecordMissingError: no update record at ...
    """


def record_path(checkpoint: str | Path) -> Path:
    """Where the update record of a checkpoint lives: ``updates.safetensors`` in a checkpoint
    folder, or ``<name>.updates.safetensors`` beside a weights file.

    Args:
        checkpoint: the checkpoint's folder or weights file.

    Returns:
        The record's path.

    Example:
        >>> record_path("run").as_posix(), record_path("run/w.safetensors").as_posix()
        ('run/updates.safetensors', 'run/w.updates.safetensors')
    """
    p = Path(checkpoint)
    if p.suffix in {".safetensors", ".pt", ".pth", ".bin"}:
        return p.with_name(f"{p.stem}.{RECORD_FILE}")
    return p / RECORD_FILE


def _trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.is_floating_point()]


def parameter_fingerprint(model: nn.Module) -> str:
    """A short hash of the model's parameter names and values (to match a record to the
    weights it was recorded for).

    Args:
        model: the model.

    Returns:
        16 hex digits of a SHA-256 over the floating-point parameters.

    Example:
        >>> model = nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     _ = model.weight.zero_()
        ...     _ = model.bias.zero_()
        >>> parameter_fingerprint(model)
        'b15d7b7843552de7'
    """
    digest = hashlib.sha256()
    for name, param in _trainable(model):
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class UpdateRecord:
    """Per-class sums of the updates of the batches that held each class.

    ``sums[name]`` has shape ``(K, *param.shape)``; ``batches[c]`` counts the steps whose
    batch held class ``c``; ``co_batches[a, b]`` the steps whose batch held both.
    ``fingerprint`` identifies the final weights the record belongs to.

    Args:
        sums: parameter name -> ``(K, *param.shape)`` summed updates.
        batches: ``(K,)`` steps whose batch held each class.
        co_batches: ``(K, K)`` steps whose batch held both classes.
        steps: all recorded steps.
        fingerprint: :func:`parameter_fingerprint` of the final weights.
        total: parameter name -> the summed update of every step (``None`` in a record
            written before it was kept).

    Example:
        >>> from boundary_unlearning.training import fit
        >>> net = nn.Linear(2, 3)
        >>> recorder = UpdateRecorder(net, num_classes=3)
        >>> x, y = torch.rand(8, 2), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
        >>> _ = fit(net, (x, y), epochs=1, batch_size=8, callbacks=[recorder])  # one step
        >>> record = recorder.record(net)
        >>> record.steps, record.batches.tolist(), record.co_batches[0].tolist()
        (1, [1, 1, 0], [1, 1, 0])
    """

    sums: dict[str, torch.Tensor]
    batches: torch.Tensor
    co_batches: torch.Tensor
    steps: int
    fingerprint: str
    total: dict[str, torch.Tensor] | None = None

    @property
    def num_classes(self) -> int:
        """K, the number of classes the record covers.

        Example:
            >>> from boundary_unlearning.training import fit
            >>> net = nn.Linear(2, 3)
            >>> recorder = UpdateRecorder(net, num_classes=3)
            >>> x, y = torch.rand(8, 2), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
            >>> _ = fit(net, (x, y), epochs=1, batch_size=8, callbacks=[recorder])  # one step
            >>> recorder.record(net).num_classes
            3
        """
        return int(self.batches.numel())

    def forget_update(self, classes: Iterable[int]) -> dict[str, torch.Tensor]:
        """The summed update of every batch that held any of ``classes`` (each batch once).

        Args:
            classes: the forget classes.

        Returns:
            Parameter name -> the update to subtract.

        Raises:
            DataError: a class outside the record.
            NotApplicableError: two classes whose batches overlap without one class's
                containing the other's (the sum would not be exact).

        Example:
            >>> from boundary_unlearning.training import fit
            >>> net = nn.Linear(2, 3)
            >>> recorder = UpdateRecorder(net, num_classes=3)
            >>> x, y = torch.rand(8, 2), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
            >>> _ = fit(net, (x, y), epochs=1, batch_size=8, callbacks=[recorder])  # one step
            >>> record = recorder.record(net)
            >>> {name: tuple(u.shape) for name, u in record.forget_update([0]).items()}
            {'weight': (3, 2), 'bias': (3,)}
            >>> both = record.forget_update([0, 1])  # the one batch held both: counted once
            >>> torch.equal(both["bias"], record.sums["bias"][0])
            True
            >>> recorder = UpdateRecorder(net, num_classes=3)
            >>> for held in ([0, 1], [1, 2], [0, 2], [2]):  # 0 and 1 overlap, neither nested
            ...     recorder.before_step(0, (x[:2], torch.tensor(held)))
            ...     recorder.after_step(0, (x[:2], torch.tensor(held)))
            >>> recorder.record(net).forget_update([0, 1])  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            boundary_unlearning.errors.NotApplicableError: 1 recorded batches held both class 0 ...
        """
        wanted = sorted({int(c) for c in classes})
        bad = [c for c in wanted if not 0 <= c < self.num_classes]
        if bad:
            raise DataError(
                f"the update record covers classes 0..{self.num_classes - 1}, not {bad}; use "
                "the record of a model trained on this data set"
            )
        if self.total is not None and every_step_held_one(self, wanted):
            return {name: t.clone() for name, t in self.total.items()}
        outer = outermost(self, wanted)
        index = torch.tensor(outer, dtype=torch.long)
        return {name: s[index].sum(dim=0) for name, s in self.sums.items()}

    def steps_held(self, classes: Iterable[int]) -> int:
        """How many recorded steps :meth:`forget_update` subtracts for ``classes``: those
        whose batch held any of them.

        Args:
            classes: the forget classes (checked by :meth:`forget_update`).

        Returns:
            The number of steps.
        """
        wanted = sorted({int(c) for c in classes})
        if self.total is not None and every_step_held_one(self, wanted):
            return self.steps
        return sum(int(self.batches[c]) for c in outermost(self, wanted))

    def check_matches(self, model: nn.Module) -> None:
        """Raise unless the record was made for exactly ``model``'s parameters.

        Args:
            model: the model to unlearn.

        Raises:
            ModelError: another architecture, or other weights.

        Example:
            >>> from boundary_unlearning.training import fit
            >>> net = nn.Linear(2, 3)
            >>> recorder = UpdateRecorder(net, num_classes=3)
            >>> x, y = torch.rand(8, 2), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
            >>> _ = fit(net, (x, y), epochs=1, batch_size=8, callbacks=[recorder])  # one step
            >>> record = recorder.record(net)
            >>> record.check_matches(net)
            >>> record.check_matches(nn.Linear(2, 3))  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            boundary_unlearning.errors.ModelError: the update record belongs to other weights ...
        """
        params = dict(_trainable(model))
        if params.keys() != self.sums.keys() or any(
            tuple(self.sums[n].shape[1:]) != tuple(p.shape) for n, p in params.items()
        ):
            raise ModelError(
                "the update record was made for another architecture; record the updates "
                "while training this model (bunlearn train --record-updates)"
            )
        if parameter_fingerprint(model) != self.fingerprint:
            raise ModelError(
                "the update record belongs to other weights than this model's (it was "
                "recorded while training another checkpoint); use the record saved beside it"
            )


class UpdateRecorder:
    """A :class:`~boundary_unlearning.training.StepCallback` that sums each step's parameter
    update into the running sum of every class present in the step's batch ``(x, y, ...)``.

    Pass it to :func:`~boundary_unlearning.training.fit` or ``train(callbacks=[...])`` of the
    model it was built for, then call :meth:`record`. Adds no host synchronisation per step.

    Args:
        model: the model that will be trained.
        num_classes: K.

    Raises:
        DataError: ``num_classes < 1``.

    Example:
        >>> from boundary_unlearning.training import fit
        >>> net = nn.Linear(2, 3)
        >>> recorder = UpdateRecorder(net, num_classes=3)
        >>> x, y = torch.rand(8, 2), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
        >>> _ = fit(net, (x, y), epochs=1, batch_size=8, callbacks=[recorder])  # one step
        >>> recorder.steps, recorder.batches.tolist()
        (1, [1, 1, 0])
    """

    def __init__(self, model: nn.Module, num_classes: int) -> None:
        if num_classes < 1:
            raise DataError(f"num_classes={num_classes} must be positive")
        self.num_classes = num_classes
        self._params = _trainable(model)
        self._before: list[torch.Tensor] = []
        self.sums = {
            name: torch.zeros((num_classes, *p.shape), dtype=p.dtype, device=p.device)
            for name, p in self._params
        }
        device = self._params[0][1].device if self._params else torch.device("cpu")
        self.total = {name: torch.zeros_like(p, memory_format=torch.contiguous_format)
                      for name, p in self._params}  # fmt: skip
        self.batches = torch.zeros(num_classes, dtype=torch.long, device=device)
        self.co_batches = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
        self.steps = 0

    def before_step(self, step: int, batch: tuple[torch.Tensor, ...]) -> None:
        """Snapshot the parameters before the step.

        Args:
            step: the step's index.
            batch: the step's batch (unused).

        Example:
            >>> recorder = UpdateRecorder(nn.Linear(1, 2), num_classes=2)
            >>> batch = (torch.zeros(1, 1), torch.tensor([0]))
            >>> recorder.before_step(0, batch)
            >>> recorder.after_step(0, batch)  # nothing changed: a zero update, one step
            >>> recorder.steps, float(recorder.sums["weight"].abs().sum())
            (1, 0.0)
        """
        self._before = [p.detach().clone() for _, p in self._params]

    def after_step(self, step: int, batch: tuple[torch.Tensor, ...]) -> None:
        """Add the step's update to the sum of every class in ``batch[1]``.

        Args:
            step: the step's index.
            batch: the step's batch ``(x, y, ...)``.

        Example:
            >>> model = nn.Linear(1, 2)
            >>> recorder = UpdateRecorder(model, num_classes=2)
            >>> batch = (torch.zeros(1, 1), torch.tensor([1]))
            >>> recorder.before_step(0, batch)
            >>> with torch.no_grad():
            ...     _ = model.bias.add_(1.0)  # the "optimiser step"
            >>> recorder.after_step(0, batch)
            >>> recorder.sums["bias"].tolist(), recorder.batches.tolist()
            ([[0.0, 0.0], [1.0, 1.0]], [0, 1])
        """
        labels = batch[1].to(self.batches.device)
        present = torch.zeros(self.num_classes, dtype=torch.bool, device=labels.device)
        present.index_fill_(0, labels, True)  # no host synchronisation, unlike bincount
        mask = present.to(torch.long)
        self.batches += mask
        self.co_batches += mask[:, None] * mask[None, :]
        for (name, param), before in zip(self._params, self._before, strict=True):
            delta = param.detach() - before
            weights = present.to(delta.dtype).view(-1, *([1] * delta.dim()))
            self.sums[name].add_(weights * delta.unsqueeze(0))
            self.total[name].add_(delta)
        self._before = []
        self.steps += 1

    def record(self, model: nn.Module) -> UpdateRecord:
        """The record so far, tied to ``model``'s current (final) weights.

        Args:
            model: the trained model.

        Returns:
            An :class:`UpdateRecord` (copies of the running sums).

        Example:
            >>> from boundary_unlearning.training import fit
            >>> net = nn.Linear(2, 3)
            >>> recorder = UpdateRecorder(net, num_classes=3)
            >>> x, y = torch.rand(8, 2), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
            >>> _ = fit(net, (x, y), epochs=1, batch_size=8, callbacks=[recorder])  # one step
            >>> recorder.record(net).fingerprint == parameter_fingerprint(net)
            True
        """
        return UpdateRecord(
            sums={n: s.detach().clone() for n, s in self.sums.items()},
            total={n: t.detach().clone() for n, t in self.total.items()},
            batches=self.batches.detach().cpu().clone(),
            co_batches=self.co_batches.detach().cpu().clone(),
            steps=self.steps,
            fingerprint=parameter_fingerprint(model),
        )


def save_record(record: UpdateRecord, path: str | Path) -> Path:
    """Write ``record`` atomically as safetensors; ``path`` is the record file (its name
    ending in ``updates.safetensors``) or the checkpoint it belongs to.

    Args:
        record: the record.
        path: the record file, or the checkpoint's folder or weights file.

    Returns:
        The file written.

    Raises:
        OSError: it cannot be written.

    Example:
        >>> import tempfile
        >>> from boundary_unlearning.training import fit
        >>> net = nn.Linear(2, 3)
        >>> recorder = UpdateRecorder(net, num_classes=3)
        >>> x, y = torch.rand(8, 2), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
        >>> _ = fit(net, (x, y), epochs=1, batch_size=8, callbacks=[recorder])  # one step
        >>> folder = Path(tempfile.mkdtemp())
        >>> save_record(recorder.record(net), folder).name
        'updates.safetensors'
    """
    from safetensors.torch import save

    target = Path(path)
    if not target.name.endswith(RECORD_FILE):  # a checkpoint folder or weights file
        target = record_path(target)
    tensors = {f"sum.{n}": s.detach().cpu().contiguous() for n, s in record.sums.items()}
    tensors["batches"] = record.batches.cpu().contiguous()
    tensors["co_batches"] = record.co_batches.cpu().contiguous()
    for n, t in (record.total or {}).items():
        tensors[f"total.{n}"] = t.detach().cpu().contiguous()
    meta = {
        "format": RECORD_FORMAT,
        "steps": str(record.steps),
        "fingerprint": record.fingerprint,
        "params": json.dumps(list(record.sums)),
    }
    atomic_write_bytes(target, save(tensors, metadata=meta))
    return target


def load_record(path: str | Path, device: torch.device | str = "cpu") -> UpdateRecord:
    """Read a record written by :func:`save_record` (``path``: the file or the checkpoint).

    Args:
        path: the record file, or the checkpoint's folder or weights file.
        device: where the sums are loaded.

    Returns:
        The :class:`UpdateRecord`.

    Raises:
        RecordMissingError: there is no record.
        CheckpointError: the file is not a readable update record.

    Example:
        >>> import tempfile
        >>> from boundary_unlearning.training import fit
        >>> net = nn.Linear(2, 3)
        >>> recorder = UpdateRecorder(net, num_classes=3)
        >>> x, y = torch.rand(8, 2), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
        >>> _ = fit(net, (x, y), epochs=1, batch_size=8, callbacks=[recorder])  # one step
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = save_record(recorder.record(net), folder)
        >>> load_record(folder).steps
        1
    """
    from safetensors import safe_open

    target = Path(path)
    if not target.name.endswith(RECORD_FILE):  # a checkpoint folder or weights file
        target = record_path(target)
    if not target.is_file():
        raise RecordMissingError(
            f"no update record at {target}; amnesiac needs the original trained with "
            "'bunlearn train --record-updates' (or record_updates: true in the run config)"
        )
    try:
        with safe_open(str(target), framework="pt", device=str(device)) as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != RECORD_FORMAT:
                raise CheckpointError(f"{target} is not an update record; delete it and retrain")
            names = json.loads(meta["params"])
            sums = {n: fh.get_tensor(f"sum.{n}") for n in names}
            batches = fh.get_tensor("batches").cpu()
            co_batches = fh.get_tensor("co_batches").cpu()
            keys = set(fh.keys())
            total = ({n: fh.get_tensor(f"total.{n}") for n in names}
                     if all(f"total.{n}" in keys for n in names) else None)  # fmt: skip
    except UnlearningError:
        raise
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(
            f"{target} is not a readable update record ({str(exc).splitlines()[0][:120]}); "
            "delete it and train again with --record-updates"
        ) from None
    return UpdateRecord(
        sums, batches, co_batches, int(meta["steps"]), meta["fingerprint"], total=total
    )
