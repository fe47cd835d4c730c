"""Trained models kept for reuse: the cache of original and retrained models (keyed by a hash
of every setting that shapes them, with the metadata their checkpoints record) and the store
of a run's finished stages that ``--resume`` reuses."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ._utils import atomic_write_json, synchronize
from .checkpoint import config_hash, load_checkpoint, read_metadata, save_checkpoint
from .config import ExperimentConfig, input_normalization, resolve_device
from .data import DatasetInfo, UnlearningData
from .data.formats import folder_fingerprint
from .distributed import all_ranks, world_size
from .errors import UnlearningError
from .methods import get_method, unlearn
from .metrics import accuracy
from .models import create_model, import_model_function, is_user_model
from .pipeline import build_model
from .recording import UpdateRecorder, record_path, save_record
from .training import train

__all__ = [
    "StageStore",
    "data_source",
    "default_cache_dir",
    "model_metadata",
    "original_metadata",
    "random_model",
    "records_updates",
    "stage_key",
    "train_original",
    "train_retrained",
    "user_code_digest",
    "with_update_record",
]


RECIPE_VERSION = 1  # bump when the training loop changes what a cached checkpoint holds
STAGE_VERSION = 3  # bump when what a saved stage of a run holds changes (2: the probe's
# retained images changed, so a resumed run does not mix two probes; 3: its standard error)
RANDOM_MODEL_SEED_OFFSET = 10_000  # the ZRF reference is initialised with seed + this


def default_cache_dir() -> Path:
    """``$BUNLEARN_CACHE`` or ``~/.cache/boundary-unlearning``."""
    env = os.environ.get("BUNLEARN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "boundary-unlearning"


def user_code_digest(model: str) -> str | None:
    """A hash of the source file that defines a user architecture, so cached models trained
    with other code are not reused (``None`` for a zoo model or a module without a file)."""
    if not is_user_model(model):
        return None
    module = sys.modules.get(import_model_function(model).__module__)
    path = getattr(module, "__file__", None)
    if not isinstance(path, str) or not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def model_metadata(config: ExperimentConfig, info: DatasetInfo) -> dict[str, Any]:
    user = is_user_model(config.model)
    return {
        "dataset": info.name,
        "model": config.model,
        "model_options": dict(config.model_options),
        "classes": list(info.classes),
        "num_classes": info.num_classes,
        "in_channels": info.in_channels,
        "image_size": info.image_size,
        # a zoo model's own normalisation (a user model's inputs: input_normalization)
        "mean": list(info.mean if config.mean is None or user else config.mean),
        "std": list(info.std if config.std is None or user else config.std),
        **_user_model_metadata(config.model, config.mean, config.std),
    }


def _user_model_metadata(
    model: str, mean: Sequence[float] | None, std: Sequence[float] | None
) -> dict[str, Any]:
    """What a user architecture's checkpoint records beyond a zoo model's: the normalisation
    its inputs carry and a hash of its source file."""
    if not is_user_model(model):
        return {}
    norm = input_normalization(model, mean, std)
    return {
        "input_normalization": None if norm is None else [list(norm[0]), list(norm[1])],
        "code": user_code_digest(model),
    }


def _cached_training(
    folder: Path,
    meta: dict[str, Any],
    build: Callable[[], nn.Module],
    run: Callable[[nn.Module], nn.Module],
    device: torch.device,
    describe: Callable[[nn.Module], dict[str, Any]] | None = None,
) -> tuple[nn.Module, dict[str, Any], bool]:
    """Reuse the checkpoint in ``folder`` if its metadata matches ``meta``; else train,
    add ``describe(model)`` to the metadata and save. Returns ``(model, meta, reused)``."""
    existing = read_metadata(folder) if (folder / "model.json").is_file() else None
    cached: tuple[nn.Module, dict[str, Any]] | None = None
    if existing is not None and existing.get("cache_key") == meta["cache_key"]:
        # built by our own code (a user architecture is never imported on a file's word),
        # as a copy: `build` may hand out a live model (the original, for retraining)
        with contextlib.suppress(UnlearningError):  # corrupt: train again, overwrite it
            cached = load_checkpoint(folder, copy.deepcopy(build()))
    reuse = all_ranks(cached is not None)  # under torchrun: only if every rank can reuse it
    if cached is not None and reuse:
        return cached[0].to(device), cached[1], True
    model = build().to(device)
    synchronize(device)
    start = time.perf_counter()
    model = run(model)
    synchronize(device)
    meta = {**meta, "train_seconds": time.perf_counter() - start, "world_size": world_size()}
    if describe is not None:
        meta.update(describe(model))
    save_checkpoint(model, folder, meta)
    return model, meta, False


def records_updates(config: ExperimentConfig) -> bool:
    """Whether the original is trained with update recording: asked for, or needed by a
    method of cost "record" (amnesiac)."""
    return config.record_updates or any(get_method(m).cost == "record" for m in config.methods)


def with_update_record(config: ExperimentConfig, original_folder: Path) -> ExperimentConfig:
    """``config`` with each record-cost method pointed at the original's update record
    (unless the user gave one)."""
    hparams = dict(config.hyperparameters)
    for name in config.methods:
        if get_method(name).cost == "record" and "record" not in hparams.get(name, {}):
            hparams[name] = {**hparams.get(name, {}), "record": str(record_path(original_folder))}
    return dataclasses.replace(config, hyperparameters=hparams)


def data_source(dataset: str, root: str | Path | None) -> dict[str, Any]:
    """Where a model's data came from, as its checkpoint records it: the resolved
    ``--data-root`` (``None``: the data set's default location) and, for an image folder,
    a fingerprint of its files (the class names are in the metadata's ``classes``)."""
    if root is None:
        return {"root": None}
    resolved = Path(root).resolve()
    source: dict[str, Any] = {"root": str(resolved)}
    if dataset.lower() == "imagefolder" and resolved.is_dir():
        source["fingerprint"] = folder_fingerprint(resolved)
    return source


def original_metadata(config: ExperimentConfig, info: DatasetInfo) -> dict[str, Any]:
    """Metadata of the original model for these settings, with its cache key (and, outside
    the key, where its data came from).

    Args:
        config: the run's settings (one seed).
        info: the data set the model is trained on.

    Returns:
        The metadata its checkpoint records, ``cache_key`` included.
    """
    base = model_metadata(config, info)
    recipe = config.training_recipe()
    recording = {"record_updates": True} if records_updates(config) else {}
    subset = {"subset": config.subset} if config.subset is not None else {}
    key = config_hash({"kind": "original", **base, **recipe, "v": RECIPE_VERSION,
                       "data_root": config.data_root, **recording, **subset})  # fmt: skip
    return {**base, "hyperparameters": {**recipe, **subset}, "seed": config.seed,
            "cache_key": key, "data": data_source(config.dataset, config.data_root)}  # fmt: skip


def train_original(
    config: ExperimentConfig,
    info: DatasetInfo,
    train_set: Dataset[Any],
    test_set: Dataset[Any],
    folder: Path | None = None,
) -> tuple[nn.Module, dict[str, Any], bool]:
    """Train the original model on the whole training set, or reuse the checkpoint in
    ``folder`` (default: the cache) trained with the same settings.

    Args:
        config: the run's settings (one seed).
        info: the data set's description.
        train_set: the training set the model is trained on.
        test_set: the test set its ``test_accuracy`` is measured on.
        folder: where the checkpoint is kept; ``None``: the cache's ``originals/<key>``.

    Returns:
        ``(model, metadata, reused)``.
    """
    cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    device = resolve_device(config.device)
    recipe = config.training_recipe()
    meta = original_metadata(config, info)
    folder = folder if folder is not None else cache / "originals" / meta["cache_key"]

    def run(model: nn.Module) -> nn.Module:
        if not records_updates(config):
            return train(model, train_set, **recipe, progress=config.progress, desc="original")
        recorder = UpdateRecorder(model, info.num_classes)
        train(model, train_set, **recipe, progress=config.progress, desc="original",
              callbacks=[recorder])  # fmt: skip
        save_record(recorder.record(model), folder)  # before the checkpoint that it completes
        return model

    return _cached_training(
        folder, meta, lambda: build_model(config, info), run, device,
        lambda m: {"test_accuracy": accuracy(m, test_set)},
    )  # fmt: skip


def train_retrained(
    config: ExperimentConfig,
    info: DatasetInfo,
    data: UnlearningData,
    original: nn.Module,
    orig_meta: dict[str, Any],
) -> tuple[nn.Module, dict[str, Any], bool]:
    """Retrain from scratch on D_r (the reference), or reuse the cached retrained model for
    these settings.

    Args:
        config: the run's settings (one seed).
        info: the data set's description.
        data: the class split; the model is trained on its retain set.
        original: the original model (the architecture to retrain; it is not changed).
        orig_meta: the original's metadata (its cache key is part of the retrained one's).

    Returns:
        ``(model, metadata, reused)``.
    """
    cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    device = resolve_device(config.device)
    classes = list(data.forget_classes)
    retrain_hp = config.training_recipe()
    # D_r holds every class but the forgotten ones whatever forget_fraction is (the fraction
    # only thins what a method may see of D_f), so the fraction is not part of the key: a
    # forget-fraction sweep reuses one retrained model and reports its real training time.
    retrain_key = config_hash(
        {"kind": "retrain", "original": orig_meta["cache_key"], "forget": classes,
         **retrain_hp, "v": RECIPE_VERSION}
    )  # fmt: skip
    return _cached_training(
        cache / "retrained" / retrain_key,
        {**{k: orig_meta[k] for k in model_metadata(config, info)}, "cache_key": retrain_key,
         "forget_classes": classes, "hyperparameters": retrain_hp},
        lambda: original,
        lambda m: unlearn("retrain", m, data, **retrain_hp, progress=config.progress),
        device,
    )  # fmt: skip


def random_model(config: ExperimentConfig, info: DatasetInfo) -> nn.Module:
    """A freshly initialised (untrained) model of the run's architecture, the ZRF reference.

    Seeded with ``config.seed + RANDOM_MODEL_SEED_OFFSET`` so it is not the original's own
    initialisation.

    Args:
        config: the run's settings (one seed).
        info: the data set's description.

    Returns:
        The untrained model, on the config's device.
    """
    meta = model_metadata(config, info)
    return create_model(
        config.model,
        info.num_classes,
        info.in_channels,
        info.image_size,
        meta["mean"],
        meta["std"],
        seed=config.seed + RANDOM_MODEL_SEED_OFFSET,
        **config.model_options,
    ).to(resolve_device(config.device))


# --- stages: every finished piece of a run is saved, so --resume can reuse it ---------------


class StageStore:
    """Finished stages of a run under ``out/stages/`` (``None`` folder: keep nothing).

    ``seed-<s>/<name>.json`` holds one model's results (written atomically, last, so it
    marks the stage finished); ``seed-<s>/<name>-model.safetensors`` its weights where the
    figures need them; ``figures.json`` the figure data. Each record carries the hash of the
    settings it was computed with and is reused only when that hash matches."""

    def __init__(self, root: Path | None) -> None:
        self.root = root

    def _path(self, seed: int | None, name: str) -> Path:
        assert self.root is not None
        folder = self.root if seed is None else self.root / f"seed-{seed}"
        return folder / f"{name}.json"

    def weights_path(self, seed: int, name: str) -> Path:
        assert self.root is not None
        return self.root / f"seed-{seed}" / f"{name}-model.safetensors"

    def load(self, seed: int | None, name: str, key: str) -> dict[str, Any] | None:
        """The stage's saved value, or ``None`` (not finished, unreadable, other settings).
        Under torchrun a stage is reused only when every rank can read it."""
        if self.root is None:
            return None
        value: Any = None
        try:
            record = json.loads(self._path(seed, name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None  # not finished (or unreadable): compute it again
        if isinstance(record, dict) and record.get("key") == key:
            value = record.get("value")
        found = isinstance(value, dict)
        return value if all_ranks(found) else None

    def save(self, seed: int | None, name: str, key: str, value: dict[str, Any]) -> None:
        if self.root is not None:
            atomic_write_json(self._path(seed, name), {"key": key, "value": value})

    def save_weights(self, seed: int, name: str, model: nn.Module, meta: dict[str, Any]) -> None:
        if self.root is not None:
            save_checkpoint(model, self.weights_path(seed, name), meta)

    def load_weights(self, seed: int, name: str) -> nn.Module | None:
        if self.root is None:
            return None
        model = None
        if self.weights_path(seed, name).is_file():
            with contextlib.suppress(UnlearningError):
                model = load_checkpoint(self.weights_path(seed, name))[0]
        return model if all_ranks(model is not None) else None


_NOT_IN_STAGE_KEY = ("progress", "cache_dir", "device", "download", "methods",
                     "hyperparameters", "seeds", "seed")  # fmt: skip


def stage_key(config: ExperimentConfig, stage: str, **extra: Any) -> str:
    """Hash of every setting a stage's result depends on (not device, progress or paths to
    caches, nor other methods' settings)."""
    base = {k: v for k, v in config.to_dict().items() if k not in _NOT_IN_STAGE_KEY}
    return config_hash({**base, "seed": config.seed, "stage": stage, "v": STAGE_VERSION,
                        **extra})  # fmt: skip
