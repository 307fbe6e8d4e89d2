"""Plan metrics read from DVHs, with the semantics of Varian's PlanScoreCard.

All doses are in Gy and volumes in cm^3 ("cc") or percent of the structure
volume ("%"). Every function reads the interpolated cumulative DVH described
in :mod:`airtp.evaluation.dvh` (exact at bin edges, linear between, exact
min/max/mean), so a dose read from a curve is within one bin width (0.01 Gy by
default) of the voxel-exact one.

=========================  ==================================================
metric                     definition
=========================  ==================================================
DoseAtVolume (v)           largest d with V(d) >= v: the minimum dose of the
                           hottest v (v in % or cc; D0.03cc, D99.5%)
VolumeAtDose (d)           V(d): volume receiving at least d, in % or cc
MeanDose / MinDose /       exact voxel (weighted) mean / minimum / maximum
MaxDose
ConformityIndex (d)        RTOG CI: V_body(d) / V_target (the volume of the
                           isodose d over the target volume)
ConformationNumber (d)     van't Riet / Paddick: V_target(d)^2 /
                           (V_target * V_body(d))
HomogeneityIndex           (D_hi - D_lo) / D_ref with D_x the dose covering
                           x % of the structure (e.g. hi = 2, lo = 98, ref =
                           prescription)
ModifiedGradientIndex      V(d_lo) / V(d_hi) of the structure (usually Body),
                           e.g. V(50 %) / V(100 %)
DoseAtSubVolume (v)        dose covering (V_total - v cc): DoseAtVolume at
                           the structure volume minus v cc
InhomogeneityIndex         (max - min) / mean
Volume                     structure volume in cc
VolumeOfRegret (d)         V_body(d) - V_target(d), in cc
=========================  ==================================================
"""

from __future__ import annotations

import math

from airtp.errors import AirtpError
from airtp.evaluation.dvh import DVH

__all__ = [
    "MetricError", "dose_at_volume", "volume_at_dose", "mean_dose", "min_dose", "max_dose",
    "conformity_index", "conformation_number", "homogeneity_index", "modified_gradient_index",
    "dose_at_subvolume", "inhomogeneity_index", "volume_of_regret",
]


class MetricError(AirtpError):
    """A metric cannot be evaluated (empty structure, bad unit or argument)."""


def _need(dvh: DVH):
    if dvh.empty:
        raise MetricError(f"structure '{dvh.name}' is empty")


def _volume_cc(dvh: DVH, value: float, unit: str) -> float:
    if unit == "cc":
        return float(value)
    if unit == "%":
        return float(value) / 100.0 * dvh.volume_cc
    raise MetricError(f"volume unit must be '%' or 'cc', got {unit!r}")


def dose_at_volume(dvh: DVH, value: float, unit: str = "%") -> float:
    """D(v) in Gy: minimum dose of the hottest `value` % or cc of the structure."""
    _need(dvh)
    return float(dvh.dose_at(_volume_cc(dvh, value, unit)))


def volume_at_dose(dvh: DVH, dose_gy: float, unit: str = "%") -> float:
    """V(d): volume receiving at least `dose_gy`, in `unit` ('%' or 'cc')."""
    _need(dvh)
    v = float(dvh.volume_at(dose_gy))
    if unit == "cc":
        return v
    if unit == "%":
        return 100.0 * v / dvh.volume_cc
    raise MetricError(f"volume unit must be '%' or 'cc', got {unit!r}")


def mean_dose(dvh: DVH) -> float:
    _need(dvh)
    return dvh.mean_gy


def min_dose(dvh: DVH) -> float:
    _need(dvh)
    return dvh.min_gy


def max_dose(dvh: DVH) -> float:
    _need(dvh)
    return dvh.max_gy


def conformity_index(target: DVH, body: DVH, dose_gy: float) -> float:
    """RTOG conformity index: volume of the isodose `dose_gy` (in the body) / target volume."""
    _need(target)
    _need(body)
    return float(body.volume_at(dose_gy)) / target.volume_cc


def conformation_number(target: DVH, body: DVH, dose_gy: float) -> float:
    """Conformation number TV_PIV^2 / (TV * PIV); 0 when the isodose is empty."""
    _need(target)
    _need(body)
    piv = float(body.volume_at(dose_gy))
    tv_piv = float(target.volume_at(dose_gy))
    if piv <= 0 or tv_piv <= 0:
        return 0.0
    return tv_piv * tv_piv / (target.volume_cc * piv)


def homogeneity_index(dvh: DVH, hi_percent: float, lo_percent: float, reference_gy: float) -> float:
    """(D_hi% - D_lo%) / reference, e.g. (D2% - D98%) / prescription."""
    _need(dvh)
    if not (reference_gy and math.isfinite(reference_gy) and reference_gy > 0):
        raise MetricError(f"homogeneity index of '{dvh.name}' needs a positive reference dose, got {reference_gy}")
    d_hi = float(dvh.dose_at_percent(hi_percent))
    d_lo = float(dvh.dose_at_percent(lo_percent))
    return (d_hi - d_lo) / reference_gy


def modified_gradient_index(dvh: DVH, low_dose_gy: float, high_dose_gy: float) -> float:
    """V(low dose) / V(high dose) of the structure (Body for the usual gradient index)."""
    _need(dvh)
    v_hi = float(dvh.volume_at(high_dose_gy))
    if v_hi <= 0:
        raise MetricError(f"gradient index of '{dvh.name}': no volume receives {high_dose_gy:g} Gy")
    return float(dvh.volume_at(low_dose_gy)) / v_hi


def dose_at_subvolume(dvh: DVH, subtract_cc: float) -> float:
    """Dose covering the structure volume minus `subtract_cc` cc."""
    _need(dvh)
    return float(dvh.dose_at(max(dvh.volume_cc - float(subtract_cc), 0.0)))


def inhomogeneity_index(dvh: DVH) -> float:
    """(max - min) / mean."""
    _need(dvh)
    if dvh.mean_gy <= 0:
        raise MetricError(f"inhomogeneity index of '{dvh.name}': mean dose is 0")
    return (dvh.max_gy - dvh.min_gy) / dvh.mean_gy


def volume_of_regret(target: DVH, body: DVH, dose_gy: float) -> float:
    """Body volume receiving `dose_gy` outside the target: V_body(d) - V_target(d), cc."""
    _need(body)
    t = 0.0 if target.empty else float(target.volume_at(dose_gy))
    return max(float(body.volume_at(dose_gy)) - t, 0.0)
