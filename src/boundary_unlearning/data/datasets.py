"""Dataset loaders. Every loader returns in-memory ``TensorDataset``s of pixel values in [0, 1]:
read from files of bytes (Fashion-MNIST, CIFAR-10, image folders), the images stay bytes
(:class:`~boundary_unlearning.data.pixels.ByteImages`, decoded when a batch is read).

Nothing is ever fetched from the network unless ``download=True`` is passed explicitly; a
missing file raises :class:`~boundary_unlearning.errors.DataError` with one line that says
where to put it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ..errors import DataError, UnknownNameError, did_you_mean, unknown_name
from .formats import (
    _cifar_binary_batch,
    _cifar_python_batch,
    _class_dirs,
    _find_idx,
    _idx_folder,
    _read_folder,
    _read_idx,
)
from .pixels import is_bytes, tensor_dataset

__all__ = ["DatasetInfo", "dataset_key", "list_datasets", "load_dataset"]

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset.

    ``name`` is the loader's name, ``classes`` the class names by index, ``image_shape``
    ``(channels, height, width)``, ``mean`` / ``std`` the per-channel statistics of the
    training images (for a model's input normalisation).

    Example:
        >>> info = DatasetInfo("toy", ("cat", "dog"), (3, 32, 32), (0.5,) * 3, (0.25,) * 3)
        >>> info.num_classes, info.in_channels, info.image_size
        (2, 3, 32)
    """

    name: str
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (channels, height, width)
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        """The number of classes.

        Example:
            >>> DatasetInfo("toy", ("a", "b", "c"), (1, 8, 8), (0.5,), (0.2,)).num_classes
            3
        """
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        """The number of image channels.

        Example:
            >>> DatasetInfo("toy", ("a", "b"), (3, 8, 8), (0.5,) * 3, (0.2,) * 3).in_channels
            3
        """
        return self.image_shape[0]

    @property
    def image_size(self) -> int:
        """The image height (images are square).

        Example:
            >>> DatasetInfo("toy", ("a", "b"), (1, 28, 28), (0.5,), (0.2,)).image_size
            28
        """
        return self.image_shape[1]

    def class_index(self, name_or_index: str | int) -> int:
        """Resolve a class given by index (``3``, ``"3"``) or by name (``"dress"``).

        Args:
            name_or_index: a class index, as an int or a string, or a class name (any case).

        Returns:
            The class index.

        Raises:
            UnknownNameError: no class has that name.
            DataError: the index is outside the classes, or the value is neither int nor str.

        Example:
            >>> info = DatasetInfo("toy", ("cat", "dog"), (3, 8, 8), (0.5,) * 3, (0.2,) * 3)
            >>> info.class_index("Dog"), info.class_index("0"), info.class_index(1)
            (1, 0, 1)
        """
        if isinstance(name_or_index, int):
            index = name_or_index
        elif not isinstance(name_or_index, str):
            raise DataError(
                f"forget class {name_or_index!r} is a {type(name_or_index).__name__}; give a "
                "class index (e.g. 3) or a class name"
            )
        elif name_or_index.strip().lstrip("-").isdecimal():
            index = int(name_or_index)
        else:
            lowered = [c.lower() for c in self.classes]
            if name_or_index.lower() not in lowered:
                raise UnknownNameError(
                    f"{self.name} has no class '{name_or_index}'"
                    f"{did_you_mean(name_or_index, self.classes)}; pick an index "
                    f"0..{self.num_classes - 1} or one of: {', '.join(self.classes)}"
                )
            return lowered.index(name_or_index.lower())
        if isinstance(index, bool) or not 0 <= index < self.num_classes:
            raise DataError(
                f"forget class {index} is outside {self.name}'s classes 0..{self.num_classes - 1}; "
                f"pick one of 0..{self.num_classes - 1} or a class name"
            )
        return index


def _stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if is_bytes(images):
        return _byte_stats(images)
    mean = images.mean(dim=(0, 2, 3))
    std = images.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)


