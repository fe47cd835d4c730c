"""Benchmark: how much faster than retraining is each unlearning method, at what quality,
and how close do Boundary Shrink / Expanding run to the least compute they need?

Fashion-MNIST, model ``cnn``, forget one class. The original model is trained once (with its
parameter updates recorded, for Amnesiac) and cached; retraining from scratch on D_r with the
original's recipe is timed in the same process as every registered method, after a warm-up.

    python benchmarks/bench_unlearning.py --quick --json out.json

``--quick`` uses a class-balanced subset (500 training and 200 test images per class) so the
whole run fits in about five minutes on two CPU cores. See docs/performance.md.

Reported per method: seconds, speed-up over retraining, accuracy on D_f (the whole forgotten
class), D_tf and D_tr, the depth of the forgetting (relearn steps, the few-shot feature probe
on D_tf, and ``depth``: the smaller share of the original-to-retrained gap closed on the two;
``boundary_unlearning.metrics``; ``--no-depth`` skips them), and peak memory: on CPU the
growth of the process's peak resident set (VmHWM, reset before each method through
/proc/self/clear_refs; ru_maxrss deltas where that is not allowed), on CUDA
``torch.cuda.max_memory_allocated`` above what was allocated before.

Also measured, within the same run:
- ``floor_ratio``: a method's wall time (library defaults) over the time of a minimal hand
  loop on pre-made tensors doing only the tensor work the method cannot avoid for the steps
  it took (BS: one forward+backward over D_f for the FGSM step, one forward for the
  neighbour labels, then that many SGD steps of the layers it trains at the same batch size;
  BE: the steps alone). What the stopping rule and the bookkeeping add is above the floor.
- ``authors_loop_ratio``: the authors' loop (neighbour labels recomputed by FGSM on every
  batch at every step) re-enacted through the same ``fit`` and seed, over our BS with
  ``preset="paper"`` (the same loop with the labels computed once); the labels it computes
  are checked against ours and the resulting D_f accuracy must agree.

Boundary Shrink / Expanding run with the library's defaults (no per-data-set settings:
``depth="features"``); rows "(depth=outputs)" run the final layer only (``depth="outputs"``),
and the floors are theirs; rows "(paper preset)" run ``preset="paper"``. The row
``retrain-short`` retrains from scratch for a tenth of the epochs: the cheap-and-deep
reference the Boundary methods must beat on time and D_tr.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from boundary_unlearning._utils import synchronize
from boundary_unlearning.cache import default_cache_dir
from boundary_unlearning.checkpoint import (
    config_hash,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from boundary_unlearning.data import UnlearningData, class_split, load_dataset, to_tensors
from boundary_unlearning.methods import get_method, list_methods, unlearning_stats
from boundary_unlearning.methods._common import find_head, replace_module
from boundary_unlearning.methods.boundary_expanding import widen_head
from boundary_unlearning.metrics import depth_evidence, depth_shares, evaluate
from boundary_unlearning.models import create_model
from boundary_unlearning.neighbours import neighbour_search
from boundary_unlearning.pipeline import timed_unlearn
from boundary_unlearning.training import Batch, fit, train

# The original's (and retraining's) recipe: SGD, lr 0.01, momentum 0.9, weight decay 5e-4,
# batch 64 (the paper's), 20 epochs (Fashion-MNIST's cnn is converged by then: the loss
# curve is flat and test accuracy no longer improves).
RECIPE: dict[str, Any] = {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64}
EPOCHS = 20
QUICK_PER_CLASS = (500, 200)  # training, test images per class in --quick

PAPER_ROWS = ("boundary_shrink", "boundary_expanding")  # also run with preset="paper"
OUTPUTS = {"depth": "outputs"}  # the final layer only: the floors' rows
SHORT = "retrain-short"


@dataclass
class BenchConfig:
    quick: bool = False
    forget_class: int = 0
    data_root: str | None = None
    device: str = "auto"
    cache_dir: str | None = None
    epochs: int | None = None  # None: EPOCHS
    repeats: int = 3
    methods: list[str] | None = None  # None: every registered method
    seed: int = 0
    paper_defaults: bool = True
    speed: dict[str, bool] = field(default_factory=dict)  # extra BS/BE rows with these
    depth: bool = True  # relearn steps, feature probe and depth shares for every row

    @property
    def recipe_epochs(self) -> int:
        return EPOCHS if self.epochs is None else self.epochs


@dataclass
class Row:
    name: str
    method: str
    cost: str
    seconds: float | None = None
    runs: list[float] = field(default_factory=list)
    accuracy: dict[str, float] = field(default_factory=dict)
    depth: dict[str, Any] = field(default_factory=dict)
    peak_mb: float | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    note: str = ""


# --------------------------------------------------------------------- data and original
def balanced_subset(dataset: TensorDataset, per_class: int) -> TensorDataset:
    """The first ``per_class`` images of every class (deterministic)."""
    x, y = to_tensors(dataset)
    idx = torch.cat([torch.nonzero(y == c).flatten()[:per_class] for c in torch.unique(y)])
    idx = idx.sort().values
    return TensorDataset(x[idx], y[idx])


def load_data(
    config: BenchConfig,
) -> tuple[TensorDataset, TensorDataset, UnlearningData, Any]:
    train_set, test_set, info = load_dataset("fashion-mnist", config.data_root)
    if config.quick:
        train_set = balanced_subset(train_set, QUICK_PER_CLASS[0])
        test_set = balanced_subset(test_set, QUICK_PER_CLASS[1])
    data = class_split(
        train_set, test_set, [config.forget_class], seed=config.seed, num_classes=info.num_classes
    )
    return train_set, test_set, data, info


def cache_root(config: BenchConfig) -> Path:
    return Path(config.cache_dir) if config.cache_dir else default_cache_dir()


def original_model(
    config: BenchConfig, train_set: TensorDataset, info: Any, device: torch.device
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """The original model and its update record, trained once and cached (checkpoint +
    ``updates.safetensors`` beside it, the library's formats)."""
    from boundary_unlearning.recording import UpdateRecorder, load_record, save_record

    meta: dict[str, Any] = {
        "kind": "bench-original",
        "dataset": "fashion-mnist",
        "model": "cnn",
        "model_options": {},
        "num_classes": info.num_classes,
        "in_channels": info.in_channels,
        "image_size": info.image_size,
        "classes": list(info.classes),
        "mean": list(info.mean),
        "std": list(info.std),
        "train_size": len(train_set),
        "quick": config.quick,
        "hyperparameters": {**RECIPE, "epochs": config.recipe_epochs, "seed": config.seed},
    }
    key = config_hash(meta)
    folder = cache_root(config) / "bench-originals" / key
    existing = read_metadata(folder) if (folder / "model.json").is_file() else None
    if existing is not None and existing.get("cache_key") == key:
        with contextlib.suppress(Exception):
            model, loaded = load_checkpoint(folder)
            model = model.to(device)
            return model, load_record(folder, device=device), loaded
    model = create_model(
        "cnn", info.num_classes, info.in_channels, info.image_size, info.mean, info.std,
        seed=config.seed,
    ).to(device)  # fmt: skip
    recorder = UpdateRecorder(model, info.num_classes)
    synchronize(device)
    start = time.perf_counter()
    train(
        model, train_set, epochs=config.recipe_epochs, **RECIPE, seed=config.seed,
        callbacks=[recorder], desc="original",
    )  # fmt: skip
    synchronize(device)
    meta = {**meta, "cache_key": key, "train_seconds": time.perf_counter() - start}
    save_checkpoint(model, folder, meta)
    save_record(recorder.record(model), folder)
    return model, load_record(folder, device=device), meta


# --------------------------------------------------------------------- timing and memory
def _vm_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory of a block above its start, in MB (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb: float | None = None
        self.kind = ""

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            self.kind = "CUDA max_memory_allocated"
        elif _reset_peak_rss() and _vm_kb("VmRSS") is not None:
            self._start = _vm_kb("VmRSS") or 0
            self.kind = "peak RSS (VmHWM)"
        else:
            self._start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.kind = "ru_maxrss"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) - self._start
            self.peak_mb = peak / 2**20
        elif self.kind.startswith("peak RSS"):
            self.peak_mb = ((_vm_kb("VmHWM") or 0) - self._start) / 1024
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._start
            self.peak_mb = peak / 1024


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


# --------------------------------------------------------------------- floors
def _batches(n: int, batch_size: int, epochs: int, seed: int, device: torch.device) -> list[Any]:
    """The batch index tensors of ``epochs`` seeded permutations, made before timing."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=g).to(device)
        out += [order[i : i + batch_size] for i in range(0, n, batch_size)]
    return out


def _steps_batches(n: int, hp: dict[str, Any], steps: int, device: torch.device) -> list[Any]:
    epochs = -(-steps * hp["batch_size"] // n)
    return _batches(n, hp["batch_size"], max(epochs, 1), hp["seed"], device)[:steps]


def _sgd_steps(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batches: list[Any],
    lr: float,
    momentum: float,
    head_outputs: int | None = None,
) -> None:
    """SGD steps on ``batches``; with ``head_outputs`` only the final linear layer with that
    many outputs trains (the library's ``layers="head"``: the backward pass stops there)."""
    params = list(model.parameters())
    if head_outputs is not None:
        _, head = find_head(model, head_outputs)
        for p in params:
            p.requires_grad_(False)
        params = list(head.parameters())
        for p in params:
            p.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    model.eval()  # BatchNorm frozen, as the defaults' bn="freeze"
    for idx in batches:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()  # type: ignore[no-untyped-call]
        opt.step()


def shrink_floor(
    original: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    k: int,
    hp: dict[str, Any],
    device: torch.device,
    steps: int,
) -> float:
    """Seconds of the bare tensor work of Boundary Shrink for ``steps`` steps on a
    ``k``-class model (see the module docstring)."""
    frozen = copy.deepcopy(original).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    student = copy.deepcopy(original)
    x, y = x.to(device), y.to(device)
    batches = _steps_batches(len(x), hp, steps, device)
    eps, chunk = hp["eps"], (128 if device.type == "cpu" else 1024)  # as neighbour_search

    def work() -> None:
        labels = []
        for i in range(0, len(x), chunk):
            xb = x[i : i + chunk].clone().requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(frozen(xb), y[i : i + chunk]), xb)
            with torch.inference_mode():
                labels.append(frozen((xb.detach() + eps * g.sign()).clamp_(0, 1)).argmax(1))
        _sgd_steps(
            student, x, torch.cat(labels), batches, hp["lr"], hp["momentum"],
            head_outputs=k if hp["layers"] == "head" else None,
        )  # fmt: skip

    return timed(work, device)[1]


def expand_floor(
    original: nn.Module,
    x: torch.Tensor,
    k: int,
    hp: dict[str, Any],
    device: torch.device,
    steps: int,
) -> float:
    """Seconds of the bare tensor work of Boundary Expanding: ``steps`` SGD steps over D_f
    on the widened network (of the layers it trains)."""
    student = copy.deepcopy(original)
    name, head = find_head(student, k)
    replace_module(student, name, widen_head(head, torch.Generator().manual_seed(0)))
    x = x.to(device)
    shadow = torch.full((len(x),), k, dtype=torch.long, device=device)
    batches = _steps_batches(len(x), hp, steps, device)
    outputs = k + 1 if hp["layers"] == "head" else None
    return timed(
        lambda: _sgd_steps(student, x, shadow, batches, hp["lr"], hp["momentum"], outputs),
        device,
    )[1]


def authors_loop(
    original: nn.Module, data: UnlearningData, hp: dict[str, Any], device: torch.device
) -> tuple[nn.Module, float, int]:
    """The authors' Boundary Shrink loop: FGSM neighbour labels recomputed on every batch at
    every step (on the frozen original), one SGD step on the clean batch with them. Runs
    through the same ``fit`` with the same seed as ours. Returns ``(model, seconds,
    label_mismatches)`` where mismatches count per-step labels differing from ours."""
    x, y = to_tensors(data.forget)
    ours = neighbour_search(original, x, y, eps=hp["eps"]).labels
    mismatches = torch.zeros((), dtype=torch.long, device=ours.device)
    frozen = copy.deepcopy(original).eval()

    def loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        nonlocal mismatches
        xb, yb, idx = batch
        labels = neighbour_search(frozen, xb, yb, eps=hp["eps"]).labels
        mismatches = mismatches + (labels != ours[idx]).sum()
        return F.cross_entropy(model(xb), labels)

    def run() -> nn.Module:
        student = copy.deepcopy(original)
        for p in student.parameters():
            p.requires_grad_(True)
        return fit(
            student,
            (x, y, torch.arange(len(x))),
            loss,
            epochs=hp["epochs"],
            lr=hp["lr"],
            momentum=hp["momentum"],
            weight_decay=hp["weight_decay"],
            batch_size=hp["batch_size"],
            seed=hp["seed"],
            bn=hp["bn"],
        )

    model, seconds = timed(run, device)
    return model, seconds, int(mismatches)


# --------------------------------------------------------------------- the run
def method_hyperparameters(
    method: str, config: BenchConfig, record: Any, paper: bool = False
) -> dict[str, Any]:
    """The library's defaults: only the seed, retraining's recipe and amnesiac's record are
    passed (and ``preset="paper"`` for the paper rows)."""
    if method == SHORT:
        return {**method_hyperparameters("retrain", config, record), "epochs": short_epochs(config)}
    known = get_method(method).hyperparameters
    hp: dict[str, Any] = {"seed": config.seed} if "seed" in known else {}
    if method == "retrain":
        hp.update(RECIPE, epochs=config.recipe_epochs)

    if get_method(method).cost == "record" and "record" in known:
        hp["record"] = record
    if paper:
        hp["preset"] = "paper"
    return {k: v for k, v in hp.items() if k in known}


def short_epochs(config: BenchConfig) -> int:
    """retrain-short's epochs: a tenth of the original's, at least one."""
    return max(1, round(config.recipe_epochs / 10))


def warm_up(original: nn.Module, data: UnlearningData, device: torch.device) -> None:
    """Run each code path once on a few samples (allocator, kernels, lazy imports)."""
    x, y = to_tensors(data.forget)
    x, y = x[:128], y[:128]
    neighbour_search(original, x, y)
    fit(copy.deepcopy(original), (x, y), epochs=1, lr=1e-6)
    evaluate(original, data)
    synchronize(device)


def run_benchmark(
    config: BenchConfig, log: Callable[[str], None] = print
) -> tuple[list[Row], dict[str, Any]]:
    """Run everything; return the table rows and the ``--json`` summary (plus extras)."""
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if config.device == "auto" else config.device)
    train_set, _, data, info = load_data(config)
    forget_name = info.classes[config.forget_class]
    log(f"data: {data.sizes()} (forget class {config.forget_class}: {forget_name})")
    original, record, orig_meta = original_model(config, train_set, info, device)
    warm_up(original, data, device)
    rows: list[Row] = []

    def evaluate_row(row: Row, model: nn.Module) -> None:
        acc = evaluate(model, data)
        row.accuracy = {k: acc[k] for k in ("forget", "test_forget", "test_retain", "retain")}
        if config.depth:
            row.depth = depth_evidence(model, data)

    orig_row = Row("original", "original", "-", orig_meta.get("train_seconds"))
    orig_row.note = "trained once, cached (time from its training run)"
    evaluate_row(orig_row, original)
    rows.append(orig_row)

    names = config.methods if config.methods is not None else list_methods()
    # Boundary Shrink and Expanding always run: the floors and the authors' loop measure them.
    names = [*names, *(m for m in ("boundary_shrink", "boundary_expanding") if m not in names)]
    order = ["retrain", SHORT] + [m for m in names if m not in ("retrain", SHORT)]
    jobs: list[tuple[str, str, bool]] = [(m, m, False) for m in order]
    jobs += [(_outputs_label(m), m, False) for m in PAPER_ROWS]
    if config.paper_defaults:
        jobs += [(f"{m} (paper preset)", m, True) for m in PAPER_ROWS if m in names]
    if config.speed:
        jobs += [(f"{m} ({'+'.join(config.speed)})", m, False) for m in PAPER_ROWS if m in names]
    mem_kind = ""
    steps: dict[str, int] = {}
    for label, method, paper in jobs:
        spec = get_method("retrain" if method == SHORT else method)
        row = Row(label, method, spec.cost)
        hp = method_hyperparameters(method, config, record, paper)
        if label.endswith(f"({'+'.join(config.speed)})"):
            hp.update(config.speed)
        if label == _outputs_label(method):
            hp.update(OUTPUTS)
        row.hyperparameters = {k: v for k, v in hp.items() if k != "record"}
        if spec.cost == "record" and "record" not in hp:
            row.note = "skipped: needs a training record the library cannot pass"
            rows.append(row)
            continue
        try:
            with PeakMemory(device) as mem:
                model, seconds = timed_unlearn(_name(method), original, data, hp)
            row.runs.append(seconds)
            row.peak_mb, mem_kind = mem.peak_mb, mem.kind
        except Exception as exc:  # report and go on with the other methods
            first = str(exc).splitlines()[0] if str(exc) else ""
            row.note = f"failed: {type(exc).__name__}: {first}"
            rows.append(row)
            log(f"{label}: {row.note}")
            continue
        row.seconds = min(row.runs)
        evaluate_row(row, model)
        if "steps" in unlearning_stats(model):
            steps[label] = unlearning_stats(model)["steps"]
            row.note = f"{steps[label]} steps"
        del model
        rows.append(row)
        log(f"{label}: {row.seconds:.2f} s  {_acc_text(row.accuracy)}")

    retrain_s = next(r.seconds for r in rows if r.name == "retrain")
    if retrain_s is None:
        raise RuntimeError("retraining failed, so there is no reference time; see its row")
    add_depth_shares(rows)
    extras: dict[str, Any] = {"memory_measure": mem_kind, "device": str(device)}

    # floors and the authors' loop, measured next to the method, alternating
    x_f, y_f = to_tensors(data.forget)
    bs_given = method_hyperparameters("boundary_shrink", config, record)
    be_given = method_hyperparameters("boundary_expanding", config, record)
    bs_hp = get_method("boundary_shrink").resolve(bs_given)
    be_hp = get_method("boundary_expanding").resolve(be_given)
    bs_row = next(r for r in rows if r.name == "boundary_shrink")
    be_row = next(r for r in rows if r.name == "boundary_expanding")
    bs_out = next(r for r in rows if r.name == _outputs_label("boundary_shrink"))
    be_out = next(r for r in rows if r.name == _outputs_label("boundary_expanding"))
    bs_out_given, be_out_given = {**bs_given, **OUTPUTS}, {**be_given, **OUTPUTS}
    bs_floor_runs, be_floor_runs, retrain_epoch_runs = [], [], []
    retrain_hp = method_hyperparameters("retrain", config, record)
    for _ in range(config.repeats):
        # one retraining epoch next to BS/BE: a speed-up estimate under the same load
        retrain_epoch_runs.append(
            timed_unlearn("retrain", original, data, {**retrain_hp, "epochs": 1})[1]
        )
        bs_floor_runs.append(
            shrink_floor(original, x_f, y_f, data.num_classes, bs_hp, device, steps[bs_out.name])
        )
        be_floor_runs.append(
            expand_floor(original, x_f, data.num_classes, be_hp, device, steps[be_out.name])
        )
        bs_row.runs.append(timed_unlearn("boundary_shrink", original, data, bs_given)[1])
        be_row.runs.append(timed_unlearn("boundary_expanding", original, data, be_given)[1])
        bs_out.runs.append(timed_unlearn("boundary_shrink", original, data, bs_out_given)[1])
        be_out.runs.append(timed_unlearn("boundary_expanding", original, data, be_out_given)[1])
    for row in (bs_row, be_row, bs_out, be_out):
        row.seconds = min(row.runs)
    bs_s, be_s = bs_row.seconds, be_row.seconds
    floor_ratio = {  # the floors model the final-layer work: the depth=outputs rows
        "boundary_shrink": bs_out.seconds / min(bs_floor_runs),
        "boundary_expanding": be_out.seconds / min(be_floor_runs),
    }
    log(f"floors: BS {min(bs_floor_runs):.2f} s, BE {min(be_floor_runs):.2f} s -> {floor_ratio}")

    paper_given = method_hyperparameters("boundary_shrink", config, record, paper=True)
    paper_hp = get_method("boundary_shrink").resolve(paper_given)
    authors_model, authors_s, mismatches = authors_loop(original, data, paper_hp, device)
    authors_acc = evaluate(authors_model, data)
    paper_model, paper_s = timed_unlearn("boundary_shrink", original, data, paper_given)
    paper_acc = evaluate(paper_model, data)
    n_labels = len(x_f) * paper_hp["epochs"]
    same_forget = abs(authors_acc["forget"] - paper_acc["forget"]) <= 0.01
    if mismatches > 0.005 * n_labels or not same_forget:
        raise AssertionError(
            f"the authors' loop gave another result: {mismatches} of {n_labels} labels differ, "
            f"D_f {authors_acc['forget']:.4f} vs ours {paper_acc['forget']:.4f}"
        )
    authors_ratio = authors_s / paper_s
    log(f"authors' loop: {authors_s:.2f} s ({mismatches} label mismatches) -> {authors_ratio:.2f}")

    summary: dict[str, Any] = {
        "speedup": {
            r.name: retrain_s / r.seconds
            for r in rows
            if r.seconds and r.name not in ("retrain", "original") and "preset" not in r.name
        },
        "accuracy": {
            r.name: {k: r.accuracy[k] for k in ("forget", "test_forget", "test_retain")}
            for r in rows
            if r.accuracy and r.name == r.method  # the extra "(...)" rows: table only
        },
        "depth": {r.name: r.depth for r in rows if r.depth},
        "floor_ratio": floor_ratio,
        "authors_loop_ratio": authors_ratio,
    }
    extras.update(
        authors_loop_seconds=authors_s,
        authors_loop_label_mismatches=mismatches,
        authors_loop_accuracy=authors_acc,
        floor_seconds={"boundary_shrink": bs_floor_runs, "boundary_expanding": be_floor_runs},
        retrain_epoch_seconds=retrain_epoch_runs,
        same_load_speedup={
            name: min(retrain_epoch_runs) * config.recipe_epochs / seconds
            for name, seconds in (("boundary_shrink", bs_s), ("boundary_expanding", be_s))
        },
        retrain_seconds=retrain_s,
    )
    return rows, {"summary": summary, "extras": extras}


