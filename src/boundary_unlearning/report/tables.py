"""The paper's table layout: one row per metric (accuracies on D_r, D_f, D_tr, D_tf, the
membership-inference attacks, distances to the retrained model, relearn time, seconds), one
column per model with the retrained model's value first, beside every metric. Cells show
``mean ± std`` when the report aggregates several seeds."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..metrics.suite import METRIC_BY_KEY, METRICS
from .schema import Report, as_report

__all__ = [
    "ARROWS",
    "METRIC_ORDER",
    "close_call",
    "columns",
    "failures",
    "format_table",
    "format_value",
    "metric_label",
    "metric_value",
    "settings_line",
    "table_rows",
    "verdict",
    "verdict_notes",
]

# The table rows in order: one per metric declared in metrics.suite.METRICS.
METRIC_ORDER: tuple[str, ...] = tuple(m.key for m in METRICS)

# A method "forgot" when its D_f accuracy is at most this far above the retrained model's
# (or, with no retrained model in the report, at most this high): the default forgetting
# target of the forget-only methods.
FORGOT_MARGIN = 0.05
# ... and "forgot" (rather than "hid") needs at least this depth: half of the gap between the
# original's and the retrained model's depth metrics closed.
FORGOT_DEPTH = 0.5

ARROWS: dict[str, str] = {
    "higher": "↑",
    "lower": "↓",
    "closer_to_retrain": "≈R",
    "closer_to_0.5": "→0.5",
}
ARROW_LEGEND = (
    "↑ higher is better, ↓ lower is better, ≈R closest to the retrained model (R) is best, "
    "→0.5 closest to 50% is best"
)


def metric_value(entry: Mapping[str, Any] | None, key: str) -> Any:
    """``entry["mia"]["loss_lr"]`` for key ``"mia.loss_lr"``; None when absent.

    Args:
        entry: a model's entry (or ``None``).
        key: a dotted metric key.

    Returns:
        The value, or ``None``.

    Example:
        >>> entry = {"acc": {"forget": 0.0}, "seconds": 2.0}
        >>> metric_value(entry, "acc.forget"), metric_value(entry, "mia.loss_lr")
        (0.0, None)
    """
    node: Any = entry
    for part in key.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) else float(value)


def format_value(key: str, value: Any, *, std: Any = None) -> str:
    """A table cell, shown as the metric's declared unit says.

    Args:
        key: a metric key of :data:`~boundary_unlearning.metrics.suite.METRICS`; an
            undeclared key is shown with two decimals.
        value: the number (anything else, or NaN, is missing).
        std: the spread across seeds, shown as ``mean ± std`` when it is a number.

    Returns:
        Percent for fractions (accuracies, attack rates), four decimals for distances, a whole
        number for counts, ``17.0×`` for the speed-up, two decimals otherwise; ``—`` when the
        value is missing.

    Example:
        >>> format_value("acc.forget", 0.1234, std=0.01), format_value("zrf", None)
        ('12.34 ± 1.00', '—')
    """
    v = _number(value)
    if v is None:
        return "—"
    s = _number(std)
    metric = METRIC_BY_KEY.get(key)
    unit = metric.unit if metric is not None else None
    if unit == "fraction":
        text, spread = f"{100 * v:.2f}", (f"{100 * s:.2f}" if s is not None else None)
    elif unit == "distance":
        text, spread = f"{v:.4f}", (f"{s:.4f}" if s is not None else None)
    elif unit == "share":
        text, spread = f"{v:.2f}", (f"{s:.2f}" if s is not None else None)
    elif unit == "count":
        text = f"{v:.0f}" if v == int(v) else f"{v:.1f}"
        spread = f"{s:.1f}" if s is not None else None
    elif unit == "ratio":
        text, spread = f"{v:.1f}×", (f"{s:.1f}" if s is not None else None)
    else:
        text, spread = f"{v:.2f}", (f"{s:.2f}" if s is not None else None)
    return f"{text} ± {spread}" if spread is not None else text


def columns(report: Report) -> list[str]:
    """Model names in table order: retrain (the reference), original, then each method.

    Args:
        report: the report.

    Returns:
        The keys of ``report["results"]`` in table order.

    Example:
        >>> columns({"results": {"original": {}, "finetune": {}, "retrain": {}}})
        ['retrain', 'original', 'finetune']
    """
    results = report["results"]
    order = ["retrain", "original"]
    return [c for c in order if c in results] + [c for c in results if c not in order]


def _speedup(report: Report, name: str) -> Any:
    """A column's speed-up over retraining: the stored one, else from the two times.

    Args:
        report: the report.
        name: a model name of ``report["results"]``.

    Returns:
        The speed-up, or None for the original model and where a time is missing.

    Example:
        >>> _speedup({"results": {"retrain": {"seconds": 8.0}, "m": {"seconds": 2.0}}}, "m")
        4.0
    """
    entry = report["results"].get(name, {})
    if "speedup" in entry:
        return entry["speedup"]
    mine = _number(entry.get("seconds"))
    ref = _number(report["results"].get("retrain", {}).get("seconds"))
    if mine is None or ref is None or mine <= 0 or name in ("original",):
        return None
    return ref / mine


def verdict(report: Report, name: str) -> str | None:
    """Whether a method forgot: judged on its D_f accuracy against the retrained model's and
    on its depth (how far its features moved from the original's towards the retrained
    model's, see :func:`~boundary_unlearning.metrics.depth_shares`).

    Args:
        report: the report.
        name: a model name of ``report["results"]``.

    Returns:
        ``"did not forget"`` when the D_f accuracy is more than :data:`FORGOT_MARGIN` above the
        retrained model's (above 0 without one); otherwise ``"forgot"`` when the depth is at
        least :data:`FORGOT_DEPTH`, ``"hid"`` when it is below (the class is still in the
        features), and ``"no longer predicted"`` when the depth is not known (no retrained
        model, or neither depth metric could tell the two apart). ``None`` for the retrained
        and original models and for a method without a D_f accuracy.

    Example:
        >>> report = {"results": {"retrain": {"acc": {"forget": 0.0}},
        ...                       "a": {"acc": {"forget": 0.04}, "depth": 0.8},
        ...                       "b": {"acc": {"forget": 0.0}, "depth": 0.1},
        ...                       "c": {"acc": {"forget": 0.3}, "depth": 0.9},
        ...                       "d": {"acc": {"forget": 0.0}}}}
        >>> [verdict(report, m) for m in ("a", "b", "c", "d", "retrain")]
        ['forgot', 'hid', 'did not forget', 'no longer predicted', None]
    """
    if name in ("retrain", "original"):
        return None
    entry = report["results"].get(name)
    mine = _number(metric_value(entry, "acc.forget"))
    if mine is None:
        return None
    ref = _number(metric_value(report["results"].get("retrain"), "acc.forget"))
    if mine > (ref or 0.0) + FORGOT_MARGIN + 1e-12:
        return "did not forget"
    depth = _number(metric_value(entry, "depth"))
    if depth is None:
        return "no longer predicted"
    return "forgot" if depth >= FORGOT_DEPTH - 1e-12 else "hid"


def verdict_notes(report: Report) -> list[str]:
    """One plain sentence per method whose verdict needs explaining: where a method hid the
    class, what is left and how to go deeper; where depth is unknown, what the report can
    and cannot show.

    Args:
        report: the report.

    Returns:
        The sentences, in table order.

    Example:
        >>> report = {"results": {"retrain": {"acc": {"forget": 0.0}},
        ...                       "m": {"acc": {"forget": 0.0}, "depth": 0.1,
        ...                             "depth_shares": {"relearn_steps": 0.1,
        ...                                              "probe_forget_acc": 0.3}}}}
        >>> print(verdict_notes(report)[0])  # doctest: +ELLIPSIS
        m hid the class: it is no longer predicted, but it is still in the features (depth 0.10 ...
    """
    notes = []
    for name in columns(report):
        judged = verdict(report, name)
        entry = report["results"][name]
        if judged == "hid":
            shares = entry.get("depth_shares") or {}
            parts = [
                f"{label} {value:.2f}"
                for key, label in (("relearn_steps", "relearn"), ("probe_forget_acc", "probe"))
                if (value := _number(shares.get(key))) is not None
            ]
            detail = f" ({', '.join(parts)} of the way to the retrained model)" if parts else ""
            notes.append(
                f"{name} hid the class: it is no longer predicted, but it is still in the "
                f"features (depth {entry['depth']:.2f}{detail}; forgot needs "
                f"{FORGOT_DEPTH:.1f}). A few images bring it back. Go deeper: "
                "boundary_shrink/boundary_expanding with depth='features' (their default) "
                "train below the final layer."
            )
        if judged in ("forgot", "hid") and (close := close_call(entry)):
            notes.append(f"{name}'s verdict is a close call: {close}")
        if judged == "no longer predicted":
            notes.append(
                f"{name}: the class is no longer predicted; whether it is gone from the "
                "features needs a retrained model to compare with (bunlearn run trains one). "
                "Relearn steps and the probe, beside the original's, show how far the "
                "features moved, not how far a model that never saw the class would be."
            )
    return notes


def close_call(entry: Mapping[str, Any]) -> str | None:
    """Why a method's verdict could turn with the probe's draws, or ``None``: its depth is
    the probe's share and lies within two of that share's standard errors of
    :data:`FORGOT_DEPTH`.

    Example:
        >>> entry = {"depth": 0.52, "depth_shares": {"relearn_steps": 0.9,
        ...          "probe_forget_acc": 0.52, "probe_forget_acc_se": 0.15}}
        >>> print(close_call(entry))  # doctest: +ELLIPSIS
        its depth 0.52 is the probe's share, whose standard error over the probe's draws ...
        >>> close_call({**entry, "depth": 0.9}) is None  # far from 0.5: decided
        True
    """
    shares = entry.get("depth_shares") or {}
    depth, probe = _number(entry.get("depth")), _number(shares.get("probe_forget_acc"))
    error = _number(shares.get("probe_forget_acc_se"))
    if depth is None or probe is None or error is None or probe > depth + 1e-12:
        return None
    if abs(depth - FORGOT_DEPTH) >= 2 * error:
        return None
    relearn = _number(shares.get("relearn_steps"))
    other = "" if relearn is None else f" (relearn steps put it at {relearn:.2f})"
    return (
        f"its depth {depth:.2f} is the probe's share, whose standard error over the probe's "
        f"draws of a few images is {error:.2f}: {FORGOT_DEPTH:.1f} lies within two standard "
        f"errors{other}. Read it as undecided; the evidence with another seed, or more "
        "seeds, tells it."
    )


def metric_label(key: str) -> str:
    """A metric's row label: its declared label, ``(%)`` for fractions, the direction arrow.

    Args:
        key: a metric key; an undeclared key is its own label.

    Returns:
        The label as the tables print it.

    Example:
        >>> metric_label("acc.retain"), metric_label("speedup"), metric_label("other")
        ('Acc on D_r (%) ↑', 'Speed-up vs retrain ↑', 'other')
    """
    metric = METRIC_BY_KEY.get(key)
    if metric is None:
        return key
    unit = " (%)" if metric.unit == "fraction" else ""
    return f"{metric.label}{unit} {ARROWS[metric.direction]}"


def table_rows(report: Report) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """The report's table as cells: one row per metric some model has (the four accuracies
    and seconds always), in :data:`METRIC_ORDER`.

    Args:
        report: the report; with several seeds its ``std`` is shown beside each mean.

    Returns:
        ``(columns, [(metric key, cells per column)])``.

    Example:
        >>> acc = {"retain": 1.0, "forget": 0.0, "test_retain": 0.9, "test_forget": 0.0}
        >>> report = {"results": {"retrain": {"acc": acc, "seconds": 20.0},
        ...                       "finetune": {"acc": {**acc, "forget": 0.5}, "seconds": 2.0}}}
        >>> columns, rows = table_rows(report)
        >>> columns, rows[1]
        (['retrain', 'finetune'], ('acc.forget', ['0.00', '50.00']))
    """
    cols = columns(report)
    results = report["results"]
    stds = (report.get("std") or {}) if len(_seeds(report)) > 1 else {}
    rows: list[tuple[str, list[str]]] = []
    verdicts = [verdict(report, c) for c in cols]
    for key in METRIC_ORDER:
        if key == "verdict":
            if any(verdicts):
                rows.append((key, [v or "—" for v in verdicts]))
            continue
        if key == "speedup":  # never beside a method that did not forget
            values = [
                None if v == "did not forget" else _speedup(report, c)
                for c, v in zip(cols, verdicts, strict=True)
            ]
        else:
            values = [metric_value(results[c], key) for c in cols]
        always = key.startswith("acc.") or key == "seconds"
        if not always and all(_number(v) is None for v in values):
            continue
        cells = [
            format_value(key, v, std=metric_value(stds.get(c), key))
            for c, v in zip(cols, values, strict=True)
        ]
        if key == "speedup":
            cells = [
                "— (did not forget)" if v == "did not forget" else cell
                for cell, v in zip(cells, verdicts, strict=True)
            ]
        rows.append((key, cells))
    return cols, rows


def format_table(report: Mapping[str, Any]) -> str:
    """A fixed-width text table of the report, as printed by the CLI.

    Args:
        report: a :class:`~boundary_unlearning.report.schema.Report`.

    Returns:
        The table, one line per metric.

    Raises:
        DataError: ``report`` has no ``results`` table.

    Example:
        >>> acc = {"retain": 1.0, "forget": 0.0, "test_retain": 0.9, "test_forget": 0.0}
        >>> report = {"results": {"retrain": {"acc": acc, "seconds": 20.0},
        ...                       "finetune": {"acc": {**acc, "forget": 0.5}, "seconds": 2.0}}}
        >>> print(format_table(report))
                               retrain            finetune
        ---------------------  -------  ------------------
        Acc on D_r (%) ↑        100.00              100.00
        Acc on D_f (%) ≈R         0.00               50.00
        Acc on D_tr (%) ↑        90.00               90.00
        Acc on D_tf (%) ≈R        0.00                0.00
        Verdict ≈R                   —      did not forget
        Time (s) ↓               20.00                2.00
        Speed-up vs retrain ↑     1.0×  — (did not forget)
    """
    cols, rows = table_rows(as_report(report))
    header = ["", *cols]
    body = [[metric_label(key), *cells] for key, cells in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in pairs)

    lines = [line(header), "  ".join("-" * w for w in widths)]
    lines += [line(row) for row in body]
    return "\n".join(lines)


def _seeds(report: Report) -> list[Any]:
    """The seeds the report ran: ``seeds``, else the keys of ``per_seed``, else ``[seed]``.

    Args:
        report: the report.

    Returns:
        The seeds, at least one (0 when the report names none).

    Example:
        >>> _seeds({"results": {}, "seeds": [1, 2]}), _seeds({"results": {}})
        ([1, 2], [0])
    """
    seeds = report.get("seeds")
    if isinstance(seeds, list) and seeds:
        return seeds
    per_seed = report.get("per_seed")
    if isinstance(per_seed, Mapping) and per_seed:
        return list(per_seed)
    return [report.get("seed", 0)]


def failures(report: Report) -> list[str]:
    """What failed, for the reports' failure list.

    Args:
        report: the report.

    Returns:
        One line per model that failed on every seed (``failed``) and per seed a model failed
        on (``failed_seeds``).

    Example:
        >>> failures({"results": {"neg_grad": {"failed": "loss diverged"}}})
        ['neg_grad failed: loss diverged']
    """
    lines = []
    for name, entry in report["results"].items():
        if not isinstance(entry, Mapping):
            continue
        if entry.get("failed"):
            lines.append(f"{name} failed: {entry['failed']}")
        for seed, message in (entry.get("failed_seeds") or {}).items():
            lines.append(f"{name} failed on seed {seed} (left out of its mean): {message}")
    return lines


def settings_line(report: Report) -> str:
    """The report's settings in one markdown line: data set, model, forgotten classes, seeds.

    Args:
        report: the report.

    Returns:
        The line, with the values in bold.

    Example:
        >>> settings_line({"results": {}, "dataset": "digits", "model": "mlp",
        ...                "forget_classes": [3], "class_names": ["three"], "seed": 0})
        'data set: **digits**, model: **mlp**, forgotten class(es): **3 (three)**, seed: 0'
    """
    classes = list(report.get("forget_classes") or [])
    names = list(report.get("class_names") or [])
    forgotten = ", ".join(
        f"{c} ({names[i]})" if i < len(names) and str(names[i]) != str(c) else str(c)
        for i, c in enumerate(classes)
    )
    seeds = _seeds(report)
    seed_text = (
        f"seeds: {', '.join(map(str, seeds))} (mean ± std over {len(seeds)} seeds)"
        if len(seeds) > 1
        else f"seed: {seeds[0]}"
    )
    return (
        f"data set: **{report.get('dataset')}**, model: **{report.get('model')}**, "
        f"forgotten class(es): **{forgotten}**, {seed_text}"
    )
