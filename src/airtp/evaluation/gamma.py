"""Gamma index of a dose against a reference dose (Low et al., Med Phys 25, 1998).

:func:`gamma_index` computes the *global* 3D gamma in the native core (C++
with OpenMP, or CUDA when a GPU is in use); both back ends run the same
search and agree to :data:`CPU_GPU_ATOL`.

Definition (doses in Gy on one grid, spacing in mm):

- ``dd = dose_percent / 100 * N`` Gy and ``dta_mm`` are the criteria, with
  ``N`` the normalisation dose: the reference maximum unless given (global
  gamma).
- Reference voxels below ``cutoff_percent / 100 * N`` (the low-dose
  threshold), or outside ``mask`` when one is given, are not evaluated (NaN).
- For an evaluated reference voxel r, ``gamma(r) = min_p sqrt(|p - r|^2 /
  dta^2 + (E(p) - R(r))^2 / dd^2)`` where E is the evaluated dose,
  interpolated trilinearly between voxel centres (sub-voxel), and p runs over
  a cubic lattice of step ``dta_mm / interp_fraction`` (0.3 mm for 3 mm and
  the default 10, the step recommended by Ju et al., Med Phys 35, 2008) centred
  on r, inside the sphere of radius ``max_gamma * dta_mm`` and inside the
  grid (points beyond the outer voxel centres are not searched). Spacing may
  differ per axis: the lattice is in mm.
- The search runs from the nearest lattice points outwards and stops when the
  distance term alone reaches the best value found, so the result is the
  exact minimum over the lattice, capped at ``max_gamma``: a value of
  ``max_gamma`` means "max_gamma or more".
- A voxel passes when gamma <= 1; the pass rate is passed / evaluated, in %.

The lattice makes gamma an upper bound of the continuous minimum by at most
the distance from the true minimiser to the nearest lattice point, i.e. by
less than ``sqrt(3) / 2 * step / dta`` (0.087 with the default step).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from airtp import _core
from airtp import core as _backend
from airtp.errors import AirtpError
from airtp.evaluation.dvh import check_dose

__all__ = ["GammaResult", "gamma_index", "CPU_GPU_ATOL", "MAX_SEARCH_STEPS"]

#: Gamma values of the CPU and CUDA kernels agree to this (absolute): both
#: use the same table and the same float32 operations without fused
#: multiply-adds; the tolerance covers compilers that contract regardless.
CPU_GPU_ATOL = 1e-5
#: The search radius in lattice steps (max_gamma * interp_fraction) is
#: limited: the table holds about 4.2 * steps^3 offsets.
MAX_SEARCH_STEPS = 100


@dataclass
class GammaResult:
    """Gamma map and pass rate of one comparison.

    Attributes
    ----------
    gamma : ndarray float32 (z, y, x)
        Gamma per reference voxel; NaN where not evaluated; capped at ``max_gamma``.
    dose_percent, dta_mm, cutoff_percent : float
        The criteria: dose difference (% of ``normalization_gy``), distance
        to agreement (mm), low-dose threshold (% of ``normalization_gy``).
    normalization_gy : float
    max_gamma, step_mm : float
        Search cap and lattice step (mm).
    evaluated, passed : int
        Voxels evaluated, and those with gamma <= 1.
    backend : str
        'cpu' or 'cuda'.
    """

    gamma: np.ndarray
    dose_percent: float
    dta_mm: float
    cutoff_percent: float
    normalization_gy: float
    max_gamma: float
    step_mm: float
    evaluated: int
    passed: int
    backend: str

    @property
    def label(self) -> str:
        return f"{self.dose_percent:g}%/{self.dta_mm:g}mm"

    @property
    def pass_rate(self) -> float:
        """Percent of evaluated voxels with gamma <= 1 (NaN when none is evaluated)."""
        return 100.0 * self.passed / self.evaluated if self.evaluated else float("nan")

    def to_dict(self) -> dict:
        """The criteria and statistics (not the map): pass rate %, mean and 95th percentile of gamma."""
        values = self.gamma[np.isfinite(self.gamma)]
        return {
            "criteria": self.label, "dose_percent": self.dose_percent, "dta_mm": self.dta_mm,
            "cutoff_percent": self.cutoff_percent, "normalization_gy": self.normalization_gy, "global": True,
            "max_gamma": self.max_gamma, "step_mm": self.step_mm, "evaluated": self.evaluated,
            "passed": self.passed, "pass_rate_pct": self.pass_rate,
            "mean_gamma": float(values.mean()) if values.size else None,
            "gamma_p95": float(np.percentile(values, 95)) if values.size else None,
        }


def _spacing(spacing_mm) -> tuple[float, float, float]:
    sp = getattr(spacing_mm, "spacing_mm", spacing_mm)  # a Grid works too
    try:
        sp = tuple(float(s) for s in np.ravel(sp))
    except (TypeError, ValueError):
        raise AirtpError(f"gamma: spacing must be three numbers (z, y, x) mm, got {spacing_mm!r}") from None
    if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise AirtpError(f"gamma: spacing must be three positive numbers (z, y, x) mm, got {spacing_mm!r}")
    return sp


def _positive(name: str, value) -> float:
    v = float(value)
    if not (np.isfinite(v) and v > 0):
        raise AirtpError(f"gamma: {name} must be positive, got {value!r}")
    return v


def gamma_index(reference, evaluated, spacing_mm, *, dose_percent: float = 3.0, dta_mm: float = 3.0,
                cutoff_percent: float = 10.0, normalization_gy: float | None = None, max_gamma: float = 2.0,
                interp_fraction: float = 10.0, mask=None, use_gpu: bool | None = None) -> GammaResult:
    """Global gamma of `evaluated` against `reference` (see the module doc).

    Parameters
    ----------
    reference, evaluated : (z, y, x) arrays, Gy, same shape
        Checked like any dose (finite, >= 0).
    spacing_mm : (z, y, x) mm, or a :class:`~airtp.Grid`
    dose_percent, dta_mm : float
        Criteria: % of the normalisation dose, and mm (3 and 3 by default).
    cutoff_percent : float
        Low-dose threshold, % of the normalisation dose (default 10).
    normalization_gy : float, optional
        Default: the reference maximum.
    max_gamma : float
        Search cap: the search radius is ``max_gamma * dta_mm`` (default 2).
    interp_fraction : float
        Lattice step = ``dta_mm / interp_fraction`` (default 10).
    mask : (z, y, x) bool array, optional
        Evaluate only these reference voxels (e.g. the body).
    use_gpu : bool, optional
        Force the CUDA (True) or CPU (False) kernel; default by :func:`airtp.core.use_gpu`.
    """
    ref = check_dose(reference, what="gamma reference")
    ev = check_dose(evaluated, shape=ref.shape, what="gamma evaluated dose")
    spacing = _spacing(spacing_mm)
    dose_percent, dta_mm = _positive("dose_percent", dose_percent), _positive("dta_mm", dta_mm)
    max_gamma, interp_fraction = _positive("max_gamma", max_gamma), _positive("interp_fraction", interp_fraction)
    if max_gamma * interp_fraction > MAX_SEARCH_STEPS:
        raise AirtpError(f"gamma: max_gamma * interp_fraction = {max_gamma * interp_fraction:g} exceeds "
                         f"{MAX_SEARCH_STEPS} lattice steps")
    cutoff_percent = float(cutoff_percent)
    if not (0.0 <= cutoff_percent < 100.0):
        raise AirtpError(f"gamma: cutoff_percent must be in [0, 100), got {cutoff_percent!r}")
    norm = float(ref.max()) if normalization_gy is None else _positive("normalization_gy", normalization_gy)
    if not norm > 0:
        raise AirtpError("gamma: the reference dose is zero everywhere (no normalisation dose)")
    m = None
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != ref.shape or m.dtype != np.bool_:
            raise AirtpError(f"gamma: mask must be a boolean array of the dose shape {ref.shape}, "
                             f"got {m.dtype} {m.shape}")
        m = np.ascontiguousarray(m).view(np.uint8)
    if use_gpu is None:
        use_gpu = _backend.use_gpu(ref.size)
    use_gpu = bool(use_gpu) and _backend.backend() == "cuda"
    step = dta_mm / interp_fraction
    threshold = cutoff_percent / 100.0 * norm
    gamma = _core.gamma_index(ref, ev, spacing, dose_percent / 100.0 * norm, dta_mm, threshold, max_gamma, step,
                              m, use_gpu)
    finite = np.isfinite(gamma)
    return GammaResult(gamma, dose_percent, dta_mm, cutoff_percent, norm, max_gamma, step, int(finite.sum()),
                       int(np.count_nonzero(gamma[finite] <= 1.0)), "cuda" if use_gpu else "cpu")
