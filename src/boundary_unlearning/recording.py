"""Recording the parameter updates of training, for Amnesiac unlearning (Graves et al. 2021).

:class:`UpdateRecorder` is a :class:`~boundary_unlearning.training.StepCallback`: around every
optimiser step it takes ``delta = theta_after - theta_before`` and adds it to a running sum
for each class present in the batch. Memory is K copies of the parameters (plus one snapshot),
whatever the number of steps. ``recorder.record(model)`` freezes the sums into an
:class:`UpdateRecord`, saved beside a checkpoint as ``updates.safetensors``.

Multiple forget classes: a batch that held samples of two forget classes is in both classes'
sums, so adding the sums would subtract its update twice. The recorder therefore also counts,
for every pair of classes, the batches that held both (a K x K integer matrix).
:meth:`UpdateRecord.forget_update` adds the per-class sums only when no recorded batch held
two of the requested classes (then the sum is exact); otherwise it raises a clear error rather
than subtracting a wrong amount. With one forget class the record is always exact.

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

from ._utils import atomic_write_bytes
from .errors import CheckpointError, DataError, ModelError, UnlearningError

__all__ = [
    "RECORD_FILE",
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
    """Amnesiac unlearning was asked for but no update record exists."""


def record_path(checkpoint: str | Path) -> Path:
    """Where the update record of a checkpoint lives: ``updates.safetensors`` in a checkpoint
    folder, or ``<name>.updates.safetensors`` beside a weights file."""
    p = Path(checkpoint)
    if p.suffix in {".safetensors", ".pt", ".pth", ".bin"}:
        return p.with_name(f"{p.stem}.{RECORD_FILE}")
    return p / RECORD_FILE


def _trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.is_floating_point()]


def parameter_fingerprint(model: nn.Module) -> str:
    """A short hash of the model's parameter names and values (to match a record to the
    weights it was recorded for)."""
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
    """

    sums: dict[str, torch.Tensor]
    batches: torch.Tensor
    co_batches: torch.Tensor
    steps: int
    fingerprint: str

    @property
    def num_classes(self) -> int:
        return int(self.batches.numel())

    def forget_update(self, classes: Iterable[int]) -> dict[str, torch.Tensor]:
        """The summed update of every batch that held any of ``classes`` (each batch once)."""
        wanted = sorted({int(c) for c in classes})
        bad = [c for c in wanted if not 0 <= c < self.num_classes]
        if bad:
            raise DataError(
                f"the update record covers classes 0..{self.num_classes - 1}, not {bad}; use "
                "the record of a model trained on this data set"
            )
        for i, a in enumerate(wanted):
            for b in wanted[i + 1 :]:
                if int(self.co_batches[a, b]) > 0:
                    raise DataError(
                        f"{int(self.co_batches[a, b])} recorded batches held both class {a} "
                        f"and class {b}, so their updates cannot be subtracted exactly once "
                        "from per-class sums; forget these classes one at a time"
                    )
        index = torch.tensor(wanted, dtype=torch.long)
        return {name: s[index].sum(dim=0) for name, s in self.sums.items()}

    def check_matches(self, model: nn.Module) -> None:
        """Raise unless the record was made for exactly ``model``'s parameters."""
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
        self.batches = torch.zeros(num_classes, dtype=torch.long, device=device)
        self.co_batches = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
        self.steps = 0

    def before_step(self, step: int, batch: tuple[torch.Tensor, ...]) -> None:
        self._before = [p.detach().clone() for _, p in self._params]

    def after_step(self, step: int, batch: tuple[torch.Tensor, ...]) -> None:
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
        self._before = []
        self.steps += 1

    def record(self, model: nn.Module) -> UpdateRecord:
        """The record so far, tied to ``model``'s current (final) weights."""
        return UpdateRecord(
            sums={n: s.detach().clone() for n, s in self.sums.items()},
            batches=self.batches.detach().cpu().clone(),
            co_batches=self.co_batches.detach().cpu().clone(),
            steps=self.steps,
            fingerprint=parameter_fingerprint(model),
        )


def save_record(record: UpdateRecord, path: str | Path) -> Path:
    """Write ``record`` atomically as safetensors; ``path`` is the record file (its name
    ending in ``updates.safetensors``) or the checkpoint it belongs to."""
    from safetensors.torch import save

    target = Path(path)
    if not target.name.endswith(RECORD_FILE):  # a checkpoint folder or weights file
        target = record_path(target)
    tensors = {f"sum.{n}": s.detach().cpu().contiguous() for n, s in record.sums.items()}
    tensors["batches"] = record.batches.cpu().contiguous()
    tensors["co_batches"] = record.co_batches.cpu().contiguous()
    meta = {
        "format": RECORD_FORMAT,
        "steps": str(record.steps),
        "fingerprint": record.fingerprint,
        "params": json.dumps(list(record.sums)),
    }
    atomic_write_bytes(target, save(tensors, metadata=meta))
    return target


def load_record(path: str | Path, device: torch.device | str = "cpu") -> UpdateRecord:
    """Read a record written by :func:`save_record` (``path``: the file or the checkpoint)."""
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
    except UnlearningError:
        raise
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(
            f"{target} is not a readable update record ({str(exc).splitlines()[0][:120]}); "
            "delete it and train again with --record-updates"
        ) from None
    return UpdateRecord(sums, batches, co_batches, int(meta["steps"]), meta["fingerprint"])
