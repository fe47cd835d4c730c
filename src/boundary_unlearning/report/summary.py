"""``summary.md`` of a suite run (``bunlearn reproduce``): how the suite was run, then every
study's table: the main table with the paper's published accuracies beside ours, and one
table per sweep (a row per setting and model).

The runner (:mod:`boundary_unlearning.reproduce`) calls :func:`format_summary` after every
study; this module only formats what the run record holds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .schema import ModelEntry, Report, SweepReport

__all__ = ["PUBLISHED", "PUBLISHED_NAMES", "format_summary"]

# The paper's published accuracies (percent; from the authors' slides, see docs/paper.md).
# Keys: report accuracy keys (retain = D_r, forget = D_f, test_retain = D_tr, test_forget = D_tf).
_ACC_KEYS = ("retain", "forget", "test_retain", "test_forget")


def _row(*values: float) -> dict[str, float]:
    """One model's published accuracies by report key.

    Args:
        *values: accuracies on D_r, D_f, D_tr, D_tf (percent).

    Returns:
        ``{"retain": ..., "forget": ..., "test_retain": ..., "test_forget": ...}``.

    Example:
        >>> _row(100.0, 0.0, 85.74, 0.0)["test_retain"]
        85.74
    """
    return dict(zip(_ACC_KEYS, values, strict=True))


PUBLISHED: dict[str, dict[str, dict[str, float]]] = {
    "cifar10": {
        "original": _row(99.97, 99.92, 84.83, 81.20),
        "retrain": _row(100.00, 0.00, 85.74, 0.00),
        "finetune": _row(100.00, 0.22, 86.50, 0.10),
        "neg_grad": _row(97.16, 7.84, 80.42, 6.50),
        "random_labels": _row(98.49, 10.40, 81.81, 7.50),
        "amnesiac": _row(95.79, 0.00, 81.50, 0.00),
        "fisher": _row(61.62, 1.80, 54.20, 1.60),
        "boundary_shrink": _row(99.24, 5.94, 83.13, 5.94),
        "boundary_expanding": _row(98.03, 8.96, 81.07, 7.00),
    },
    "vggface2": {
        "original": _row(99.94, 98.57, 98.87, 97.14),
        "retrain": _row(100.00, 0.00, 99.06, 0.00),
        "finetune": _row(99.52, 0.00, 99.96, 5.52),
        "neg_grad": _row(96.57, 2.85, 99.58, 7.26),
        "random_labels": _row(98.89, 4.29, 95.14, 2.86),
        "boundary_shrink": _row(98.57, 1.54, 99.72, 0.87),
        "boundary_expanding": _row(98.20, 4.22, 97.12, 1.41),
    },
}
PUBLISHED_NAMES = {"cifar10": "CIFAR-10, All-CNN", "vggface2": "VGGFace2, ResNet-50"}


def _num(value: Any, std: Any = None, *, scale: float = 100.0, digits: int = 2) -> str:
    """A summary cell: ``value`` (and ``± std`` when it is a number) times ``scale``.

    Args:
        value: the number; anything else, or NaN, is missing.
        std: the spread across seeds, or None.
        scale: factor applied before printing (100 for percent).
        digits: decimals.

    Returns:
        The cell text; ``—`` when the value is missing.

    Example:
        >>> _num(0.1234, 0.01), _num(3.0, scale=1.0, digits=0), _num(None)
        ('12.34 ± 1.00', '3', '—')
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return "—"
    text = f"{scale * value:.{digits}f}"
    if isinstance(std, (int, float)) and not isinstance(std, bool) and not math.isnan(std):
        text += f" ± {scale * std:.{digits}f}"
    return text


