"""Do Boundary Shrink and Boundary Expanding forget with NO tuning?

Every cell runs ``bu.unlearn(method, model, data)`` with the library's defaults and no other
argument; where the model eats normalised data the split says so
(``class_split(..., normalization=(mean, std))``). The settings span what users bring:

- ``digits``: the library's ``cnn`` on scikit-learn's digits, forget 3 (146 forget images);
- ``fmnist-6k``: ``cnn`` on a class-balanced 6,000-image Fashion-MNIST subset, forget 7;
- ``bench-quick``: the benchmark's ``--quick`` subset and original (500/200 per class,
  20 epochs, weight decay 5e-4), forget 0;
- ``user-cnn``: a user's BN CNN (not from the zoo) with normalisation in the data pipeline,
  on the 6,000-image subset, forget 7;
- ``resnet18``: a stock ``torchvision.models.resnet18`` (conv1 for one channel), data
  normalised in the pipeline, 6,000-image subset, forget 9;
- ``fraction-5pct``: ``fmnist-6k`` unlearning from 5% of D_f (30 images), D_f accuracy on
  the whole class;
- without ``--quick`` also ``fmnist-full``: ``cnn`` on all 60,000 images, forget 7.

``--beyond`` runs the models users bring from model libraries instead, on 300 / 100
Fashion-MNIST images per class, forget 7: ``cnn-1-epoch`` (a weakly trained original),
``vit-tiny`` (torchvision's ``VisionTransformer``, 4 layers of width 64) and
``efficientnet-b0`` (torchvision's, depthwise convolutions and SiLU, trained with Adam).

    python benchmarks/defaults_matrix.py --quick --json out.json

Originals and retrained models (the original's recipe on D_r) are trained once and cached
(``$BUNLEARN_CACHE`` or ``~/.cache/boundary-unlearning`` under ``defaults-matrix/``; the
retraining's seconds are kept beside it). Targets, printed per cell: D_f and D_tf <= 5%, D_tr
at most 2 points (Boundary Shrink) / 4 points (Boundary Expanding) below the original's, and
depth >= 0.5 (verdict "forgot"): the smaller share of the original-to-retrained gap closed on
relearn steps and on the few-shot feature probe (``boundary_unlearning.metrics``).

Each setting also gets a baseline row, ``retrain-short``: retraining from scratch for a tenth
of the original's epochs, the cheap-and-deep reference the Boundary methods must beat on time
and D_tr (it has no target of its own). ``--set KEY=VALUE`` passes a hyperparameter to both
methods (e.g. ``--set depth=outputs`` for the final layer only).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import TensorDataset

import boundary_unlearning as bu
from boundary_unlearning._utils import model_device
from boundary_unlearning.data import to_tensors
from boundary_unlearning.metrics import depth_evidence, depth_shares
from boundary_unlearning.models import reinitialize
from boundary_unlearning.report.tables import close_call, verdict

METHODS = ("boundary_shrink", "boundary_expanding")
MAX_DROP = {"boundary_shrink": 0.02, "boundary_expanding": 0.04}
MAX_FORGET = 0.05
MIN_DEPTH = 0.5
SHORT = "retrain-short"
FMNIST_NORM = ((0.2860,), (0.3530,))


class UserCNN(nn.Module):
    """A plain user network: two conv+BN blocks, two linear layers; eats normalised data."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        )  # fmt: skip
        self.fc1 = nn.Linear(64 * 5 * 5, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(self.features(x))))


def resnet18_one_channel(num_classes: int = 10) -> nn.Module:
    from torchvision.models import resnet18

    net = resnet18(num_classes=num_classes)
    net.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    return net


@dataclass(frozen=True)
class Setting:
    name: str
    dataset: str
    per_class: tuple[int, int] | None  # training, test images per class; None: all
    build: Callable[[Any], nn.Module]
    epochs: int
    forget_class: int
    weight_decay: float = 5e-4  # bu.train's default
    normalised: bool = False  # data normalised in the pipeline (the model eats it)
    forget_fraction: float = 1.0
    cache_as: str | None = None  # reuse another setting's original
    optimizer: Literal["sgd", "adam"] = "sgd"  # the original's and the retrained model's training
    lr: float = 0.01


def _zoo(info: Any) -> nn.Module:
    return bu.create_model(
        "cnn", info.num_classes, info.in_channels, info.image_size, info.mean, info.std, seed=0
    )