def _name(method: str) -> str:
    """The registered method a row runs (retrain-short is retrain with fewer epochs)."""
    return "retrain" if method == SHORT else method


def _outputs_label(method: str) -> str:
    return f"{method} (depth=outputs)"


def add_depth_shares(rows: list[Row]) -> None:
    """Each row's share of the original-to-retrained gap closed on relearn steps and on the
    probe, and ``depth`` (the smaller share), from the rows' own depth evidence."""
    by_name = {r.name: r for r in rows}
    original, retrain = by_name["original"].depth, by_name["retrain"].depth
    if not original or not retrain:
        return
    for row in rows:
        if row.depth and row.name not in ("original", "retrain"):
            shares = depth_shares(row.depth, original, retrain)
            row.depth["depth"] = shares.pop("depth")
            row.depth["depth_probe_se"] = shares.pop("probe_forget_acc_se")
            row.depth["depth_shares"] = shares  # beside the raw values, not over them


def _depth_cells(row: Row) -> str:
    d = row.depth
    relearn = "" if d.get("relearn_steps") is None else str(d["relearn_steps"])
    probe = "" if d.get("probe_forget_acc") is None else f"{100 * d['probe_forget_acc']:.1f}"
    depth = "" if d.get("depth") is None else f"{d['depth']:.2f}"
    if depth and d.get("depth_probe_se") is not None:  # the probe share's standard error
        depth += f" ±{d['depth_probe_se']:.2f}"
    return f"{relearn} | {probe} | {depth}"


