"""Target homogeneity and the GDP-HMM quality filter.

The GDP-HMM challenge keeps a plan for training only when its highest-dose
PTV has D5/D95 < 1.07 and Dmax/D95 < 1.12 (hot spots within 7 % over most of
the target, 12 % at the maximum). The pipeline applies the same test when it
chooses its best iteration, so a refinement that buys organ sparing with an
inhomogeneous target is never the plan it keeps; summaries and benchmarks
report it from :func:`target_metrics`.
"""

from __future__ import annotations

import numpy as np

from airtp.case import Case
from airtp.evaluation.dvh import compute_dvhs

__all__ = ["target_metrics", "meets_quality_filter", "D5_OVER_D95_LIMIT", "DMAX_OVER_D95_LIMIT"]

D5_OVER_D95_LIMIT = 1.07
DMAX_OVER_D95_LIMIT = 1.12


def target_metrics(case: Case, dose: np.ndarray) -> dict:
    """Per prescribed target, highest dose first: D95, D5, Dmax (Gy on the case grid) and their ratios.

    The ratios are None where D95 is 0 (a target that receives no dose).
    """
    by_dose = case.prescriptions_by_dose()
    dvhs = compute_dvhs(dose, {p.structure: case.structures[p.structure] for p in by_dose}, grid=case.grid)
    out = {}
    for p in by_dose:
        d = dvhs[p.structure]
        d95, d5, dmax = float(d.dose_at_percent(95)), float(d.dose_at_percent(5)), float(d.max_gy)
        out[p.structure] = {"prescription_gy": p.dose_gy, "D95_gy": d95, "D5_gy": d5, "Dmax_gy": dmax,
                            "d5_over_d95": d5 / d95 if d95 > 0 else None,
                            "dmax_over_d95": dmax / d95 if d95 > 0 else None}
    return out


def meets_quality_filter(metrics: dict, margin: tuple = (0.0, 0.0)) -> bool:
    """Whether the highest-dose target of :func:`target_metrics` passes the GDP-HMM filter.

    `margin` (D5/D95, Dmax/D95): how far below each limit the ratio must lie.
    """
    if not metrics:
        return True  # nothing prescribed: nothing to filter on
    top = next(iter(metrics.values()))
    r5, rmax = top["d5_over_d95"], top["dmax_over_d95"]
    return r5 is not None and rmax is not None and r5 < D5_OVER_D95_LIMIT - margin[0] \
        and rmax < DMAX_OVER_D95_LIMIT - margin[1]
