"""The paper's table layout: rows D_r, D_f, D_tr, D_tf accuracy and seconds; one column per
model (original, retrain, then each method)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .._utils import atomic_write_json, atomic_write_text

__all__ = ["ACC_ROWS", "format_markdown", "format_table", "write_reports"]

# (report key, label, which direction is good)
ACC_ROWS: tuple[tuple[str, str, str], ...] = (
    ("retain", "Acc on D_r", "higher is better (retrain ≈ target)"),
    ("forget", "Acc on D_f", "retrain's value (≈0) is the target"),
    ("test_retain", "Acc on D_tr", "higher is better (retrain ≈ target)"),
    ("test_forget", "Acc on D_tf", "retrain's value (≈0) is the target"),
)


def _pct(value: Any) -> str:
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "—"
    return f"{100 * value:.2f}"


def _columns(report: dict[str, Any]) -> list[str]:
    results = report["results"]
    order = ["original", "retrain"]
    return [c for c in order if c in results] + [c for c in results if c not in order]


def _rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    cols = _columns(report)
    results = report["results"]
    rows: list[list[str]] = []
    for key, label, _ in ACC_ROWS:
        rows.append([label + " (%)"] + [_pct(results[c].get("acc", {}).get(key)) for c in cols])
    seconds = []
    for c in cols:
        s = results[c].get("seconds")
        seconds.append(f"{s:.2f}" if isinstance(s, (int, float)) else "—")
    rows.append(["Time (s)", *seconds])
    return cols, rows


def format_table(report: dict[str, Any]) -> str:
    """A fixed-width text table of the report, as printed by the CLI."""
    cols, rows = _rows(report)
    header = ["", *cols]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in pairs)

    lines = [line(header), "  ".join("-" * w for w in widths)]
    lines += [line(row) for row in rows]
    return "\n".join(lines)


def format_markdown(report: dict[str, Any]) -> str:
    """``report.md``: settings, then the table in the paper's layout."""
    cols, rows = _rows(report)
    names = report.get("class_names") or report.get("forget_classes")
    out = [
        "# Unlearning report",
        "",
        f"- data set: **{report.get('dataset')}**, model: **{report.get('model')}**, "
        f"forgotten class(es): **{report.get('forget_classes')}** ({names}), "
        f"seed: {report.get('seed')}",
        "- accuracy in percent. On D_r and D_tr higher is better; on D_f and D_tf the "
        "retrained model's value (about 0) is the target.",
        "",
        "| metric | " + " | ".join(cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    stats = {
        name: entry["stats"]
        for name, entry in report["results"].items()
        if isinstance(entry, dict) and entry.get("stats")
    }
    if stats:
        out += ["", "## Method diagnostics", ""]
        for name, values in stats.items():
            text = ", ".join(
                f"{k} = {v:.4f}" if isinstance(v, float) else f"{k} = {v}"
                for k, v in values.items()
            )
            out.append(f"- {name}: {text}")
    return "\n".join(out) + "\n"


def write_reports(report: dict[str, Any], out_dir: str | Path) -> None:
    """Write ``report.json`` and ``report.md`` atomically into ``out_dir``."""
    out = Path(out_dir)
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", format_markdown(report))