def _acc_text(acc: dict[str, float]) -> str:
    return " ".join(f"{k}={100 * v:.1f}" for k, v in acc.items())


def format_table(rows: list[Row], retrain_s: float, memory_kind: str) -> str:
    head = (
        "| method | cost | seconds | speed-up | D_f % | D_tf % | D_tr % | D_r % | relearn | "
        f"probe % | depth | peak MB ({memory_kind}) | note |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = []
    for r in rows:

        def pct(k: str, r: Row = r) -> str:
            v = r.accuracy.get(k)
            return "" if v is None or math.isnan(v) else f"{100 * v:.1f}"

        secs = "" if r.seconds is None else f"{r.seconds:.2f}"
        speed = "" if r.seconds is None or r.name == "original" else f"{retrain_s / r.seconds:.1f}"
        mem = "" if r.peak_mb is None else f"{r.peak_mb:.0f}"
        note = r.note
        if len(r.runs) > 1:
            runs = f"min of {len(r.runs)} runs (median {statistics.median(r.runs):.2f} s)"
            note = f"{note}; {runs}" if note else runs
        lines.append(
            f"| {r.name} | {r.cost} | {secs} | {speed} | {pct('forget')} | {pct('test_forget')} | "
            f"{pct('test_retain')} | {pct('retain')} | {_depth_cells(r)} | {mem} | {note} |"
        )
    return head + "\n".join(lines) + "\n"


def machine_text(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads"
    )


def _at_least_one(text: str) -> int:
    """A whole number >= 1 (the floors and the speed-up need at least one timed run)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="class-balanced subset: ~5 min on 2 cores")
    add("--forget-class", type=int, default=0)
    add("--data-root", default=None, help="folder with the Fashion-MNIST IDX files")
    add("--device", default="auto", help="auto, cpu or cuda[:N]")
    add("--cache-dir", default=None, help="for the original (default: $BUNLEARN_CACHE)")
    add("--epochs", type=_at_least_one, default=None, help=f"original/retrain epochs ({EPOCHS})")
    add(
        "--repeats",
        type=_at_least_one,
        default=3,
        help="timed runs of the BS/BE floors, and extra timed runs of BS/BE (at least 1)",
    )
    add(
        "--methods",
        default=None,
        help="comma-separated (default: every registered one); retrain, boundary_shrink and "
        "boundary_expanding always run",
    )
    add("--threads", type=int, default=1, help="torch threads on CPU (1: steady on a shared box)")
    add("--no-paper-defaults", action="store_true", help="skip the paper-default rows")
    add("--no-depth", action="store_true", help="skip the relearn and probe columns")
    add("--amp", action="store_true", help="extra BS/BE rows with bf16 autocast")
    add("--channels-last", action="store_true", help="extra BS/BE rows in channels_last")
    add("--compile", action="store_true", help="extra BS/BE rows with torch.compile")
    add("--json", default=None, help="write the summary JSON here")
    add("--table", default=None, help="write the table (with its command) here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads and args.device != "cuda":
        torch.set_num_threads(args.threads)
    speed = {
        "amp": args.amp,
        "channels_last": args.channels_last,
        "compile_model": args.compile,
    }
    config = BenchConfig(
        quick=args.quick,
        forget_class=args.forget_class,
        data_root=args.data_root,
        device=args.device,
        cache_dir=args.cache_dir,
        epochs=args.epochs,
        repeats=args.repeats,
        methods=args.methods.split(",") if args.methods else None,
        paper_defaults=not args.no_paper_defaults,
        depth=not args.no_depth,
        speed={k: v for k, v in speed.items() if v},
    )
    start = time.perf_counter()
    rows, result = run_benchmark(config, log=lambda s: print(s, file=sys.stderr, flush=True))
    extras, summary = result["extras"], result["summary"]
    device = torch.device(extras["device"])
    table = format_table(rows, extras["retrain_seconds"], extras["memory_measure"])
    command = " ".join(sys.argv[1:] if argv is None else argv)
    now = datetime.datetime.now(datetime.timezone.utc)
    header = (
        f"command: python benchmarks/{Path(__file__).name} {command}\n"
        f"date: {now:%Y-%m-%d %H:%M} UTC; machine: {machine_text(device)}\n"
        f"original/retrain recipe: SGD lr {RECIPE['lr']}, momentum {RECIPE['momentum']}, "
        f"weight decay {RECIPE['weight_decay']}, batch {RECIPE['batch_size']}, "
        f"{config.recipe_epochs} epochs\n"
    )
    hp_lines = "\n".join(f"- {r.name}: {r.hyperparameters}" for r in rows if r.hyperparameters)
    footer = (
        f"\nfloor_ratio: {json.dumps(summary['floor_ratio'])}; authors_loop_ratio: "
        f"{summary['authors_loop_ratio']:.2f} (authors' loop "
        f"{extras['authors_loop_seconds']:.2f} s, {extras['authors_loop_label_mismatches']} "
        f"label mismatches)\nspeed-up against {config.recipe_epochs} x one retraining epoch "
        f"timed next to BS/BE (min {min(extras['retrain_epoch_seconds']):.2f} s): "
        f"{json.dumps({k: round(v, 1) for k, v in extras['same_load_speedup'].items()})}\n"
        f"total wall time {time.perf_counter() - start:.0f} s\n\n"
        f"hyperparameters:\n{hp_lines}\n"
    )
    text = header + "\n" + table + footer
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if args.table:
        Path(args.table).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
