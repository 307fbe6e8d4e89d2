"""Planar contours <-> masks.

:func:`rasterize` turns the closed planar contours of one structure into a
mask on a grid: a voxel belongs when its centre lies inside by the even-odd
rule over *all* contours of its plane (so a contour inside another is a hole,
and one inside a hole an island), found by a vectorised scanline. With
``supersample = s`` every voxel is sampled at s x s x s points and the result
is the fraction inside (float32 weights for the DVH engine's partial volumes).

A grid plane takes the contours of the nearest contour plane within
``plane_tolerance_mm`` (by default half the grid's z spacing): on the CT the
contours lie on the slices; on a coarser or finer dose grid each contour plane
stands for the slab of its slice thickness.

:func:`mask_contours` is the way back: marching squares (contourpy) at level
0.5 through the voxel centres of each slice, every boundary (outer or hole)
its own closed contour, collinear points dropped. Rasterizing those contours
on the same grid gives the mask back exactly (the iso-line passes half-way
between an inside and an outside centre, never through a centre).
"""

from __future__ import annotations

import numpy as np

from airtp.grid import Grid

__all__ = ["PLANE_MERGE_MM", "contour_planes", "mask_contours", "rasterize"]

# Contours whose planes differ by less than this (mm) share a plane.
PLANE_MERGE_MM = 0.05


def contour_planes(contours_xyz: list[np.ndarray]) -> tuple[np.ndarray, list[list[np.ndarray]]]:
    """The distinct planes (z mm, ascending) of planar contours and their (N, 2) x-y polygons."""
    if not contours_xyz:
        return np.zeros(0), []
    zs = np.array([float(np.mean(c[:, 2])) for c in contours_xyz])
    order = np.argsort(zs, kind="stable")
    planes: list[float] = []
    polygons: list[list[np.ndarray]] = []
    for i in order:
        if planes and zs[i] - planes[-1] <= PLANE_MERGE_MM:
            polygons[-1].append(contours_xyz[i][:, :2])
        else:
            planes.append(float(zs[i]))
            polygons.append([contours_xyz[i][:, :2]])
    return np.asarray(planes), polygons


