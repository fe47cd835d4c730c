"""Every forgotten class with its own row of evidence: the classes of this request and
those an earlier request made the model forget (``report["forgotten_before"]``), each
judged on its own D_f accuracy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..metrics.forgotten import HOLD_MARGIN, class_holds
from .schema import as_report
from .tables import columns

__all__ = ["class_verdict", "class_verdicts", "forgotten_class_lines"]


def class_verdict(report: Mapping[str, Any], name: str, cls: str) -> str | None:
    """A model's verdict on one forgotten class: ``"held"`` (its D_f accuracy at most
    5 points above the retrained model's, above 0 without one), ``"failed"`` for a class
    forgotten before that came back, ``"did not forget"`` for one of this request's.

    Args:
        report: the report.
        name: a model of ``report["results"]``.
        cls: the class index, as text.

    Returns:
        The verdict, or ``None`` for the original and retrained models and a model
        without per-class evidence.

    Example:
        >>> report = {"results": {"m": {"per_class": {
        ...     "3": {"forget": 0.0, "earlier": False}, "7": {"forget": 0.4, "earlier": True}}}}}
        >>> class_verdict(report, "m", "3"), class_verdict(report, "m", "7")
        ('held', 'failed')
    """
    if name in ("original", "retrain"):
        return None
    row = (report["results"].get(name) or {}).get("per_class", {}).get(cls)
    if not isinstance(row, Mapping):
        return None
    ref = (report["results"].get("retrain") or {}).get("per_class", {}).get(cls, {})
    holds = class_holds(row.get("forget"), ref.get("forget"))
    if holds is None:
        return None
    if holds:
        return "held"
    return "failed" if row.get("earlier") else "did not forget"


def class_verdicts(report: Mapping[str, Any], name: str) -> dict[str, str]:
    """Each forgotten class's verdict for one model (see :func:`class_verdict`).

    Args:
        report: the report.
        name: a model of ``report["results"]``.

    Returns:
        Class index (text) -> verdict, for the classes that have one.

    Example:
        >>> report = {"results": {"m": {"per_class": {"3": {"forget": 0.0}}}}}
        >>> class_verdicts(report, "m")
        {'3': 'held'}
    """
    classes = (report["results"].get(name) or {}).get("per_class") or {}
    verdicts = {cls: class_verdict(report, name, cls) for cls in classes}
    return {cls: v for cls, v in verdicts.items() if v is not None}


def _label(report: Mapping[str, Any], cls: str, earlier: bool) -> str:
    names = report.get("class_names_all") or {}
    name = names.get(cls) if isinstance(names, Mapping) else None
    when = "earlier request" if earlier else "this request"
    return f"{cls}{f' ({name})' if name and name != cls else ''}, {when}"


def forgotten_class_lines(report: Mapping[str, Any]) -> list[str]:
    """The markdown section ``report.md`` shows: one row per forgotten class, one column per
    model, each cell the share of the class's training (D_f) and test (D_tf) samples still
    predicted as the class, and the model's verdict on it.

    Args:
        report: the report.

    Returns:
        The lines (empty when no model has per-class evidence).

    Example:
        >>> report = {"results": {"m": {"per_class": {"3": {"forget": 0.0,
        ...                                                 "test_forget": 0.01}}}}}
        >>> forgotten_class_lines(report)[-1]
        '| 3, this request | 0.0% / 1.0% held |'
    """
    cols = [c for c in columns(as_report(report)) if (report["results"][c] or {}).get("per_class")]
    if not cols:
        return []
    classes = list(dict.fromkeys(k for c in cols for k in report["results"][c]["per_class"]))
    out = [
        "## Every forgotten class",
        "",
        f"Share of each class's training (D_f) / test (D_tf) images still predicted as the "
        f"class; a class holds while its D_f share is at most {100 * HOLD_MARGIN:.0f} points "
        "above the retrained model's (0 without one).",
        "",
        "| class | " + " | ".join(cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for cls in classes:
        cells, earlier = [], False
        for name in cols:
            row = report["results"][name]["per_class"].get(cls) or {}
            earlier = earlier or bool(row.get("earlier"))
            judged = class_verdict(report, name, cls)
            cells.append(
                f"{_pct(row.get('forget'))} / {_pct(row.get('test_forget'))}"
                + (f" {judged}" if judged else "")
            )
        out.append(f"| {_label(report, cls, earlier)} | " + " | ".join(cells) + " |")
    return out


def _pct(value: Any) -> str:
    return "—" if not isinstance(value, (int, float)) else f"{100 * value:.1f}%"
