"""The voxel grid of a case: shape, spacing and position in patient space.

Axes are ordered (z, y, x) everywhere, matching C-order arrays. Patient
coordinates are DICOM's (LPS: x to the patient's left, y posterior, z
superior), in millimetres, with the grid axes parallel to the patient axes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from airtp.errors import GridError

__all__ = ["Grid", "resample"]


@dataclass(frozen=True)
class Grid:
    """A regular voxel grid.

    Parameters
    ----------
    shape : (int, int, int)
        Number of voxels along (z, y, x).
    spacing_mm : (float, float, float)
        Distance between voxel centres along (z, y, x), in mm; all positive.
    origin_mm : (float, float, float)
        Patient coordinates (z, y, x), in mm, of the centre of voxel (0, 0, 0).
    """

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self):
        shape = tuple(int(n) for n in np.ravel(self.shape))
        spacing = tuple(float(s) for s in np.ravel(self.spacing_mm))
        origin = tuple(float(o) for o in np.ravel(self.origin_mm))
        if len(shape) != 3 or len(spacing) != 3 or len(origin) != 3:
            raise GridError(
                f"a grid needs three values (z, y, x) for shape, spacing and origin; "
                f"got shape={shape}, spacing={spacing}, origin={origin}"
            )
        if any(n < 1 for n in shape):
            raise GridError(f"grid shape must be positive, got {shape}")
        if not all(np.isfinite(s) and s > 0 for s in spacing):
            raise GridError(f"grid spacing must be positive and finite (mm), got {spacing}")
        if not all(np.isfinite(o) for o in origin):
            raise GridError(f"grid origin must be finite (mm), got {origin}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing_mm", spacing)
        object.__setattr__(self, "origin_mm", origin)

    @property
    def voxel_volume_cc(self) -> float:
        """Volume of one voxel in cm^3."""
        return float(np.prod(self.spacing_mm)) / 1000.0

    @property
    def size(self) -> int:
        """Number of voxels."""
        return int(np.prod(self.shape))

    def axes_mm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patient coordinates (mm) of the voxel centres along z, y and x."""
        return tuple(o + s * np.arange(n) for o, s, n in zip(self.origin_mm, self.spacing_mm, self.shape))

    def index_to_mm(self, index) -> np.ndarray:
        """Patient coordinates (z, y, x) in mm of (possibly fractional) indices (..., 3)."""
        index = np.asarray(index, dtype=float)
        return np.asarray(self.origin_mm) + index * np.asarray(self.spacing_mm)

    def mm_to_index(self, point_mm) -> np.ndarray:
        """Fractional indices (..., 3) of patient coordinates (z, y, x) in mm."""
        point_mm = np.asarray(point_mm, dtype=float)
        return (point_mm - np.asarray(self.origin_mm)) / np.asarray(self.spacing_mm)

    def contains_mm(self, point_mm) -> bool:
        """Whether a point (z, y, x) in mm lies within the outer voxel centres."""
        idx = self.mm_to_index(point_mm)
        return bool(np.all(idx >= 0) and np.all(idx <= np.asarray(self.shape) - 1))

    def check_same(self, other: "Grid", what: str = "array") -> None:
        """Raise :class:`GridError` naming `what` unless `other` is this grid."""
        if other.shape != self.shape or not np.allclose(other.spacing_mm, self.spacing_mm) or not np.allclose(
            other.origin_mm, self.origin_mm
        ):
            raise GridError(f"{what}: grid {other} does not match {self}")

    def check_array(self, array: np.ndarray, what: str = "array") -> None:
        """Raise :class:`GridError` naming `what` unless `array` has this grid's shape."""
        if tuple(np.shape(array)) != self.shape:
            raise GridError(f"{what}: shape {tuple(np.shape(array))} does not match the grid shape {self.shape}")


def resample(values: np.ndarray, src: Grid, dst: Grid, order: int = 1, fill: float = 0.0) -> np.ndarray:
    """Values on grid `src` interpolated at the voxel centres of grid `dst`.

    ``order`` 1 is trilinear (doses), 0 nearest neighbour (labels); points
    outside `src` get `fill`. Returns float32 of shape ``dst.shape``.
    """
    from scipy.ndimage import map_coordinates

    src.check_array(values, "resample input")
    if dst == src:
        return np.asarray(values, dtype=np.float32).copy()
    z, y, x = (np.asarray(a) for a in dst.axes_mm())
    iz, iy, ix = ((a - o) / s for a, o, s in zip((z, y, x), src.origin_mm, src.spacing_mm))
    coords = np.stack(np.meshgrid(iz, iy, ix, indexing="ij"))
    return map_coordinates(np.asarray(values, dtype=np.float32), coords, order=order, mode="constant",
                           cval=fill).astype(np.float32)
