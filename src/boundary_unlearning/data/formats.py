"""The on-disk formats the dataset loaders read, each into numpy arrays of raw pixels and
labels: Fashion-MNIST's IDX files (plain or gzipped, and which folder holds them), CIFAR-10's
python batches (through an unpickler that loads only numpy arrays) and binary batches, and
image folders (one sub-folder of images per class; :func:`folder_fingerprint` hashes their
layout for checkpoints). Every unreadable file raises
:class:`~boundary_unlearning.errors.DataError` saying how to fix it.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "folder_fingerprint"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


# --------------------------------------------------------------------- fashion-mnist
def _read_idx(path: Path, expected_dims: int) -> np.ndarray[Any, Any]:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path} is not a valid gzip file ({exc}); re-download it") from None
    if len(raw) < 4 + 4 * expected_dims:
        raise DataError(f"{path} is truncated (only {len(raw)} bytes); re-download it")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or ndim != expected_dims:
        raise DataError(
            f"{path} is not an IDX file of unsigned bytes with {expected_dims} dimensions; "
            "re-download it"
        )
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    count, offset = int(np.prod(dims)), 4 + 4 * ndim
    if len(raw) - offset != count:
        raise DataError(
            f"{path} holds {len(raw) - offset} bytes of data but its header promises {count}; "
            "the file is truncated or corrupt, re-download it"
        )
    # one writable copy of the body (not a slice of the file's bytes, then a copy of that)
    return np.frombuffer(raw, dtype=np.uint8, count=count, offset=offset).reshape(dims).copy()


def _find_idx(stem: str, dirs: list[Path]) -> Path | None:
    for folder in dirs:
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _idx_folder(stems: list[str], dirs: list[Path]) -> list[Path]:
    """The first folder holding any of the IDX files: all four are then read from there
    (never a mix of a user's folder and the system copy)."""
    for folder in dirs:
        if any(_find_idx(stem, [folder]) for stem in stems):
            return [folder]
    return dirs


# --------------------------------------------------------------------------- cifar10
class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR-10 python batches without running arbitrary code.

    Only the few numpy reconstruction helpers those files use may be loaded; anything else
    (os.system, builtins.eval, ...) is refused.
    """

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _cifar_python_batch(path: Path) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    try:
        with path.open("rb") as fh:
            entry = _ArrayOnlyUnpickler(io.BytesIO(fh.read()), encoding="latin1").load()
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64)
    except Exception as exc:
        raise DataError(
            f"{path} is not a CIFAR-10 python batch ({type(exc).__name__}: {exc}); re-download it"
        ) from None
    if len(labels) != len(data):
        raise DataError(f"{path} has {len(data)} images but {len(labels)} labels; re-download it")
    return data, labels


def _cifar_binary_batch(path: Path) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    if raw.size == 0 or raw.size % 3073:
        raise DataError(f"{path} is not a CIFAR-10 binary batch (size {raw.size}); re-download it")
    records = raw.reshape(-1, 3073)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)


# ----------------------------------------------------------------------- imagefolder
def _read_folder(folder: Path, classes: list[str], image_size: int) -> tuple[Any, Any]:
    from PIL import Image, UnidentifiedImageError

    images: list[np.ndarray[Any, Any]] = []
    labels: list[int] = []
    for index, cls in enumerate(classes):
        files = sorted(p for p in (folder / cls).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        for path in files:
            try:
                with warnings.catch_warnings():
                    # a decompression bomb (over PIL's pixel limit) is refused, not decoded
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    with Image.open(path) as img:
                        rgb = img.convert("RGB").resize(
                            (image_size, image_size), Image.Resampling.BILINEAR
                        )
                        images.append(np.asarray(rgb, dtype=np.uint8))
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(
                    f"cannot read image {path} ({exc}); remove or replace the file"
                ) from None
            except Exception as exc:  # decoders raise ValueError, SyntaxError, bomb errors...
                raise DataError(
                    f"cannot read image {path} ({type(exc).__name__}: {str(exc)[:120]}); "
                    "remove or replace the file"
                ) from None
            labels.append(index)
    if not images:
        return np.zeros((0, image_size, image_size, 3), np.uint8), np.zeros(0, np.int64)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def folder_fingerprint(root: Path) -> str:
    """A short hash of an image folder's layout: every image's relative path and size (what
    a checkpoint records to find out whether its training data changed).

    Args:
        root: the image folder.

    Returns:
        16 hex digits of a SHA-256 over the sorted ``relative path, size`` of every image.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "cat").mkdir()
        >>> _ = (root / "cat" / "a.png").write_bytes(b"123")
        >>> folder_fingerprint(root)
        'ac4d76ce1fd96ef2'
    """
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
        digest.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
