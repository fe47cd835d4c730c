"""One experiment: load data -> train or load the cached original -> retrain (cached) ->
run each method (timed) -> evaluate -> write reports."""

from __future__ import annotations

import functools
import json
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ._utils import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    model_device,
    synchronize,
)
from .aggregate import aggregate_seeds
from .cache import (
    StageStore,
    data_source,
    default_cache_dir,
    model_metadata,
    original_metadata,
    random_model,
    records_updates,
    stage_key,
    train_original,
    train_retrained,
    with_update_record,
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
from .config import ExperimentConfig, input_normalization, resolve_device, write_resolved_config
from .data import DatasetInfo, UnlearningData, class_split, load_dataset
from .data.split import balanced_subset
from .data.streaming import normalized
from .distributed import is_main_process, world_size
from .errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DivergenceError,
    HyperparameterError,
    OutputError,
)
from .methods import get_method, unlearn, unlearning_stats, validate_hyperparameters
from .metrics import accuracy, compute_metrics
from .models import create_model, is_user_model
from .recording import record_path
from .report import figure_data, format_table, render_reports, write_reports
from .training import check_recipe

__all__ = [
    "check_output_dir",
    "load_report",
    "prepare_data",
    "rerender_reports",
    "run_experiment",
    "save_original",
    "unlearn_checkpoint",
]


def _load(config: ExperimentConfig) -> tuple[Dataset[Any], Dataset[Any], DatasetInfo]:
    """The data set's ``(train, test, info)``, the training set cut to ``config.subset``,
    normalised where a user architecture eats normalised inputs."""
    train_set: Dataset[Any]
    test_set: Dataset[Any]
    train_set, test_set, info = load_dataset(
        config.dataset, config.data_root, download=config.download
    )
    if config.subset is not None:
        train_set = balanced_subset(train_set, config.subset, seed=config.seed)
    norm = input_normalization(config.model, config.mean, config.std)
    if norm is not None:
        train_set, test_set = normalized(train_set, norm), normalized(test_set, norm)
    return train_set, test_set, info


def prepare_data(
    config: ExperimentConfig,
) -> tuple[UnlearningData, DatasetInfo, Dataset[Any], Dataset[Any]]:
    """Load the data set and split it: ``(data, info, train set, test set)``."""
    train_set, test_set, info = _load(config)
    classes = [info.class_index(c) for c in config.forget_classes]
    data = class_split(
        train_set,
        test_set,
        classes,
        forget_fraction=config.forget_fraction,
        seed=config.seed,
        num_classes=info.num_classes,
        normalization=input_normalization(config.model, config.mean, config.std),
    )
    return data, info, train_set, test_set


def timed_unlearn(
    name: str,
    model: nn.Module,
    data: UnlearningData,
    hparams: dict[str, Any],
    *,
    progress: bool = False,
) -> tuple[nn.Module, float]:
    """Run method ``name`` and return the new model and its wall-clock seconds, measured
    between device synchronisations (so queued GPU work is counted). Used by ``run``,
    ``unlearn`` and the benchmark, so every reported time means the same thing.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from boundary_unlearning import class_split
        >>> x, y = torch.rand(40, 1, 4, 4), torch.arange(40) % 4
        >>> data = class_split(TensorDataset(x, y), TensorDataset(x, y), forget_classes=[1])
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4))
        >>> _, seconds = timed_unlearn("boundary_expanding", net, data, {"max_steps": 2})
        >>> seconds > 0
        True
    """
    device = model_device(model)
    synchronize(device)
    start = time.perf_counter()
    out = unlearn(name, model, data, **hparams, progress=progress)
    synchronize(device)
    return out, time.perf_counter() - start


# --- adapters to the metrics and report modules ------------------------------------------


def _compute_metrics(
    model: nn.Module,
    data: UnlearningData,
    *,
    retrained: nn.Module,
    original: nn.Module,
    random_net: nn.Module,
    config: ExperimentConfig,
) -> dict[str, Any]:
    """Every metric of ``model`` (accuracies, each MIA attack, JS and activation distance to
    the retrained model, ZRF, relearn steps)."""
    return compute_metrics(
        model,
        data,
        retrained=retrained,
        original=original,
        random_model=random_net,
        seed=config.seed,
        relearn=config.relearn,
        ulira=config.ulira,
    )


def _figure_data(
    models: dict[str, nn.Module], data: UnlearningData, seed: int
) -> dict[str, Any] | None:
    """Entropy histograms, t-SNE of penultimate features and confusion matrices."""
    return figure_data(models, data, seed=seed)


