"""A self-contained ``report.html``: the table, what every metric means, and the figures
embedded as base64 PNG data URIs (no external file, script or style sheet)."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from html import escape

from ..metrics.suite import METRIC_BY_KEY
from .classes import forgotten_class_lines
from .schema import Report
from .tables import (
    ARROW_LEGEND,
    ARROWS,
    columns,
    failures,
    metric_label,
    metric_value,
    table_rows,
    verdict_notes,
)
from .tables import settings_line as _settings_md
from .writers import evidence_table, stats_text

__all__ = ["build_html"]

Figure = tuple[str, bytes]  # (caption, PNG bytes)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1400px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th.ref, td.ref { background: #eef6ee; }
td.meaning { max-width: 720px; }
.grid { display: flex; flex-wrap: wrap; gap: 8px; }
figure { margin: 0; border: 1px solid #ddd; padding: 4px; background: #fff; }
figcaption { font-size: 12px; color: #555; text-align: center; }
.note { color: #555; font-size: 13px; }
"""


def _md_bold_to_html(text: str) -> str:
    """Escape ``text`` for HTML and turn its markdown ``**bold**`` into ``<b>`` tags.

    Args:
        text: a line of markdown.

    Returns:
        The HTML text.

    Example:
        >>> _md_bold_to_html("data set: **a<b**")
        'data set: <b>a&lt;b</b>'
    """
    parts = escape(text).split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def _table(report: Report) -> str:
    """The report's table as HTML, the retrained model's column marked (R).

    Args:
        report: the report.

    Returns:
        The ``<table>`` element; each metric's meaning is its row header's tooltip.
    """
    cols, rows = table_rows(report)
    head = "".join(
        f'<th class="ref">{escape(c)} (R)</th>' if c == "retrain" else f"<th>{escape(c)}</th>"
        for c in cols
    )
    lines = [f"<table><thead><tr><th>metric</th>{head}</tr></thead><tbody>"]
    for key, cells in rows:
        metric = METRIC_BY_KEY.get(key)
        title = escape(metric.meaning if metric else "", quote=True)
        tds = "".join(
            f'<td class="num{" ref" if c == "retrain" else ""}">{escape(v)}</td>'
            for c, v in zip(cols, cells, strict=True)
        )
        lines.append(f'<tr><th title="{title}">{escape(metric_label(key))}</th>{tds}</tr>')
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _per_seed_tables(report: Report) -> str:
    """One collapsed table per seed, for a report of several seeds.

    Args:
        report: the report.

    Returns:
        The HTML section, or ``""`` when the report has fewer than two seeds.
    """
    per_seed = report.get("per_seed")
    if not isinstance(per_seed, Mapping) or len(per_seed) < 2:
        return ""
    out = ["<h2>Per seed</h2>"]
    for seed, results in per_seed.items():
        sub: Report = {"results": results}
        cols = columns(sub)
        _, rows = table_rows(sub)
        head = "".join(f"<th>{escape(c)}</th>" for c in cols)
        body = "".join(
            f"<tr><th>{escape(metric_label(k))}</th>"
            + "".join(f'<td class="num">{escape(v)}</td>' for v in cells)
            + "</tr>"
            for k, cells in rows
        )
        out.append(
            f"<details><summary>seed {escape(str(seed))}</summary><table><thead><tr>"
            f"<th>metric</th>{head}</tr></thead><tbody>{body}</tbody></table></details>"
        )
    return "\n".join(out)


def _glossary(report: Report) -> str:
    """What each metric of the table means and which way is good, as an HTML table.

    Args:
        report: the report.

    Returns:
        The ``<table>`` element, one row per declared metric in the report's table.
    """
    _, rows = table_rows(report)
    lines = ["<table><thead><tr><th>metric</th><th>good</th><th>meaning</th></tr></thead><tbody>"]
    for key, _cells in rows:
        metric = METRIC_BY_KEY.get(key)
        if not metric:
            continue
        direction = metric.direction.replace("_", " ")
        lines.append(
            f"<tr><th>{escape(metric.label)}</th><td>{escape(ARROWS[metric.direction])} "
            f"{escape(direction)}</td><td class=meaning>{escape(metric.meaning)}</td></tr>"
        )
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _diagnostics(report: Report) -> str:
    """The methods' diagnostics (``stats``) as an HTML list.

    Args:
        report: the report.

    Returns:
        The HTML section, or ``""`` when no model has diagnostics.
    """
    items = []
    for name, entry in report["results"].items():
        stats = metric_value(entry, "stats")
        if isinstance(stats, Mapping) and stats:
            text = stats_text(stats)
            items.append(f"<li>{escape(name)}: {escape(text)}</li>")
    return f"<h2>Method diagnostics</h2><ul>{''.join(items)}</ul>" if items else ""