SETTINGS: tuple[Setting, ...] = (
    Setting("digits", "digits", None, _zoo, 20, 3),
    Setting("fmnist-6k", "fashion-mnist", (600, 0), _zoo, 10, 7),
    Setting("bench-quick", "fashion-mnist", (500, 200), _zoo, 20, 0),
    Setting("user-cnn", "fashion-mnist", (600, 0), lambda i: UserCNN(), 5, 7, normalised=True),
    Setting("resnet18", "fashion-mnist", (600, 0), lambda i: resnet18_one_channel(), 3, 9,
            normalised=True),
    Setting("fraction-5pct", "fashion-mnist", (600, 0), _zoo, 10, 7, forget_fraction=0.05,
            cache_as="fmnist-6k"),
)  # fmt: skip
FULL = Setting("fmnist-full", "fashion-mnist", None, _zoo, 10, 7)


def vit_tiny(num_classes: int = 10) -> nn.Module:
    """torchvision's ``VisionTransformer``, small (4 layers, width 64, 7x7 patches of 28x28
    one-channel images)."""
    from torchvision.models import VisionTransformer

    net = VisionTransformer(
        image_size=28, patch_size=7, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128,
        num_classes=num_classes,
    )  # fmt: skip
    net.conv_proj = nn.Conv2d(1, 64, 7, 7)
    return net


def efficientnet_b0_one_channel(num_classes: int = 10) -> nn.Module:
    """torchvision's ``efficientnet_b0`` (depthwise convolutions, SiLU, squeeze-excitation,
    stochastic depth), its first convolution for one channel."""
    from torchvision.models import efficientnet_b0

    net = efficientnet_b0(num_classes=num_classes)
    net.features[0][0] = nn.Conv2d(1, 32, 3, 2, 1, bias=False)
    return net


# Models users bring from popular model libraries, and a weakly trained original (``--beyond``):
# Fashion-MNIST, 300 training / 100 test images per class, class 7.
BEYOND: tuple[Setting, ...] = (
    Setting("cnn-1-epoch", "fashion-mnist", (300, 100), _zoo, 1, 7),
    Setting("vit-tiny", "fashion-mnist", (300, 100), lambda i: vit_tiny(), 10, 7,
            normalised=True),
    Setting("efficientnet-b0", "fashion-mnist", (300, 100),
            lambda i: efficientnet_b0_one_channel(), 5, 7, normalised=True, optimizer="adam",
            lr=1e-3),
)  # fmt: skip


def balanced_subset(dataset: TensorDataset, per_class: int) -> TensorDataset:
    """The first ``per_class`` images of every class (``0``: all of them)."""
    x, y = to_tensors(dataset)
    if per_class == 0:
        return TensorDataset(x, y)
    idx = torch.cat([torch.nonzero(y == c).flatten()[:per_class] for c in torch.unique(y)])
    idx = idx.sort().values
    return TensorDataset(x[idx], y[idx])


def normalise(dataset: TensorDataset) -> TensorDataset:
    x, y = to_tensors(dataset)
    return TensorDataset((x - FMNIST_NORM[0][0]) / FMNIST_NORM[1][0], y)


def cache_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    env = os.environ.get("BUNLEARN_CACHE")
    return (
        Path(env) if env else Path.home() / ".cache" / "boundary-unlearning"
    ) / "defaults-matrix"


