"""One experiment: load data -> train or load the cached original -> retrain (cached) ->
run each method (timed) -> evaluate -> write reports.

The data, the architecture and each method's settings come from
:mod:`boundary_unlearning.pipeline`, the path ``bunlearn unlearn`` takes too.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from ._utils import atomic_write_json, model_device
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
from .config import ExperimentConfig, resolve_device, write_resolved_config
from .data import DatasetInfo, UnlearningData
from .distributed import is_main_process, world_size
from .errors import DivergenceError, NotApplicableError
from .evidence import cached_json, data_fingerprint, evidence_summary, state_sha256
from .methods import get_method, unlearning_stats
from .metrics import compute_metrics, depth_shares
from .metrics.estimate import EvidenceSettings
from .output_dir import check_output_dir, check_resume_matches, check_writable
from .pipeline import check_methods, method_settings, prepare_data, timed_unlearn
from .progress import LineProgress, progress_bar
from .report import figure_data, format_table, render_reports

__all__ = ["evidence_settings", "run_experiment"]

Echo = Callable[[str], None]
_SET_NAMES = {"retain": "D_r", "forget": "D_f", "test_retain": "D_tr", "test_forget": "D_tf"}


class _Progress:
    """The run's bar over its stages, and its messages: through ``echo`` (written above
    the bar while it shows), and the stages without a bar of their own also with
    ``progress`` alone (API runs)."""

    def __init__(self, config: ExperimentConfig, stages: int, echo: Echo | None) -> None:
        self.echo, self.progress = echo, config.progress
        self.bar = progress_bar(desc="bunlearn run", total=stages, unit="stage", show=self.progress)
        self.lines = isinstance(self.bar, LineProgress)  # a file or log: a line per stage

    def say(self, msg: str) -> None:
        if self.echo is None:
            return
        if self.progress:
            self.bar.write(msg)
        else:
            self.echo(msg)

    def note(self, msg: str) -> None:
        if self.progress and is_main_process():
            tqdm.write(f"bunlearn: {msg}", file=sys.stderr)
        else:
            self.say(msg)

    def stage(self, msg: str) -> None:
        self.bar.set_postfix_str(msg)
        if self.lines:
            print(f"bunlearn: {msg}", file=sys.stderr, flush=True)


@dataclass
class _Seed:
    """What one seed of the run produced: each model's entry, the models themselves (the
    figures show the first seed's), and the settings, data and original it ran with."""

    config: ExperimentConfig
    info: DatasetInfo
    data: UnlearningData
    original_meta: dict[str, Any]
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, nn.Module] = field(default_factory=dict)


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path | None = None,
    *,
    echo: Echo | None = None,
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
    ``{"failed": message}``, one that cannot do the request exactly
    (:class:`~boundary_unlearning.errors.NotApplicableError`) ``{"failed": "not applicable:
    <reason>"}``, and the others still run. Each finished stage is saved under
    ``out_dir/stages/``; ``resume=True`` reuses them after an interruption. An ``out_dir``
    that already holds a run needs ``resume`` (with the same settings: other settings are
    refused, naming each changed key) or ``overwrite``. ``reuse_stages`` (a sweep's working
    folder) reuses whichever finished stages match and replaces the reports.

    Args:
        config: the run's settings.
        out_dir: where the reports go (``None``: only returned).
        echo: called with one line per event (default: silent).
        resume: continue an interrupted run in ``out_dir``.
        overwrite: replace an earlier run in ``out_dir``.
        reuse_stages: ``out_dir`` is a sweep's working folder.

    Returns:
        The report.
    """
    seeds = config.seed_list()
    config.check_training("original/retrain recipe")
    check_methods(config)
    methods = config.method_list()
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        _open_output(config, out, resume=resume, overwrite=overwrite, reuse=reuse_stages)
    stages = StageStore(out / "stages" if out is not None else None)
    device = resolve_device(config.device)
    show = _Progress(config, len(seeds) * (2 + len(methods)) + 1, echo)
    per_seed: dict[str, dict[str, dict[str, Any]]] = {}
    first: _Seed | None = None
    figures: dict[str, Any] | None = None
    try:
        for index, seed in enumerate(seeds):
            setup = f"model {config.model} on {device}; seeds {seeds}" if index == 0 else None
            run = _run_seed(config.for_seed(seed), methods, stages, show, setup)
            per_seed[str(seed)] = run.entries
            if index == 0:
                first = run
                if config.figures:
                    show.stage("figure data")
                    figures = _figures_stage(methods, run, stages)
                show.bar.update(1)
    finally:
        show.bar.close()
    assert first is not None  # (seeds is never empty)
    report = _report(config, seeds, methods, per_seed, first, figures, str(device))
    if out is not None:
        show.note(f"writing the reports{' and figures' if figures else ''} to {out}")
        atomic_write_json(out / "report.json", report)
        render_reports(report, out)
    show.say(format_table(report))
    show.say(_read_line(report))
    return report


def _read_line(report: dict[str, Any]) -> str:
    """What the printed table was computed on: every image, or the seeded samples.

    Example:
        >>> _read_line({"evidence": {"full": True}, "results": {}})
        'metrics on every image of every set (--full-eval): accuracies exact'
    """
    if report["evidence"]["full"]:
        return "metrics on every image of every set (--full-eval): accuracies exact"
    totals = report["evidence"]["totals"]
    samples = [e.get("acc_samples") or {} for e in report["results"].values()]
    read = {k: int(max((s.get(k, 0) for s in samples), default=0)) for k in totals}
    sets = ", ".join(f"{_SET_NAMES[k]} {read[k]:,} of {totals[k]:,}" for k in totals)
    return (
        f"metrics on seeded samples (at most {sets} images read per model); each accuracy's "
        "interval (all of them holding together at 95%) is in report.md; --full-eval reads "
        "every image"
    )


def _open_output(
    config: ExperimentConfig, out: Path, *, resume: bool, overwrite: bool, reuse: bool
) -> None:
    """Check that ``out`` may receive this run (writable; an earlier run there needs
    ``resume`` with the same settings or ``overwrite``), and write ``config.yaml``."""
    check_writable(out)
    if not reuse:
        check_output_dir(out, resume=resume, overwrite=overwrite)
        if resume:
            check_resume_matches(config, out)
    write_resolved_config(config, out)


def _run_seed(
    cfg: ExperimentConfig,
    methods: list[str],
    stages: StageStore,
    show: _Progress,
    setup: str | None,
) -> _Seed:
    """One seed: the original, the retrained model and every method, each with its metrics
    (finished stages reused). The first seed (given the run's ``setup`` to describe) says
    what data the run works on and keeps its unlearned weights for the figures."""
    seed = cfg.seed
    data, info, train_set, test_set = prepare_data(cfg)
    first = setup is not None
    if setup is not None:
        show.say(f"{_describe(info, data)}; {setup}")
    show.stage(f"seed {seed}: original")
    original, orig_meta, reused = train_original(cfg, info, train_set, test_set)
    if records_updates(cfg):
        cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
        cfg = with_update_record(cfg, cache / "originals" / orig_meta["cache_key"])
    if reused:
        show.say(f"seed {seed}: original model reused from the cache")
    show.stage(f"seed {seed}: retrain")
    retrained, rt_meta, reused = train_retrained(cfg, info, data, original, orig_meta)
    if reused:
        show.say(f"seed {seed}: retrained model reused from the cache")
    run = _Seed(cfg, info, data, orig_meta)
    run.models = {"original": original, "retrain": retrained}
    rand = random_model(cfg, info)

    def metrics_of(model: nn.Module) -> dict[str, Any]:
        return compute_metrics(model, data, retrained=retrained, random_model=rand, seed=seed,
                               relearn=cfg.relearn, probe=cfg.probe, ulira=cfg.ulira,
                               evidence=evidence_settings(cfg), per_class=True)  # fmt: skip

    shared = _reference_key(cfg, data, retrained, rand)
    for name, meta in (("original", orig_meta), ("retrain", rt_meta)):
        show.stage(f"seed {seed}: metrics of {name}")
        run.entries[name] = _reference_stage(name, cfg, run.models[name], meta, metrics_of,
                                             stages, show, shared)  # fmt: skip
        show.bar.update(1)
    keep = {k: orig_meta[k] for k in model_metadata(cfg, info)} if first and cfg.figures else None
    for name in methods:
        show.stage(f"seed {seed}: {name}")
        entry, unlearned = _method_stage(name, cfg, data, original, metrics_of, stages,
                                         weights_meta=keep, show=show)  # fmt: skip
        run.entries[name] = entry
        if unlearned is not None:
            run.models[name] = unlearned
        if "failed" in entry:
            show.say(f"seed {seed}: {name} FAILED: {entry['failed']}")
        else:
            retrain_s = run.entries["retrain"]["seconds"]
            entry["speedup"] = retrain_s / entry["seconds"] if entry["seconds"] else None
        show.bar.update(1)
    _add_depth(run.entries, methods)
    return run


def _add_depth(entries: dict[str, dict[str, Any]], methods: list[str]) -> None:
    """Each method's ``depth`` (and ``depth_shares``): the share of the original-to-retrained
    gap it closed on relearn steps and on the feature probe (the smaller counts)."""
    for name in methods:
        entry = entries[name]
        if "failed" not in entry:
            shares = depth_shares(entry, entries["original"], entries["retrain"])
            entry["depth"] = shares.pop("depth")
            entry["depth_shares"] = shares


def evidence_settings(config: ExperimentConfig) -> EvidenceSettings:
    """How a run reads the sets for its metrics: as ``bunlearn unlearn`` does (seeded
    samples, seeded by the run's seed), every image with ``full_eval``. Its intervals hold
    together over the four sets of every model it reports (the original, the retrained
    model and each method).

    Example:
        >>> evidence_settings(ExperimentConfig(full_eval=True, seed=2)).family  # 4 sets x 4
        16
    """
    models = 2 + len(config.method_list())
    return EvidenceSettings(full=config.full_eval, family=4 * models, seed=config.seed)


def _describe(info: DatasetInfo, data: UnlearningData) -> str:
    """The data a run works on and what it forgets."""
    sizes = data.sizes()
    classes = ", ".join(f"{c} ({info.classes[c]})" for c in data.forget_classes)
    return (
        f"{info.name}: {sizes['retain'] + sizes['forget_full']} train / "
        f"{sizes['test_retain'] + sizes['test_forget']} test images, forgetting {classes}"
    )


def _reference_stage(
    name: str,
    cfg: ExperimentConfig,
    model: nn.Module,
    meta: dict[str, Any],
    metrics_of: Callable[[nn.Module], dict[str, Any]],
    stages: StageStore,
    show: _Progress,
    shared: dict[str, Any] | None,
) -> dict[str, Any]:
    """The metrics of the original or the retrained model (reused when finished), with
    its training seconds. With ``shared`` (what they depend on besides the model) they come
    from ``$BUNLEARN_CACHE/metrics`` when another run computed them for the same weights."""
    key = stage_key(cfg, name)
    entry = stages.load(cfg.seed, name, key)
    if entry is not None:
        show.say(f"seed {cfg.seed}: {name}: reused finished stage")
        return entry
    if shared is None:
        metrics = metrics_of(model)
    else:
        cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
        metrics, reused = cached_json(cache, "metrics", {**shared, "model": state_sha256(model)},
                                      lambda: metrics_of(model))  # fmt: skip
        if reused:
            show.say(f"seed {cfg.seed}: {name}: metrics reused from the cache (same weights)")
    entry = {**metrics, "seconds": meta["train_seconds"]}
    stages.save(cfg.seed, name, key, entry)
    return entry


def _reference_key(
    cfg: ExperimentConfig, data: UnlearningData, retrained: nn.Module, rand: nn.Module
) -> dict[str, Any] | None:
    """What the original's and the retrained model's metrics depend on besides their own
    weights (``None`` when the data cannot be fingerprinted: then they are not cached)."""
    fingerprint = data_fingerprint(data)
    if fingerprint is None:
        return None
    return {"data": fingerprint, "retrained": state_sha256(retrained),
            "random": state_sha256(rand), "seed": cfg.seed, "relearn": cfg.relearn,
            "probe": cfg.probe, "ulira": cfg.ulira,
            "evidence": asdict(evidence_settings(cfg))}  # fmt: skip


def _method_stage(
    name: str,
    cfg: ExperimentConfig,
    data: UnlearningData,
    original: nn.Module,
    metrics_of: Callable[[nn.Module], dict[str, Any]],
    stages: StageStore,
    *,
    weights_meta: dict[str, Any] | None,
    show: _Progress,
) -> tuple[dict[str, Any], nn.Module | None]:
    """Run (or reuse) one method on one seed: ``(entry, unlearned model or None)``.

    With ``weights_meta`` (the first seed, whose models the figures show) the unlearned
    weights are saved with the stage, and a reused stage loads them back."""
    keep_weights = weights_meta is not None
    spec = get_method(name)
    hparams = method_settings(name, cfg)
    key = stage_key(cfg, name, hyperparameters=hparams)
    entry = stages.load(cfg.seed, name, key)
    if entry is not None:
        model = stages.load_weights(cfg.seed, name) if keep_weights else None
        model = model.to(model_device(original)) if model is not None else None
        if not keep_weights or model is not None or "failed" in entry:
            show.say(f"seed {cfg.seed}: {name}: reused finished stage")
            return entry, model
    try:
        model, seconds = timed_unlearn(name, original, data, hparams, progress=cfg.progress)
    except (DivergenceError, NotApplicableError) as exc:
        why = f"not applicable: {exc}" if isinstance(exc, NotApplicableError) else str(exc)
        entry = {"failed": why, "hyperparameters": spec.resolve(hparams)}
        stages.save(cfg.seed, name, key, entry)
        return entry, None
    show.say(f"seed {cfg.seed}: {name}: {seconds:.2f} s")
    show.stage(f"seed {cfg.seed}: metrics of {name}")
    entry = {**metrics_of(model), "seconds": seconds, "hyperparameters": spec.resolve(hparams)}
    stats = unlearning_stats(model)
    if stats:
        entry["stats"] = stats
    if weights_meta is not None:
        stages.save_weights(cfg.seed, name, model, {**weights_meta, "stage": name})
    stages.save(cfg.seed, name, key, entry)
    return entry, model


def _figures_stage(methods: list[str], run: _Seed, stages: StageStore) -> dict[str, Any] | None:
    """Figure data (entropy histograms, t-SNE, confusion matrices) of the first seed."""
    cfg = run.config
    hparams = {m: method_settings(m, cfg) for m in methods}
    key = stage_key(cfg, "figures", methods=hparams)
    cached = stages.load(None, "figures", key)
    if cached is not None:
        return cached
    figures = figure_data(run.models, run.data, seed=cfg.seed)
    if figures is not None:
        stages.save(None, "figures", key, figures)
    return figures


def _report(
    config: ExperimentConfig,
    seeds: list[int],
    methods: list[str],
    per_seed: dict[str, dict[str, dict[str, Any]]],
    first: _Seed,
    figures: dict[str, Any] | None,
    device: str,
) -> dict[str, Any]:
    """The run's report: every seed's entries, their mean and std, and what was run."""
    results, std = aggregate_seeds(per_seed)
    if len(seeds) > 1:  # an interval is one seed's: per_seed has each, the mean has none
        for entry in [*results.values(), *std.values()]:
            entry.pop("acc_interval", None)
    info, data = first.info, first.data
    classes = list(data.forget_classes)
    hyperparameters = first.original_meta.get("hyperparameters", {})
    report: dict[str, Any] = {
        "dataset": info.name,
        "model": config.model,
        "forget_classes": classes,
        "class_names": [info.classes[c] for c in classes],
        "class_names_all": {str(c): info.classes[c] for c in data.all_forgotten},
        "seed": seeds[0],
        "seeds": seeds,
        "sizes": data.sizes(),
        "device": device,
        "world_size": world_size(),
        "original_hyperparameters": {k: v for k, v in hyperparameters.items() if k != "seed"},
        "results": results,
        "std": std,
        "per_seed": per_seed,
        "speedup": {m: results[m].get("speedup") for m in methods},
        "failed": {m: results[m]["failed"] for m in methods if "failed" in results[m]},
        "config": config.to_dict(),
        "evidence": evidence_summary(data, evidence_settings(config)),
    }
    if figures is not None:
        report["figures_data"] = figures
    return report