def _byte_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (unbiased) std of the pixels ``byte / 255``, from each channel's
    histogram of byte values: exact sums, no float copy of the images.

    Example:
        >>> _byte_stats(torch.tensor([[[[0, 255]]], [[[255, 255]]]], dtype=torch.uint8))
        ((0.75,), (0.5,))
    """
    values = torch.arange(256, dtype=torch.float64)
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).double()
        n = float(counts.sum())
        total, squares = float(counts @ values), float(counts @ values.square())
        mean = total / n / 255.0
        var = (squares - total * total / n) / max(n - 1.0, 1.0) / 255.0**2
        means.append(round(mean, 4))
        stds.append(round(max(var, 0.0) ** 0.5, 4) if n > 1 else float("nan"))
    return tuple(means), tuple(max(s, 1e-3) for s in stds)


def _finish(
    name: str,
    classes: tuple[str, ...],
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    mean_std: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> tuple[TensorDataset, TensorDataset, DatasetInfo]:
    for split, x in (("training", train_x), ("test", test_x)):
        if len(x) == 0:
            raise DataError(
                f"the {name} {split} set holds no images; check the files under --data-root"
            )
    mean, std = mean_std if mean_std is not None else _stats(train_x)
    info = DatasetInfo(name, classes, tuple(train_x.shape[1:]), mean, std)  # type: ignore[arg-type]
    return tensor_dataset(train_x, train_y), tensor_dataset(test_x, test_y), info


# --------------------------------------------------------------------------- digits
def _load_digits(root: Path | None, download: bool, **_: Any) -> tuple[Any, Any, DatasetInfo]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if root is not None:  # silently reading the bundled copy instead would hide a mistake
        raise DataError(
            f"digits ships with scikit-learn and reads no folder, but --data-root {root} was "
            "given; drop --data-root, or pick a dataset read from a folder (fashion-mnist, "
            "cifar10, imagefolder)"
        )
    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    # A fixed, stratified 80/20 split: the same for every experiment seed.
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=0.2, random_state=0, stratify=bunch.target
    )
    tr, te = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    classes = tuple(str(i) for i in range(10))
    return _finish("digits", classes, images[tr], labels[tr], images[te], labels[te])


# --------------------------------------------------------------------- fashion-mnist
_FASHION_STEMS = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def _load_fashion_mnist(
    root: Path | None, download: bool, **_: Any
) -> tuple[Any, Any, DatasetInfo]:
    arrays = {
        key: _read_idx(path, 3 if key.endswith("x") else 1)
        for key, path in _fashion_mnist_files(root, download).items()
    }
    for split in ("train", "test"):
        _check_fashion_mnist(split, arrays[f"{split}_x"], arrays[f"{split}_y"])

    def images(a: np.ndarray[Any, Any]) -> torch.Tensor:  # the bytes: decoded per batch
        return torch.from_numpy(a).unsqueeze(1)

    def labels(a: np.ndarray[Any, Any]) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    return _finish(
        "fashion-mnist",
        FASHION_MNIST_CLASSES,
        images(arrays["train_x"]),
        labels(arrays["train_y"]),
        images(arrays["test_x"]),
        labels(arrays["test_y"]),
    )


def _fashion_mnist_files(root: Path | None, download: bool) -> dict[str, Path]:
    """The four IDX files (``.gz`` or not): in ``root`` (a folder the user names is used or
    refused, never replaced by the system copy) or the system copy; downloaded into ``root``
    (or ``data/``) with ``download`` when missing."""
    dirs: list[Path] = []
    if root is not None:
        if not root.is_dir() and not download:
            raise DataError(
                f"--data-root {root} does not exist; pass the folder holding the four "
                "Fashion-MNIST IDX files, or drop --data-root to use "
                f"{FASHION_MNIST_SYSTEM_DIR}"
            )
        dirs += [root, root / "fashion-mnist", root / "FashionMNIST" / "raw"]
    else:
        dirs.append(FASHION_MNIST_SYSTEM_DIR)
    dirs = _idx_folder(list(_FASHION_STEMS.values()), dirs)
    paths = {key: _find_idx(stem, dirs) for key, stem in _FASHION_STEMS.items()}
    if None in paths.values() and download:
        from torchvision.datasets import FashionMNIST

        target = root if root is not None else Path("data")
        FashionMNIST(str(target), train=True, download=True)
        FashionMNIST(str(target), train=False, download=True)
        dirs.insert(0, target / "FashionMNIST" / "raw")
        paths = {key: _find_idx(stem, dirs) for key, stem in _FASHION_STEMS.items()}
    missing = [_FASHION_STEMS[k] for k, p in paths.items() if p is None]
    if missing:
        where = dirs[0] if len(dirs) == 1 else root if root is not None else dirs[-1]
        other = f", or drop --data-root to use {FASHION_MNIST_SYSTEM_DIR}" if root else ""
        raise DataError(
            f"Fashion-MNIST file {missing[0]}[.gz] not found in {where}: put the four IDX files "
            f"there (apt-get install dataset-fashion-mnist provides them), or pass --download"
            f"{other}"
        )
    return {key: path for key, path in paths.items() if path is not None}


def _check_fashion_mnist(split: str, x: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> None:
    """Refuse corrupt IDX contents: image shape, matching counts, labels 0..9."""
    if x.shape[1:] != (28, 28) or not len(x):
        raise DataError(
            f"Fashion-MNIST {split} images have shape {x.shape}, not (N>0, 28, 28); the image "
            "file is corrupt, re-download it"
        )
    if len(x) != len(y):
        raise DataError(
            f"Fashion-MNIST {split} images and labels differ in count ({len(x)} vs {len(y)}); "
            "re-download them"
        )
    if y.size and y.max() >= 10:
        raise DataError(f"Fashion-MNIST {split} labels exceed 9; the label file is corrupt")


# --------------------------------------------------------------------------- cifar10
def _load_cifar10(root: Path | None, download: bool, **_: Any) -> tuple[Any, Any, DatasetInfo]:
    root = root if root is not None else Path("data")
    py_dir, bin_dir = root / "cifar-10-batches-py", root / "cifar-10-batches-bin"
    if not py_dir.is_dir() and not bin_dir.is_dir() and download:
        from torchvision.datasets import CIFAR10

        CIFAR10(str(root), train=True, download=True)
    if py_dir.is_dir():
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        reader: Callable[[Path], Any] = _cifar_python_batch
        folder = py_dir
    elif bin_dir.is_dir():
        names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
        reader = _cifar_binary_batch
        folder = bin_dir
    else:
        raise DataError(
            f"CIFAR-10 not found: put cifar-10-batches-py/ (or cifar-10-batches-bin/) in {root} "
            "(--data-root), or pass --download"
        )
    for name in names:
        if not (folder / name).is_file():
            raise DataError(f"CIFAR-10 file {folder / name} is missing; re-download CIFAR-10")
    batches = [reader(folder / name) for name in names]
    train_x = np.concatenate([b[0] for b in batches[:-1]])
    train_y = np.concatenate([b[1] for b in batches[:-1]])
    test_x, test_y = batches[-1]
    for arr in (train_y, test_y):
        if arr.size and (arr.min() < 0 or arr.max() > 9):
            raise DataError(f"CIFAR-10 labels in {folder} are outside 0..9; the files are corrupt")

    def images(a: np.ndarray[Any, Any]) -> torch.Tensor:  # the bytes: decoded per batch
        return torch.from_numpy(np.require(a, np.uint8, ["C", "W"]))

    return _finish(
        "cifar10",
        CIFAR10_CLASSES,
        images(train_x),
        torch.from_numpy(train_y),
        images(test_x),
        torch.from_numpy(test_y),
    )


# ----------------------------------------------------------------------- imagefolder
def _load_imagefolder(
    root: Path | None,
    download: bool,
    *,
    image_size: int = 64,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    **_: Any,
) -> tuple[Any, Any, DatasetInfo]:
    if root is None or not root.is_dir():
        raise DataError(
            f"image folder {root} not found: pass --data-root DIR with one sub-folder of images "
            "per class (or DIR/train and DIR/test, each with one sub-folder per class)"
        )
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes = _class_dirs(root / "train")
        train_x, train_y = _read_folder(root / "train", classes, image_size)
        test_classes = _class_dirs(root / "test")
        if test_classes != classes:
            raise DataError(
                f"{root}/train and {root}/test have different class folders; make them match"
            )
        test_x, test_y = _read_folder(root / "test", classes, image_size)
    else:
        classes = _class_dirs(root)
        all_x, all_y = _read_folder(root, classes, image_size)
        rng = np.random.default_rng(split_seed)
        test_mask = np.zeros(len(all_y), dtype=bool)
        for index in range(len(classes)):
            members = np.flatnonzero(all_y == index)
            rng.shuffle(members)
            n_test = round(len(members) * test_fraction)
            n_test = min(max(n_test, 1), len(members) - 1) if len(members) > 1 else 0
            test_mask[members[:n_test]] = True
        train_x, train_y = all_x[~test_mask], all_y[~test_mask]
        test_x, test_y = all_x[test_mask], all_y[test_mask]
    if len(classes) < 2:
        raise DataError(f"{root} has {len(classes)} class folder(s); unlearning needs at least 2")
    empty = [c for i, c in enumerate(classes) if not (train_y == i).any()]
    if empty:
        raise DataError(f"class folder '{empty[0]}' in {root} has no readable training images")

    def images(a: np.ndarray[Any, Any]) -> torch.Tensor:  # the bytes: decoded per batch
        return (
            torch.from_numpy(np.require(a, np.uint8, ["C", "W"])).permute(0, 3, 1, 2).contiguous()
        )

    return _finish(
        "imagefolder",
        tuple(classes),
        images(train_x),
        torch.from_numpy(train_y),
        images(test_x),
        torch.from_numpy(test_y),
    )


_LOADERS: dict[str, Callable[..., tuple[Any, Any, DatasetInfo]]] = {
    "digits": _load_digits,
    "fashion-mnist": _load_fashion_mnist,
    "cifar10": _load_cifar10,
    "imagefolder": _load_imagefolder,
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`.

    Returns:
        The dataset names, sorted.

    Example:
        >>> list_datasets()
        ['cifar10', 'digits', 'fashion-mnist', 'imagefolder']
    """
    return sorted(_LOADERS)