def prepare(
    setting: Setting, cache: Path, device: torch.device, data_root: str | None = None
) -> tuple[nn.Module, Any]:
    """The trained original (cached) and the class split of ``setting``."""
    root = data_root if setting.dataset == "fashion-mnist" else None
    train_set, test_set, info = bu.load_dataset(setting.dataset, root)
    if setting.per_class is not None:
        train_set = balanced_subset(train_set, setting.per_class[0])
        test_set = balanced_subset(test_set, setting.per_class[1])
    if setting.normalised:
        train_set, test_set = normalise(train_set), normalise(test_set)
    data = bu.class_split(
        train_set, test_set, [setting.forget_class], setting.forget_fraction, seed=0,
        num_classes=info.num_classes, normalization=FMNIST_NORM if setting.normalised else None,
    )  # fmt: skip
    model = setting.build(info)
    path = cache / f"{setting.cache_as or setting.name}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    else:
        torch.manual_seed(0)  # the user models initialise from the global RNG
        start = time.perf_counter()
        bu.train(
            model.to(device), train_set, epochs=setting.epochs, lr=setting.lr,
            weight_decay=setting.weight_decay, seed=0, optimizer=setting.optimizer,
        )  # fmt: skip
        print(f"trained {setting.name} in {time.perf_counter() - start:.0f} s", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    return model.to(device).eval(), data


def retrained(
    setting: Setting, model: nn.Module, data: Any, cache: Path, *, short: bool = False
) -> tuple[nn.Module, float]:
    """The model retrained from scratch on D_r with the original's recipe (all its epochs, or
    a tenth of them for ``short``), cached with its training seconds."""
    epochs = max(1, round(setting.epochs / 10)) if short else setting.epochs
    stem = f"{setting.name}-{'retrain-short' if short else 'retrain'}"
    path, meta = cache / f"{stem}.pt", cache / f"{stem}.json"
    fresh = reinitialize(model, 0)
    if path.is_file() and meta.is_file():
        fresh.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return fresh.to(model_device(model)).eval(), json.loads(meta.read_text())["seconds"]
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        new = bu.unlearn("retrain", model, data, epochs=epochs, lr=setting.lr,
                         weight_decay=setting.weight_decay, seed=0,
                         optimizer=setting.optimizer)  # fmt: skip
    seconds = time.perf_counter() - start
    print(f"retrained {setting.name} ({epochs} epochs) in {seconds:.0f} s", flush=True)
    tmp = path.with_suffix(".tmp")
    torch.save(new.state_dict(), tmp)
    os.replace(tmp, path)
    meta.write_text(json.dumps({"seconds": seconds, "epochs": epochs}) + "\n")
    return new, seconds


def references(setting: Setting, model: nn.Module, data: Any, cache: Path) -> dict[str, Any]:
    """What every cell of a setting is compared with: the original's and the retrained
    model's accuracies and depth evidence, and the retraining's seconds."""
    retrain, seconds = retrained(setting, model, data, cache)
    return {
        "original": {**bu.evaluate(model, data), **depth_evidence(model, data)},
        "retrain": {**bu.evaluate(retrain, data), **depth_evidence(retrain, data)},
        "retrain_seconds": seconds,
    }


def run_cell(
    setting: Setting,
    method: str,
    model: nn.Module,
    data: Any,
    refs: dict[str, Any],
    hparams: dict[str, Any],
    cache: Path,
) -> dict[str, Any]:
    before = refs["original"]
    if method == SHORT:
        new, seconds = retrained(setting, model, data, cache, short=True)
    else:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the cell reports reached_target itself
            new = bu.unlearn(method, model, data, **hparams)
        seconds = time.perf_counter() - start
    after = {**bu.evaluate(new, data), **depth_evidence(new, data)}
    stats = bu.unlearning_stats(new)
    shares = depth_shares(after, before, refs["retrain"])
    judged = verdict(
        {"results": {"retrain": {"acc": {"forget": refs["retrain"]["forget"]}},
                     method: {"acc": {"forget": after["forget"]}, "depth": shares["depth"]}}},
        method,
    )  # fmt: skip
    cell = {
        "setting": setting.name,
        "method": method,
        "forget": after["forget"],
        "test_forget": after["test_forget"],
        "test_retain": after["test_retain"],
        "original_forget": before["forget"],
        "original_test_retain": before["test_retain"],
        "steps": stats.get("steps"),
        "reached_target": stats.get("reached_target"),
        "seconds": seconds,
        "retrain_seconds": refs["retrain_seconds"],
        "speedup": refs["retrain_seconds"] / seconds if seconds > 0 else None,
        "relearn_steps": after["relearn_steps"],
        "original_relearn_steps": before["relearn_steps"],
        "retrain_relearn_steps": refs["retrain"]["relearn_steps"],
        "probe_forget_acc": after["probe_forget_acc"],
        "original_probe_forget_acc": before["probe_forget_acc"],
        "retrain_probe_forget_acc": refs["retrain"]["probe_forget_acc"],
        "retrain_test_retain": refs["retrain"]["test_retain"],
        "depth": shares["depth"],
        "depth_shares": {k: v for k, v in shares.items() if k != "depth"},
        # the probe share's standard error over the probe's draws (close to 0.5: undecided)
        "depth_probe_se": shares["probe_forget_acc_se"],
        # the depth is the probe's share and 0.5 lies within two of its standard errors
        "close_call": close_call({"depth": shares["depth"], "depth_shares": shares}) is not None,
        "verdict": judged,
        "hyperparameters": hparams,
    }
    if method == SHORT:  # a baseline: no target of its own
        cell["meets_target"] = None
        return cell
    drop = cell["original_test_retain"] - cell["test_retain"]
    cell["meets_target"] = bool(
        cell["forget"] <= MAX_FORGET
        and cell["test_forget"] <= MAX_FORGET
        and drop <= MAX_DROP[method] + 1e-9
        and cell["depth"] is not None
        and cell["depth"] >= MIN_DEPTH
        and judged == "forgot"
    )
    return cell


def _pct(value: Any) -> str:
    return "     —" if value is None else f"{100 * value:6.1f}"


def format_table(cells: list[dict[str, Any]]) -> str:
    head = (
        f"{'setting':<14} {'method':<19} {'D_f':>6} {'D_tf':>6} {'D_tr':>14} {'drop':>6} "
        f"{'relearn':>11} {'probe o/r/m':>20} {'depth':>5} {'±':>5} {'verdict':>19} {'steps':>5} "
        f"{'s':>6} {'x':>6}  target"
    )
    lines = [head, "-" * len(head)]
    for c in cells:
        drop = 100 * (c["original_test_retain"] - c["test_retain"])
        relearn = f"{c['relearn_steps']!s:>3} (R {c['retrain_relearn_steps']!s:>3})"
        probe = (
            f"{_pct(c['original_probe_forget_acc'])}/{_pct(c['retrain_probe_forget_acc'])}/"
            f"{_pct(c['probe_forget_acc'])}"
        )
        depth = "    —" if c["depth"] is None else f"{c['depth']:5.2f}"
        se = c.get("depth_probe_se")
        depth += "     —" if se is None else f" {se:5.2f}"
        target = {True: "met", False: "MISSED", None: "(baseline)"}[c["meets_target"]]
        target += " (close call)" if c.get("close_call") else ""
        speed = "     —" if c["speedup"] is None else f"{c['speedup']:5.1f}x"
        lines.append(
            f"{c['setting']:<14} {c['method']:<19} {100 * c['forget']:6.2f} "
            f"{100 * c['test_forget']:6.2f} {100 * c['original_test_retain']:6.2f}->"
            f"{100 * c['test_retain']:6.2f} {drop:6.2f} {relearn:>11} {probe:>20} {depth} "
            f"{c['verdict']!s:>19} {c['steps']!s:>5} {c['seconds']:6.2f} {speed}  {target}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the full Fashion-MNIST cell")
    parser.add_argument(
        "--beyond", action="store_true",
        help="the models beyond the matrix instead (a weakly trained cnn, a small vision "
        "transformer, EfficientNet-B0)",
    )  # fmt: skip
    parser.add_argument("--json", help="write the cells to this file")
    parser.add_argument("--cache-dir", help="where the trained originals are kept")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--settings", help="comma-separated subset of the settings")
    parser.add_argument("--data-root", help="folder with the Fashion-MNIST IDX files")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a hyperparameter for both methods (YAML value), repeatable",
    )
    parser.add_argument(
        "--no-short-retrain", action="store_true", help="skip the retrain-short baseline rows"
    )
    args = parser.parse_args(argv)
    hparams = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.set)}
    device = torch.device(args.device)
    settings = list(BEYOND) if args.beyond else list(SETTINGS) + ([] if args.quick else [FULL])
    if args.settings:
        wanted = set(args.settings.split(","))
        settings = [s for s in settings if s.name in wanted]
    cache = cache_dir(args.cache_dir)
    cells = []
    methods = [*METHODS, *([] if args.no_short_retrain else [SHORT])]
    for setting in settings:
        model, data = prepare(setting, cache, device, args.data_root)
        refs = references(setting, model, data, cache)
        for method in methods:
            cells.append(run_cell(setting, method, model, data, refs, hparams, cache))
            print(format_table(cells[-1:]).splitlines()[-1], flush=True)
    print()
    print(format_table(cells))
    judged = [c for c in cells if c["meets_target"] is not None]
    met = [c for c in judged if c["meets_target"]]
    print(f"\n{len(met)} of {len(judged)} cells meet the targets")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"device": str(device), "torch": torch.__version__, "cells": cells},
                       indent=2) + "\n"
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
