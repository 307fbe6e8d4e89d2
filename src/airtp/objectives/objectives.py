"""Optimisation objectives in the language of Eclipse's Photon Optimizer.

Each objective is a penalty on the dose (Gy) of the voxels of one structure,
with its analytic gradient with respect to those voxel doses. Penalties are
means over the structure's voxels (so a priority weighs a small and a large
organ alike) of squared dose differences (Gy^2), times the priority.

Point objectives use the standard dose-volume formulation (Wu & Mohan, Med
Phys 27, 2000): an upper objective (D, V %) is violated when more than V % of
the structure receives more than D; it then penalises the voxels whose dose
lies between D and the current dose at V % (the hottest voxels beyond V % are
left alone, so the objective asks for no more than it states). A lower
objective (D, V %) is violated when less than V % receives at least D and
penalises the voxels between the current dose at V % and D. V = 0 % (upper)
and V = 100 % (lower) penalise every voxel beyond D: a maximum or a minimum
dose.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from airtp.errors import AirtpError

__all__ = [
    "ObjectiveError", "PointObjective", "MeanObjective", "GEUDObjective", "NormalTissueObjective",
    "UPPER", "LOWER", "voxel_dose_at_volume",
]

UPPER, LOWER = "upper", "lower"


class ObjectiveError(AirtpError):
    """An objective is malformed (negative dose, volume outside 0-100, ...)."""


def _check_common(obj, what: str) -> None:
    if not isinstance(obj.structure, str) or not obj.structure:
        raise ObjectiveError(f"{what}: needs a structure name")
    if not (np.isfinite(obj.priority) and obj.priority >= 0):
        raise ObjectiveError(f"{what} on '{obj.structure}': priority must be >= 0, got {obj.priority}")
    if not (np.isfinite(obj.dose_gy) and obj.dose_gy >= 0):
        raise ObjectiveError(f"{what} on '{obj.structure}': dose must be >= 0 Gy, got {obj.dose_gy}")


def _check_operator(obj, what: str) -> None:
    if obj.operator not in (UPPER, LOWER):
        raise ObjectiveError(f"{what} on '{obj.structure}': operator must be 'upper' or 'lower', got {obj.operator!r}")


def voxel_dose_at_volume(dose: np.ndarray, volume_pct: float) -> float:
    """Dose (Gy) that the hottest `volume_pct` % of the voxels receive at least.

    The objectives need the exact voxel rank on every iteration, so this is a
    partial sort rather than the interpolated DVH metric of airtp.evaluation.
    Voxel-count definition on the sorted doses (no interpolation): the dose
    of the ceil(V % * N)-th hottest voxel; V = 0 gives the maximum.
    """
    n = dose.size
    k = int(np.ceil(volume_pct / 100.0 * n))
    k = min(max(k, 1), n)
    if k == 1:  # maximum and minimum doses need no partial sort
        return float(dose.max())
    if k == n:
        return float(dose.min())
    return float(np.partition(dose, n - k)[n - k])


@dataclass(frozen=True)
class PointObjective:
    """Dose-volume objective: Upper (at most V % above D) or Lower (at least V % at D)."""

    structure: str
    operator: str
    dose_gy: float
    volume_pct: float
    priority: float

    kind = "point"

    def __post_init__(self):
        _check_common(self, "point objective")
        _check_operator(self, "point objective")
        if not (0.0 <= self.volume_pct <= 100.0):
            raise ObjectiveError(f"point objective on '{self.structure}': volume must be 0-100 %, got {self.volume_pct}")

    def penalty(self, dose: np.ndarray) -> tuple[float, np.ndarray]:
        """Priority-weighted penalty (Gy^2) and its gradient over the structure's voxel doses."""
        n = dose.size
        d = self.dose_gy
        dv = voxel_dose_at_volume(dose, self.volume_pct)
        if self.operator == UPPER:
            active = (dose > d) & (dose <= dv)
            diff = np.where(active, dose - d, 0.0)
        else:
            active = (dose < d) & (dose >= dv)
            diff = np.where(active, dose - d, 0.0)
        value = self.priority * float(np.dot(diff, diff)) / n
        return value, (2.0 * self.priority / n) * diff

    def to_dict(self) -> dict:
        return {"type": self.kind, **asdict(self)}


