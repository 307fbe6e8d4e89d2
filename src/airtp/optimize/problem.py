"""The planning problem handed to an optimizer target.

A :class:`PlanningProblem` holds the beamlet dose-influence matrix (with its
dose grid, beams and the structures resampled to that grid) and the
prescriptions. Structures are addressed by name; their voxels are rows of the
matrix, computed once and cached.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from airtp.case import Prescription
from airtp.dose.engine import DoseInfluence
from airtp.errors import AirtpError
from airtp.structures.morphology import distance_mm

__all__ = ["PlanningProblem", "OptimizationError"]

TARGET_PREFIXES = ("PTV", "CTV", "GTV", "ITV")


class OptimizationError(AirtpError):
    """The optimisation cannot run: no beamlets, no target objective, bad start."""


@dataclass
class PlanningProblem:
    """Dose-influence matrix + prescriptions: everything an optimizer needs."""

    influence: DoseInfluence
    prescriptions: list[Prescription]
    case_id: str = ""
    transition_mm: float = 0.0
    transition_exempt: tuple = ()  # name prefixes of structures that keep their voxels in the transition zone
    _rows: dict = field(default_factory=dict, init=False, repr=False)
    _target_distance: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if self.influence.n_beamlets == 0:
            raise OptimizationError(f"case '{self.case_id}': the problem has no beamlets")
        if not self.prescriptions:
            raise OptimizationError(f"case '{self.case_id}': the problem has no prescription")

    @property
    def structures(self):
        """Structures on the dose grid."""
        return self.influence.structures

    @property
    def n_beamlets(self) -> int:
        return self.influence.n_beamlets

    @property
    def reference_dose_gy(self) -> float:
        """The highest prescribed dose."""
        return max(p.dose_gy for p in self.prescriptions)

    def highest_target(self) -> Prescription:
        return max(self.prescriptions, key=lambda p: p.dose_gy)

    def is_target(self, name: str) -> bool:
        """Whether `name` is a prescribed target or a target helper (PTV*, CTV*, GTV*, ITV*)."""
        found = self.structures.find(name) or name
        return any(found == p.structure for p in self.prescriptions) or found.upper().startswith(TARGET_PREFIXES)

    def _mask_rows(self, found: str) -> np.ndarray:
        flat = self.structures[found].ravel()
        return np.flatnonzero(flat[self.influence.voxels]).astype(np.int64)

    def rows(self, name: str) -> np.ndarray | None:
        """Matrix rows (body voxels) of structure `name` on the dose grid; None when absent.

        Overlap priority, as in matRad and pyRadPlan: a voxel of a prescribed
        target counts for the target only, so the rows of any other
        structure (organs, rings) leave out the targets' voxels, and organ
        objectives never fight target coverage voxel by voxel. Target helpers
        (PTV*, CTV*, ...) keep all their voxels. With ``transition_mm`` > 0,
        organ voxels closer than that to a target are left out as well: the
        dose fall-off zone that no objective can move without losing coverage.
        Structures named with a prefix in ``transition_exempt`` keep those
        voxels (the reproduction's dose bands, which describe that fall-off).
        """
        found = self.structures.find(name)
        if found is None:
            return None
        if found not in self._rows:
            rows = self._mask_rows(found)
            if not self.is_target(found):
                rows = np.setdiff1d(rows, self.target_rows(), assume_unique=True)
                if self.transition_mm > 0 and not found.startswith(tuple(self.transition_exempt)):
                    rows = rows[self.target_distance_mm()[rows] > self.transition_mm]
            self._rows[found] = rows
        return self._rows[found]

    def target_rows(self) -> np.ndarray:
        """Rows of the union of the prescribed targets."""
        if "__targets__" not in self._rows:
            rows = [self._mask_rows(f) for f in (self.structures.find(p.structure) for p in self.prescriptions) if f]
            self._rows["__targets__"] = np.unique(np.concatenate(rows or [np.zeros(0, np.int64)]))
        return self._rows["__targets__"]

    def target_distance_mm(self) -> np.ndarray:
        """Distance (mm) of every row's voxel from the nearest target voxel (0 inside targets)."""
        if self._target_distance is None:
            grid = self.influence.grid
            target = np.zeros(grid.size, bool)
            target[self.influence.voxels[self.target_rows()]] = True
            dist = distance_mm(target.reshape(grid.shape), grid.spacing_mm)
            self._target_distance = dist.ravel()[self.influence.voxels]
        return self._target_distance
