"""The report files written from a run's report dict: ``report.md`` (settings, the
paper-style table, what each metric means, method diagnostics), ``results.csv`` (one row per
model and seed) and :func:`write_reports`, which writes ``report.json`` and ``report.md``;
the table itself is built in :mod:`~boundary_unlearning.report.tables`."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._utils import atomic_write_json, atomic_write_text
from ..metrics.suite import METRIC_BY_KEY
from .classes import forgotten_class_lines
from .schema import ModelEntry, Report, as_report
from .tables import (
    ARROW_LEGEND,
    ARROWS,
    METRIC_ORDER,
    _seeds,
    failures,
    metric_label,
    metric_value,
    settings_line,
    table_rows,
    verdict_notes,
)

__all__ = [
    "coverage",
    "evidence_table",
    "format_markdown",
    "results_csv",
    "stats_text",
    "write_reports",
]

_SET_NAMES = {"retain": "D_r", "forget": "D_f", "test_retain": "D_tr", "test_forget": "D_tf"}


def _cell(entry: Mapping[str, Any], key: str, total: int) -> str:
    value = (entry.get("acc") or {}).get(key)
    interval = (entry.get("acc_interval") or {}).get(key)
    read = (entry.get("acc_samples") or {}).get(key)
    if value is None:
        return "—"
    if read is None or read >= total:
        return f"{100 * value:.2f}% (all)"
    if not interval:  # a mean over seeds: each seed's interval is in per_seed
        return f"{100 * value:.2f}% (mean of seeds, {read:,.0f} read)"
    low, high = interval
    return f"{100 * value:.2f}% [{100 * low:.2f}, {100 * high:.2f}] ({read:,} read)"


def coverage(evidence: Mapping[str, Any]) -> str:
    """What a report's intervals promise, in words: ``"95% intervals"`` for one interval at
    a time, or the confidence that all of them hold together and each one's own level.

    Example:
        >>> coverage({"confidence": 0.95, "family": 8, "each": 0.99375})
        '95% simultaneous intervals (8 together; each 99.4%)'
        >>> coverage({"confidence": 0.95})
        '95% intervals'
    """
    confidence = f"{100 * evidence.get('confidence', 0.95):.0f}%"
    family = int(evidence.get("family", 1))
    if family <= 1:
        return f"{confidence} intervals"
    each = 100 * float(evidence.get("each", evidence.get("confidence", 0.95)))
    return f"{confidence} simultaneous intervals ({family} together; each {each:.1f}%)"


def evidence_table(report: Mapping[str, Any]) -> tuple[str, list[str], list[list[str]]] | None:
    """How a report's accuracies were read: a note, the header and one row per set (each
    model's accuracy, its interval and the images read); ``None`` for a report without
    ``evidence`` (every image was read).

    Args:
        report: a report of ``bunlearn unlearn``.

    Returns:
        ``(note, header, rows)`` or ``None``.

    Example:
        >>> report = {"evidence": {"confidence": 0.95, "margin": 0.005, "full": False,
        ...           "whole_up_to": 10000, "totals": {"retain": 100}},
        ...           "results": {"m": {"acc": {"retain": 0.9}, "acc_samples": {"retain": 50},
        ...                              "acc_interval": {"retain": [0.85, 0.94]}}}}
        >>> evidence_table(report)[2]
        [['D_r', '100', '90.00% [85.00, 94.00] (50 read)']]
    """
    evidence = report.get("evidence")
    if not isinstance(evidence, Mapping):
        return None
    if evidence.get("full"):
        note = "Every image of every set was read (--full-eval): the accuracies are exact."
    else:
        note = (
            f"Accuracies with their {coverage(evidence)}, read on seeded samples sized for "
            f"about ±{100 * evidence.get('margin', 0.01):.1f} points (the whole set when it is "
            f"small); D_f and D_tf, which decide the verdict, are read whole up to "
            f"{evidence.get('whole_up_to', 0):,} images. Every other number of a model that "
            "is computed from its outputs (membership attacks, distances, per-class rows) "
            "reads the same images. --full-eval reads every image."
        )
    if evidence.get("original_reused"):
        note += " The original's were computed by an earlier request (same weights, data and "
        note += "settings) and reused."
    names = [n for n, e in report["results"].items() if isinstance(e, Mapping) and "acc" in e]
    totals = evidence.get("totals") or {}
    rows = [
        [_SET_NAMES.get(key, key), f"{total:,}",
         *[_cell(report["results"][n], key, total) for n in names]]
        for key, total in totals.items()
    ]  # fmt: skip
    return note, ["set", "images", *names], rows


def format_markdown(report: Mapping[str, Any]) -> str:
    """``report.md``: settings, the paper-style table (retrain first, arrows for direction),
    what each metric means, and method diagnostics.

    Args:
        report: a :class:`~boundary_unlearning.report.schema.Report`.

    Returns:
        The markdown text.

    Raises:
        DataError: ``report`` has no ``results`` table.

    Example:
        >>> retrain = {"acc": {"retain": 1.0, "forget": 0.0}, "seconds": 20.0}
        >>> format_markdown({"results": {"retrain": retrain}}).splitlines()[5:7]
        ['| metric | retrain |', '|---|---:|']
    """
    report = as_report(report)
    cols, rows = table_rows(report)
    out = [
        "# Unlearning report",
        "",
        f"- {settings_line(report)}",
        f"- accuracies and attack rates in percent. {ARROW_LEGEND}.",
        "",
        "| metric | " + " | ".join(cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    out += ["| " + " | ".join([metric_label(key), *cells]) + " |" for key, cells in rows]
    by_class = forgotten_class_lines(report)
    out += ["", *by_class] if by_class else []
    notes = verdict_notes(report)
    if notes:
        out += ["", "## What the verdicts say", "", *[f"- {line}" for line in notes]]
    read = evidence_table(report)
    if read is not None:
        note, header, cells = read
        out += ["", "## How the accuracies were read", "", note, "",
                "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1),
                *["| " + " | ".join(row) + " |" for row in cells]]  # fmt: skip
    failed = failures(report)
    if failed:
        out += ["", "## Failures", "", *[f"- {line}" for line in failed]]
    out += ["", "## What each metric means", ""]
    for key, _ in rows:
        metric = METRIC_BY_KEY.get(key)
        if metric:
            arrow = ARROWS[metric.direction]
            out.append(f"- **{metric.label}** ({arrow} {metric.direction}): {metric.meaning}")
    stats = {
        name: entry["stats"]
        for name, entry in report["results"].items()
        if isinstance(entry, dict) and entry.get("stats")
    }
    if stats:
        out += ["", "## Method diagnostics", ""]
        for name, values in stats.items():
            out.append(f"- {name}: {stats_text(values)}")
    if report.get("figures_data"):
        out += ["", "Figures: see `figures/` and `report.html`."]
    return "\n".join(out) + "\n"


def stats_text(stats: Mapping[str, Any]) -> str:
    """A method's diagnostics on one line; the forget-accuracy trace as its checks' count and
    first and last values.

    Args:
        stats: the method's :func:`~boundary_unlearning.unlearning_stats`.

    Returns:
        ``key = value`` pairs, comma-separated (floats with four decimals).

    Example:
        >>> stats_text({"steps": 12, "forget_acc_trace": [[0, 1.0], [12, 0.04]]})
        'steps = 12, forget_acc_trace = 2 checks, 1.000 → 0.040'
    """
    parts = []
    for k, v in stats.items():
        if k == "forget_acc_trace" and isinstance(v, list) and v:
            parts.append(f"{k} = {len(v)} checks, {v[0][1]:.3f} → {v[-1][1]:.3f}")
        elif isinstance(v, float):
            parts.append(f"{k} = {v:.4f}")
        else:
            parts.append(f"{k} = {v}")
    return ", ".join(parts)


def _flat(entry: ModelEntry) -> dict[str, Any]:
    """One model's CSV row: its status and every metric it has, by metric key.

    Args:
        entry: the model's entry.

    Returns:
        ``{"status": "ok" or "failed: ...", metric key: value, ...}``.

    Example:
        >>> _flat({"acc": {"retain": 1.0, "forget": 0.0, "test_retain": 0.9, "test_forget": 0.0},
        ...        "seconds": 2.0})["acc.forget"]
        0.0
    """
    row: dict[str, Any] = {"status": f"failed: {entry['failed']}" if entry.get("failed") else "ok"}
    for key in METRIC_ORDER:
        value = metric_value(entry, key)
        if value is not None:
            row[key] = value
    return row


def results_csv(report: Report) -> str:
    """``results.csv``: one row per model and seed (``per_seed`` when present, else the single
    run's ``results``), one column per metric key of :data:`METRIC_ORDER` that occurs.

    Args:
        report: the report.

    Returns:
        The CSV text with a header row.

    Example:
        >>> print(results_csv({"results": {"retrain": {"seconds": 2.0}}}), end="")
        seed,method,status,seconds
        0,retrain,ok,2.0
    """
    per_seed = report.get("per_seed")
    records: list[dict[str, Any]] = []
    if isinstance(per_seed, Mapping) and per_seed:
        for seed, results in per_seed.items():
            for name, entry in results.items():
                records.append({"seed": seed, "method": name, **_flat(entry)})
    else:
        seed = _seeds(report)[0]
        for name, entry in report["results"].items():
            records.append({"seed": seed, "method": name, **_flat(entry)})
    keys = [k for k in METRIC_ORDER if any(k in r for r in records)]
    buf = io.StringIO()
    fields = ["seed", "method", "status", *keys]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow(record)
    return buf.getvalue()


def write_reports(report: Mapping[str, Any], out_dir: str | Path) -> None:
    """Write ``report.json`` and ``report.md`` atomically into ``out_dir``.

    Args:
        report: a :class:`~boundary_unlearning.report.schema.Report`.
        out_dir: the folder to write into.

    Raises:
        DataError: ``report`` has no ``results`` table.
        OSError: the folder cannot be written.

    Example:
        >>> import os
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> write_reports({"results": {"retrain": {"seconds": 2.0}}}, folder)
        >>> sorted(os.listdir(folder))
        ['report.json', 'report.md']
    """
    report = as_report(report)
    out = Path(out_dir)
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", format_markdown(report))