def _get(node: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path`` in nested dicts.

    Args:
        node: a model's entry (or its standard deviations), or None.
        path: keys to follow, e.g. ``("mia", "paper_asr")``.

    Returns:
        The value, or None where a key is missing or a node is not a dict.

    Example:
        >>> _get({"acc": {"forget": 0.1}}, ("acc", "forget")), _get(None, ("acc",))
        (0.1, None)
    """
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _columns(report: Report) -> list[str]:
    """Model names in the summary's order: original, retrain, then each method.

    Args:
        report: a study's report.

    Returns:
        The names of ``report["results"]``, original and retrain first.

    Example:
        >>> _columns({"results": {"finetune": {}, "retrain": {}, "original": {}}})
        ['original', 'retrain', 'finetune']
    """
    results = report["results"]
    first = [c for c in ("original", "retrain") if c in results]
    return first + [c for c in results if c not in first]


# (path in a model's entry, label, scale of the printed value, decimals)
_MAIN_ROWS: tuple[tuple[tuple[str, ...], str, float, int], ...] = (
    (("acc", "retain"), "D_r acc % ↑", 100.0, 2),
    (("acc", "forget"), "D_f acc % (→ retrain)", 100.0, 2),
    (("acc", "test_retain"), "D_tr acc % ↑", 100.0, 2),
    (("acc", "test_forget"), "D_tf acc % (→ retrain)", 100.0, 2),
    (("mia", "paper_asr"), "MIA paper ASR on D_f % (→ retrain)", 100.0, 2),
    (("mia", "confidence_svc"), "MIA-efficacy (conf. SVC) % (→ retrain)", 100.0, 2),
    (("mia", "loss_lr"), "MIA loss-LR accuracy % (→ 50)", 100.0, 2),
    (("mia", "entropy"), "MIA entropy attack % (→ retrain)", 100.0, 2),
    (("js_to_retrain",), "JS divergence to retrain on D_f ↓", 1.0, 4),
    (("activation_distance",), "activation distance to retrain ↓", 1.0, 4),
    (("relearn_steps",), "relearn steps (↑ = truly forgotten)", 1.0, 0),
    (("seconds",), "time (s) ↓", 1.0, 2),
    (("speedup",), "speed-up over retrain ↑", 1.0, 1),
)


def _spread(report: Report) -> dict[str, ModelEntry]:
    """The report's per-model standard deviations, or nothing for a single seed.

    Args:
        report: a study's report.

    Returns:
        ``report["std"]`` when the report ran several seeds, else ``{}``.

    Example:
        >>> _spread({"seeds": [0], "std": {"a": {}}}), _spread({"seeds": [0, 1], "std": {"a": {}}})
        ({}, {'a': {}})
    """
    return report.get("std", {}) if len(report.get("seeds") or [0]) > 1 else {}


def _main_table(report: Report, paper: str | None) -> list[str]:
    """A study's markdown table: one row per metric of :data:`_MAIN_ROWS` that some model has,
    one column per model, and under each accuracy the published row when ``paper`` is given.

    Args:
        report: a study's report (single or multi-seed).
        paper: a key of :data:`PUBLISHED` (``"cifar10"``, ``"vggface2"``) or None.

    Returns:
        The table's lines.

    Example:
        >>> _main_table({"results": {"retrain": {"acc": {"forget": 0.0}}}}, None)
        ['| metric | retrain |', '|---|---:|', '| D_f acc % (→ retrain) | 0.00 |']
    """
    cols = _columns(report)
    results = report["results"]
    spread = _spread(report)
    published = PUBLISHED.get(paper or "", {})
    lines = ["| metric | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for path, label, scale, digits in _MAIN_ROWS:
        values = [_get(results[c], path) for c in cols]
        if all(v is None for v in values):
            continue
        cells = [
            "failed" if "failed" in results[c] else
            _num(v, _get(spread.get(c), path), scale=scale, digits=digits)
            for c, v in zip(cols, values, strict=True)
        ]  # fmt: skip
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        if published and path[0] == "acc":
            ref = [f"{published[c][path[1]]:.2f}" if c in published else "" for c in cols]
            lines.append(f"| *paper, {PUBLISHED_NAMES[paper or '']}* | " + " | ".join(ref) + " |")
    return lines


def _sweep_table(study_report: SweepReport) -> list[str]:
    """A sweep's markdown table: one row per setting and model (accuracies, paper ASR, time,
    the method's diagnostics). When the original and retrained models score the same in every
    setting they are listed once, as ``(all)``, at the end.

    Args:
        study_report: the study's combined report (``vary`` and ``variants``).

    Returns:
        The table's lines.
    """
    keys = [k.split(".")[-1] for k in study_report["vary"]]
    head = [*keys, "model", "D_r", "D_f", "D_tr", "D_tf", "MIA ASR", "time (s)", "notes"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "---|" * (len(keys) + 1) + "---:|" * 6 + "---|"]  # fmt: skip
    variants = study_report["variants"]

    def refs(report: Report) -> list[Any]:
        return [report["results"].get(c, {}).get("acc") for c in ("original", "retrain")]

    same_refs = all(refs(v["report"]) == refs(variants[0]["report"]) for v in variants)

    def row(cells: list[str], report: Report, name: str) -> str:
        entry = report["results"][name]
        std = _spread(report).get(name)
        if "failed" in entry:
            return (
                "| " + " | ".join([*cells, name, *["—"] * 6, f"failed: {entry['failed']}"]) + " |"
            )
        values = [_num(_get(entry, ("acc", k)), _get(std, ("acc", k))) for k in _ACC_KEYS]
        values.append(_num(_get(entry, ("mia", "paper_asr")), _get(std, ("mia", "paper_asr"))))
        values.append(_num(entry.get("seconds"), _get(std, ("seconds",)), scale=1.0))
        notes = ", ".join(
            f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in (entry.get("stats") or {}).items()
        )
        return "| " + " | ".join([*cells, name, *values, notes]) + " |"

    for variant in variants:
        report = variant["report"]
        cells = [str(v) for v in variant["setting"].values()]
        names = _columns(report)
        if same_refs:
            names = [c for c in names if c not in {"original", "retrain"}]
        lines += [row(cells, report, n) for n in names]
    if same_refs and variants:
        first = variants[0]["report"]
        lines += [row(["(all)"] * len(keys), first, n) for n in ("original", "retrain")
                  if n in first["results"]]  # fmt: skip
    return lines


def format_summary(
    suite: dict[str, Any], record: dict[str, Any], out_dir: Path | None = None
) -> str:
    """``summary.md``: how the suite was run, then every study's table (and the figures
    found under ``out_dir/<study>/figures``).

    Args:
        suite: the resolved suite (as :func:`~boundary_unlearning.suites.load_suite`
            returns it).
        record: the run record of :func:`~boundary_unlearning.reproduce.run_suite`, each
            finished study's entry holding its ``report``.
        out_dir: the suite's output folder, searched for figures; None for no figures.

    Returns:
        The markdown text.

    Example:
        >>> machine = {"gpu": None, "processor": "x86_64", "cpu_count": 2, "platform": "Linux",
        ...            "torch": "2.5", "device": "cpu", "torch_threads": 1}
        >>> suite = {"name": "demo", "description": "A tiny suite.", "experiment": {"seed": 0},
        ...          "studies": {"main": {"title": "Main table"}}}
        >>> acc = {"retain": 1.0, "forget": 0.0, "test_retain": 0.9, "test_forget": 0.0}
        >>> report = {"results": {"retrain": {"acc": acc, "seconds": 2.0}}}
        >>> record = {"machine": machine, "started": "2026-01-01T00:00", "seconds": 60.0,
        ...           "studies": {"main": {"seconds": 60.0, "report": report}}}
        >>> text = format_summary(suite, record)
        >>> text.splitlines()[0], text.splitlines()[9:12]
        ('# Suite `demo`', ['## Main table (`main/`)', '', 'Seeds [0]; 60.0 s.'])
    """
    machine = record["machine"]
    where = machine.get("gpu") or f"{machine['processor']}, {machine['cpu_count']} cores"
    out = [
        f"# Suite `{suite['name']}`",
        "",
        str(suite.get("description", "")).strip(),
        "",
        f"- command: `{record.get('command') or 'run_suite(...)'}`",
        f"- started {record['started']}, finished {record.get('finished', '(still running)')}, "
        f"{record.get('seconds', math.nan):.0f} s in all",
        f"- machine: {where} ({machine['platform']}; torch {machine['torch']}, "
        f"device {machine['device']}, {machine['torch_threads']} torch threads)",
        "- mean ± std (sample) where a study ran several seeds. Arrows: ↑ higher is better, "
        "↓ lower is better, (→ retrain) the retrained model's value is the target.",
    ]
    if suite.get("paper"):
        note = str(suite.get("paper_note", "")).strip()
        out.append(
            f"- *paper* rows: the published numbers for {PUBLISHED_NAMES[suite['paper']]} "
            f"(Chen et al., CVPR 2023). {note}"
        )
    for name, entry in record["studies"].items():
        study = suite["studies"][name]
        out += ["", f"## {study.get('title', name)} (`{name}/`)", ""]
        if study.get("description"):
            out += [str(study["description"]).strip(), ""]
        seeds = study.get("seeds") or [suite["experiment"].get("seed", 0)]
        out.append(f"Seeds {seeds}; {entry.get('seconds', math.nan):.1f} s.")
        for method, why in (entry.get("skipped_methods") or {}).items():
            out.append(f"Skipped {method}: {why}.")
        if "error" in entry:
            out += ["", f"**Failed:** {entry['error']}"]
            continue
        report = entry.get("report")
        if report is None:
            continue
        out.append("")
        if "variants" in report:
            out += _sweep_table(report)
            continue
        paper = suite.get("paper") if study.get("compare_paper") else None
        out += _main_table(report, paper)
        for method, values in report["results"].items():
            if values.get("stats"):
                text = ", ".join(
                    f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in values["stats"].items()
                )
                out.append(f"\n{method}: {text}")
        if out_dir is not None:
            figures = sorted((out_dir / name / "figures").glob("*.png"))
            for fig in figures:
                if fig.stem.startswith(("entropy", "tsne")):
                    out.append(f"\n![{fig.stem}]({name}/figures/{fig.name})")
    return "\n".join(out) + "\n"
