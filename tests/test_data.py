"""Loaders, each on small files written in the real on-disk format, and the class split."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from boundary_unlearning import class_split, create_model, load_dataset, unlearn
from boundary_unlearning.data import pixels, streaming, to_tensors
from boundary_unlearning.data.datasets import FASHION_MNIST_SYSTEM_DIR, _stats
from boundary_unlearning.data.pixels import ByteImages, decode_inputs
from boundary_unlearning.data.streaming import inputs_and_labels, iterate_batches, with_columns
from boundary_unlearning.errors import DataError, UnknownNameError
from boundary_unlearning.training import fit


def test_digits_is_embedded_and_in_unit_range() -> None:
    train, test, info = load_dataset("digits")
    assert info.image_shape == (1, 8, 8) and info.num_classes == 10
    assert len(train) + len(test) == 1797
    x = train.tensors[0]
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    # the split is fixed: loading twice gives the same data
    again, _, _ = load_dataset("digits")
    assert torch.equal(x, again.tensors[0])


def _write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(
        ">" + "I" * array.ndim, *array.shape
    )
    raw = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)


def _fake_fashion(root: Path, gz: bool, n_train: int = 30, n_test: int = 10) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(root / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), gz)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, gz)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx_files(tmp_path: Path, gz: bool) -> None:
    _fake_fashion(tmp_path, gz)
    train, test, info = load_dataset("fashion-mnist", root=tmp_path)
    assert len(train) == 30 and len(test) == 10
    assert info.image_shape == (1, 28, 28) and info.classes[0] == "t-shirt/top"
    assert train.tensors[1].tolist()[:3] == [0, 1, 2]
    # held as the file's bytes, read as pixels in [0, 1]: bit for bit byte / 255 in float32
    assert train.tensors[0].dtype == torch.uint8
    pixels = to_tensors(train)[0]
    expected = torch.from_numpy(train.tensors[0].numpy().astype(np.float32) / np.float32(255))
    assert pixels.dtype == torch.float32 and torch.equal(pixels, expected)
    assert torch.equal(train[4][0], expected[4])


def test_fashion_mnist_truncated_file_is_a_clear_error(tmp_path: Path) -> None:
    _fake_fashion(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_fashion_mnist_missing_files_say_where(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(
        "boundary_unlearning.data.datasets.FASHION_MNIST_SYSTEM_DIR", tmp_path / "nowhere"
    )
    with pytest.raises(DataError, match="--download") as info:
        load_dataset("fashion-mnist", root=tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not FASHION_MNIST_SYSTEM_DIR.is_dir(), reason="dataset-fashion-mnist absent")
def test_real_fashion_mnist_from_debian_package() -> None:
    train, test, _ = load_dataset("fashion-mnist")
    assert len(train) == 60000 and len(test) == 10000
    assert torch.bincount(train.tensors[1]).tolist() == [6000] * 10


def _fake_cifar_python(root: Path, per_batch: int = 20) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "labels": [i % 10 for i in range(per_batch)],
            "batch_label": name,
        }
        with (folder / name).open("wb") as fh:
            pickle.dump(entry, fh, protocol=2)


def test_cifar10_python_batches(tmp_path: Path) -> None:
    _fake_cifar_python(tmp_path)
    train, test, info = load_dataset("cifar10", root=tmp_path)
    assert len(train) == 100 and len(test) == 20
    assert info.image_shape == (3, 32, 32) and info.classes[4] == "deer"


def test_cifar10_binary_batches(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = np.arange(7, dtype=np.uint8) % 10
        pixels = rng.integers(0, 256, (7, 3072), dtype=np.uint8)
        (folder / name).write_bytes(np.concatenate([labels[:, None], pixels], 1).tobytes())
    train, test, _ = load_dataset("cifar10", root=tmp_path)
    assert len(train) == 35 and len(test) == 7
    assert train.tensors[1].tolist()[:3] == [0, 1, 2]


def test_cifar10_missing_says_where_and_download(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cifar-10-batches-py.*--download"):
        load_dataset("cifar10", root=tmp_path)


def _fake_faces(root: Path, identities: int = 3, per_id: int = 5) -> None:
    from PIL import Image

    rng = np.random.default_rng(3)
    for i in range(identities):
        folder = root / f"n00000{i}"
        folder.mkdir(parents=True)
        for j in range(per_id):
            img = rng.integers(0, 256, (20, 16, 3), dtype=np.uint8)
            Image.fromarray(img).save(folder / f"{j:04d}_01.jpg" if j % 2 else folder / f"{j}.png")


def test_imagefolder_seeded_split(tmp_path: Path) -> None:
    _fake_faces(tmp_path)
    train, test, info = load_dataset("imagefolder", root=tmp_path, image_size=12)
    assert info.classes == ("n000000", "n000001", "n000002")
    assert info.image_shape == (3, 12, 12)
    assert len(train) + len(test) == 15 and len(test) == 3  # one per identity (20%)
    again, _, _ = load_dataset("imagefolder", root=tmp_path, image_size=12)
    assert torch.equal(train.tensors[0], again.tensors[0])


def test_imagefolder_train_test_layout(tmp_path: Path) -> None:
    _fake_faces(tmp_path / "train")
    _fake_faces(tmp_path / "test", per_id=2)
    train, test, _ = load_dataset("imagefolder", root=tmp_path, image_size=8)
    assert len(train) == 15 and len(test) == 6


def test_imagefolder_unreadable_image(tmp_path: Path) -> None:
    _fake_faces(tmp_path)
    (tmp_path / "n000000" / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.jpg"):
        load_dataset("imagefolder", root=tmp_path)


def test_unknown_dataset_suggests_a_close_name() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'digits'"):
        load_dataset("digit")


class _PairsOnly(Dataset[tuple[torch.Tensor, int]]):
    """A plain map-style dataset (not a TensorDataset)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.full((1, 4, 4), i / self.n), i % 3


