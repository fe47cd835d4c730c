"""Benchmark: does memory stay flat as a dataset that does not fit in memory grows?

A lazy dataset of 3x224x224 images (each made on demand from its index, labels in a
``targets`` attribute, as ``ImageFolder`` keeps them) goes through ``class_split``,
``boundary_shrink`` and ``boundary_expanding`` with their defaults and ``evaluate`` of both
results, at 1x, 4x and 16x the base size (12,000 training images: 7.2 GB as float32; 16x is
115 GB). Each scale runs in a fresh process; reported per scale: the data's size as float32,
the growth of that process's peak resident set (ru_maxrss) over its RSS before any data was
touched, the largest peak of its DataLoader workers, seconds per stage, and D_f / D_tf of
both methods.

    python benchmarks/bench_streaming.py              # 1x, 4x, 16x (minutes on 2 cores)
    python benchmarks/bench_streaming.py --quick      # small images, 1x and 4x (seconds)

The original model is a small CNN with a stride-8 stem, trained once on the 1x data
(streamed too) and reused at every scale. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

import boundary_unlearning as bu

NUM_CLASSES = 10
BASE_TRAIN = 12_000
TEST_SHARE = 6  # one test image per six training images
FORGET_CLASS = 3


class SyntheticImages(Dataset[tuple[torch.Tensor, int]]):
    """``n`` images of ``size`` px, class ``i % 10``: the class's fixed 28x28 pattern plus
    per-image noise (seeded by the index), upscaled, in [0, 1]. Nothing is stored."""

    def __init__(self, n: int, size: int, offset: int = 0) -> None:
        self.n, self.size, self.offset = n, size, offset
        self.targets = [i % NUM_CLASSES for i in range(n)]
        gen = torch.Generator().manual_seed(1234)
        self.patterns = torch.rand((NUM_CLASSES, 3, 28, 28), generator=gen)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        label = self.targets[index]
        gen = torch.Generator().manual_seed(self.offset + index)
        small = 0.6 * self.patterns[label] + 0.4 * torch.rand((3, 28, 28), generator=gen)
        scale = self.size // 28
        image = small.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
        return image, label


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 8, stride=8), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, NUM_CLASSES),
    )  # fmt: skip


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _sets(n_train: int, size: int) -> tuple[SyntheticImages, SyntheticImages]:
    return SyntheticImages(n_train, size), SyntheticImages(n_train // TEST_SHARE, size, 10**9)


def child(scale: int, size: int, base: int, weights: str) -> dict[str, Any]:
    """One scale, in this (fresh) process."""
    model = small_cnn()
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    before = _rss_mb()
    row: dict[str, Any] = {"scale": scale, "train_images": base * scale, "size": size}
    row["data_gb"] = base * scale * (1 + 1 / TEST_SHARE) * 3 * size * size * 4 / 1e9
    start = time.perf_counter()
    train_set, test_set = _sets(base * scale, size)
    data = bu.class_split(train_set, test_set, FORGET_CLASS)
    row["split_s"] = time.perf_counter() - start
    for method in ("boundary_shrink", "boundary_expanding"):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            new = bu.unlearn(method, model, data)
        row[f"{method}_s"] = time.perf_counter() - start
        row[f"{method}_steps"] = bu.unlearning_stats(new)["steps"]
        start = time.perf_counter()
        scores = bu.evaluate(new, data)
        row[f"{method}_eval_s"] = time.perf_counter() - start
        row[f"{method}_forget"] = scores["forget"]
        row[f"{method}_test_forget"] = scores["test_forget"]
        row[f"{method}_test_retain"] = scores["test_retain"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row["rss_before_mb"] = before
    row["peak_growth_mb"] = peak - before
    row["worker_peak_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="56 px images, 1,200 x 1 and 4")
    parser.add_argument("--scales", default=None, help="comma-separated (default 1,4,16)")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--base", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    size = args.size or (56 if args.quick else 224)
    base = args.base or (1_200 if args.quick else BASE_TRAIN)
    if args.child is not None:
        print(json.dumps(child(args.child, size, base, args.weights)))
        return 0
    scales = [int(s) for s in (args.scales or ("1,4" if args.quick else "1,4,16")).split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "original.pt"
        start = time.perf_counter()
        torch.manual_seed(0)
        model = small_cnn()
        train_set, test_set = _sets(base, size)
        bu.train(model, train_set, epochs=1, lr=0.05, seed=0)
        acc = bu.evaluate(model, bu.class_split(train_set, test_set, FORGET_CLASS))
        torch.save(model.state_dict(), weights)
        print(
            f"original: {base} images of 3x{size}x{size}, 1 epoch streamed in "
            f"{time.perf_counter() - start:.0f} s; D_f {100 * acc['forget']:.1f}%, "
            f"D_tr {100 * acc['test_retain']:.1f}%",
            flush=True,
        )
        for scale in scales:
            cmd = [sys.executable, __file__, "--child", str(scale), "--size", str(size),
                   "--base", str(base), "--weights", str(weights)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=os.environ)
            if out.returncode != 0:
                print(out.stderr[-2000:], file=sys.stderr)
                return 1
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(_line(rows[-1]), flush=True)
    print()
    print(
        "| scale | train images | data (float32) | peak RSS growth | largest worker peak "
        "| BS s | BE s | evaluate s (BS+BE) | BS D_f / D_tf | BE D_f / D_tf |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['scale']}x | {r['train_images']:,} | {r['data_gb']:.1f} GB "
            f"| {r['peak_growth_mb']:.0f} MB | {r['worker_peak_mb']:.0f} MB "
            f"| {r['boundary_shrink_s']:.1f} | {r['boundary_expanding_s']:.1f} "
            f"| {r['boundary_shrink_eval_s'] + r['boundary_expanding_eval_s']:.1f} "
            f"| {100 * r['boundary_shrink_forget']:.1f} / "
            f"{100 * r['boundary_shrink_test_forget']:.1f}% "
            f"| {100 * r['boundary_expanding_forget']:.1f} / "
            f"{100 * r['boundary_expanding_test_forget']:.1f}% |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def _line(r: dict[str, Any]) -> str:
    return (
        f"{r['scale']}x: {r['train_images']:,} images ({r['data_gb']:.1f} GB as float32): peak "
        f"RSS +{r['peak_growth_mb']:.0f} MB; BS {r['boundary_shrink_s']:.1f} s, "
        f"BE {r['boundary_expanding_s']:.1f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
