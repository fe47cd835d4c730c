"""Run by tests/test_distributed.py: ``torchrun --standalone --nproc-per-node 2
tests/_distributed_worker.py SCENARIO OUT [ORIGINAL]``, and imported by the test itself to
compute the single-process reference with the very same code.

Scenarios:
- ``equivalence``: one epoch of training (uneven shards, and a last batch of one sample so
  one rank's share is empty), Boundary Shrink and Boundary Expanding from ORIGINAL, the
  neighbour labels and an accuracy; every rank saves its results to OUT/rank-<r>.pt. Then
  a data set that is NaN on rank 1 only must raise DivergenceError on both ranks.
- ``methods``: every registered method (but amnesiac, which needs a training record) with
  short settings, from ORIGINAL; every rank saves to OUT/rank-<r>.pt.
- ``fail``: rank 1 raises at step 2 of a training run that rank 0 would then save to
  OUT/ckpt; the job must fail and leave no checkpoint.
- ``equivalence+fail``: both, in one job (each launch costs seconds of imports).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from boundary_unlearning import class_split, save_checkpoint
from boundary_unlearning.data import to_tensors
from boundary_unlearning.distributed import process_group, rank
from boundary_unlearning.errors import DivergenceError
from boundary_unlearning.methods import (
    boundary_expanding,
    boundary_shrink,
    get_method,
    list_methods,
    unlearn,
)
from boundary_unlearning.metrics import accuracy
from boundary_unlearning.neighbours import neighbour_search
from boundary_unlearning.training import fit
from conftest import build_tiny, make_blobs


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread, as each rank runs, for the block only: an import of this module
    by the test must not change the test process's thread count (it did, at module level,
    and every later test then computed with 1 thread while its subprocesses used 2)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def tiny_sets() -> tuple[TensorDataset, TensorDataset]:
    return make_blobs(40, seed=1), make_blobs(10, seed=2)  # as conftest's tiny_sets


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def compute(original_state: dict[str, torch.Tensor]) -> dict[str, object]:
    """Everything the equivalence test compares (the same code in one or two processes)."""
    train_set, test_set = tiny_sets()
    x, y = train_set.tensors
    results: dict[str, object] = {}
    # 160 samples: batch 15 gives shares of 8 and 7; batch 53 ends with a batch of one
    # sample, so rank 1's share of it is empty.
    for batch_size in (15, 53):
        model = build_tiny("cnn", seed=0)
        fit(model, (x, y), epochs=1, lr=0.05, momentum=0.9, weight_decay=5e-4,
            batch_size=batch_size, seed=3)  # fmt: skip
        results[f"fit{batch_size}"] = state(model)
    original = build_tiny("cnn", seed=0)
    original.load_state_dict(original_state)
    original.eval()
    data = class_split(train_set, test_set, forget_classes=[1])
    xf, yf = to_tensors(data.forget)
    nb = neighbour_search(original, xf, yf, eps=0.2)
    results["neighbour_labels"] = nb.labels.cpu()
    results["neighbour_inputs"] = nb.inputs.cpu()
    results["success_ratio"] = nb.success_ratio
    # batch 16 over the 40 forget samples: shares 8/8 and a last batch of 8 (4/4)
    shrunk = boundary_shrink(original, data, eps=0.2, lr=0.02, epochs=3, batch_size=16, seed=1)
    results["boundary_shrink"] = state(shrunk)
    expanded = boundary_expanding(original, data, lr=0.02, epochs=3, batch_size=16, seed=1)
    results["boundary_expanding"] = state(expanded)
    results["accuracy"] = accuracy(original, test_set)
    return results


def every_method(original_state: dict[str, torch.Tensor]) -> dict[str, object]:
    """Each registered method's weights (short settings), keyed by name."""
    train_set, test_set = tiny_sets()
    data = class_split(train_set, test_set, forget_classes=[1])
    results: dict[str, object] = {}
    names = [m for m in list_methods() if get_method(m).cost != "record"]
    for name, extra in [(m, {}) for m in names] + [("boundary_shrink", {"curvature_weight": 0.7})]:
        model = build_tiny("cnn", seed=0)
        model.load_state_dict(original_state)
        spec = get_method(name).hyperparameters
        hparams = {"epochs": 2} if "epochs" in spec else {}
        if name == "unsir":
            hparams.update(noise_steps=5, noise_samples=16)
        key = name + ("_curvature" if extra else "")
        results[key] = state(unlearn(name, model.eval(), data, **hparams, **extra))
    return results


def nan_on_rank_one() -> str:
    """Train on data that is NaN on rank 1 only: every rank must raise DivergenceError."""
    x, y = tiny_sets()[0].tensors
    if rank() == 1:
        x = torch.full_like(x, float("nan"))
    try:
        fit(build_tiny("cnn", seed=0), (x, y), epochs=1, lr=0.05, batch_size=32, seed=0)
    except DivergenceError as exc:
        return str(exc)
    return "no error"


class FailOnRankOne:
    def before_step(self, step: int, batch: tuple[torch.Tensor, ...]) -> None:
        if step == 2 and rank() == 1:
            raise RuntimeError("injected failure on rank 1 at step 2")

    def after_step(self, step: int, batch: tuple[torch.Tensor, ...]) -> None:
        pass


def main() -> None:
    scenario, out = sys.argv[1], Path(sys.argv[2])
    parts = scenario.split("+")
    if not set(parts) <= {"equivalence", "methods", "fail"}:
        raise SystemExit(f"unknown scenario {scenario}")
    torch.set_num_threads(1)
    with process_group("cpu"):
        if "equivalence" in parts:
            original = torch.load(sys.argv[3], weights_only=True)
            results = compute(original)
            results["divergence"] = nan_on_rank_one()
            torch.save(results, out / f"rank-{rank()}.pt")
        if "methods" in parts:
            original = torch.load(sys.argv[3], weights_only=True)
            torch.save(every_method(original), out / f"rank-{rank()}.pt")
        if "fail" in parts:
            x, y = tiny_sets()[0].tensors
            model = build_tiny("cnn", seed=0)
            fit(model, (x, y), epochs=2, lr=0.05, batch_size=16, seed=0,
                callbacks=[FailOnRankOne()])  # fmt: skip
            save_checkpoint(model, out / "ckpt", {"model": "cnn"})


if __name__ == "__main__":
    main()
