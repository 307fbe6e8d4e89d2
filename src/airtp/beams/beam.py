"""A static photon beam in IEC 61217 geometry.

Conventions
-----------
Patient coordinates are DICOM LPS (x to the patient's left, y posterior,
z superior), in mm, written (z, y, x) like every array axis in AIRTP. The
patient lies head first supine (HFS). In the IEC 61217 fixed system
(X to the right of an observer facing the gantry from the couch foot, Y
towards the gantry, Z up) an HFS patient on the couch at angle 0 has
LPS x = X, y = -Z, z = Y.

- Gantry angle g: the source sits at SAD * (sin g, 0, cos g) in the fixed
  system, so g = 0 irradiates from anterior (beam towards +y), g = 90 from the
  patient's left (beam towards -x), g = 180 from posterior.
- Collimator angle c rotates the beam-limiting device about the beam axis,
  counter-clockwise seen from the source. At g = c = 0 the beam's-eye-view
  (BEV) x axis is IEC X (patient left) and the BEV y axis is IEC Y (superior).
- Couch angle t rotates the patient support about the vertical axis,
  counter-clockwise seen from above; a fixed-system vector v is, in the
  patient, R_z(-t) v.

Beamlets lie on the isocentre plane (perpendicular to the beam axis through
the isocentre) on a grid aligned with the BEV axes; beamlet edges fall on
multiples of the beamlet size, so that a field of whole centimetres is tiled
exactly by 5 mm beamlets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from airtp.errors import BeamError

__all__ = ["Beam", "BeamletGrid", "equispaced_beams"]


def _lps_zyx(v_fixed: np.ndarray, couch_deg: float) -> np.ndarray:
    """IEC fixed-system vector (X, Y, Z) -> patient (z, y, x) LPS, couch applied."""
    t = np.deg2rad(couch_deg)
    X, Y, Z = v_fixed
    # patient support rotation: patient = R_z(-t) * fixed
    Xp = np.cos(t) * X + np.sin(t) * Y
    Yp = -np.sin(t) * X + np.cos(t) * Y
    Zp = Z
    return np.array([Yp, -Zp, Xp], dtype=float)  # (z, y, x) = (Y, -Z, X)


@dataclass(frozen=True)
class Beam:
    """One static beam.

    Parameters
    ----------
    gantry_deg, collimator_deg, couch_deg : float
        IEC 61217 angles in degrees.
    isocenter_mm : (z, y, x)
        Isocentre in patient mm.
    sad_mm : float
        Source-axis distance (default 1000 mm).
    name : str
        Label used in messages (default "G<gantry>").
    """

    gantry_deg: float
    isocenter_mm: tuple[float, float, float]
    collimator_deg: float = 0.0
    couch_deg: float = 0.0
    sad_mm: float = 1000.0
    name: str = ""

    def __post_init__(self):
        iso = tuple(float(v) for v in np.ravel(self.isocenter_mm))
        label = self.name or f"G{float(self.gantry_deg):g}"
        if len(iso) != 3 or not all(np.isfinite(iso)):
            raise BeamError(f"beam '{label}': isocentre must be three finite numbers (z, y, x) mm, got {self.isocenter_mm}")
        for what in ("gantry_deg", "collimator_deg", "couch_deg"):
            if not np.isfinite(getattr(self, what)):
                raise BeamError(f"beam '{label}': {what} must be finite")
        if not (np.isfinite(self.sad_mm) and self.sad_mm > 0):
            raise BeamError(f"beam '{label}': SAD must be positive, got {self.sad_mm}")
        object.__setattr__(self, "isocenter_mm", iso)
        object.__setattr__(self, "name", label)

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit vectors (z, y, x) of the BEV x axis, BEV y axis and the beam direction (source -> isocentre)."""
        g, c = np.deg2rad(self.gantry_deg), np.deg2rad(self.collimator_deg)
        xb = np.array([np.cos(g), 0.0, -np.sin(g)])
        yb = np.array([0.0, 1.0, 0.0])
        u = np.cos(c) * xb + np.sin(c) * yb
        v = -np.sin(c) * xb + np.cos(c) * yb
        src = np.array([np.sin(g), 0.0, np.cos(g)])
        return _lps_zyx(u, self.couch_deg), _lps_zyx(v, self.couch_deg), _lps_zyx(-src, self.couch_deg)

    def source_mm(self) -> np.ndarray:
        """Source position (z, y, x) in patient mm."""
        return np.asarray(self.isocenter_mm) - self.sad_mm * self.axes()[2]

    def project(self, points_mm) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """BEV (x, y) on the isocentre plane and distance along the axis from the source, of points (..., 3) (z, y, x)."""
        u, v, w = self.axes()
        rel = np.asarray(points_mm, dtype=float) - self.source_mm()
        z = rel @ w
        with np.errstate(divide="ignore", invalid="ignore"):
            s = self.sad_mm / z
        return (rel @ u) * s, (rel @ v) * s, z


