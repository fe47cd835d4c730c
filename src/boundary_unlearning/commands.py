"""The back ends of ``bunlearn train``, ``bunlearn unlearn`` and ``bunlearn report`` (``run``'s
is :func:`~boundary_unlearning.experiment.run_experiment`): each takes plain values, checks
them, and writes its model or reports into the folder it is given."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ._utils import atomic_write_bytes
from .cache import data_source, model_metadata, original_metadata, train_original
from .checkpoint import (
    check_matches_dataset,
    check_metadata,
    check_model_options,
    checkpoint_paths,
    load_checkpoint,
    load_state_dict,
    read_metadata,
    save_checkpoint,
)
from .config import ExperimentConfig, input_normalization, resolve_device
from .data import DatasetInfo, UnlearningData, class_split, load_dataset
from .data.datasets import dataset_key
from .data.streaming import normalized
from .distributed import is_main_process
from .errors import CheckpointError, DataError, OutputError
from .experiment import check_unlearning_steps, load_data, timed_unlearn
from .methods import get_method, unlearning_stats, validate_hyperparameters
from .metrics import accuracy
from .models import create_model, is_user_model
from .output_dir import check_writable, load_report
from .recording import record_path
from .report import render_reports, write_reports

__all__ = ["rerender_reports", "save_original", "unlearn_checkpoint"]


def save_original(
    config: ExperimentConfig, out: str | Path, *, overwrite: bool = False
) -> tuple[dict[str, Any], bool]:
    """``bunlearn train``: train the original model into ``out`` (reused when ``out`` already
    holds a model trained with identical settings).

    Args:
        config: the training settings (``seed``, not ``seeds``, is used).
        out: the folder that receives ``model.safetensors`` and ``model.json``.
        overwrite: replace a model trained with other settings in ``out``.

    Returns:
        ``(metadata, reused)``.
    """
    config.check_training("train")
    out = Path(out)
    train_set, test_set, info = load_data(config)
    existing = read_metadata(out) if (out / "model.json").is_file() else None
    wanted = original_metadata(config, info)["cache_key"]
    if existing is not None and existing.get("cache_key") != wanted and not overwrite:
        raise OutputError(
            f"{out} already holds a model trained with other settings; pass --overwrite or "
            "choose another --out"
        )
    if existing is None and (out / "model.safetensors").exists() and not overwrite:
        raise OutputError(
            f"{out / 'model.safetensors'} already exists (without model.json); pass --overwrite "
            "or choose another --out"
        )
    check_writable(out)
    _, meta, reused = train_original(config, info, train_set, test_set, folder=out)
    if config.cache_dir is not None:  # a cache the user names is used: `run` reuses the model
        cached = Path(config.cache_dir) / "originals" / meta["cache_key"]
        pairs = [(record_path(out), record_path(cached)),
                 *zip(checkpoint_paths(out), checkpoint_paths(cached), strict=True)]  # fmt: skip
        for src, dst in pairs:
            if src.is_file():
                atomic_write_bytes(dst, src.read_bytes())
    return meta, reused


def unlearn_checkpoint(
    *,
    checkpoint: str | Path,
    method: str,
    forget_classes: list[int | str],
    out: str | Path,
    dataset: str | None = None,
    model: str | None = None,
    data_root: str | None = None,
    download: bool = False,
    forget_fraction: float = 1.0,
    seed: int = 0,
    hyperparameters: dict[str, Any] | None = None,
    overwrite: bool = False,
    device: str = "auto",
    progress: bool = False,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> dict[str, Any]:
    """``bunlearn unlearn``: load a checkpoint, unlearn, write the new weights and a report
    into ``out``. The input checkpoint is only read.

    ``model`` may be a user architecture ``"MODULE:FUNCTION"`` (the checkpoint then is a
    plain ``state_dict``, safetensors or ``torch.save``); ``mean``/``std`` say how its
    inputs are normalised (the data are fed to it normalised so).

    Args:
        checkpoint: a folder written by ``bunlearn train`` or a weights file.
        method: a registered method's name.
        forget_classes: the classes to forget, as indices or names.
        out: the folder that receives the unlearned model and the report.
        dataset: the data set; ``None``: the one the checkpoint records.
        model: the architecture; ``None``: the one the checkpoint records.
        data_root: where the data set lies; ``None``: where the checkpoint was trained.
        download: fetch the data set if it is missing.
        forget_fraction: the fraction of the forget classes the method sees.
        seed: the seed of the split and the method.
        hyperparameters: the method's hyperparameters (others keep their defaults).
        overwrite: replace an existing model in ``out``.
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
        progress: show progress bars.
        mean: the per-channel mean a user architecture's inputs are normalised with.
        std: the per-channel standard deviation that goes with ``mean``.

    Returns:
        The report (also written to ``out``).
    """
    hparams = validate_hyperparameters(method, dict(hyperparameters or {}))
    check_unlearning_steps(method, hparams)
    out = Path(out)
    weights_in, meta_in = checkpoint_paths(checkpoint)
    if not weights_in.is_file():
        raise CheckpointError(
            f"checkpoint {weights_in} not found; pass the file or folder written by 'bunlearn "
            "train'"
        )
    if out.suffix in {".safetensors", ".pt", ".pth", ".bin"}:
        raise OutputError(
            f"--out {out} must be a folder (it receives model.safetensors, model.json and the "
            "reports); drop the file name"
        )
    weights_out, meta_out = checkpoint_paths(out)
    if weights_out.resolve() == weights_in.resolve() or meta_out.resolve() == meta_in.resolve():
        raise OutputError(
            f"--out {out} would overwrite the input checkpoint; choose another folder"
        )
    if weights_out.exists() and not overwrite:
        raise OutputError(f"{weights_out} already exists; pass --overwrite or choose another --out")
    meta = read_metadata(checkpoint) or {}
    meta_path = str(checkpoint_paths(checkpoint)[1])
    if not meta:
        load_state_dict(checkpoint)  # a corrupt file is the real problem, not the metadata
    if meta and model is None:
        check_metadata(meta, meta_path)
    dataset = dataset or meta.get("dataset")
    if not isinstance(dataset, str):
        raise CheckpointError(
            f"{checkpoint} has no metadata naming its data set; pass --dataset (and --model)"
        )
    recorded = _recorded_data_root(checkpoint, meta, dataset) if data_root is None else None
    if model is not None and is_user_model(model) and mean is None and std is None:
        recorded_norm = meta.get("input_normalization") if meta.get("model") == model else None
        if isinstance(recorded_norm, list) and len(recorded_norm) == 2:
            mean, std = recorded_norm  # what it was trained on, checked below
    norm = input_normalization(model or "", mean, std)
    train_set: Dataset[Any]
    test_set: Dataset[Any]
    train_set, test_set, info = load_dataset(dataset, recorded or data_root, download=download)
    if recorded is not None:
        _check_same_data(checkpoint, meta, info, recorded)
        if is_main_process():  # the checkpoint, not the user, chose this folder: say so
            print(f"bunlearn: reading {dataset} data from {recorded}, the folder {checkpoint} "
                  "was trained on (pass --data-root to use another)", file=sys.stderr)  # fmt: skip
    if norm is not None:
        train_set, test_set = normalized(train_set, norm), normalized(test_set, norm)
    data_root = recorded or data_root
    if model is not None or not meta:
        if model is None:
            raise CheckpointError(
                f"{checkpoint} has no metadata naming its architecture; pass --model"
            )
        options = meta.get("model_options", {}) if meta.get("model") == model else {}
        check_model_options(options, meta_path)
        net: nn.Module = create_model(
            model, info.num_classes, info.in_channels, info.image_size, info.mean, info.std,
            **options,
        )  # fmt: skip
        net, _ = load_checkpoint(checkpoint, net)
        described = ExperimentConfig(
            model=model,
            mean=None if norm is None else list(norm[0]),
            std=None if norm is None else list(norm[1]),
        )
        meta = {**meta, **model_metadata(described, info)} if is_user_model(model) else {
            **model_metadata(described, info), **meta, "model": model}  # fmt: skip
    else:
        check_matches_dataset(meta, info, str(weights_in))
        net, meta = load_checkpoint(checkpoint)
    classes = [info.class_index(c) for c in forget_classes]
    data = class_split(
        train_set, test_set, classes, forget_fraction, seed, num_classes=info.num_classes,
        normalization=norm,
    )  # fmt: skip
    net = net.to(resolve_device(device))
    check_writable(out)
    run_hp = {"seed": seed, **hparams}
    spec = get_method(method)
    run_hp = {k: v for k, v in run_hp.items() if k in spec.hyperparameters}
    if spec.cost == "record" and "record" not in run_hp:
        run_hp["record"] = str(record_path(checkpoint))  # the record saved beside it
    unlearned, seconds = timed_unlearn(method, net, data, run_hp, progress=progress)
    scores = _evaluate_with_progress({method: unlearned, "original": net}, data, progress)
    entry: dict[str, Any] = {
        "acc": scores[method],
        "seconds": seconds,
        "hyperparameters": spec.resolve(run_hp),
    }
    if unlearning_stats(unlearned):
        entry["stats"] = unlearning_stats(unlearned)
    report: dict[str, Any] = {
        "dataset": info.name,
        "model": meta.get("model"),
        "forget_classes": classes,
        "class_names": [info.classes[c] for c in classes],
        "seed": seed,
        "checkpoint": str(weights_in),
        "results": {"original": {"acc": scores["original"]}, method: entry},
    }
    dropped = {"format", "cache_key", "train_seconds", "world_size"}
    new_meta = {k: v for k, v in meta.items() if k not in dropped}
    new_meta["data"] = data_source(info.name, data_root)
    new_meta.update(
        {"unlearned": {"method": method, "forget_classes": classes, "from": str(weights_in),
                       "hyperparameters": entry["hyperparameters"]}}
    )  # fmt: skip
    if progress and is_main_process():
        tqdm.write(f"bunlearn: writing the unlearned model and report to {out}", file=sys.stderr)
    save_checkpoint(unlearned, out, new_meta)
    write_reports(report, out)
    return report


def _recorded_data_root(checkpoint: str | Path, meta: dict[str, Any], dataset: str) -> str | None:
    """The data folder the checkpoint recorded (when unlearning on its own data set and no
    --data-root was given), checked to still exist."""
    source = meta.get("data")
    root = source.get("root") if isinstance(source, dict) else None
    if not isinstance(root, str) or meta.get("dataset") != dataset_key(dataset):
        return None
    if not Path(root).exists():
        raise DataError(
            f"{checkpoint} was trained on {dataset} data in {root}, which no longer exists; "
            "pass --data-root with the folder's new location"
        )
    return root


def _check_same_data(
    checkpoint: str | Path, meta: dict[str, Any], info: DatasetInfo, root: str
) -> None:
    """The recorded folder still holds the data the checkpoint was trained on: the same
    class names and, for an image folder, the same files (fingerprint)."""
    classes = meta.get("classes")
    if isinstance(classes, list) and list(info.classes) != classes:
        raise DataError(
            f"{root} now has classes {list(info.classes)} but {checkpoint} was trained on "
            f"{classes}; pass --data-root with the folder it was trained on"
        )
    source = meta.get("data")
    was = source.get("fingerprint") if isinstance(source, dict) else None
    now = data_source(info.name, root).get("fingerprint")
    if isinstance(was, str) and now is not None and now != was:
        raise DataError(
            f"the images in {root} changed since {checkpoint} was trained on them (fingerprint "
            f"{was} -> {now}); pass --data-root {root} to use them anyway, or restore them"
        )


def _evaluate_with_progress(
    models: dict[str, nn.Module], data: UnlearningData, progress: bool
) -> dict[str, dict[str, float | None]]:
    """:func:`evaluate` of each model, with one bar over every (model, set) pass."""
    sets = {"retain": data.retain, "forget": data.forget_eval,
            "test_retain": data.test_retain, "test_forget": data.test_forget}  # fmt: skip
    scores: dict[str, dict[str, float | None]] = {name: {} for name in models}
    passes = [(name, key) for name in models for key in sets]
    disable = not progress or not is_main_process()
    with tqdm(passes, desc="evaluating", unit="set", disable=disable) as bar:
        for name, key in bar:
            bar.set_postfix_str(f"{name} on {key}")
            scores[name][key] = accuracy(models[name], sets[key])
    return scores


def rerender_reports(out_dir: str | Path) -> dict[str, Any]:
    """``bunlearn report DIR``: rewrite the reports in ``out_dir`` from its ``report.json``
    without running anything.

    Args:
        out_dir: the ``--out`` folder of a finished ``bunlearn run``.

    Returns:
        The report.
    """
    out = Path(out_dir)
    report = load_report(out)
    check_writable(out)
    render_reports(report, out)
    return report
