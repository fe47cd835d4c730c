"""Render every report file from a report dict (as loaded from ``report.json``) — no model,
no data: ``bunlearn report DIR`` calls this to re-render without re-running anything."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._utils import atomic_write_bytes, atomic_write_text
from .figures import plot_confusion, plot_entropy, plot_tsne
from .html import Figure, build_html
from .schema import ModelFigures, Report, as_report
from .tables import columns
from .writers import format_markdown, results_csv

__all__ = ["render_reports"]


def _slug(name: str) -> str:
    """A model name made safe for a file name.

    Args:
        name: the model name.

    Returns:
        Letters, digits, ``_``, ``.`` and ``-`` only; ``"model"`` when nothing is left.

    Example:
        >>> _slug("boundary_shrink+finetune"), _slug("../")
        ('boundary_shrink_finetune', 'model')
    """
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "model"


def _model_order(report: Report, names: list[str]) -> list[str]:
    """Figures in the table's order (original, retrain, then methods), extra models last.

    Args:
        report: the report.
        names: the models that have figure data.

    Returns:
        ``names`` reordered.

    Example:
        >>> _model_order({"results": {"m": {}, "retrain": {}}}, ["x", "m", "retrain", "original"])
        ['original', 'retrain', 'm', 'x']
    """
    preferred = ["original", "retrain"] + [
        c for c in columns(report) if c not in ("original", "retrain")
    ]
    return [n for n in preferred if n in names] + [n for n in names if n not in preferred]


def _render_figures(
    report: Report, out: Path
) -> tuple[list[tuple[str, str, list[Figure]]], set[str]]:
    """Draw every figure of ``report`` into ``out/figures``.

    Args:
        report: the report; without ``figures_data`` nothing is drawn.
        out: the report folder.

    Returns:
        ``(HTML sections, names of the files written)``.
    """
    written: set[str] = set()
    fd = report.get("figures_data")
    if not isinstance(fd, Mapping) or not isinstance(fd.get("models"), Mapping):
        return [], written
    models: Mapping[str, ModelFigures] = fd["models"]
    forget = [int(c) for c in fd.get("forget_classes", report.get("forget_classes", []))]
    names = dict(zip(forget, report.get("class_names") or [], strict=False))
    k = int(fd.get("num_classes", 0)) or max(
        (len(m.get("confusion", [])) for m in models.values()), default=2
    )
    entropy: list[Figure] = []
    tsne: list[Figure] = []
    confusion: list[Figure] = []
    for name in _model_order(report, list(models)):
        data = models[name]
        slug = _slug(name)
        plots: list[tuple[list[Figure], str, Any]] = []
        if "entropy" in data:
            plots.append((entropy, "entropy", lambda d=data, n=name: plot_entropy(
                d, title=n, num_classes=k)))  # fmt: skip
        if "tsne" in data and "tsne_labels" in fd:
            plots.append((tsne, "tsne", lambda d=data, n=name: plot_tsne(
                d, list(fd["tsne_labels"]), title=n, forget_classes=forget,
                class_names=names)))  # fmt: skip
        if "confusion" in data:
            plots.append((confusion, "confusion", lambda d=data, n=name: plot_confusion(
                d, title=n, forget_classes=forget)))  # fmt: skip
        for bucket, kind, draw in plots:
            png: bytes = draw()
            atomic_write_bytes(out / "figures" / f"{kind}_{slug}.png", png)
            written.add(f"{kind}_{slug}.png")
            bucket.append((name, png))
    sections = [
        ("Output entropy", "Histograms of the output entropy on remaining (D_r), forget (D_f) "
         "and test data. After unlearning, forget samples should get the high entropy of "
         "unseen test samples, as for the retrained model.", entropy),
        ("Decision space (t-SNE)", "2-D t-SNE of penultimate features of training samples, "
         "coloured by true class; the forgotten class is drawn as crosses. After unlearning "
         "its samples scatter into neighbouring classes.", tsne),
        ("Confusion matrices", "Test set, rows normalised per true class; the forgotten "
         "class's row is outlined in red.", confusion),
    ]  # fmt: skip
    return sections, written


def render_reports(report: Mapping[str, Any], out_dir: str | Path) -> None:
    """Write ``report.md``, ``results.csv``, ``figures/*.png`` (when ``report`` holds
    ``figures_data``) and a self-contained ``report.html`` into ``out_dir``, atomically.

    ``report.json`` itself is not written here.

    Args:
        report: a :class:`~boundary_unlearning.report.schema.Report`: a single-seed report
            (``results`` only) or a multi-seed one (``results`` holding the means, ``std``
            and ``per_seed``).
        out_dir: the folder to write into.

    Raises:
        DataError: ``report`` has no ``results`` table.

    Example:
        >>> import os
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> render_reports({"results": {"retrain": {"seconds": 2.0}}}, folder)
        >>> sorted(os.listdir(folder))  # no figures_data: no figures
        ['report.html', 'report.md', 'results.csv']
    """
    report = as_report(report)
    out = Path(out_dir)
    atomic_write_text(out / "report.md", format_markdown(report))
    atomic_write_text(out / "results.csv", results_csv(report))
    sections, written = _render_figures(report, out)
    _drop_stale_figures(out / "figures", written)
    atomic_write_text(out / "report.html", build_html(report, sections))


_FIGURE_KINDS = ("entropy", "tsne", "confusion")  # the file-name prefixes _render_figures uses


def _drop_stale_figures(folder: Path, written: set[str]) -> None:
    """Delete figure files of an earlier render (another run's methods, after --overwrite)
    that this report did not draw, so figures/ matches the report. Only files named the way
    this module names its figures are touched."""
    if not folder.is_dir():
        return
    for path in folder.glob("*.png"):
        if path.name.split("_", 1)[0] in _FIGURE_KINDS and path.name not in written:
            path.unlink(missing_ok=True)