def _verdict_notes(report: Report) -> str:
    """What the verdicts say, as an HTML list (see
    :func:`~boundary_unlearning.report.tables.verdict_notes`).

    Args:
        report: the report.

    Returns:
        The HTML section, or ``""`` when no verdict needs explaining.

    Example:
        >>> _verdict_notes({"results": {"m": {"acc": {"forget": 0.0}}}})[:42]
        '<h2>What the verdicts say</h2><ul><li>m: t'
    """
    notes = verdict_notes(report)
    if not notes:
        return ""
    items = "".join(f"<li>{escape(x)}</li>" for x in notes)
    return f"<h2>What the verdicts say</h2><ul>{items}</ul>"


def _forgotten_classes(report: Report) -> str:
    """The per-class evidence table of ``report.md``
    (:func:`~boundary_unlearning.report.classes.forgotten_class_lines`) as HTML.

    Returns:
        The HTML section, or ``""`` without per-class evidence.

    Example:
        >>> report = {"results": {"m": {"per_class": {"3": {"forget": 0.0}}}}}
        >>> "<td>3, this request</td>" in _forgotten_classes(report)
        True
    """
    lines = forgotten_class_lines(report)
    if not lines:
        return ""
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines if ln.startswith("| ")]
    head, body = rows[0], rows[1:]
    cells = "".join(f"<th>{escape(c)}</th>" for c in head)
    out = [f"<h2>Every forgotten class</h2><p class=note>{escape(lines[2])}</p>",
           f"<table><tr>{cells}</tr>"]  # fmt: skip
    for row in body:
        out.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>")
    return "".join(out) + "</table>"


def _failures(report: Report) -> str:
    """The report's failures as an HTML list.

    Args:
        report: the report.

    Returns:
        The HTML section, or ``""`` when nothing failed.

    Example:
        >>> _failures({"results": {"m": {"failed": "nan loss"}}})
        '<h2>Failures</h2><ul><li>m failed: nan loss</li></ul>'
    """
    lines = failures(report)
    if not lines:
        return ""
    return "<h2>Failures</h2><ul>" + "".join(f"<li>{escape(x)}</li>" for x in lines) + "</ul>"


def _figures(sections: Sequence[tuple[str, str, Sequence[Figure]]]) -> str:
    out = []
    for heading, note, figures in sections:
        if not figures:
            continue
        out.append(f"<h2>{escape(heading)}</h2><p class=note>{escape(note)}</p><div class=grid>")
        for caption, png in figures:
            uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            out.append(
                f'<figure><img src="{uri}" alt="{escape(caption, quote=True)}">'
                f"<figcaption>{escape(caption)}</figcaption></figure>"
            )
        out.append("</div>")
    return "\n".join(out)


def _evidence(report: Report) -> str:
    """How the accuracies were read (a ``bunlearn unlearn`` report), as a note and a table.

    Example:
        >>> _evidence({"results": {}})
        ''
    """
    read = evidence_table(report)
    if read is None:
        return ""
    note, header, rows = read
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return (f"<h2>How the accuracies were read</h2><p class=note>{escape(note)}</p>"
            f"<table><tr>{head}</tr>{body}</table>")  # fmt: skip


def build_html(report: Report, sections: Sequence[tuple[str, str, Sequence[Figure]]] = ()) -> str:
    """The whole page as one string.

    Args:
        report: the report.
        sections: figure sections, each ``(heading, note, [(caption, png bytes)])``.

    Returns:
        A self-contained HTML document (figures embedded as data URIs).

    Example:
        >>> page = build_html({"dataset": "digits", "results": {"retrain": {"seconds": 2.0}}})
        >>> page.startswith("<!DOCTYPE html>"), "Unlearning report: digits" in page
        (True, True)
    """
    title = f"Unlearning report: {report.get('dataset')} / {report.get('model')}"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
            f"<h1>{escape(title)}</h1>",
            f"<p>{_md_bold_to_html(_settings_md(report))}</p>",
            f"<p class=note>Accuracies and attack rates in percent. {escape(ARROW_LEGEND)}. "
            "The retrained model (R), trained from scratch without the forgotten class, is "
            "the reference in the first column. Hover a metric for its meaning.</p>",
            _table(report),
            _forgotten_classes(report),
            _verdict_notes(report),
            _evidence(report),
            "<h2>What each metric means</h2>",
            _glossary(report),
            _failures(report),
            _per_seed_tables(report),
            _diagnostics(report),
            _figures(sections),
            "</body></html>",
        ]
    )
