"""What ``report.json`` holds, as ``TypedDict``s: the one description of the report dict that
:func:`~boundary_unlearning.experiment.run_experiment` (and ``bunlearn unlearn``) write and
every renderer in this package reads.

A report is JSON: model names, seeds and class indices used as keys are strings. Every key but
``results`` is optional, so a report of ``bunlearn unlearn`` (one method, accuracies only) and
a hand-written one in a test are reports too. The metric keys of a model's entry are declared
in :data:`boundary_unlearning.metrics.suite.METRICS`.

Example:
    >>> report: Report = {"results": {"retrain": {"acc": {"retain": 1.0, "forget": 0.0,
    ...                                                    "test_retain": 0.9, "test_forget": 0.0},
    ...                                           "seconds": 2.0}}}
    >>> as_report(report)["results"]["retrain"]["seconds"]
    2.0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict, cast

from ..errors import DataError

__all__ = [
    "Accuracies",
    "Attacks",
    "EntropySamples",
    "FigureData",
    "ModelEntry",
    "ModelFigures",
    "Report",
    "Sizes",
    "Stats",
    "SweepReport",
    "SweepVariant",
    "as_report",
]


class Accuracies(TypedDict):
    """``entry["acc"]``: accuracy (0..1) on each of the paper's four sets.

    Example:
        >>> Accuracies(retain=0.99, forget=0.0, test_retain=0.95, test_forget=0.0)["forget"]
        0.0
    """

    retain: float  # D_r, the remaining training data
    forget: float  # D_f, the forgotten class's training data
    test_retain: float  # D_tr, test data of the remaining classes
    test_forget: float  # D_tf, test data of the forgotten class


class Attacks(TypedDict, total=False):
    """``entry["mia"]``: the membership-inference attacks on D_f; None when not computable.
    ``ulira`` only when the run asked for it.

    Example:
        >>> attacks: Attacks = {"paper_asr": 0.1, "confidence_svc": 0.9, "loss_lr": 0.5,
        ...                     "entropy": None}
        >>> sorted(attacks)
        ['confidence_svc', 'entropy', 'loss_lr', 'paper_asr']
    """

    paper_asr: float | None
    confidence_svc: float | None
    loss_lr: float | None
    entropy: float | None
    ulira: float | None


# A method's diagnostics (``unlearning_stats``): ``steps``, and for methods with a forgetting
# target ``reached_target``, ``target_forget_acc`` and ``forget_acc_trace`` (``[step, D_f
# accuracy]`` per check), plus method-specific numbers (e.g. ``attack_success_ratio``), so an
# open mapping rather than a TypedDict.
Stats = dict[str, Any]


class ModelEntry(TypedDict, total=False):
    """One model's column: ``report["results"][name]`` (means over seeds when several ran),
    ``report["std"][name]`` (their sample standard deviations, same keys) or one seed's
    ``report["per_seed"][seed][name]``. A model that failed on every seed holds only
    ``failed``.

    Example:
        >>> entry: ModelEntry = {"acc": {"retain": 0.99, "forget": 0.0, "test_retain": 0.95,
        ...                              "test_forget": 0.0}, "seconds": 1.5, "speedup": 20.0}
        >>> report = as_report({"results": {"boundary_shrink": entry}})
        >>> report["results"]["boundary_shrink"]["speedup"]
        20.0
        >>> failed: ModelEntry = {"failed": "DivergenceError: the loss became NaN at step 3"}
    """

    acc: Accuracies
    acc_interval: dict[str, list[float] | None]  # [low, high] per set (the evidence)
    acc_samples: dict[str, int]  # images read per set (the set's size: all of it)
    mia: Attacks
    js_to_retrain: float | None
    activation_distance: float | None
    zrf: float | None
    relearn_steps: float | None
    probe_forget_acc: float | None  # the few-shot feature probe on D_tf
    probe_forget_acc_se: float | None  # its standard error over the probe's draws
    probe_forget_draws: list[float] | None  # each draw's score (paired across models)
    depth: float | None  # smaller share of the original-to-retrained gap closed (methods)
    depth_shares: dict[str, float | None]  # that share per depth metric
    seconds: float  # training time for original and retrain, unlearning time for a method
    speedup: float | None  # retrain's seconds / this method's seconds
    hyperparameters: dict[str, Any]  # the method's resolved hyperparameters
    stats: Stats
    per_class: dict[str, dict[str, Any]]  # forgotten class -> forget, test_forget, earlier
    failed: str  # why the method failed (on every seed)
    failed_seeds: dict[str, str]  # seed -> why, for the seeds left out of the mean


class Sizes(TypedDict):
    """``report["sizes"]``: samples in each set (``forget_full``: all of D_f, ``forget``: the
    part the methods may use).

    Example:
        >>> Sizes(forget=600, forget_full=6000, retain=54000, test_forget=1000,
        ...       test_retain=9000)["forget_full"]
        6000
    """

    forget: int
    forget_full: int
    retain: int
    test_forget: int
    test_retain: int


class EntropySamples(TypedDict, total=False):
    """Output entropies (nats) of sampled D_r, D_f and test inputs.

    Example:
        >>> samples: EntropySamples = {"retain": [0.01, 0.02], "forget": [1.9], "test": [0.3]}
        >>> max(samples["forget"])
        1.9
    """

    retain: list[float]
    forget: list[float]
    test: list[float]


class ModelFigures(TypedDict, total=False):
    """One model's figure inputs (see :func:`~boundary_unlearning.report.figures.figure_data`).

    Example:
        >>> figures: ModelFigures = {"confusion": [[5, 0], [1, 4]], "tsne": [[0.1, 0.2]]}
        >>> figures["confusion"][1][1]
        4
    """

    entropy: EntropySamples
    tsne: list[list[float]]  # 2-D t-SNE points, in the order of FigureData.tsne_labels
    confusion: list[list[int]]  # K x K test confusion matrix, rows the true class


class FigureData(TypedDict, total=False):
    """``report["figures_data"]``: what the figures are drawn from, no model needed.

    Example:
        >>> data: FigureData = {"num_classes": 2, "forget_classes": [1], "tsne_labels": [0],
        ...                     "models": {"original": {"tsne": [[0.1, 0.2]]}}}
        >>> list(data["models"])
        ['original']
    """

    num_classes: int
    forget_classes: list[int]
    max_points: int
    seed: int
    tsne_labels: list[int]
    models: dict[str, ModelFigures]


class _ReportResults(TypedDict):
    results: dict[str, ModelEntry]  # model name -> entry: original, retrain, then methods


class Report(_ReportResults, total=False):
    """A run's ``report.json``. ``results`` is the only required key.

    ``bunlearn run`` writes all but ``checkpoint``;
    ``bunlearn unlearn`` writes ``dataset``, ``model``, ``forget_classes``, ``class_names``,
    ``seed``, ``evidence``, ``checkpoint`` and ``results``.

    Example:
        >>> report: Report = {"dataset": "digits", "forget_classes": [3], "results": {}}
        >>> as_report(report)["forget_classes"]
        [3]
    """

    dataset: str
    model: str | None
    forget_classes: list[int]
    class_names: list[str]
    forgotten_before: list[int]  # bunlearn unlearn: classes an earlier request forgot
    class_names_all: dict[str, str]  # every forgotten class (index as text) -> its name
    seed: int  # the first seed
    seeds: list[int]
    sizes: Sizes
    device: str
    world_size: int
    original_hyperparameters: dict[str, Any]  # the original model's training recipe
    std: dict[str, ModelEntry]
    per_seed: dict[str, dict[str, ModelEntry]]  # seed -> model name -> entry
    speedup: dict[str, float | None]  # method -> speed-up over retraining
    failed: dict[str, str]  # method -> why it failed on every seed
    config: dict[str, Any]  # the resolved ExperimentConfig
    checkpoint: str  # bunlearn unlearn: the model that was unlearned
    evidence: dict[str, Any]  # how the accuracies were read (evidence.evidence_summary)
    figures_data: FigureData


class SweepVariant(TypedDict):
    """One setting of a sweep study and its report.

    Example:
        >>> variant: SweepVariant = {"setting": {"eps": 0.05}, "folder": "eps=0.05",
        ...                          "report": {"results": {}}}
        >>> variant["setting"]["eps"]
        0.05
    """

    setting: dict[str, Any]  # varied key -> value
    folder: str
    report: Report


class SweepReport(TypedDict):
    """``OUT/<study>/report.json`` of a ``bunlearn reproduce`` study that varies settings.

    Example:
        >>> sweep: SweepReport = {"study": "eps", "title": "Effect of eps",
        ...                       "vary": {"eps": [0.05, 0.1]}, "variants": []}
        >>> sweep["vary"]["eps"]
        [0.05, 0.1]
    """

    study: str
    title: str
    vary: dict[str, list[Any]]
    variants: list[SweepVariant]


def as_report(value: object) -> Report:
    """Check that ``value`` looks like a report and type it as one.

    Only the top level is checked (a mapping whose ``results`` is a mapping): the renderers
    read every other key with a default.

    Args:
        value: a report dict, e.g. as loaded from ``report.json``.

    Returns:
        ``value`` itself, typed as a :class:`Report`.

    Raises:
        DataError: ``value`` has no ``results`` table.

    Example:
        >>> as_report({"results": {}})
        {'results': {}}
        >>> as_report({"dataset": "digits"})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        boundary_unlearning.errors.DataError: the report has no 'results' table; ...
    """
    if not isinstance(value, Mapping) or not isinstance(value.get("results"), Mapping):
        raise DataError(
            "the report has no 'results' table; pass the dict loaded from a run's report.json"
        )
    return cast(Report, value)