def _render(report: dict[str, Any], out: Path) -> None:
    """Write ``report.json`` (atomically) and the human-readable reports beside it:
    ``report.md``, ``results.csv``, ``figures/`` and ``report.html``."""
    atomic_write_json(out / "report.json", report)
    render_reports(report, out)


def _method_hparams(name: str, config: ExperimentConfig) -> dict[str, Any]:
    """The hyperparameters method ``name`` runs with: the user's, plus the run's seed."""
    spec = get_method(name)
    hparams = {"seed": config.seed, **config.hyperparameters.get(name, {})}
    return {k: v for k, v in hparams.items() if k in spec.hyperparameters}


# --- the run -----------------------------------------------------------------------------------


def check_output_dir(out: Path, *, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse to replace the results of an earlier run unless asked to.

    A folder holding ``report.json`` or ``stages/`` needs ``resume`` (continue it, reusing
    finished stages) or ``overwrite`` (start over; its ``stages/`` are deleted)."""
    if resume and overwrite:
        raise ConfigError("pass either --resume (continue) or --overwrite (start over), not both")
    has_report = (out / "report.json").exists()
    has_stages = (out / "stages").is_dir()
    if resume or not (has_report or has_stages):
        return
    if not overwrite:
        what = "the report of an earlier run" if has_report else "an unfinished run"
        raise OutputError(
            f"{out} already holds {what}; pass --resume to continue it, --overwrite to start "
            "over, or choose another --out"
        )
    shutil.rmtree(out / "stages", ignore_errors=True)


# Settings that change nothing in a run's results: a resumed run may differ in these.
_NOT_COMPARED_ON_RESUME = ("progress", "cache_dir", "download", "device")


def _show(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


def _comparable(key: str, value: Any) -> Any:
    if key == "forget_classes" and isinstance(value, list):
        return [str(v) for v in value]  # --forget-class 3 (text) and forget_classes: [3]
    return value


def resume_changes(config: ExperimentConfig, out: Path) -> list[str]:
    """How ``config`` differs from the run held in ``out`` (its ``config.yaml``), one
    ``"key old -> new"`` per changed setting; progress, cache and device are not compared.
    Empty when ``out`` holds no run."""
    path = out / "config.yaml"
    if not path.is_file():
        return []
    import yaml

    try:
        old = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        old = None
    if not isinstance(old, dict):
        raise ConfigError(
            f"{path} is unreadable, so the settings of the run in {out} are unknown; pass "
            "--overwrite to start over, or choose another --out"
        )
    defaults = ExperimentConfig().to_dict()
    changed = []
    for key, value in config.to_dict().items():
        before = old.get(key, defaults[key])
        if key not in _NOT_COMPARED_ON_RESUME and (
            _comparable(key, before) != _comparable(key, value)
        ):
            changed.append(f"{key} {_show(before)} -> {_show(value)}")
    return changed


def check_resume_matches(config: ExperimentConfig, out: Path) -> None:
    """Refuse to resume ``out`` with settings other than those of the run it holds.

    Reusing finished stages of other settings, or dropping methods, seeds or figures that the
    finished report holds, would silently change the user's results: any difference raises
    :class:`ConfigError` naming each changed key as ``old -> new``."""
    changed = resume_changes(config, out)
    if changed:
        raise ConfigError(
            f"--resume: {out} holds a run with other settings ({'; '.join(changed)}); rerun "
            f"with its flags (or --config {out / 'config.yaml'}) to continue it, pass "
            "--overwrite instead of --resume to start over, or choose another --out"
        )


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path | None = None,
    *,
    echo: Callable[[str], None] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    reuse_stages: bool = False,
) -> dict[str, Any]:
    """Run one experiment over every seed and return its report (also written to
    ``out_dir`` if given: ``report.json``, the rendered reports, ``config.yaml`` and
    ``stages/``).

    For each seed: train (or reuse from the cache) the original and the retrained model,
    run every method (timed), compute every metric of every model. ``results`` holds the
    mean over seeds, ``std`` the sample standard deviation, ``per_seed`` each seed's values.
    A method whose loss diverges (:class:`DivergenceError`) is marked
    ``{"failed": message}`` and the others still run. Each finished stage is saved under
    ``out_dir/stages/``; ``resume=True`` reuses them after an interruption. An ``out_dir``
    that already holds a run needs ``resume`` (with the same settings: other settings are
    refused, naming each changed key) or ``overwrite``. ``reuse_stages`` (a sweep's working
    folder) reuses whichever finished stages match and replaces the reports.
    """
    emit = echo or (lambda _msg: None)
    seeds = config.seed_list()
    # the original and the retrained model are trained with this recipe: zero epochs would
    # "unlearn" an untrained model and report it as a result
    check_recipe(**config.training_recipe(), min_epochs=1, what="original/retrain recipe")
    for name in config.methods:
        get_method(name)
        check_unlearning_steps(
            name, validate_hyperparameters(name, config.hyperparameters.get(name, {}))
        )
    for name in config.hyperparameters:
        get_method(name)
    methods = [m for m in dict.fromkeys(config.methods) if m != "retrain"]
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        _check_writable(out)
        if not reuse_stages:
            check_output_dir(out, resume=resume, overwrite=overwrite)
        if resume and not reuse_stages:
            check_resume_matches(config, out)
        write_resolved_config(config, out)
    stages = StageStore(out / "stages" if out is not None else None)
    device = resolve_device(config.device)
    total = len(seeds) * (2 + len(methods)) + 1
    bar = tqdm(total=total, desc="bunlearn run", unit="stage", disable=not config.progress)

    def say(msg: str) -> None:
        if echo is None:
            return
        if config.progress:
            bar.write(msg)
        else:
            emit(msg)

    def note(msg: str) -> None:
        """A stage without a bar of its own: shown with ``progress`` (API too) or ``echo``."""
        if config.progress and is_main_process():
            tqdm.write(f"bunlearn: {msg}", file=sys.stderr)
        else:
            say(msg)

    per_seed: dict[str, dict[str, dict[str, Any]]] = {}
    figures: dict[str, Any] | None = None
    first: dict[str, Any] = {}
    try:
        for index, seed in enumerate(seeds):
            cfg = config.for_seed(seed)
            data, info, train_set, test_set = prepare_data(cfg)
            classes = list(data.forget_classes)
            if index == 0:
                say(
                    f"{info.name}: {len(data.retain) + len(data.forget_eval)} train / "  # type: ignore[arg-type]
                    f"{len(data.test_retain) + len(data.test_forget)} test images, "  # type: ignore[arg-type]
                    f"forgetting {', '.join(f'{c} ({info.classes[c]})' for c in classes)}; "
                    f"model {config.model} on {device}; seeds {seeds}"
                )
            bar.set_postfix_str(f"seed {seed}: original")
            original, orig_meta, reused = train_original(cfg, info, train_set, test_set)
            if records_updates(cfg):
                cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
                cfg = with_update_record(cfg, cache / "originals" / orig_meta["cache_key"])
            if reused:
                say(f"seed {seed}: original model reused from the cache")
            bar.set_postfix_str(f"seed {seed}: retrain")
            retrained, rt_meta, reused = train_retrained(cfg, info, data, original, orig_meta)
            if reused:
                say(f"seed {seed}: retrained model reused from the cache")
            rand = random_model(cfg, info)
            entries: dict[str, dict[str, Any]] = {}
            models: dict[str, nn.Module] = {"original": original, "retrain": retrained}

            metrics_of = functools.partial(
                _compute_metrics, data=data, retrained=retrained, original=original,
                random_net=rand, config=cfg,
            )  # fmt: skip
            weights_meta = {k: orig_meta[k] for k in model_metadata(cfg, info)}

            for name, model, meta in (("original", original, orig_meta),
                                      ("retrain", retrained, rt_meta)):  # fmt: skip
                bar.set_postfix_str(f"seed {seed}: metrics of {name}")
                key = stage_key(cfg, name)
                entry = stages.load(seed, name, key)
                if entry is None:
                    entry = {**metrics_of(model), "seconds": meta["train_seconds"]}
                    stages.save(seed, name, key, entry)
                else:
                    say(f"seed {seed}: {name}: reused finished stage")
                entries[name] = entry
                bar.update(1)
            for name in methods:
                bar.set_postfix_str(f"seed {seed}: {name}")
                entry, unlearned = _method_stage(
                    name, cfg, data, original, metrics_of, stages,
                    weights_meta=weights_meta if index == 0 and config.figures else None,
                    say=say, status=bar.set_postfix_str,
                )  # fmt: skip
                entries[name] = entry
                if unlearned is not None:
                    models[name] = unlearned
                if "failed" in entry:
                    say(f"seed {seed}: {name} FAILED: {entry['failed']}")
                else:
                    retrain_s = entries["retrain"]["seconds"]
                    entry["speedup"] = retrain_s / entry["seconds"] if entry["seconds"] else None
                bar.update(1)
            per_seed[str(seed)] = entries
            if index == 0:
                if config.figures:
                    bar.set_postfix_str("figure data")
                    figures = _figures_stage(cfg, methods, models, data, stages)
                first = {"info": info, "data": data, "orig_meta": orig_meta}
                bar.update(1)
    finally:
        bar.close()
    results, std = aggregate_seeds(per_seed)
    info, data, orig_meta = first["info"], first["data"], first["orig_meta"]
    classes = list(data.forget_classes)
    report: dict[str, Any] = {
        "dataset": info.name,
        "model": config.model,
        "forget_classes": classes,
        "class_names": [info.classes[c] for c in classes],
        "seed": seeds[0],
        "seeds": seeds,
        "sizes": data.sizes(),
        "device": str(device),
        "world_size": world_size(),
        "original_hyperparameters": {
            k: v for k, v in orig_meta.get("hyperparameters", {}).items() if k != "seed"
        },
        "results": results,
        "std": std,
        "per_seed": per_seed,
        "speedup": {m: results[m].get("speedup") for m in methods},
        "failed": {m: results[m]["failed"] for m in methods if "failed" in results[m]},
        "config": config.to_dict(),
    }
    if figures is not None:
        report["figures_data"] = figures
    if out is not None:
        note(f"writing the reports{' and figures' if figures else ''} to {out}")
        _render(report, out)
    say(format_table(report))
    return report


def _method_stage(
    name: str,
    cfg: ExperimentConfig,
    data: UnlearningData,
    original: nn.Module,
    metrics_of: Callable[[nn.Module], dict[str, Any]],
    stages: StageStore,
    *,
    weights_meta: dict[str, Any] | None,
    say: Callable[[str], None],
    status: Callable[[str], Any] = lambda _msg: None,
) -> tuple[dict[str, Any], nn.Module | None]:
    """Run (or reuse) one method on one seed: ``(entry, unlearned model or None)``.

    With ``weights_meta`` (the first seed, whose models the figures show) the unlearned
    weights are saved with the stage, and a reused stage loads them back."""
    keep_weights = weights_meta is not None
    spec = get_method(name)
    hparams = _method_hparams(name, cfg)
    key = stage_key(cfg, name, hyperparameters=hparams)
    entry = stages.load(cfg.seed, name, key)
    if entry is not None:
        model = stages.load_weights(cfg.seed, name) if keep_weights else None
        model = model.to(model_device(original)) if model is not None else None
        if not keep_weights or model is not None or "failed" in entry:
            say(f"seed {cfg.seed}: {name}: reused finished stage")
            return entry, model
    try:
        model, seconds = timed_unlearn(name, original, data, hparams, progress=cfg.progress)
    except DivergenceError as exc:
        entry = {"failed": str(exc), "hyperparameters": spec.resolve(hparams)}
        stages.save(cfg.seed, name, key, entry)
        return entry, None
    say(f"seed {cfg.seed}: {name}: {seconds:.2f} s")
    status(f"seed {cfg.seed}: metrics of {name}")
    entry = {**metrics_of(model), "seconds": seconds, "hyperparameters": spec.resolve(hparams)}
    stats = unlearning_stats(model)
    if stats:
        entry["stats"] = stats
    if weights_meta is not None:
        stages.save_weights(cfg.seed, name, model, {**weights_meta, "stage": name})
    stages.save(cfg.seed, name, key, entry)
    return entry, model


def _figures_stage(
    cfg: ExperimentConfig,
    methods: list[str],
    models: dict[str, nn.Module],
    data: UnlearningData,
    stages: StageStore,
) -> dict[str, Any] | None:
    """Figure data (entropy histograms, t-SNE, confusion matrices) of the first seed."""
    hparams = {m: _method_hparams(m, cfg) for m in methods}
    key = stage_key(cfg, "figures", methods=hparams)
    cached = stages.load(None, "figures", key)
    if cached is not None:
        return cached
    figures = _figure_data(models, data, cfg.seed)
    if figures is not None:
        stages.save(None, "figures", key, figures)
    return figures


def load_report(out_dir: str | Path) -> dict[str, Any]:
    """``out_dir/report.json`` as written by :func:`run_experiment`, checked to be a report."""
    path = Path(out_dir) / "report.json"
    if not path.is_file():
        raise OutputError(
            f"{path} not found; point `bunlearn report` at the --out folder of a finished "
            "`bunlearn run`"
        )
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise OutputError(
            f"{path} is corrupt ({type(exc).__name__}); rerun `bunlearn run --resume --out "
            f"{path.parent}` to rebuild it from the finished stages"
        ) from None
    if not isinstance(report, dict) or not isinstance(report.get("results"), dict):
        raise OutputError(
            f"{path} is not a bunlearn report (no 'results'); rerun `bunlearn run --resume "
            f"--out {path.parent}`"
        )
    return report


def rerender_reports(out_dir: str | Path) -> dict[str, Any]:
    """``bunlearn report DIR``: rewrite the reports in ``out_dir`` from its ``report.json``
    without running anything. Returns the report."""
    out = Path(out_dir)
    report = load_report(out)
    _check_writable(out)
    render_reports(report, out)
    return report


def _check_writable(out: Path) -> None:
    if not is_main_process():
        return  # under torchrun only rank 0 writes
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        atomic_write_text(probe, "")
        probe.unlink()
    except OSError as exc:
        raise OutputError(
            f"output folder {out} is not writable ({exc.strerror}); choose another --out"
        ) from None


def save_original(
    config: ExperimentConfig, out: str | Path, *, overwrite: bool = False
) -> tuple[dict[str, Any], bool]:
    """``bunlearn train``: train the original model into ``out`` (reused when ``out`` already
    holds a model trained with identical settings). Returns ``(metadata, reused)``."""
    check_recipe(**config.training_recipe(), min_epochs=1, what="train")
    out = Path(out)
    train_set, test_set, info = _load(config)
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
    _check_writable(out)
    _, meta, reused = train_original(config, info, train_set, test_set, folder=out)
    if config.cache_dir is not None:  # a cache the user names is used: `run` reuses the model
        cached = Path(config.cache_dir) / "originals" / meta["cache_key"]
        pairs = [(record_path(out), record_path(cached)),
                 *zip(checkpoint_paths(out), checkpoint_paths(cached), strict=True)]  # fmt: skip
        for src, dst in pairs:
            if src.is_file():
                atomic_write_bytes(dst, src.read_bytes())
    return meta, reused


# A method's own step budget, or a combination's stage's (expand_epochs, shrink_max_steps).
_STEP_BUDGET = re.compile(r"((expand|shrink)_)?(epochs|max_steps|steps)")


def check_unlearning_steps(method: str, hyperparameters: dict[str, Any]) -> None:
    """Refuse a zero step budget (``epochs=0``, ``max_steps=0``): the method would return the
    model unchanged and the report would call that unlearning."""
    for key, value in hyperparameters.items():
        if not _STEP_BUDGET.fullmatch(key):
            continue
        if isinstance(value, int) and not isinstance(value, bool) and value == 0:
            raise HyperparameterError(
                f"{method}: {key}=0 would return the model unchanged (no unlearning step); "
                f"give {key} >= 1"
            )


def _recorded_data_root(checkpoint: str | Path, meta: dict[str, Any], dataset: str) -> str | None:
    """The data folder the checkpoint recorded (when unlearning on its own data set and no
    --data-root was given), checked to still exist."""
    source = meta.get("data")
    root = source.get("root") if isinstance(source, dict) else None
    if not isinstance(root, str) or meta.get("dataset") != _dataset_key(dataset):
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


def _dataset_key(name: str) -> str:
    """The canonical name of a data set as ``DatasetInfo.name`` spells it."""
    key = name.lower().replace("_", "-")
    aliases = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "fmnist": "fashion-mnist"}
    return aliases.get(key, key)


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
    inputs are normalised (the data are fed to it normalised so)."""
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
    if model is None and is_user_model(meta.get("model")):
        raise CheckpointError(
            f"{checkpoint} was made with the user architecture {meta['model']}; pass --model "
            f"{meta['model']} to build it (code named in a checkpoint is never imported)"
        )
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
    _check_writable(out)
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


def _evaluate_with_progress(
    models: dict[str, nn.Module], data: UnlearningData, progress: bool
) -> dict[str, dict[str, float]]:
    """:func:`evaluate` of each model, with one bar over every (model, set) pass."""
    sets = {"retain": data.retain, "forget": data.forget_eval,
            "test_retain": data.test_retain, "test_forget": data.test_forget}  # fmt: skip
    scores: dict[str, dict[str, float]] = {name: {} for name in models}
    passes = [(name, key) for name in models for key in sets]
    disable = not progress or not is_main_process()
    with tqdm(passes, desc="evaluating", unit="set", disable=disable) as bar:
        for name, key in bar:
            bar.set_postfix_str(f"{name} on {key}")
            scores[name][key] = accuracy(models[name], sets[key])
    return scores
