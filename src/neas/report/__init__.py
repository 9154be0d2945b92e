"""The visual report of a run."""

from neas.report.html import build_report

__all__ = ["build_report"]
