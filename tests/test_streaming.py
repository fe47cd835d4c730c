"""Data that are not held in memory: a lazy dataset goes through the split, the training
loop, the neighbour search, both Boundary methods, evaluate and the metrics batch by batch,
with the same results as the same data held as tensors."""

from __future__ import annotations

import gzip
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

import boundary_unlearning as bu
from boundary_unlearning.data.streaming import (
    iterate_batches,
    normalized,
    tensor_backed,
)
from boundary_unlearning.metrics import compute_metrics
from boundary_unlearning.neighbours import neighbour_search
from boundary_unlearning.training import fit
from conftest import EatsNormalised, build_tiny


class LazyImages(Dataset[tuple[torch.Tensor, int]]):
    """Each item made on demand from another dataset's tensors, counting the loads; labels
    as a ``targets`` attribute (as ``ImageFolder`` has)."""

    def __init__(self, source: TensorDataset) -> None:
        self.x, self.targets = source.tensors[0], source.tensors[1].tolist()
        self.loads = 0

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        self.loads += 1
        return self.x[index].clone(), self.targets[index]


class NoTargets(LazyImages):
    """A lazy dataset without a label attribute."""

    def __init__(self, source: TensorDataset) -> None:
        super().__init__(source)
        self.labels_list = self.targets
        del self.targets

    def __len__(self) -> int:
        return len(self.labels_list)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.x[index].clone(), self.labels_list[index]


@pytest.fixture
def lazy_and_held(tiny_sets) -> tuple[bu.UnlearningData, bu.UnlearningData, LazyImages]:
    train_set, test_set = tiny_sets
    lazy_train = LazyImages(train_set)
    lazy = bu.class_split(lazy_train, LazyImages(test_set), [1])
    held = bu.class_split(train_set, test_set, [1])
    return lazy, held, lazy_train


def test_split_reads_labels_not_images(tiny_sets) -> None:
    train_set, test_set = tiny_sets
    lazy = LazyImages(train_set)
    data = bu.class_split(lazy, LazyImages(test_set), [1])
    assert lazy.loads <= 16  # a small sample for the range check, never the whole set
    assert not tensor_backed(data.forget)
    assert data.sizes() == bu.class_split(train_set, test_set, [1]).sizes()
    no_attr = bu.class_split(NoTargets(train_set), NoTargets(test_set), [1])
    assert no_attr.sizes() == data.sizes()


def test_streamed_fit_equals_fit_on_tensors(tiny_sets) -> None:
    """Same seeded order, same batches: the weights match exactly."""
    train_set, _ = tiny_sets
    a, b = build_tiny(), build_tiny()
    fit(a, train_set.tensors, epochs=2, lr=0.05, batch_size=32, seed=3)
    fit(b, LazyImages(train_set), epochs=2, lr=0.05, batch_size=32, seed=3)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, msg=name)


def test_iterate_batches_through_a_loader_with_workers(tiny_sets) -> None:
    train_set, _ = tiny_sets
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(0))
    got = list(iterate_batches(LazyImages(train_set), 50, order=order, workers=1))
    x = torch.cat([b[0] for b in got])
    y = torch.cat([b[1] for b in got])
    assert torch.equal(x, train_set.tensors[0][order])
    assert torch.equal(y, train_set.tensors[1][order])


def test_neighbour_search_on_a_dataset_matches_tensors(tiny_sets, tiny_model) -> None:
    train_set, _ = tiny_sets
    x, y = train_set.tensors
    held = neighbour_search(tiny_model, x, y, eps=0.1)
    lazy = neighbour_search(tiny_model, LazyImages(train_set), y, eps=0.1, keep_inputs=False)
    assert torch.equal(held.labels, lazy.labels)
    assert held.success_ratio == lazy.success_ratio
    assert len(lazy.inputs) == 0  # nothing kept that grows with the set


