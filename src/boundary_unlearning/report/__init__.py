"""Reports: the paper-style table (text and markdown) and the files of a run."""

from .tables import ACC_ROWS, format_markdown, format_table, write_reports

__all__ = ["ACC_ROWS", "format_markdown", "format_table", "write_reports"]
