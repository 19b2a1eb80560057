"""The HTML report: one self-contained page with KPIs, data quality, cohorts, CLV, segments,
model checks and the customers most at risk, in Simplified Chinese or English.
"""

from revopt.report.render import ReportData, render_report, write_report

__all__ = ["ReportData", "render_report", "write_report"]
