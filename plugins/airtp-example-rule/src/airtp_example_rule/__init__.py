"""Example third-party objective rule: gEUD objectives for parallel organs."""

from __future__ import annotations

from airtp.objectives import GEUDObjective

__all__ = ["ParallelOrganGEUDRule", "PARALLEL_ORGANS"]

PARALLEL_ORGANS = (
    "Parotid_L", "Parotid_R", "Parotids-PTV", "ParotdCon-PTV", "Submandibular_L", "Submandibular_R",
    "Submand-PTV", "OCavity-PTV", "Lungs", "TotalLung-GTV",
)


class ParallelOrganGEUDRule:
    """Upper gEUD (a = 1) at 90 % of each parallel organ's current mean dose."""

    name = "parallel-geud"

    def __init__(self, fraction: float = 0.9, a: float = 1.0, priority: float = 60.0):
        self.fraction, self.a, self.priority = fraction, a, priority

    def objectives(self, ctx) -> list:
        out = []
        for organ in PARALLEL_ORGANS:
            dvh = ctx.dvhs.get(organ)
            if dvh is None or dvh.empty or dvh.mean_gy <= 0.5:
                continue
            out.append(GEUDObjective(organ, "upper", round(self.fraction * dvh.mean_gy, 2), self.a, self.priority))
        return out
