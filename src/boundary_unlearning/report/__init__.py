"""Reports: the paper-style table (text, markdown, CSV), the figures and a self-contained
HTML page, all rendered from the JSON-able report dict of a run, whose shape
:class:`~boundary_unlearning.report.schema.Report` describes."""

from .figures import figure_data
from .render import render_reports
from .schema import Report
from .tables import format_table
from .writers import format_markdown, results_csv, write_reports

__all__ = [
    "Report",
    "figure_data",
    "format_markdown",
    "format_table",
    "render_reports",
    "results_csv",
    "write_reports",
]