def dataset_key(name: str) -> str:
    """The canonical spelling of a data set's name (as :class:`DatasetInfo` has it): lower
    case, ``-`` for ``_``, and the aliases ``fmnist``/``fashionmnist`` and ``cifar-10``.

    Args:
        name: a data set name as a user writes it.

    Returns:
        The canonical name (unknown names come back normalised, not refused).

    Example:
        >>> dataset_key("Fashion_MNIST"), dataset_key("fmnist"), dataset_key("CIFAR-10")
        ('fashion-mnist', 'fashion-mnist', 'cifar10')
    """
    key = name.lower().replace("_", "-")
    aliases = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "fmnist": "fashion-mnist"}
    return aliases.get(key, key)


def load_dataset(
    name: str,
    root: str | Path | None = None,
    download: bool = False,
    **options: Any,
) -> tuple[TensorDataset, TensorDataset, DatasetInfo]:
    """Load ``name`` as ``(train, test, info)``; images are pixels in [0, 1] (held as bytes
    where the files hold bytes, decoded to float32 when read: ``train[i]``, a batch).

    ``root`` is the local folder to read from (``fashion-mnist`` also looks in
    ``/usr/share/datasets/fashion-mnist``). ``download=True`` fetches the data set with
    torchvision first (needs internet). ``imagefolder`` accepts ``image_size`` (default 64),
    ``test_fraction`` (0.2) and ``split_seed`` (0) for its seeded, per-class train/test split.

    Args:
        name: one of :func:`list_datasets` (``fashion_mnist``, ``fmnist``, ``cifar-10`` are
            accepted too).
        root: the local folder to read from.
        download: fetch the data set with torchvision first.
        **options: loader options (``imagefolder``: ``image_size``, ``test_fraction``,
            ``split_seed``).

    Returns:
        ``(train, test, info)``: two ``TensorDataset``s and the :class:`DatasetInfo`.

    Raises:
        UnknownNameError: an unknown dataset name.
        DataError: the files are missing or unreadable (the message says where to put them).

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> for cls in ("cat", "dog"):
        ...     (root / cls).mkdir()
        ...     for i in range(3):
        ...         Image.new("RGB", (4, 4), (60 * i, 0, 0)).save(root / cls / f"{i}.png")
        >>> train, test, info = load_dataset("imagefolder", root, image_size=8)
        >>> len(train), len(test), info.classes, tuple(train.tensors[0].shape[1:])
        (4, 2, ('cat', 'dog'), (3, 8, 8))
    """
    if not isinstance(name, str):
        raise unknown_name("dataset", repr(name), _LOADERS)
    key = dataset_key(name)
    if key not in _LOADERS:
        raise unknown_name("dataset", name, _LOADERS)
    return _LOADERS[key](Path(root) if root is not None else None, download, **options)