@dataclass(frozen=True)
class MeanObjective:
    """Upper mean dose: penalty (mean - D)^2 when the mean exceeds D."""

    structure: str
    dose_gy: float
    priority: float
    operator: str = UPPER

    kind = "mean"

    def __post_init__(self):
        _check_common(self, "mean objective")
        if self.operator != UPPER:
            raise ObjectiveError(f"mean objective on '{self.structure}': only 'upper' is supported, got {self.operator!r}")

    def penalty(self, dose: np.ndarray) -> tuple[float, np.ndarray]:
        excess = float(dose.mean()) - self.dose_gy
        if excess <= 0:
            return 0.0, np.zeros_like(dose)
        return self.priority * excess * excess, np.full_like(dose, 2.0 * self.priority * excess / dose.size)

    def to_dict(self) -> dict:
        return {"type": self.kind, **asdict(self)}


@dataclass(frozen=True)
class GEUDObjective:
    """Generalised equivalent uniform dose, (mean d^a)^(1/a), kept below (upper) or above (lower) D.

    ``a`` large (e.g. 10-20) weighs hot spots (serial organs); ``a`` near 1 is
    the mean (parallel organs); negative ``a`` weighs cold spots (targets).
    """

    structure: str
    operator: str
    dose_gy: float
    a: float
    priority: float

    kind = "geud"

    def __post_init__(self):
        _check_common(self, "gEUD objective")
        _check_operator(self, "gEUD objective")
        if not np.isfinite(self.a) or self.a == 0:
            raise ObjectiveError(f"gEUD objective on '{self.structure}': parameter a must be finite and non-zero")

    def penalty(self, dose: np.ndarray) -> tuple[float, np.ndarray]:
        a = self.a
        d = np.maximum(dose, 1e-6)  # d^a with a < 0 needs positive dose
        m = float(np.mean(d**a))
        geud = m ** (1.0 / a)
        diff = geud - self.dose_gy
        if (self.operator == UPPER and diff <= 0) or (self.operator == LOWER and diff >= 0):
            return 0.0, np.zeros_like(dose)
        dgeud = geud ** (1.0 - a) * d ** (a - 1.0) / dose.size
        return self.priority * diff * diff, 2.0 * self.priority * diff * dgeud

    def to_dict(self) -> dict:
        return {"type": self.kind, **asdict(self)}


@dataclass(frozen=True)
class NormalTissueObjective:
    """Eclipse-style normal-tissue objective: a dose limit falling off with distance from the targets.

    For a voxel of `structure` (default Body, targets excluded) at distance x
    (mm) from the target border the limit is ``start_dose_pct`` % of the
    reference dose up to ``distance_from_target_mm``, then
    ``end + (start - end) * exp(-fall_off_per_mm * (x - distance_from_target_mm))``
    (in % of the reference dose, the highest prescription). Voxels above
    their limit are penalised quadratically.
    """

    priority: float
    distance_from_target_mm: float = 3.0
    start_dose_pct: float = 105.0
    end_dose_pct: float = 60.0
    fall_off_per_mm: float = 0.05
    structure: str = "Body"

    kind = "nto"

    @property
    def dose_gy(self) -> float:  # for the shared checks and table
        return 0.0

    def __post_init__(self):
        _check_common(self, "normal-tissue objective")
        for name in ("distance_from_target_mm", "start_dose_pct", "end_dose_pct", "fall_off_per_mm"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise ObjectiveError(f"normal-tissue objective: {name} must be >= 0, got {v}")

    def limit_gy(self, distance_mm: np.ndarray, reference_gy: float) -> np.ndarray:
        """Dose limit (Gy) at each distance (mm) from the target border."""
        x = np.maximum(np.asarray(distance_mm, dtype=float) - self.distance_from_target_mm, 0.0)
        pct = self.end_dose_pct + (self.start_dose_pct - self.end_dose_pct) * np.exp(-self.fall_off_per_mm * x)
        return reference_gy * pct / 100.0

    def penalty(self, dose: np.ndarray, distance_mm: np.ndarray, reference_gy: float) -> tuple[float, np.ndarray]:
        over = np.maximum(dose - self.limit_gy(distance_mm, reference_gy), 0.0)
        n = dose.size
        return self.priority * float(np.dot(over, over)) / n, (2.0 * self.priority / n) * over

    def to_dict(self) -> dict:
        return {"type": self.kind, **asdict(self)}
