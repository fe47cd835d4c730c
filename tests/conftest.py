"""Shared tiny, deterministic data and models (seconds to build, no files needed)."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from boundary_unlearning import UnlearningData, class_split, create_model, load_dataset, train

# One intra-op thread count for this process and every subprocess a test starts (a killed
# `bunlearn run`, torchrun ranks that do not set their own): training results depend on it, so
# a subprocess left at torch's default (the number of physical cores, or whatever
# OMP_NUM_THREADS the shell exported) computes other numbers than the test's reference.
THREADS = min(2, os.cpu_count() or 1)
torch.set_num_threads(THREADS)
os.environ["OMP_NUM_THREADS"] = str(THREADS)

NUM_CLASSES = 4
IMAGE = (1, 8, 8)


def make_blobs(per_class: int, seed: int, num_classes: int = NUM_CLASSES) -> TensorDataset:
    """Images in [0,1]: class c lights up its own 4x4 quadrant pattern, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c in range(num_classes):
        base = torch.zeros(IMAGE)
        r, q = divmod(c % 4, 2)
        base[:, 4 * r : 4 * r + 4, 4 * q : 4 * q + 4] = 0.8
        if c >= 4:
            base = base.flip(-1)
        noise = torch.rand((per_class, *IMAGE), generator=gen) * 0.3
        xs.append((base + noise).clamp(0, 1))
        ys.append(torch.full((per_class,), c, dtype=torch.long))
    return TensorDataset(torch.cat(xs), torch.cat(ys))


@pytest.fixture(autouse=True)
def _private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests never read or fill the user's model cache ($BUNLEARN_CACHE or ~/.cache): every
    test of a session shares one cache in pytest's temporary folder (so an original trained
    by one test is reused by the next), and a test may still point it elsewhere."""
    monkeypatch.setenv("BUNLEARN_CACHE", str(tmp_path_factory.getbasetemp() / "bunlearn-cache"))


@pytest.fixture(scope="session")
def tiny_sets() -> tuple[TensorDataset, TensorDataset]:
    return make_blobs(40, seed=1), make_blobs(10, seed=2)


@pytest.fixture(scope="session")
def tiny_data(tiny_sets: tuple[TensorDataset, TensorDataset]) -> UnlearningData:
    train_set, test_set = tiny_sets
    return class_split(train_set, test_set, forget_classes=[1])


def build_tiny(name: str = "cnn", seed: int = 0) -> nn.Module:
    options = {"cnn": {"width": 4}, "mlp": {"hidden": 32}}.get(name, {})
    return create_model(
        name, NUM_CLASSES, in_channels=1, image_size=8, mean=(0.3,), std=(0.3,), seed=seed,
        **options,
    )  # fmt: skip


@pytest.fixture(scope="session")
def _trained_tiny(tiny_sets: tuple[TensorDataset, TensorDataset]) -> nn.Module:
    model = build_tiny("cnn")
    return train(model, tiny_sets[0], epochs=15, lr=0.05, batch_size=16, seed=0)


@pytest.fixture
def tiny_model(_trained_tiny: nn.Module) -> nn.Module:
    """A trained tiny CNN (a fresh copy per test, so tests may not interfere)."""
    return copy.deepcopy(_trained_tiny)


def state_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def imported_after(code: str, module: str) -> bool:
    """Whether running ``code`` in a fresh interpreter leaves ``module`` imported (a test
    of what a request loads, which the test process itself may already hold)."""
    import subprocess
    import sys

    probe = f"{code}\nimport sys\nprint({module!r} in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1] == "True"


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class EatsNormalised(nn.Module):
    """A zoo model minus its Normalize layer: the same network, fed normalised inputs (as a
    user's own model usually is)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.body, self.head = inner.body, inner.head  # type: ignore[union-attr]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.body(z))
        return out


@pytest.fixture(scope="session")
def digits_cnn() -> tuple[nn.Module, UnlearningData]:
    """The zoo CNN trained 20 epochs on scikit-learn's digits, and the split forgetting 3
    (the demo's setting; shared by the tests on real digits, which never modify it)."""
    train_set, test_set, info = load_dataset("digits")
    data = class_split(train_set, test_set, [3])
    model = create_model("cnn", 10, 1, 8, info.mean, info.std, seed=0)
    train(model, train_set, epochs=20, lr=0.01, seed=0)
    return model, data
