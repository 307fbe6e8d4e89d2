"""A plan's dose against a reference plan's dose on the same structures (paper Figure 8).

The metrics are those OpenKBP reports (``reference_dose_metrics.json`` of
the shared OpenKBP data): D95 of each target, mean dose and D0.1cc of each
organ, plus D99 and D1 of each target (the other target points of the OpenKBP
DVH score). All doses in Gy, all metrics from the DVHs of
:mod:`airtp.evaluation.dvh` on the case (CT) grid, so both doses are read the
same way.

Two plans are only comparable at the same normalisation. AIRTP normalises its
plans so that the highest target's D95 equals its prescription;
:func:`compare_doses` scales the reference dose the same way (one factor for
the whole dose, reported as ``reference_factor``) unless told not to.
Differences are plan minus reference: negative is lower dose in the plan
(better sparing for an organ, under-coverage for a target).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from airtp.errors import AirtpError
from airtp.evaluation.dvh import check_dose, compute_dvhs

__all__ = ["DoseComparison", "normalize_to_prescription", "structure_metrics", "compare_doses",
           "TARGET_METRICS", "ORGAN_METRICS"]

#: Metric names of targets and organs, as keys ``<structure>_<metric>``.
TARGET_METRICS = ("D95", "D99", "D1")
ORGAN_METRICS = ("mean", "D0.1cc")


def normalize_to_prescription(dose: np.ndarray, target: np.ndarray, grid, dose_gy: float,
                              volume_pct: float = 95.0, what: str = "target") -> tuple[np.ndarray, float]:
    """(`dose` scaled so that `volume_pct` % of `target` gets `dose_gy`, the factor used).

    Raises :class:`AirtpError` when the target receives no dose (nothing to scale).
    """
    d = float(compute_dvhs(dose, {what: target}, grid=grid)[what].dose_at_percent(volume_pct))
    if not math.isfinite(d) or d <= 0:
        raise AirtpError(f"{what} gets no dose; cannot normalise")
    f = dose_gy / d
    return (dose * np.float32(f)).astype(np.float32), f


def structure_metrics(dose: np.ndarray, masks: dict, grid, targets) -> dict[str, float]:
    """Metrics (Gy) of `dose` in each mask: ``<name>_D95`` ... for `targets`, ``<name>_mean`` ... for the rest.

    Empty masks are left out (an absent organ has no metric, never a zero).
    """
    dvhs = compute_dvhs(dose, masks, grid=grid)
    out = {}
    # targets first (in the given order, highest dose first), then organs
    for name in [n for n in targets if n in dvhs] + [n for n in dvhs if n not in targets]:
        dvh = dvhs[name]
        if dvh.empty:
            continue
        if name in targets:
            out[f"{name}_D95"] = float(dvh.dose_at_percent(95.0))
            out[f"{name}_D99"] = float(dvh.dose_at_percent(99.0))
            out[f"{name}_D1"] = float(dvh.dose_at_percent(1.0))
        else:
            out[f"{name}_mean"] = float(dvh.mean_gy)
            out[f"{name}_D0.1cc"] = float(dvh.dose_at(0.1))
    return out


@dataclass
class DoseComparison:
    """Metrics of a plan and of a reference on the same structures, and their differences (Gy)."""

    case_id: str
    targets: list[str]
    organs: list[str]
    plan: dict[str, float]
    reference: dict[str, float]
    reference_factor: float = 1.0
    notes: list[str] = field(default_factory=list)
    plan_dose: np.ndarray | None = field(default=None, repr=False)  # as compared (Gy): within the region
    reference_dose: np.ndarray | None = field(default=None, repr=False)  # as compared: normalised, within

    @property
    def difference(self) -> dict[str, float]:
        """Plan minus reference, for every metric both have."""
        return {k: self.plan[k] - self.reference[k] for k in self.plan if k in self.reference}

    def to_dict(self) -> dict:
        return {"case": self.case_id, "targets": self.targets, "organs": self.organs,
                "reference_factor": self.reference_factor, "plan": self.plan, "reference": self.reference,
                "difference": self.difference, "notes": self.notes}

    def table(self) -> str:
        """Aligned text: metric, plan, reference, difference."""
        rows = [("Metric", "Plan Gy", "Reference Gy", "Diff Gy")]
        for k, d in self.difference.items():
            rows.append((k, f"{self.plan[k]:.2f}", f"{self.reference[k]:.2f}", f"{d:+.2f}"))
        w = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)) for r in rows]
        lines.insert(1, "  ".join("-" * x for x in w))
        if self.reference_factor != 1.0:
            lines.append(f"(reference scaled by {self.reference_factor:.4f} to the plan's normalisation)")
        return "\n".join(lines)


def compare_doses(case, dose: np.ndarray, reference: np.ndarray | None = None, *, masks: dict | None = None,
                  targets=None, normalize: bool = True, within: np.ndarray | None = None) -> DoseComparison:
    """Compare `dose` (Gy, case grid) with `reference` (default: the case's reference dose).

    Parameters
    ----------
    case : Case
        Its prescriptions name the targets; the highest one sets the normalisation.
    dose, reference : ndarray (z, y, x), Gy on the case grid
    masks : dict name -> mask, optional
        Structures to compare (default: every structure of the case except
        Body).
    targets : list of str, optional
        Which names of `masks` are targets (default: the prescribed ones,
        found by name); every other mask is an organ.
    normalize : bool
        Scale the reference so that the highest target's D95 equals its
        prescription, as AIRTP does with its plans.
    within : bool mask, optional
        The region where the reference dose was computed (OpenKBP: its
        possible-dose mask, the case's Body). Outside it the reference is 0
        because it is unknown, not because it is low, so the plan dose is set
        to 0 there too; organs reaching outside it are named in the notes.
    """
    what = f"case '{case.patient_id}'"
    if reference is None:
        reference = case.reference_dose
        if reference is None:
            raise AirtpError(f"{what} has no reference dose (reference_dose_gy) to compare with")
    dose = check_dose(dose, case.grid.shape, what=f"plan dose of {what}")
    reference = check_dose(reference, case.grid.shape, what=f"reference dose of {what}")
    case.check_prescriptions()
    if masks is None:
        masks = {n: case.structures[n] for n in case.structures if n != case.structures.find("Body")}
    if targets is None:
        rx_names = [case.structures.find(p.structure) or p.structure for p in case.prescriptions_by_dose()]
        targets = [n for n in rx_names if n in masks]
    targets = [n for n in targets if n in masks]
    organs = [n for n in masks if n not in targets]
    notes = []
    if within is not None:
        within = np.asarray(within, dtype=bool)
        if within.shape != dose.shape:
            raise AirtpError(f"{what}: comparison region has shape {within.shape}, not the grid's {dose.shape}")
        dose = np.where(within, dose, np.float32(0))
        reference = np.where(within, reference, np.float32(0))
        for n in organs + targets:
            n_vox = np.count_nonzero(masks[n])
            outside = np.count_nonzero(masks[n] & ~within)
            if n_vox and outside:
                notes.append(f"'{n}': {outside / n_vox:.0%} lies outside the compared region (dose 0 in both)")
    factor = 1.0
    if normalize:
        top = case.prescriptions_by_dose()[0]
        reference, factor = normalize_to_prescription(reference, case.structures[top.structure], case.grid,
                                                      top.dose_gy, what=f"{what}: reference dose in '{top.structure}'")
    notes += [f"organ '{n}' is empty: not compared" for n in organs if not np.any(masks[n])]
    return DoseComparison(case.patient_id, targets, organs,
                          structure_metrics(dose, masks, case.grid, targets),
                          structure_metrics(reference, masks, case.grid, targets), factor, notes,
                          dose, reference)