@dataclass
class BeamletGrid:
    """Beamlets of one beam on the isocentre plane.

    ``x0_mm, y0_mm`` are the BEV coordinates of the centre of beamlet (0, 0),
    ``size_mm`` = (sx, sy) the beamlet size (= pitch) and ``active`` a bool
    (ny, nx) array of the beamlets in use.
    """

    x0_mm: float
    y0_mm: float
    size_mm: tuple[float, float]
    active: np.ndarray
    weights: np.ndarray | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.active.shape)

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """BEV x and y (mm) of the active beamlets, in column order (y-major, x-minor)."""
        iy, ix = np.nonzero(self.active)
        return self.x0_mm + ix * self.size_mm[0], self.y0_mm + iy * self.size_mm[1]

    @classmethod
    def covering(cls, bev_x, bev_y, size_mm: float | tuple[float, float] = 5.0, margin_mm: float = 5.0) -> "BeamletGrid":
        """Beamlets whose square, grown by `margin_mm`, contains a projected point (bev_x, bev_y)."""
        sx, sy = (float(size_mm), float(size_mm)) if np.isscalar(size_mm) else map(float, size_mm)
        bx, by = np.asarray(bev_x, float).ravel(), np.asarray(bev_y, float).ravel()
        reach_x, reach_y = sx / 2 + margin_mm, sy / 2 + margin_mm
        # beamlet centres at (i + 1/2) * size
        ixlo = int(np.floor((bx.min() - reach_x) / sx - 0.5)) - 1
        ixhi = int(np.ceil((bx.max() + reach_x) / sx - 0.5)) + 1
        iylo = int(np.floor((by.min() - reach_y) / sy - 0.5)) - 1
        iyhi = int(np.ceil((by.max() + reach_y) / sy - 0.5)) + 1
        nx, ny = ixhi - ixlo + 1, iyhi - iylo + 1
        x0, y0 = (ixlo + 0.5) * sx, (iylo + 0.5) * sy
        active = np.zeros((ny, nx), bool)
        kx, ky = int(np.ceil(reach_x / sx)) + 1, int(np.ceil(reach_y / sy)) + 1
        fx, fy = (bx - x0) / sx, (by - y0) / sy
        cx, cy = np.rint(fx).astype(int), np.rint(fy).astype(int)
        for dy in range(-ky, ky + 1):
            for dx in range(-kx, kx + 1):
                jx, jy = cx + dx, cy + dy
                ok = (np.abs(bx - (x0 + jx * sx)) <= reach_x) & (np.abs(by - (y0 + jy * sy)) <= reach_y)
                ok &= (jx >= 0) & (jx < nx) & (jy >= 0) & (jy < ny)
                active[jy[ok], jx[ok]] = True
        return cls(x0, y0, (sx, sy), active)

    @classmethod
    def field(cls, x1: float, x2: float, y1: float, y2: float, size_mm: float | tuple[float, float] = 5.0) -> "BeamletGrid":
        """Beamlets tiling the rectangular field [x1, x2] x [y1, y2] (BEV mm at the isocentre plane)."""
        sx, sy = (float(size_mm), float(size_mm)) if np.isscalar(size_mm) else map(float, size_mm)
        ix1, ix2 = int(np.floor(x1 / sx + 1e-9)), int(np.ceil(x2 / sx - 1e-9))
        iy1, iy2 = int(np.floor(y1 / sy + 1e-9)), int(np.ceil(y2 / sy - 1e-9))
        nx, ny = ix2 - ix1, iy2 - iy1
        if nx < 1 or ny < 1:
            raise BeamError(f"field [{x1}, {x2}] x [{y1}, {y2}] mm is empty")
        grid = cls((ix1 + 0.5) * sx, (iy1 + 0.5) * sy, (sx, sy), np.ones((ny, nx), bool))
        # partial coverage at the edges of a field that is not a whole number of beamlets
        ex = np.clip(np.minimum(x2, grid.x0_mm + np.arange(nx) * sx + sx / 2) - np.maximum(x1, grid.x0_mm + np.arange(nx) * sx - sx / 2), 0, sx) / sx
        ey = np.clip(np.minimum(y2, grid.y0_mm + np.arange(ny) * sy + sy / 2) - np.maximum(y1, grid.y0_mm + np.arange(ny) * sy - sy / 2), 0, sy) / sy
        grid.weights = (ey[:, None] * ex[None, :]).astype(np.float32)
        return grid


def equispaced_beams(isocenter_mm, n: int = 9, start_deg: float = 0.0, **kw) -> list[Beam]:
    """`n` coplanar beams at start, start + 360/n, ... degrees of gantry."""
    if n < 1:
        raise BeamError(f"number of beams must be positive, got {n}")
    return [Beam(gantry_deg=(start_deg + i * 360.0 / n) % 360.0, isocenter_mm=isocenter_mm, **kw) for i in range(n)]
