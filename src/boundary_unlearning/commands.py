"""The back ends of ``bunlearn train``, ``bunlearn unlearn`` and ``bunlearn report`` (``run``'s
is :func:`~boundary_unlearning.experiment.run_experiment`): each takes plain values, checks
them, and writes its model or reports into the folder it is given."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from ._utils import atomic_write_bytes
from .cache import (
    data_source,
    default_cache_dir,
    model_metadata,
    original_metadata,
    train_original,
    user_code_digest,
)
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
from .data import DatasetInfo, UnlearningData
from .data.datasets import dataset_key
from .data.streaming import release_free_memory
from .deletions import earlier_classes, legacy_entries, new_classes, request_entry
from .distributed import is_main_process
from .errors import CheckpointError, DataError, OutputError
from .evidence import (
    EvidenceSettings,
    cached_evidence,
    evidence_entry,
    evidence_summary,
    file_sha256,
)
from .ledger import ledger_entries, sealed_ledger
from .methods import get_method, unlearning_stats
from .models import is_user_model
from .output_dir import check_writable, load_report
from .pipeline import build_model, load_data, method_settings, split_data, timed_unlearn
from .progress import progress_bar
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
    out: str | Path,
    given: Mapping[str, Any],
    overwrite: bool = False,
    full_eval: bool = False,
) -> dict[str, Any]:
    """``bunlearn unlearn``: load a checkpoint, unlearn, write the new weights and a report
    into ``out``. The input checkpoint is only read.

    The settings take the path of ``bunlearn run`` (:mod:`boundary_unlearning.pipeline`): an
    :class:`~boundary_unlearning.config.ExperimentConfig` gives the data and the method's
    settings; what the user did not give (the data set, the architecture, its options, the
    data folder, a user architecture's ``mean``/``std``) comes from the checkpoint's
    metadata. ``model`` may be a user architecture ``"MODULE:FUNCTION"`` (the checkpoint
    then is a plain ``state_dict``, safetensors or ``torch.save``).

    Args:
        checkpoint: a folder written by ``bunlearn train`` or a weights file.
        method: a registered method's name.
        out: the folder that receives the unlearned model and the report.
        given: the settings the user gave, as ExperimentConfig fields: ``forget_classes``
            (indices or names), and any of ``forget_fraction``, ``seed``, ``dataset``,
            ``model``, ``data_root``, ``download``, ``device``, ``progress``, ``mean``,
            ``std`` and ``hyperparameters`` (the method's; others keep their defaults).
        overwrite: replace an existing model in ``out``.
        full_eval: read every image of every set (``--full-eval``); by default D_r and D_tr
            (and D_f, D_tf beyond 2,000 images) are read on seeded samples sized for
            intervals of about ±1.5 points that all hold together at 95% (Bonferroni over
            the report's eight), which the report prints with each sample's size.

    Returns:
        The report (also written to ``out``).
    """
    config = ExperimentConfig.from_dict(
        {**given, "methods": [method],
         "hyperparameters": {method: dict(given.get("hyperparameters") or {})}}
    )  # fmt: skip
    method_settings(method, config)  # checked before anything is read
    out = Path(out)
    weights_in = _check_paths(checkpoint, out, overwrite=overwrite)
    meta, config = _from_checkpoint(checkpoint, config, given)
    entries = ledger_entries(meta, str(checkpoint_paths(checkpoint)[1])) or legacy_entries(
        meta, weights_in, say=is_main_process()
    )
    train_set, test_set, info = load_data(config)
    if config.data_root is not None and given.get("data_root") is None:
        _check_same_data(checkpoint, meta, info, config.data_root)
        if is_main_process():  # the checkpoint, not the user, chose this folder: say so
            print(f"bunlearn: reading {config.dataset} data from {config.data_root}, the "
                  f"folder {checkpoint} was trained on (pass --data-root to use another)",
                  file=sys.stderr)  # fmt: skip
    net, meta = _load_model(checkpoint, meta, config, info, named=given.get("model") is not None)
    earlier = earlier_classes(entries, info, str(checkpoint_paths(checkpoint)[1]))
    asked = [info.class_index(c) for c in config.forget_classes]
    fresh = new_classes(asked, earlier, entries, info, say=is_main_process())
    config = dataclasses.replace(config, forget_classes=list(fresh))
    data = split_data(config, train_set, test_set, info, forgotten=earlier)
    del train_set, test_set  # the split holds what is needed: free the rest before the method
    net = net.to(resolve_device(config.device))
    check_writable(out)
    hparams = method_settings(method, config)
    if get_method(method).cost == "record" and "record" not in hparams:
        hparams["record"] = str(record_path(checkpoint))  # the record saved beside it
    unlearned, seconds = timed_unlearn(method, net, data, hparams, progress=config.progress)
    release_free_memory()  # the method's freed heap: evaluating on top of it raised the peak
    report = _unlearn_report(
        method, config, info, data, (net, unlearned), seconds, hparams,
        evidence=EvidenceSettings(full=full_eval, seed=config.seed),
        weights_sha256=file_sha256(weights_in),
        architecture={"model": config.model, "options": config.model_options,
                      "code": user_code_digest(config.model)},
    )  # fmt: skip
    report = {**report, "checkpoint": str(weights_in), "results": report.pop("results")}
    entry = request_entry(report, method, data, info, weights_in)
    if config.progress and is_main_process():
        tqdm.write(f"bunlearn: writing the unlearned model and report to {out}", file=sys.stderr)
    save_checkpoint(
        unlearned, out, _unlearned_metadata(meta, report, method, info, config, weights_in),
        seal=lambda sha: {"ledger": sealed_ledger(entries, entry, output_sha256=sha)},
    )  # fmt: skip
    write_reports(report, out)
    return report


def _unlearned_metadata(
    meta: dict[str, Any],
    report: dict[str, Any],
    method: str,
    info: DatasetInfo,
    config: ExperimentConfig,
    weights_in: Path,
) -> dict[str, Any]:
    """The unlearned checkpoint's metadata (the ledger is added as it is written): the
    input's architecture and data, and this request (``unlearned``)."""
    dropped = {"format", "cache_key", "train_seconds", "world_size", "ledger"}
    new_meta = {k: v for k, v in meta.items() if k not in dropped}
    new_meta["data"] = data_source(info.name, config.data_root)
    new_meta["unlearned"] = {
        "method": method, "forget_classes": report["forget_classes"], "from": str(weights_in),
        "hyperparameters": report["results"][method]["hyperparameters"],
    }  # fmt: skip
    return new_meta


def _check_paths(checkpoint: str | Path, out: Path, *, overwrite: bool) -> Path:
    """The checkpoint's weights file, after checking that it exists and that ``out`` is a
    folder that neither is the input nor holds a model (without ``overwrite``)."""
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
    return weights_in


def _from_checkpoint(
    checkpoint: str | Path, config: ExperimentConfig, given: Mapping[str, Any]
) -> tuple[dict[str, Any], ExperimentConfig]:
    """The checkpoint's metadata (``{}`` for a plain state_dict), and ``config`` with what
    the user did not give taken from it: the data set, the architecture (and its options),
    the data folder it was trained on, a user architecture's input normalisation."""
    meta = read_metadata(checkpoint) or {}
    model = given.get("model")
    if not meta:
        load_state_dict(checkpoint)  # a corrupt file is the real problem, not the metadata
    if meta and model is None:
        check_metadata(meta, str(checkpoint_paths(checkpoint)[1]))
    dataset = given.get("dataset") or meta.get("dataset")
    if not isinstance(dataset, str):
        raise CheckpointError(
            f"{checkpoint} has no metadata naming its data set; pass --dataset (and --model)"
        )
    data_root = given.get("data_root")
    if data_root is None:
        data_root = _recorded_data_root(checkpoint, meta, dataset)
    mean, std = given.get("mean"), given.get("std")
    if model is not None and is_user_model(model) and mean is None and std is None:
        recorded = meta.get("input_normalization") if meta.get("model") == model else None
        if isinstance(recorded, list) and len(recorded) == 2:
            mean, std = recorded  # what it was trained on, checked below
    norm = input_normalization(model or "", mean, std)
    same = meta.get("model") == model
    resolved = dataclasses.replace(
        config, dataset=dataset, data_root=data_root, model=model or meta.get("model") or "",
        model_options=dict(meta.get("model_options", {})) if same else {},
        mean=None if norm is None else list(norm[0]), std=None if norm is None else list(norm[1]),
    )  # fmt: skip
    return meta, resolved


def _load_model(
    checkpoint: str | Path,
    meta: dict[str, Any],
    config: ExperimentConfig,
    info: DatasetInfo,
    *,
    named: bool,
) -> tuple[nn.Module, dict[str, Any]]:
    """The checkpoint's model and the metadata its unlearned copy records: built from the
    metadata, or (an architecture the user ``named``, or a plain state_dict) built as
    :func:`~boundary_unlearning.pipeline.build_model` does and loaded."""
    source = str(checkpoint_paths(checkpoint)[1])
    if not named and meta:
        check_matches_dataset(meta, info, str(checkpoint_paths(checkpoint)[0]))
        return load_checkpoint(checkpoint)
    if not named:
        raise CheckpointError(f"{checkpoint} has no metadata naming its architecture; pass --model")
    check_model_options(config.model_options, source)
    net, _ = load_checkpoint(checkpoint, build_model(config, info))
    described = model_metadata(dataclasses.replace(config, model_options={}), info)
    if is_user_model(config.model):
        return net, {**meta, **described}
    return net, {**described, **meta, "model": config.model}


def _unlearn_report(
    method: str,
    config: ExperimentConfig,
    info: DatasetInfo,
    data: UnlearningData,
    models: tuple[nn.Module, nn.Module],
    seconds: float,
    hparams: dict[str, Any],
    *,
    evidence: EvidenceSettings,
    weights_sha256: str,
    architecture: dict[str, Any],
) -> dict[str, Any]:
    """``bunlearn unlearn``'s report: accuracies (with their intervals and sample sizes) and
    depth evidence of the ``(original, unlearned)`` models, the method's seconds, resolved
    hyperparameters and stats. The original's evidence comes from the cache when these
    weights, in this ``architecture`` (name, options, a user architecture's source digest),
    were already evaluated on these data with these settings."""
    original, unlearned = models
    cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    entries: dict[str, dict[str, Any]] = {}
    reused = False
    with progress_bar(["original", method], desc="evidence", unit="model",
                      show=config.progress) as bar:  # fmt: skip
        for name in bar:
            bar.set_postfix_str(name)
            if name == "original":
                entries[name], reused = cached_evidence(
                    original, data, evidence, weights_sha256=weights_sha256, cache_dir=cache,
                    seed=config.seed, architecture=architecture,
                )  # fmt: skip
            else:
                entries[name] = evidence_entry(unlearned, data, evidence, seed=config.seed)
    entry: dict[str, Any] = {
        **entries[method],
        "seconds": seconds,
        "hyperparameters": get_method(method).resolve(hparams),
    }
    if unlearning_stats(unlearned):
        entry["stats"] = unlearning_stats(unlearned)
    classes = list(data.forget_classes)
    before = entries["original"]
    return {
        "dataset": info.name,
        "model": config.model,
        "forget_classes": classes,
        "class_names": [info.classes[c] for c in classes],
        "forgotten_before": list(data.forgotten_before),
        "class_names_all": {str(c): info.classes[c] for c in data.all_forgotten},
        "seed": config.seed,
        "evidence": {**evidence_summary(data, evidence), "original_reused": reused},
        "results": {"original": before, method: entry},
    }


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
