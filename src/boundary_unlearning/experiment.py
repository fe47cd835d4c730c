"""One experiment: load data -> train or load the cached original -> retrain (cached) ->
run each method (timed) -> evaluate -> write reports."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ._utils import atomic_write_json, model_device, synchronize
from .aggregate import aggregate_seeds
from .cache import (
    StageStore,
    default_cache_dir,
    model_metadata,
    random_model,
    records_updates,
    stage_key,
    train_original,
    train_retrained,
    with_update_record,
)
from .config import ExperimentConfig, input_normalization, resolve_device, write_resolved_config
from .data import DatasetInfo, UnlearningData, class_split, load_dataset
from .data.split import balanced_subset
from .data.streaming import normalized
from .distributed import is_main_process, world_size
from .errors import DivergenceError, HyperparameterError
from .methods import get_method, unlearn, unlearning_stats, validate_hyperparameters
from .metrics import compute_metrics
from .output_dir import check_output_dir, check_resume_matches, check_writable
from .report import figure_data, format_table, render_reports

__all__ = [
    "check_unlearning_steps",
    "load_data",
    "prepare_data",
    "run_experiment",
    "timed_unlearn",
]


def load_data(config: ExperimentConfig) -> tuple[Dataset[Any], Dataset[Any], DatasetInfo]:
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
    train_set, test_set, info = load_data(config)
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
        >>> from boundary_unlearning.data import toy_problem
        >>> data, net = toy_problem()
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
    config.check_training("original/retrain recipe")
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
        check_writable(out)
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


def check_unlearning_steps(method: str, hyperparameters: dict[str, Any]) -> None:
    """Refuse a zero step budget (``epochs=0``, ``max_steps=0``, a combination's
    ``expand_epochs=0``: the hyperparameters the method declares as step budgets): the method
    would return the model unchanged and the report would call that unlearning."""
    for key in get_method(method).step_budgets:
        value = hyperparameters.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value == 0:
            raise HyperparameterError(
                f"{method}: {key}=0 would return the model unchanged (no unlearning step); "
                f"give {key} >= 1"
            )
