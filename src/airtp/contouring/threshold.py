"""Body and lungs from Hounsfield units, for CTs that come without them.

- Body: the largest 3D connected component of HU > ``body_hu`` (default
  -350), with the holes of each axial slice filled (lungs, airway and bowel gas
  are inside the body; a separate couch is not the largest component).
- Lungs: voxels of HU < ``lung_hu`` (default -400) inside that body. Air that
  reaches the outside in an axial slice is not inside the filled body, so it
  never counts. The airway is removed slice by slice (small air regions near
  the mid-sagittal plane: trachea, larynx, pharynx), then 3D components
  smaller than ``min_lung_cc`` or than ``min_lung_fraction`` of the largest
  (sinuses, bowel gas, bronchi) are dropped, except that lung apices cut by the
  inferior edge of a head-and-neck scan need only ``min_apex_cc``, and so are
  air cavities: components with more than ``max_air_fraction`` of their voxels
  below -950 HU (lung tissue is mostly above it; sinuses and mouth are not). Lung_L and Lung_R are the parts
  on the patient's left (+x, DICOM LPS) and right of the body's mid-sagittal
  plane, each with its axial holes filled (vessels and tumour inside the lung
  belong to it); Lungs is their union.

The lungs are only made for a case that has none of Lungs, Lung_L and Lung_R,
so a lung derived from HU never sits beside a clinician's lung of another
extent. Thresholds are in HU, volumes in cc, distances in mm.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from airtp.contouring import Contours
from airtp.errors import ContouringError
from airtp.structures.harmonize import find_standard

__all__ = ["ThresholdContouring", "body_mask", "lung_masks"]

_PURE_AIR_HU = -950.0  # below this a voxel is air, not lung tissue (the emphysema-index threshold)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _fill_slices(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of every axial (z) slice."""
    out = np.empty_like(mask)
    for z in range(mask.shape[0]):
        out[z] = ndimage.binary_fill_holes(mask[z])
    return out


def body_mask(ct_hu: np.ndarray, body_hu: float = -350.0) -> np.ndarray:
    """Largest connected component of HU > `body_hu`, axial holes filled (bool, z y x)."""
    return _fill_slices(_largest_component(np.asarray(ct_hu) > body_hu))


def _mid_sagittal_x(body: np.ndarray, grid) -> float:
    """Patient x (mm) of the body's mid-sagittal plane: the mean x of the body voxels."""
    counts = body.sum(axis=(0, 1)).astype(float)
    x_mm = grid.axes_mm()[2]
    return float((counts * x_mm).sum() / counts.sum())


def _drop_airway(air: np.ndarray, x_mm: np.ndarray, x_mid: float, pixel_cm2: float,
                 max_airway_cm2: float, airway_mm: float) -> np.ndarray:
    """Remove, slice by slice, small air regions whose centre is near the mid-sagittal plane."""
    out = air.copy()
    for z in range(air.shape[0]):
        labels, n = ndimage.label(air[z])
        if n == 0:
            continue
        idx = np.arange(1, n + 1)
        area = ndimage.sum_labels(np.ones_like(labels), labels, idx) * pixel_cm2
        cx = ndimage.mean(np.broadcast_to(x_mm, labels.shape), labels, idx)
        for i, a, c in zip(idx, area, cx):
            if a < max_airway_cm2 and abs(c - x_mid) < airway_mm:
                out[z][labels == i] = False
    return out


