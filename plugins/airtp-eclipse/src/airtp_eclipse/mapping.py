"""Pure translations between AIRTP's planning problem and ESAPI values.

Nothing here talks to Eclipse: these functions take AIRTP objects (beams,
beamlet grids, grids) and plain numbers, or duck-typed ESAPI read-back
objects (anything with the attributes named below), so they are testable
without an Eclipse workstation.

Coordinates: AIRTP writes patient coordinates (z, y, x) in DICOM patient mm;
ESAPI's ``VVector`` is (x, y, z) in the same DICOM patient mm (the internal
coordinates of the image, not the user origin shown in the Eclipse UI).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates

from airtp.evaluation.dvh import DVH
from airtp.grid import Grid
from airtp.optimize.problem import OptimizationError

__all__ = [
    "EclipseError", "isocenter_xyz", "jaw_rect_mm", "union_rect_mm", "arc_geometry", "unit_to_gy",
    "dose_value_gy", "eclipse_dose_to_grid", "dvh_from_curve", "to_numpy_2d",
]

#: Dose units ESAPI's DoseValue accepts for absolute doses, with their factor to Gy.
UNIT_TO_GY = {"gy": 1.0, "cgy": 0.01}
#: Span of a "full" arc made from one beam: start to start -/+ 358 degrees (2 degrees short of a circle).
FULL_ARC_SPAN_DEG = 358.0


class EclipseError(OptimizationError):
    """An Eclipse step failed (its ``.Success`` was false or it raised); the message names plan and step."""


# --------------------------------------------------------------------------- geometry
def isocenter_xyz(beam) -> tuple[float, float, float]:
    """The beam's isocentre as ESAPI (x, y, z) mm, from AIRTP's (z, y, x)."""
    z, y, x = (float(v) for v in beam.isocenter_mm)
    return x, y, z


def jaw_rect_mm(grid, decimals: int = 1) -> tuple[float, float, float, float]:
    """Jaw positions (X1, Y1, X2, Y2) in mm at the isocentre plane fitted to the active beamlets.

    The rectangle is the outer edge of the active beamlets of a
    :class:`~airtp.beams.beam.BeamletGrid` (beamlet centre -/+ half a
    beamlet), rounded outwards to `decimals`. AIRTP's beam's-eye-view axes are
    IEC 61217 beam-limiting-device X and Y, so X1/Y1 are the negative sides,
    as ``VRect(X1, Y1, X2, Y2)`` expects.
    """
    iy, ix = np.nonzero(np.asarray(grid.active, bool))
    if ix.size == 0:
        raise OptimizationError("a beam has no active beamlet; cannot fit its jaws")
    sx, sy = (float(s) for s in grid.size_mm)
    x1 = grid.x0_mm + ix.min() * sx - sx / 2.0
    x2 = grid.x0_mm + ix.max() * sx + sx / 2.0
    y1 = grid.y0_mm + iy.min() * sy - sy / 2.0
    y2 = grid.y0_mm + iy.max() * sy + sy / 2.0
    f = 10.0**decimals
    return (float(np.floor(x1 * f) / f), float(np.floor(y1 * f) / f),
            float(np.ceil(x2 * f) / f), float(np.ceil(y2 * f) / f))


def union_rect_mm(rects) -> tuple[float, float, float, float]:
    """The smallest rectangle (X1, Y1, X2, Y2) holding every rectangle of `rects`."""
    r = np.asarray(list(rects), float)
    return float(r[:, 0].min()), float(r[:, 1].min()), float(r[:, 2].max()), float(r[:, 3].max())


def arc_geometry(beams) -> list[tuple[float, float, str]]:
    """(gantry start, gantry stop, direction 'cw'|'ccw') of one arc per beam.

    A beam that carries ``gantry_stop_deg`` (and optionally
    ``gantry_direction`` 'cw'/'ccw', default alternating) gives its arc
    explicitly, so callers wanting the usual 2 or 4 arcs pass 2 or 4 such
    beams. A plain static :class:`~airtp.beams.beam.Beam` becomes a full arc
    (358 degrees) starting at its gantry angle; directions alternate
    clockwise, counter-clockwise, ... in beam order (so beams at 181 and 179
    degrees give the classic 181 -> 179 CW + 179 -> 181 CCW pair).
    """
    out = []
    for i, b in enumerate(beams):
        start = float(b.gantry_deg) % 360.0
        direction = getattr(b, "gantry_direction", None) or ("cw" if i % 2 == 0 else "ccw")
        direction = str(direction).lower()
        if direction in ("clockwise", "cw"):
            direction = "cw"
        elif direction in ("counterclockwise", "counter-clockwise", "ccw"):
            direction = "ccw"
        else:
            raise OptimizationError(f"beam '{b.name}': gantry_direction must be 'cw' or 'ccw', got {direction!r}")
        stop = getattr(b, "gantry_stop_deg", None)
        if stop is None:
            stop = start - FULL_ARC_SPAN_DEG if direction == "cw" else start + FULL_ARC_SPAN_DEG
        out.append((start, float(stop) % 360.0, direction))
    return out


# --------------------------------------------------------------------------- doses
def unit_to_gy(unit: str) -> float:
    """Factor from an absolute ESAPI dose unit ('Gy', 'cGy') to Gy."""
    key = str(unit).strip().lower()
    if key not in UNIT_TO_GY:
        raise EclipseError(f"expected an absolute dose in Gy or cGy, got unit '{unit}'")
    return UNIT_TO_GY[key]


def dose_value_gy(dose_value) -> float:
    """An ESAPI ``DoseValue`` (absolute, Gy or cGy) in Gy."""
    unit = getattr(dose_value, "UnitAsString", None)
    if unit is None:
        unit = str(getattr(dose_value, "Unit", "Gy"))
    return float(dose_value.Dose) * unit_to_gy(unit)


def _vec(v, default):
    if v is None:
        return np.asarray(default, float)
    return np.array([float(v.x), float(v.y), float(v.z)])


def eclipse_dose_to_grid(dose_xyz, dose, grid: Grid, to_gy: float = 1.0) -> np.ndarray:
    """Resample an Eclipse dose array onto an AIRTP grid, trilinearly.

    Parameters
    ----------
    dose_xyz : (nx, ny, nz) array
        Eclipse dose values indexed [x, y, z] (as PyESAPI's
        ``Dose.np_array_like()`` returns them), in the unit ``to_gy`` converts.
    dose : ESAPI ``Dose`` (or anything with ``Origin``, ``XRes``, ``YRes``,
        ``ZRes`` and optionally ``XDirection``, ``YDirection``, ``ZDirection``)
        ``Origin`` is the patient position (x, y, z) mm of the centre of voxel
        [0, 0, 0]; voxel [i, j, k] lies at ``Origin + i XRes XDirection +
        j YRes YDirection + k ZRes ZDirection`` (directions default to the
        patient axes).
    grid : Grid
        Target grid, (z, y, x) patient mm.

    Returns
    -------
    (z, y, x) float32 dose in Gy; 0 at points outside the Eclipse dose grid.
    """
    arr = np.asarray(dose_xyz, np.float64)
    if arr.ndim != 3:
        raise EclipseError(f"the Eclipse dose must be a 3D [x, y, z] array, got shape {arr.shape}")
    arr = np.nan_to_num(arr, nan=0.0)
    origin = _vec(dose.Origin, (0, 0, 0))
    res = np.array([float(dose.XRes), float(dose.YRes), float(dose.ZRes)])
    dirs = np.column_stack([
        _vec(getattr(dose, "XDirection", None), (1, 0, 0)),
        _vec(getattr(dose, "YDirection", None), (0, 1, 0)),
        _vec(getattr(dose, "ZDirection", None), (0, 0, 1)),
    ])  # columns: patient (x, y, z) of each index axis
    zc, yc, xc = np.meshgrid(*grid.axes_mm(), indexing="ij")
    pts = np.stack([xc.ravel(), yc.ravel(), zc.ravel()])  # (3, N) patient x, y, z
    idx = np.linalg.solve(dirs, pts - origin[:, None]) / res[:, None]
    n = np.asarray(arr.shape, float)[:, None]
    tol = 1e-6
    inside = np.all((idx >= -tol) & (idx <= n - 1 + tol), axis=0)
    out = np.zeros(idx.shape[1], np.float64)
    if inside.any():
        out[inside] = map_coordinates(arr, np.clip(idx[:, inside], 0, n - 1), order=1, mode="nearest")
    return (out * to_gy).reshape(grid.shape).astype(np.float32)


def dvh_from_curve(name: str, doses_gy, volumes_cc, *, volume_cc: float | None = None, min_gy: float | None = None,
                   max_gy: float | None = None, mean_gy: float | None = None, voxels: int = 0,
                   bin_width_gy: float = 0.01) -> DVH:
    """A project :class:`~airtp.evaluation.dvh.DVH` from a cumulative curve (dose Gy, volume cc).

    The cumulative volume is interpolated linearly at the bin edges
    ``k * bin_width_gy`` (0 beyond the last point) and differenced into the
    differential histogram. ``volume_cc``, ``min_gy``, ``max_gy`` and
    ``mean_gy`` default to what the curve implies (first volume; the first
    dose where the volume drops, the last dose with volume; the curve's mean).
    ``voxels`` is informational (Eclipse does not report it); it is raised to
    1 for a non-empty curve so that the DVH does not count as empty.
    """
    d = np.asarray(doses_gy, float)
    v = np.asarray(volumes_cc, float)
    if d.ndim != 1 or d.shape != v.shape or d.size == 0:
        raise EclipseError(f"DVH of '{name}': curve needs matching dose and volume points, got {d.shape} and {v.shape}")
    order = np.argsort(d, kind="stable")
    d, v = d[order], np.maximum.accumulate(v[order][::-1])[::-1]  # volumes non-increasing
    total = float(v[0]) if volume_cc is None else float(volume_cc)
    if total <= 0 or not np.isfinite(total):
        return DVH(name, bin_width_gy, np.zeros(1), 0.0, float("nan"), float("nan"), float("nan"), 0)
    has = v > 0
    dmax = float(d[has][-1]) if max_gy is None else float(max_gy)
    if max_gy is None and np.any(~has):
        dmax = float(d[np.argmax(~has)])  # the curve reaches 0 here
    n_bins = int(np.floor(dmax / bin_width_gy)) + 2
    edges = np.arange(n_bins + 1) * bin_width_gy
    cum = np.interp(edges, d, v, left=total, right=0.0)
    cum = np.minimum(cum, total)
    cum[-1] = 0.0
    diff = np.maximum(cum[:-1] - cum[1:], 0.0)
    if min_gy is None:
        below = v >= total * (1 - 1e-9)
        min_gy = float(d[below][-1]) if below.any() else float(d[0])
    if mean_gy is None:
        mean_gy = float(np.sum(diff * (edges[:-1] + bin_width_gy / 2)) / max(diff.sum(), 1e-300))
    return DVH(name, float(bin_width_gy), diff, total, float(min_gy), float(dmax), float(mean_gy), max(int(voxels), 1))


def to_numpy_2d(pixels) -> np.ndarray:
    """A .NET 2-D ``Array[Single]`` (or anything array-like) as a float32 numpy array, indices kept."""
    if hasattr(pixels, "GetLength") and not isinstance(pixels, np.ndarray):
        n0, n1 = int(pixels.GetLength(0)), int(pixels.GetLength(1))
        out = np.empty((n0, n1), np.float32)
        for i in range(n0):
            for j in range(n1):
                out[i, j] = pixels[i, j]
        return out
    out = np.asarray(pixels, np.float32)
    if out.ndim != 2:
        raise EclipseError(f"expected a 2D fluence, got shape {out.shape}")
    return out