def test_class_split_on_any_map_style_dataset() -> None:
    data = class_split(_PairsOnly(30), _PairsOnly(9), forget_classes=[2])
    assert len(data.forget) == 10 and len(data.retain) == 20
    assert len(data.test_forget) == 3 and len(data.test_retain) == 6
    assert all(int(data.forget[i][1]) == 2 for i in range(len(data.forget)))


def test_class_split_errors() -> None:
    with pytest.raises(DataError, match="outside"):
        class_split(_PairsOnly(30), _PairsOnly(9), forget_classes=[5])
    with pytest.raises(DataError, match="all 3 classes"):
        class_split(_PairsOnly(30), _PairsOnly(9), forget_classes=[0, 1, 2])


def _bytes_and_floats() -> tuple[TensorDataset, TensorDataset]:
    """The same images as pixel bytes and as the float32 pixels a loader made before."""
    gen = torch.Generator().manual_seed(0)
    base = torch.zeros(4, 1, 8, 8)
    for c in range(4):
        r, q = divmod(c, 2)
        base[c, :, 4 * r : 4 * r + 4, 4 * q : 4 * q + 4] = 0.8
    noise = torch.rand(160, 1, 8, 8, generator=gen) * 0.3
    y = torch.arange(160) % 4
    raw = ((base[y] + noise).clamp(0, 1) * 255).round().to(torch.uint8)
    floats = torch.from_numpy(raw.numpy().astype(np.float32) / np.float32(255))
    return ByteImages(raw, y), TensorDataset(floats, y)


def test_byte_images_read_as_the_float_pixels_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    as_bytes, as_floats = _bytes_and_floats()
    b, f = class_split(as_bytes, as_bytes, 1), class_split(as_floats, as_floats, 1)
    assert b.retain.tensors[0].dtype == torch.uint8  # type: ignore[attr-defined]
    assert torch.equal(to_tensors(b.retain)[0], to_tensors(f.retain)[0])
    assert torch.equal(b.forget[3][0], f.forget[3][0])  # item access decodes too
    order = torch.randperm(len(f.retain), generator=torch.Generator().manual_seed(1))
    pairs = zip(iterate_batches(b.retain, 7, order=order),
                iterate_batches(f.retain, 7, order=order), strict=True)  # fmt: skip
    assert all(torch.equal(xb, xf) and torch.equal(yb, yf) for (xb, yb), (xf, yf) in pairs)
    # a byte set whose float copy exceeds the budget reaches consumers as the dataset
    monkeypatch.setattr(streaming, "DECODE_BUDGET", 1000)
    x, labels = inputs_and_labels(b.retain)
    assert x is b.retain and torch.equal(labels, f.retain.tensors[1])  # type: ignore[attr-defined]
    training = with_columns(x, labels)
    assert training.tensors[0].dtype == torch.uint8  # type: ignore[union-attr]
    models = []
    for data in (training, to_tensors(f.retain)):
        model = create_model("cnn", 4, in_channels=1, image_size=8, width=4, seed=0)
        models.append(fit(model, data, epochs=2, lr=0.05, batch_size=16, seed=3))
    for (name, wb), wf in zip(models[0].state_dict().items(), models[1].state_dict().values(),
                              strict=True):  # fmt: skip
        assert torch.equal(wb, wf), name


def test_a_method_on_byte_images_gives_the_same_model(monkeypatch: pytest.MonkeyPatch) -> None:
    as_bytes, as_floats = _bytes_and_floats()
    monkeypatch.setattr(streaming, "DECODE_BUDGET", 1000)  # D_r read batch by batch
    model = create_model("cnn", 4, in_channels=1, image_size=8, width=4, seed=0)
    model = fit(model, to_tensors(as_floats), epochs=8, lr=0.05, batch_size=16, seed=0)
    out = [
        unlearn("boundary_shrink", model, class_split(ds, ds, 1), feature_steps=3, seed=0)
        for ds in (as_bytes, as_floats)
    ]
    for (name, wb), wf in zip(out[0].state_dict().items(), out[1].state_dict().values(),
                              strict=True):  # fmt: skip
        assert torch.equal(wb, wf), name


def test_accelerators_decode_bytes_to_the_same_bits() -> None:
    """Off the CPU a batch is decoded by a table the CPU computed (no device division)."""
    every = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(pixels._table(torch.device("cpu"))[every.long()], decode_inputs(every))
    assert decode_inputs(every).dtype == torch.float32


def test_byte_stats_match_the_float_statistics() -> None:
    as_bytes, as_floats = _bytes_and_floats()
    assert _stats(as_bytes.tensors[0]) == _stats(as_floats.tensors[0])
