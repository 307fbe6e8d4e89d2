"""Exact millimetre margins, rings and boolean operations on structure masks.

Margins use an exact Euclidean distance transform on the anisotropic voxel
grid (native core), with the voxel-centre criterion: a voxel is in the
expansion of a mask by ``mm`` iff its centre lies within ``mm`` (3D distance)
of the centre of a voxel of the mask. A contraction by ``mm`` keeps a voxel of
the mask iff no voxel centre outside the mask, inside the grid, lies within
``mm`` of it; the grid border is not treated as outside the structure, so a
Body cut by the end of the scan is not contracted from its cut faces.
"""

from __future__ import annotations

import numpy as np

from airtp import _core
from airtp.core import use_gpu
from airtp.errors import AirtpError, StructureError

__all__ = ["margin", "distance_mm", "asymmetric_margin", "ring", "union", "intersection", "subtract", "crop_to_body"]


def _checked(mask, spacing) -> tuple[np.ndarray, tuple[float, float, float]]:
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise StructureError(f"margin: mask must be boolean, got dtype {mask.dtype}")
    if mask.ndim != 3:
        raise StructureError(f"margin: mask must be 3D (z, y, x), got shape {mask.shape}")
    sp = tuple(float(s) for s in np.ravel(spacing))
    if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise AirtpError(f"margin: spacing must be three positive mm values (z, y, x), got {spacing}")
    return np.ascontiguousarray(mask), sp


def margin(mask: np.ndarray, mm: float, spacing) -> np.ndarray:
    """Expand (``mm > 0``) or contract (``mm < 0``) a mask by a 3D margin.

    Parameters
    ----------
    mask : (z, y, x) bool ndarray
    mm : float
        Margin in millimetres.
    spacing : (3,) float
        Voxel spacing (z, y, x) in mm.

    Returns
    -------
    (z, y, x) bool ndarray, a new array.
    """
    mask, sp = _checked(mask, spacing)
    if not np.isfinite(mm):
        raise AirtpError(f"margin: margin must be finite, got {mm} mm")
    if mm == 0:
        return mask.copy()
    u8 = mask.view(np.uint8)
    return _core.margin(u8, sp, float(mm), use_gpu(mask.size)).view(np.bool_)


def distance_mm(mask: np.ndarray, spacing) -> np.ndarray:
    """Distance (mm, float64) from each voxel centre to the nearest centre of `mask`.

    Zero inside the mask; +inf everywhere when the mask is empty.
    """
    mask, sp = _checked(mask, spacing)
    return np.sqrt(_core.edt_sq(mask.view(np.uint8), sp, use_gpu(mask.size)))


def asymmetric_margin(
    mask: np.ndarray,
    spacing,
    x_minus: float = 0.0,
    x_plus: float = 0.0,
    y_minus: float = 0.0,
    y_plus: float = 0.0,
    z_minus: float = 0.0,
    z_plus: float = 0.0,
) -> np.ndarray:
    """Expand or contract a mask by a different margin on each of six sides.

    The six distances are in mm along the grid axes: ``x_minus`` is the growth
    towards decreasing x (the patient's right in LPS), ``x_plus`` towards
    increasing x (left), ``y_minus`` anterior, ``y_plus`` posterior,
    ``z_minus`` inferior, ``z_plus`` superior.

    Expansion (all six >= 0): a voxel p is in the result iff some voxel q of
    the mask has ``sum_i (d_i / r_i)^2 <= 1`` with ``d = p - q`` (mm) and
    ``r_i`` the distance given for the side of q on which p lies. The
    structuring element is thus made of eight ellipsoid octants, and with six
    equal distances this is :func:`margin`. A zero distance means no growth
    towards that side.

    Contraction (all six <= 0): the mask shrinks by ``|x_plus|`` from its +x
    face and so on; a voxel stays iff no voxel outside the mask (inside the
    grid) lies within the same element, i.e. the complement expanded with the
    sides mirrored is removed. Mixing signs raises :class:`AirtpError`; apply
    two calls instead, in the order wanted.
    """
    mask, sp = _checked(mask, spacing)
    radii = np.array([x_minus, x_plus, y_minus, y_plus, z_minus, z_plus], dtype=float)
    if not np.all(np.isfinite(radii)):
        raise AirtpError(f"asymmetric_margin: margins must be finite, got {radii.tolist()}")
    if np.all(radii == 0):
        return mask.copy()
    if np.all(radii >= 0):
        return _core.asymmetric_expand(mask.view(np.uint8), sp, radii.tolist()).view(np.bool_)
    if np.all(radii <= 0):
        # Mirror the sides: shrinking the +x face is growing the background towards -x.
        mirrored = (-radii)[[1, 0, 3, 2, 5, 4]]
        grown = _core.asymmetric_expand((~mask).view(np.uint8), sp, mirrored.tolist()).view(np.bool_)
        return mask & ~grown
    raise AirtpError(
        f"asymmetric_margin: margins must all expand (>= 0) or all contract (<= 0), got {radii.tolist()}"
    )


def ring(mask: np.ndarray, inner_mm: float, outer_mm: float, spacing) -> np.ndarray:
    """Shell between two margins of a mask: ``margin(outer) - margin(inner)``.

    ``ring(ptv, 2, 30, sp)`` is the 2-30 mm ring around a PTV;
    ``ring(body, -20, 0, sp)`` is the 20 mm inner rind of a body.
    """
    if not inner_mm < outer_mm:
        raise AirtpError(f"ring: inner margin ({inner_mm} mm) must be smaller than outer margin ({outer_mm} mm)")
    return margin(mask, outer_mm, spacing) & ~margin(mask, inner_mm, spacing)


def union(*masks: np.ndarray) -> np.ndarray:
    """Voxels in any of the masks."""
    if not masks:
        raise AirtpError("union: needs at least one mask")
    return np.logical_or.reduce([np.asarray(m, dtype=bool) for m in masks])


def intersection(*masks: np.ndarray) -> np.ndarray:
    """Voxels in all of the masks."""
    if not masks:
        raise AirtpError("intersection: needs at least one mask")
    return np.logical_and.reduce([np.asarray(m, dtype=bool) for m in masks])


def subtract(mask: np.ndarray, *others: np.ndarray) -> np.ndarray:
    """Voxels of `mask` in none of `others`."""
    out = np.array(mask, dtype=bool)
    for o in others:
        out &= ~np.asarray(o, dtype=bool)
    return out


def crop_to_body(mask: np.ndarray, body: np.ndarray, inset_mm: float = 0.0, spacing=None) -> np.ndarray:
    """Part of `mask` inside `body`, optionally at least `inset_mm` inside its surface."""
    if inset_mm:
        if spacing is None:
            raise AirtpError("crop_to_body: spacing is needed for an inset")
        body = margin(body, -abs(inset_mm), spacing)
    return np.asarray(mask, dtype=bool) & np.asarray(body, dtype=bool)