def lung_masks(ct_hu: np.ndarray, body: np.ndarray, grid, lung_hu: float = -400.0, min_lung_cc: float = 20.0,
               min_apex_cc: float = 1.0, min_lung_fraction: float = 0.05, max_air_fraction: float = 0.3,
               max_airway_cm2: float = 8.0, airway_mm: float = 30.0) -> dict[str, np.ndarray]:
    """Lung_L, Lung_R and Lungs (bool, z y x) from the CT and the body mask (see the module doc).

    Parameters
    ----------
    lung_hu : float
        Voxels below this (HU) inside the body are air or lung.
    min_lung_cc, min_lung_fraction : float
        3D components smaller than this volume (cc) or than this fraction of
        the largest one are not lung.
    min_apex_cc : float
        A component that reaches the most inferior slice (the lung apices of
        a head-and-neck scan) needs only this volume (cc), and the fraction.
    max_air_fraction : float
        A component with more than this fraction of its voxels below -950 HU
        is an air cavity (sinus, mouth, airway), not lung. Normal lung has a
        few per cent; severe emphysema can exceed 0.3 and then needs a
        higher value.
    max_airway_cm2, airway_mm : float
        Air regions of an axial slice smaller than this area (cm^2) whose
        centre lies within this distance (mm) of the mid-sagittal plane are
        airway, not lung.
    """
    air = (np.asarray(ct_hu) < lung_hu) & body
    x_mm = grid.axes_mm()[2][None, :]
    x_mid = _mid_sagittal_x(body, grid)
    pixel_cm2 = grid.spacing_mm[1] * grid.spacing_mm[2] / 100.0
    air = _drop_airway(air, x_mm, x_mid, pixel_cm2, max_airway_cm2, airway_mm)
    labels, n = ndimage.label(air)
    lungs = np.zeros_like(air)
    if n:
        cc = np.bincount(labels.ravel())[1:] * grid.voxel_volume_cc
        # lung apices at the inferior edge of a head-and-neck scan are small but still lung
        at_bottom = np.zeros(n, dtype=bool)
        at_bottom[np.unique(labels[0])[1:] - 1] = True
        big = (cc >= min_lung_cc) | (at_bottom & (cc >= min_apex_cc))
        # lung parenchyma is mostly above -950 HU; sinuses, mouth and airway are mostly pure air
        airy = ndimage.mean(np.asarray(ct_hu) < _PURE_AIR_HU, labels, np.arange(1, n + 1)) > max_air_fraction
        keep = np.flatnonzero(big & ~airy & (cc >= min_lung_fraction * cc.max())) + 1
        lungs = np.isin(labels, keep)
    left_side = np.broadcast_to(x_mm[None] > x_mid, lungs.shape)
    lung_l = _fill_slices(lungs & left_side) & body
    lung_r = _fill_slices(lungs & ~left_side) & body & ~lung_l
    return {"Lung_L": lung_l, "Lung_R": lung_r, "Lungs": lung_l | lung_r}


class ThresholdContouring:
    """Contouring plugin ``threshold``: Body and lungs from HU (see the module doc).

    Parameters
    ----------
    body_hu, lung_hu : float
        Thresholds in HU.
    **lung_options
        Passed to :func:`lung_masks` (``min_lung_cc``, ``min_apex_cc``,
        ``min_lung_fraction``, ``max_air_fraction``, ``max_airway_cm2``,
        ``airway_mm``).
    """

    name = "threshold"

    def __init__(self, body_hu: float = -350.0, lung_hu: float = -400.0, **lung_options):
        unknown = sorted(set(lung_options) - {"min_lung_cc", "min_apex_cc", "min_lung_fraction", "max_air_fraction",
                                              "max_airway_cm2", "airway_mm"})
        if unknown:
            raise ContouringError(f"threshold contouring: unknown option(s) {', '.join(unknown)}")
        if not lung_hu < body_hu:
            raise ContouringError(f"threshold contouring: lung_hu ({lung_hu} HU) must be below body_hu ({body_hu} HU)")
        self.body_hu = float(body_hu)
        self.lung_hu = float(lung_hu)
        self.lung_options = lung_options

    def contour(self, case) -> Contours:
        body = body_mask(case.ct_hu, self.body_hu)
        if not body.any():
            raise ContouringError(f"threshold contouring: case '{case.patient_id}' has no voxel above "
                                  f"{self.body_hu:g} HU: no body in this CT")
        out = Contours({"Body": body})
        have = [n for n in ("Lungs", "Lung_L", "Lung_R") if find_standard(case.structures, n) is not None]
        if have:
            for n in ("Lungs", "Lung_L", "Lung_R"):
                if n not in have:
                    out.skipped[n] = f"the case has {', '.join(have)}: lungs from HU would not match it"
            return out
        lungs = lung_masks(case.ct_hu, body, case.grid, self.lung_hu, **self.lung_options)
        for n, mask in lungs.items():
            if mask.any():
                out.masks[n] = mask
            else:
                out.skipped[n] = f"no air region below {self.lung_hu:g} HU large enough for a lung on this side"
        return out