# Each method (with settings that keep it short): all of them read their data batch by batch.
STREAMED = {
    "boundary_shrink": {"max_steps": 8},
    "boundary_expanding": {"max_steps": 8},
    "random_labels": {"max_steps": 8},
    "neg_grad": {"max_steps": 8},
    "neg_grad+": {"max_steps": 8, "retain_weight": 1.0},
    "finetune": {"epochs": 1},
    "l1_sparse": {"epochs": 1},
    "fisher": {},
    "ssd": {},
    "salun": {"epochs": 1},
    "bad_teacher": {},
    "scrub": {"epochs": 1, "max_epochs": 1},
    "unsir": {"noise_samples": 8, "noise_steps": 2, "retain_per_class": 5},
}


@pytest.mark.parametrize("case", sorted(STREAMED))
def test_methods_on_lazy_data_equal_methods_on_tensors(lazy_and_held, tiny_model, case) -> None:
    lazy, held, _ = lazy_and_held
    method = case.rstrip("+")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = bu.unlearn(method, tiny_model, held, **STREAMED[case])
        b = bu.unlearn(method, tiny_model, lazy, **STREAMED[case])
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, msg=f"{case}: {name}")
    assert bu.unlearning_stats(a).get("steps") == bu.unlearning_stats(b).get("steps")


def test_evaluate_and_metrics_stream(lazy_and_held, tiny_model) -> None:
    lazy, held, _ = lazy_and_held
    assert bu.evaluate(tiny_model, lazy) == bu.evaluate(tiny_model, held)
    a: dict[str, Any] = compute_metrics(tiny_model, held, seed=0)
    b: dict[str, Any] = compute_metrics(tiny_model, lazy, seed=0)
    assert a == b


def test_defaults_forget_on_a_lazy_normalised_dataset(tiny_sets, tiny_model) -> None:
    """Lazy data that carry their normalisation (a NormalizedDataset view) with a model that
    eats normalised inputs: both Boundary methods forget with their defaults."""
    train_set, test_set = tiny_sets
    norm = ((0.3,), (0.3,))
    lazy_train, lazy_test = (
        normalized(LazyImages(train_set), norm),
        normalized(LazyImages(test_set), norm),
    )
    assert not tensor_backed(lazy_train)
    data = bu.class_split(lazy_train, lazy_test, [1], normalization=norm)

    model = EatsNormalised(tiny_model)
    for method in ("boundary_shrink", "boundary_expanding"):
        new = bu.unlearn(method, model, data)
        scores = bu.evaluate(new, data)
        assert scores["forget"] <= 0.05 and scores["test_forget"] <= 0.05, method


FMNIST = "/usr/share/datasets/fashion-mnist"


@pytest.mark.skipif(not os.path.isdir(FMNIST), reason="needs dataset-fashion-mnist")
def test_torchvision_fashion_mnist_with_its_transforms(tmp_path) -> None:
    """torchvision's own FashionMNIST over the Debian files, with a Normalize transform,
    goes through unchanged: split by its targets, trained, unlearned and evaluated batch by
    batch."""
    from torchvision import datasets, transforms

    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in Path(FMNIST).glob("*-ubyte.gz"):
        (raw / gz.name[:-3]).write_bytes(gzip.decompress(gz.read_bytes()))
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.286,), (0.353,))])
    train_full = datasets.FashionMNIST(str(tmp_path), train=True, transform=tf)
    test_full = datasets.FashionMNIST(str(tmp_path), train=False, transform=tf)
    train_set = Subset(train_full, range(3000))
    test_set = Subset(test_full, range(1000))
    data = bu.class_split(train_set, test_set, [7], normalization=(0.286, 0.353))
    assert not tensor_backed(data.forget)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(4),
        nn.Flatten(), nn.Linear(8 * 7 * 7, 10),
    )  # fmt: skip
    bu.train(model, train_set, epochs=2, lr=0.05, seed=0)
    before = bu.evaluate(model, data)
    assert before["forget"] > 0.8 and before["test_retain"] > 0.6
    for method in ("boundary_shrink", "boundary_expanding"):
        after = bu.evaluate(bu.unlearn(method, model, data), data)
        assert after["forget"] <= 0.05 and after["test_forget"] <= 0.05, (method, after)
        assert after["test_retain"] >= before["test_retain"] - 0.1, (method, after)
