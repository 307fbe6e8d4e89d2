"""Plan reports: DVH and dose-slice figures (PNG) and an HTML page.

- :mod:`airtp.report.plots`: :func:`dvh_figure`, :func:`dose_slices_figure`,
  :func:`orthogonal_slices` (display-oriented slices of any volume);
- :mod:`airtp.report.html`: :func:`write_report` (``report.html`` with
  ``dvh.png`` and ``dose_slices.png`` beside it).

Needs matplotlib (drawn with the Agg canvas; no display, no pyplot state).
"""

from airtp.report.html import write_report
from airtp.report.plots import (
    ReportError, SliceView, default_point_mm, dose_slices_figure, dvh_figure, orthogonal_slices, structure_colour,
)

__all__ = [
    "write_report", "dvh_figure", "dose_slices_figure", "orthogonal_slices", "SliceView", "default_point_mm",
    "structure_colour", "ReportError",
]
