"""Beam-geometry plates of the GDP-HMM challenge: the angle plate and the beam plate.

Both turn a plan's beam directions into images a dose-prediction network can
take as input channels (Gao et al., CVPR 2023; paper Appendix B). They are
computed here from the plan's own geometry (:class:`airtp.beams.Beam`, IEC
61217: gantry 0 irradiates from anterior, 90 from the patient's left), for
an HFS patient at couch 0, which is how the templates place beams.

**Angle plate** (:func:`angle_plate`): a 2D axial image, shape (y, x) of the
CT grid, 0 everywhere except on one straight line per gantry angle, value 1:
from the isocentre's pixel towards the source, in the direction of that
gantry angle, to the image border. Lines are drawn by sampling the ray every
quarter pixel and marking the nearest pixel (one pixel wide). Patient axes
as everywhere (LPS): gantry 0 draws towards row 0 (anterior), gantry 90
towards the last column (patient left).

**Beam plate** (:func:`beam_plate`): a 3D image (z, y, x) of the CT grid.
For each gantry angle, the source sits 1000 mm (SAD) from the isocentre; the
PTV is projected from the source onto the isocentre plane (its beam's-eye
view) and its outline filled; every body voxel whose ray from the source
crosses that filled outline -- in front of the PTV, inside it and behind it,
through the whole body -- belongs to the angle's divergent extrusion, with
the weight ``(SAD / r)^2``, r its distance to the source (inverse square,
1 at the isocentre's distance). The plate is the sum over the angles. The
BEV outline is rasterised on a grid of half the finest in-plane voxel
spacing: each PTV voxel centre marks the pixels within half a voxel of its
projection (a voxel's own extent, so neighbouring voxels' marks touch), then
holes are filled. Voxels outside the body (or the whole grid, without a body)
get 0.
"""

from __future__ import annotations

import numpy as np

from airtp.beams.beam import Beam, BeamletGrid
from airtp.errors import AirtpError
from airtp.grid import Grid

__all__ = ["angle_plate", "beam_plate", "SAD_MM"]

SAD_MM = 1000.0


def _angles(angles_deg) -> np.ndarray:
    a = np.asarray(angles_deg, dtype=np.float64).ravel()
    if a.size == 0 or not np.isfinite(a).all():
        raise AirtpError(f"plates: gantry angles must be finite and at least one, got {angles_deg!r}")
    return np.mod(a, 360.0)


def angle_plate(grid: Grid, isocenter_mm, angles_deg) -> np.ndarray:
    """The angle plate (see the module doc): float32 (y, x) of `grid`, 1 on the lines, 0 elsewhere."""
    _, ny, nx = grid.shape
    iso = grid.mm_to_index(np.asarray(isocenter_mm, dtype=float))
    sy, sx = grid.spacing_mm[1], grid.spacing_mm[2]
    plate = np.zeros((ny, nx), np.float32)
    reach = float(np.hypot(ny, nx)) * 2.0  # pixels: beyond any border
    t = np.arange(0.0, reach, 0.25)
    for g in _angles(angles_deg):
        src = Beam(gantry_deg=float(g), isocenter_mm=tuple(isocenter_mm)).source_mm() - np.asarray(isocenter_mm)
        d = np.array([src[1] / sy, src[2] / sx])  # towards the source, in pixels (y, x)
        d /= max(float(np.hypot(*d)), 1e-12)
        y = np.rint(iso[1] + t * d[0]).astype(np.int64)
        x = np.rint(iso[2] + t * d[1]).astype(np.int64)
        ok = (y >= 0) & (y < ny) & (x >= 0) & (x < nx)
        plate[y[ok], x[ok]] = 1.0
    return plate


def _bev_outline(beam: Beam, ptv_mm: np.ndarray, pixel_mm: float, half_voxel_mm: float):
    """Filled BEV outline of the PTV voxel centres `ptv_mm` (n, 3) on the isocentre plane."""
    from scipy.ndimage import binary_fill_holes

    bx, by, _ = beam.project(ptv_mm)
    bev = BeamletGrid.covering(bx, by, size_mm=pixel_mm, margin_mm=max(half_voxel_mm - pixel_mm / 2.0, 0.0))
    return bev, binary_fill_holes(bev.active)


def beam_plate(grid: Grid, ptv: np.ndarray, isocenter_mm, angles_deg, body: np.ndarray | None = None,
               sad_mm: float = SAD_MM) -> np.ndarray:
    """The beam plate (see the module doc): float32 (z, y, x) of `grid`.

    Parameters
    ----------
    grid : Grid
    ptv : bool (z, y, x)
        The target whose outline is extruded (the union of the PTVs).
    isocenter_mm : (z, y, x) mm
    angles_deg : gantry angles (degrees)
    body : bool (z, y, x), optional
        Voxels the extrusion runs through (default: the whole grid).
    sad_mm : float
        Source-isocentre distance (default 1000 mm).
    """
    ptv = np.asarray(ptv, dtype=bool)
    grid.check_array(ptv, "beam plate PTV")
    if not ptv.any():
        raise AirtpError("beam plate: the PTV is empty")
    inside = np.ones(grid.shape, bool) if body is None else np.asarray(body, dtype=bool)
    grid.check_array(inside, "beam plate body")
    iso = np.asarray(isocenter_mm, dtype=float)
    # body voxel centres relative to the isocentre (float32: the projections are the hot loop)
    idx = np.nonzero(inside)
    rel = (grid.index_to_mm(np.stack(idx, axis=1)) - iso).astype(np.float32)
    ptv_mm = grid.index_to_mm(np.argwhere(ptv))
    pixel = min(grid.spacing_mm[1:]) / 2.0
    half_voxel = max(grid.spacing_mm) / 2.0
    total = np.zeros(rel.shape[0], np.float64)
    for g in _angles(angles_deg):
        beam = Beam(gantry_deg=float(g), isocenter_mm=tuple(iso), sad_mm=sad_mm)
        u, v, w = (a.astype(np.float32) for a in beam.axes())
        bev, filled = _bev_outline(beam, ptv_mm, pixel, half_voxel)
        depth = np.float32(sad_mm) + rel @ w  # distance from the source along the axis
        ahead = depth > 0
        mag = np.where(ahead, np.float32(sad_mm) / np.where(ahead, depth, 1), 0).astype(np.float32)
        ix = np.rint(((rel @ u) * mag - bev.x0_mm) / bev.size_mm[0]).astype(np.int64)
        iy = np.rint(((rel @ v) * mag - bev.y0_mm) / bev.size_mm[1]).astype(np.int64)
        ny, nx = filled.shape
        hit = ahead & (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
        hit[hit] = filled[iy[hit], ix[hit]]
        # r^2 = |rel + sad w|^2 = |rel|^2 + 2 sad (rel . w) + sad^2
        r2 = (rel[hit] ** 2).sum(axis=1, dtype=np.float64) + 2.0 * sad_mm * (rel[hit] @ w) + sad_mm ** 2
        total[hit] += sad_mm ** 2 / r2
    out = np.zeros(grid.shape, np.float32)
    out[idx] = total
    return out