def _inside(polygons: list[np.ndarray], xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Even-odd inside test of the points (ys x xs) against all `polygons`: bool (len(ys), len(xs))."""
    x1 = np.concatenate([p[:, 0] for p in polygons])
    y1 = np.concatenate([p[:, 1] for p in polygons])
    x2 = np.concatenate([np.roll(p[:, 0], -1) for p in polygons])
    y2 = np.concatenate([np.roll(p[:, 1], -1) for p in polygons])
    # an edge crosses row y when y lies in [min, max) of its ends: each vertex counted once, horizontal edges never
    lo, hi = np.minimum(y1, y2), np.maximum(y1, y2)
    e, r = np.nonzero((lo[:, None] <= ys[None, :]) & (ys[None, :] < hi[:, None]))
    out = np.zeros((ys.size, xs.size), dtype=bool)
    if e.size == 0:
        return out
    xc = x1[e] + (ys[r] - y1[e]) * (x2[e] - x1[e]) / (y2[e] - y1[e])
    # one sorted key per crossing, rows kept apart by a stride wider than any x offset
    xmin = min(float(xc.min()), float(xs.min()))
    stride = max(float(xc.max()), float(xs.max())) - xmin + 1.0
    keys = np.sort(r * stride + (xc - xmin))
    row_start = np.searchsorted(keys, np.arange(ys.size) * stride, side="left")
    sample = np.arange(ys.size)[:, None] * stride + (xs[None, :] - xmin)
    left = np.searchsorted(keys, sample.ravel(), side="left").reshape(sample.shape) - row_start[:, None]
    return (left % 2) == 1


def _plane_coverage(polygons: list[np.ndarray], grid: Grid, s: int) -> np.ndarray:
    """Fraction (s x s samples per voxel) of each voxel of one grid plane inside the polygons: float (ny, nx)."""
    _, y_axis, x_axis = grid.axes_mm()
    _, dy, dx = grid.spacing_mm
    out = np.zeros(grid.shape[1:], dtype=np.float64)
    pts = np.concatenate(polygons)
    # voxels whose extent meets the polygons' bounding box
    ix0 = max(int(np.floor((pts[:, 0].min() - x_axis[0]) / dx - 0.5)), 0)
    ix1 = min(int(np.ceil((pts[:, 0].max() - x_axis[0]) / dx + 0.5)) + 1, grid.shape[2])
    iy0 = max(int(np.floor((pts[:, 1].min() - y_axis[0]) / dy - 0.5)), 0)
    iy1 = min(int(np.ceil((pts[:, 1].max() - y_axis[0]) / dy + 0.5)) + 1, grid.shape[1])
    if ix0 >= ix1 or iy0 >= iy1:
        return out
    offsets = (np.arange(s) + 0.5) / s - 0.5
    xs = (x_axis[ix0:ix1, None] + offsets[None, :] * dx).ravel()
    ys = (y_axis[iy0:iy1, None] + offsets[None, :] * dy).ravel()
    inside = _inside(polygons, xs, ys).reshape(iy1 - iy0, s, ix1 - ix0, s)
    out[iy0:iy1, ix0:ix1] = inside.mean(axis=(1, 3))
    return out


def rasterize(contours_xyz: list[np.ndarray], grid: Grid, plane_tolerance_mm: float | None = None,
              supersample: int = 1) -> np.ndarray:
    """Mask (bool) or partial-volume weights (float32, ``supersample > 1``) of closed planar contours on `grid`.

    Parameters
    ----------
    contours_xyz : list of (N, 3) arrays
        Patient x, y, z (mm) of the points of each closed contour (z constant per contour).
    grid : Grid
    plane_tolerance_mm : float, optional
        How far (mm) a grid plane (or sub-plane sample) may lie from a contour plane and still
        take its contours; default half the grid's z spacing.
    supersample : int
        Samples per voxel along each axis (1: voxel-centre inclusion).
    """
    s = int(supersample)
    if s < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    planes, polygons = contour_planes(contours_xyz)
    weights = np.zeros(grid.shape, dtype=np.float64)
    if planes.size == 0:
        return weights.astype(bool) if s == 1 else weights.astype(np.float32)
    dz = grid.spacing_mm[0]
    tol = dz / 2 if plane_tolerance_mm is None else float(plane_tolerance_mm)
    z_axis = grid.axes_mm()[0]
    offsets = (np.arange(s) + 0.5) / s - 0.5 if s > 1 else np.zeros(1)
    cache: dict[int, np.ndarray] = {}
    for k, zk in enumerate(z_axis):
        for off in offsets:
            z = zk + off * dz
            j = int(np.clip(np.searchsorted(planes, z), 1, planes.size - 1)) if planes.size > 1 else 0
            if planes.size > 1 and abs(planes[j - 1] - z) <= abs(planes[j] - z):
                j -= 1
            if abs(planes[j] - z) > tol + 1e-6:
                continue
            if j not in cache:
                cache[j] = _plane_coverage(polygons[j], grid, s)
            weights[k] += cache[j]
    if s == 1:
        return weights > 0.5
    return (weights / offsets.size).astype(np.float32)


def _drop_collinear(points: np.ndarray) -> np.ndarray:
    """Remove points of a closed polygon that lie on the line through their neighbours."""
    prev, nxt = np.roll(points, 1, axis=0), np.roll(points, -1, axis=0)
    cross = (points[:, 0] - prev[:, 0]) * (nxt[:, 1] - prev[:, 1]) - (points[:, 1] - prev[:, 1]) * (nxt[:, 0] - prev[:, 0])
    scale = np.abs(nxt - prev).max() + 1e-12
    keep = np.abs(cross) > 1e-9 * scale * scale
    return points[keep] if keep.sum() >= 3 else points


def mask_contours(mask2d: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> list[np.ndarray]:
    """Closed contours (list of (N, 2) x-y arrays, mm) of a 2D mask whose voxel centres are at `xs`, `ys`.

    Outer boundaries and holes each give their own contour; the first point is
    not repeated at the end.
    """
    import contourpy

    mask2d = np.asarray(mask2d, dtype=bool)
    if not mask2d.any():
        return []
    # a border of outside voxels closes every contour that would touch the edge
    z = np.pad(mask2d, 1).astype(np.float64)
    dx = xs[1] - xs[0] if xs.size > 1 else 1.0
    dy = ys[1] - ys[0] if ys.size > 1 else 1.0
    xp = np.concatenate(([xs[0] - dx], xs, [xs[-1] + dx]))
    yp = np.concatenate(([ys[0] - dy], ys, [ys[-1] + dy]))
    gen = contourpy.contour_generator(xp, yp, z, name="serial", line_type=contourpy.LineType.Separate)
    out = []
    for line in gen.lines(0.5):
        line = np.asarray(line, dtype=np.float64)
        if line.shape[0] > 1 and np.allclose(line[0], line[-1]):
            line = line[:-1]
        if line.shape[0] >= 3:
            out.append(_drop_collinear(line))
    return out
