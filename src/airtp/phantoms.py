"""Synthetic head-and-neck and lung patients for tests, demos and benchmarks.

:func:`head_neck` and :func:`lung` build a deterministic :class:`~airtp.Case`
(CT in HU, structure set, prescriptions) from analytic shapes: superellipsoids,
elliptic lofts (a cross-section that changes along z) and tubes along
polylines, evaluated on the voxel centres of the grid. The seed sets a NumPy
generator that varies the anatomy (body size, organ positions by a few mm,
organ sizes by a few percent) and, from its own stream, the targets; the same
seed gives the same arrays bit for bit.

Conventions: arrays (z, y, x); DICOM LPS patient axes, so x grows to the
patient's left, y posterior and z superior; ``_L`` structures lie at larger x
than ``_R`` ones. The patient coordinate origin is at the centre of the grid.
The field of view is fixed in mm: `spacing_mm` sets the resolution only.

Head and neck (default grid 72 x 100 x 136 voxels, z x y x x, at 3 x 2.5 x
2.5 mm; 216 x 250 x 340 mm): from the lung apices and shoulders to about
3.5 cm above the eyes (the vertex is outside the scan, as in many neck
scans; the brain is cut at the top slice). Lung (76 x 100 x 144 voxels;
228 x 250 x 360 mm): from 1 cm above the lung apices to below the
diaphragm, arms up (no arms in the field).

Anatomy is built in a canonical frame (mm; head and neck: z = 0 at the
centre of the eyes, lung: z = 0 at the lung apex) that the seed scales in
plane, and shifts along z, onto the grid.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np

from airtp.case import Case, Prescription
from airtp.errors import AirtpError
from airtp.grid import Grid
from airtp.structures.morphology import margin
from airtp.structures.names import HEAD_NECK_OARS, LUNG_OARS
from airtp.structures.structure_set import StructureSet

__all__ = ["head_neck", "lung", "DEFAULT_SPACING_MM", "HEAD_NECK_FOV_MM", "LUNG_FOV_MM", "LUNG_SIDES"]

DEFAULT_SPACING_MM = (3.0, 2.5, 2.5)
#: Field of view (z, y, x) in mm; the grid has round(fov / spacing) voxels along each axis.
HEAD_NECK_FOV_MM = (216.0, 250.0, 340.0)
LUNG_FOV_MM = (228.0, 250.0, 360.0)
LUNG_SIDES = ("left", "right", "central")
_MAX_VOXELS = 40_000_000
_PHANTOM_VERSION = 1

# Hounsfield units.
HU_AIR = -1000
HU_LUNG = -800
HU_FAT = -90
HU_SOFT = 40
HU_BRAIN = 35
HU_WATERY = 15  # vitreous, CSF, cochlear fluid
HU_GLAND = 10  # parotid (fatty gland)
HU_CARTILAGE = 150
HU_BONE_SPONGY = 700  # vertebrae, humerus, sternum, scapula
HU_BONE = 850  # ribs, clavicles, mandible
HU_BONE_DENSE = 1000  # skull
HU_TEETH = 1500
NOISE_HU = 10.0


# ---------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------
def _check_seed(seed) -> int:
    try:
        if isinstance(seed, bool):
            raise TypeError
        value = operator.index(seed)
    except TypeError:
        raise AirtpError(f"phantom seed must be a non-negative integer, got {seed!r}") from None
    if value < 0:
        raise AirtpError(f"phantom seed must be a non-negative integer, got {seed!r}")
    return value


def _check_spacing(spacing_mm, fov_mm) -> tuple[float, float, float]:
    try:
        sp = tuple(float(s) for s in np.ravel(np.asarray(spacing_mm, dtype=float)))
    except (TypeError, ValueError):
        raise AirtpError(f"phantom spacing_mm must be three positive mm values (z, y, x), got {spacing_mm!r}") from None
    if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise AirtpError(f"phantom spacing_mm must be three positive mm values (z, y, x), got {spacing_mm!r}")
    n = np.prod([max(1, round(f / s)) for f, s in zip(fov_mm, sp)], dtype=float)
    if n > _MAX_VOXELS:
        raise AirtpError(
            f"phantom spacing_mm {spacing_mm!r} is too fine: the {fov_mm} mm field would need {n:.3g} voxels "
            f"(at most {_MAX_VOXELS:.0e})"
        )
    return sp


def _make_grid(fov_mm, spacing) -> Grid:
    shape = tuple(max(1, int(round(f / s))) for f, s in zip(fov_mm, spacing))
    origin = tuple(-(n - 1) / 2.0 * s for n, s in zip(shape, spacing))
    return Grid(shape, spacing, origin)


# ---------------------------------------------------------------------------
# Random variation
# ---------------------------------------------------------------------------
class _Jitter:
    """Small clipped Gaussian variations drawn from one generator, in call order."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def n(self, sd: float, k: float = 2.0) -> float:
        """A N(0, sd) draw clipped to +-k sd."""
        return float(np.clip(self.rng.normal(0.0, sd), -k * sd, k * sd))

    def f(self, sd: float = 0.05) -> float:
        """A size factor 1 + N(0, sd), clipped to +-2 sd."""
        return 1.0 + self.n(sd)

    def p(self, point, sd: float = 1.5) -> tuple[float, float, float]:
        """A point moved by N(0, sd) mm along each axis."""
        return tuple(float(v) + self.n(sd) for v in point)

    def u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))


def _streams(seed: int, site: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent anatomy, target and noise generators of one seed."""
    return tuple(np.random.default_rng(s) for s in np.random.SeedSequence([seed, site]).spawn(3))


# ---------------------------------------------------------------------------
# Shapes on the grid
# ---------------------------------------------------------------------------
def _profile(zs, v):
    """A function of z: `v` itself if callable, else piecewise linear through (zs, v)."""
    if callable(v):
        return v
    zs = np.asarray(zs, float)
    vals = np.broadcast_to(np.asarray(v, float), zs.shape)
    order = np.argsort(zs)
    zz, vv = zs[order], vals[order]
    return lambda z: np.interp(z, zz, vv)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


class _Frame:
    """Canonical anatomy coordinates of a grid's voxel centres, and shapes in them.

    Canonical (z, y, x) = ((z - shift_z) / scale_z, y / scale_y, x / scale_x)
    in patient mm; every shape below is given in canonical mm and returns a
    full boolean mask on the grid, evaluated in its bounding box only.
    """

    def __init__(self, grid: Grid, shift_z: float, scale):
        z, y, x = grid.axes_mm()
        self.grid = grid
        self.shift_z = float(shift_z)
        self.scale = tuple(float(s) for s in scale)
        self.c = ((z - shift_z) / scale[0], y / scale[1], x / scale[2])
        self.shape = grid.shape

    # Coordinates -----------------------------------------------------------
    def to_patient(self, point) -> np.ndarray:
        """Patient coordinates (z, y, x) mm of a canonical point."""
        p = np.asarray(point, float)
        return np.array([p[0] * self.scale[0] + self.shift_z, p[1] * self.scale[1], p[2] * self.scale[2]])

    def zyx(self):
        """Broadcastable canonical coordinate arrays over the whole grid."""
        return self.c[0][:, None, None], self.c[1][None, :, None], self.c[2][None, None, :]

    def empty(self) -> np.ndarray:
        return np.zeros(self.shape, dtype=bool)

    def _span(self, axis: int, lo: float, hi: float) -> slice:
        a = self.c[axis]
        return slice(int(np.searchsorted(a, lo, "left")), int(np.searchsorted(a, hi, "right")))

    def box(self, lo, hi):
        """(slices, z, y, x) of the voxels with canonical coordinates in [lo, hi], or None."""
        sl = tuple(self._span(i, lo[i], hi[i]) for i in range(3))
        if any(s.stop <= s.start for s in sl):
            return None
        return sl, self.c[0][sl[0]][:, None, None], self.c[1][sl[1]][None, :, None], self.c[2][sl[2]][None, None, :]

    def nearest_index(self, point) -> tuple[int, int, int]:
        return tuple(int(np.argmin(np.abs(self.c[i] - point[i]))) for i in range(3))

    # Shapes ----------------------------------------------------------------
    def ellipsoid(self, c, r, angle: float = 0.0, p: float = 2.0) -> np.ndarray:
        """Superellipsoid: ``|x'/rx|^p + |y'/ry|^p <= (1 - (dz/rz)^2)^(p/2)``.

        `r` is (rz, ry, rx); `angle` (degrees) turns the in-plane axes from +x
        towards +y (posterior); p = 2 is an ellipsoid, p > 2 squarer in plane.
        """
        c = np.asarray(c, float)
        r = np.asarray(r, float)
        ext = r.copy()
        if angle:
            ext[1] = ext[2] = max(r[1], r[2])
        out = self.empty()
        b = self.box(c - ext, c + ext)
        if b is None:
            return out
        sl, z, y, x = b
        w = 1.0 - ((z - c[0]) / r[0]) ** 2
        dy, dx = y - c[1], x - c[2]
        if angle:
            a = np.deg2rad(angle)
            dx, dy = dx * np.cos(a) + dy * np.sin(a), -dx * np.sin(a) + dy * np.cos(a)
        if p == 2.0:
            inside = (dx / r[2]) ** 2 + (dy / r[1]) ** 2 <= w
        else:
            inside = (np.abs(dx / r[2]) ** p + np.abs(dy / r[1]) ** p <= np.clip(w, 0.0, None) ** (p / 2.0)) & (w >= 0)
        out[sl] = inside
        return out

    def ellipsoid_axes(self, c, r, axes) -> np.ndarray:
        """Ellipsoid with semi-axes r[k] along the unit vectors axes[k] (each (z, y, x))."""
        c = np.asarray(c, float)
        r = np.asarray(r, float)
        axes = np.asarray(axes, float)
        ext = np.sqrt(((r[:, None] * axes) ** 2).sum(axis=0))
        out = self.empty()
        b = self.box(c - ext, c + ext)
        if b is None:
            return out
        sl, z, y, x = b
        d = (z - c[0], y - c[1], x - c[2])
        q = 0.0
        for k in range(3):
            q = q + ((d[0] * axes[k, 0] + d[1] * axes[k, 1] + d[2] * axes[k, 2]) / r[k]) ** 2
        out[sl] = q <= 1.0
        return out

    def loft(self, zs, cy, cx, ry, rx, p: float = 2.0) -> np.ndarray:
        """Elliptic (p = 2) or superelliptic cross-sections from min(zs) to max(zs).

        Each of cy, cx, ry, rx is a scalar, a sequence of values at the control
        heights `zs` (linear in between) or a function of z.
        """
        zs = np.asarray(zs, float)
        out = self.empty()
        zsl = self._span(0, zs.min(), zs.max())
        if zsl.stop <= zsl.start:
            return out
        zz = self.c[0][zsl]
        CY, CX, RY, RX = (np.broadcast_to(_profile(zs, v)(zz), zz.shape) for v in (cy, cx, ry, rx))
        ysl = self._span(1, float((CY - RY).min()), float((CY + RY).max()))
        xsl = self._span(2, float((CX - RX).min()), float((CX + RX).max()))
        if ysl.stop <= ysl.start or xsl.stop <= xsl.start:
            return out
        y = self.c[1][ysl][None, :, None]
        x = self.c[2][xsl][None, None, :]
        dy = (y - CY[:, None, None]) / RY[:, None, None]
        dx = (x - CX[:, None, None]) / RX[:, None, None]
        if p == 2.0:
            inside = dx * dx + dy * dy <= 1.0
        else:
            inside = np.abs(dx) ** p + np.abs(dy) ** p <= 1.0
        out[zsl, ysl, xsl] = inside
        return out

    def tube(self, points, radius: float) -> np.ndarray:
        """Voxels within `radius` mm of a polyline (union of capsules)."""
        pts = np.asarray(points, float)
        out = self.empty()
        r2 = float(radius) ** 2
        for a, b_ in zip(pts[:-1], pts[1:]):
            b = self.box(np.minimum(a, b_) - radius, np.maximum(a, b_) + radius)
            if b is None:
                continue
            sl, z, y, x = b
            d = b_ - a
            pz, py, px = z - a[0], y - a[1], x - a[2]
            t = np.clip((pz * d[0] + py * d[1] + px * d[2]) / max(float(d @ d), 1e-12), 0.0, 1.0)
            out[sl] |= (pz - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (px - t * d[2]) ** 2 <= r2
        return out


@dataclass
class _Parts:
    """Structures under construction, with a canonical anchor point for each."""

    frame: _Frame
    masks: dict
    anchors: dict

    def add(self, name: str, mask: np.ndarray, anchor) -> np.ndarray:
        self.masks[name] = mask
        self.anchors[name] = tuple(float(v) for v in anchor)
        return mask

    def ensure_nonempty(self) -> None:
        """Give a structure that the grid is too coarse to resolve its anchor voxel."""
        for name, mask in self.masks.items():
            if not mask.any():
                mask[self.frame.nearest_index(self.anchors[name])] = True


def _paint_noise(ct: np.ndarray, body: np.ndarray, rng: np.random.Generator, sd: float = NOISE_HU) -> np.ndarray:
    """Int16 CT: `ct` plus seeded Gaussian noise inside the body; exactly -1000 outside."""
    noise = rng.standard_normal(ct.shape, dtype=np.float32) * np.float32(sd)
    out = np.where(body, ct + noise, np.float32(HU_AIR))
    return np.clip(np.rint(out), -1024, 3071).astype(np.int16)


# ---------------------------------------------------------------------------
# Head and neck
# ---------------------------------------------------------------------------
def head_neck(n_ptv: int = 1, seed: int = 0, spacing_mm=DEFAULT_SPACING_MM) -> Case:
    """A synthetic head-and-neck patient: oropharynx primary with neck nodes.

    Parameters
    ----------
    n_ptv : 1, 2 or 3
        1: PTV70 (primary and involved ipsilateral level II nodes); 2: PTV70 and
        PTV56 (elective neck, both sides, excluding PTV70); 3: PTV70, PTV63
        (PTV70 + 1 cm and ipsilateral levels II-III) and PTV56. The PTVs are
        disjoint, at least 3 mm inside the body and clear of the spinal cord
        and brainstem; all are in 35 fractions.
    seed : int >= 0
        Varies body size, organ positions and sizes, the side (left or right)
        and the position and size of the primary and the nodes.
    spacing_mm : (z, y, x) mm
        Voxel spacing; the field of view stays :data:`HEAD_NECK_FOV_MM`.

    Returns
    -------
    Case with site "hn", patient_id ``f"hn{n_ptv}-seed{seed}"``, structures
    :data:`airtp.structures.names.HEAD_NECK_OARS` then the PTVs, and ``meta``
    with the phantom's parameters (``primary_side``, ...).
    """
    if isinstance(n_ptv, bool) or not isinstance(n_ptv, (int, np.integer)) or int(n_ptv) not in (1, 2, 3):
        raise AirtpError(f"head_neck: n_ptv must be 1, 2 or 3, got {n_ptv!r}")
    n_ptv = int(n_ptv)
    seed = _check_seed(seed)
    spacing = _check_spacing(spacing_mm, HEAD_NECK_FOV_MM)
    grid = _make_grid(HEAD_NECK_FOV_MM, spacing)
    rng_anat, rng_tgt, rng_noise = _streams(seed, 1)
    j = _Jitter(rng_anat)

    size = j.f(0.03)
    scale = (1.0, size * j.f(0.012), size * j.f(0.012))
    # Eye level 35.5 mm below the top of the field (top voxel about +34 mm canonical).
    shift_z = HEAD_NECK_FOV_MM[0] / 2.0 - 35.5 + j.n(1.5)
    fr = _Frame(grid, shift_z, scale)
    parts = _Parts(fr, {}, {})
    anat = _hn_anatomy(fr, parts, j)
    ct = _hn_ct(fr, parts, anat)

    tj = _Jitter(rng_tgt)
    side = 1 if tj.rng.random() < 0.5 else -1
    targets = _hn_targets(fr, parts, anat, tj, side, n_ptv, spacing)

    parts.ensure_nonempty()
    masks = {name: parts.masks[name] for name in HEAD_NECK_OARS}
    masks.update(targets)
    structures = StructureSet(grid, masks)
    ct_hu = _paint_noise(ct, parts.masks["Body"], rng_noise)
    doses = {"PTV70": 70.0, "PTV63": 63.0, "PTV56": 56.0}
    prescriptions = [Prescription(name, doses[name], 35) for name in targets]
    meta = {
        "phantom": "head_neck",
        "phantom_version": _PHANTOM_VERSION,
        "seed": seed,
        "n_ptv": n_ptv,
        "primary_side": "left" if side > 0 else "right",
        "primary_site": "oropharynx",
    }
    return Case(ct_hu, structures, prescriptions, "hn", f"hn{n_ptv}-seed{seed}", meta)


def _hn_anatomy(fr: _Frame, parts: _Parts, j: _Jitter) -> dict:
    """Organs of the head and neck, in canonical mm (z = 0 at the eyes)."""
    add = parts.add
    Z, Y, X = fr.zyx()
    zlo = float(fr.c[0][0]) - 10.0  # below the field

    # Spine centre line: the vertebral body centre y as a function of z (cervical lordosis).
    vb_z = np.array([-200.0, -165.0, -140.0, -110.0, -80.0, -38.0])
    vb_y = np.array([18.0, 13.0, 9.0, 6.0, 4.0, 2.0]) + j.n(1.5)
    y_vb = _profile(vb_z, vb_y)
    ry_vb = _profile([-200, -100, -38], [10.0, 8.5, 7.5])
    rx_vb = _profile([-200, -100, -38], [13.0, 10.5, 8.5])

    def y_cord(z):
        return y_vb(z) + ry_vb(z) + 7.0

    # ----- Body ---------------------------------------------------------
    head_c = (15.0, 5.0, 0.0)
    head_r = np.array([105.0, 95.0, 77.0]) * (1.0, j.f(0.025), j.f(0.025))
    cranium = fr.ellipsoid(head_c, head_r, p=2.4)
    nose = fr.ellipsoid((-25.0, -88.0, 0.0), (24.0, 16.0, 13.0) * np.array([1.0, j.f(0.05), j.f(0.05)]))
    face = fr.loft(
        [-10, -40, -65, -90, -105, -116],
        [-5, -8, -12, -18, -24, -22],
        0.0,
        [88, 84, 80, 74, 64, 44],
        np.array([70, 70, 66, 58, 48, 34]) * j.f(0.02),
    )
    neck_rx = _profile([-200, -165, -150, -130, -100, -60], np.array([80, 70, 62, 56, 56, 60]) * j.f(0.03))
    neck = fr.loft(
        [-200, -165, -150, -130, -100, -60], [22, 18, 14, 10, 8, 8], 0.0, [78, 70, 64, 60, 60, 64], neck_rx
    )
    shoulders_body = fr.loft(
        [-200, -185, -165, -150, -135, -118],
        [20, 20, 22, 22, 20, 18],
        0.0,
        [80, 78, 76, 70, 60, 48],
        np.array([145, 143, 137, 123, 95, 58]) * j.f(0.02),
        p=2.6,
    )
    body = cranium | nose | face | neck | shoulders_body
    add("Body", body, (-60.0, 0.0, 0.0))
    inset = margin(body, -4.0, fr.grid.spacing_mm)  # bone stays 4 mm under the skin; fat is the rest

    # ----- Brain, skull and skull base ---------------------------------
    # The cranial cavity ends below at the skull base: the lowest of three
    # bowls (anterior fossa over the orbits, middle fossae for the temporal
    # lobes, posterior fossa for the cerebellum); the skull is the 7 mm layer
    # of the outer table around the cavity and under the base.
    ax = np.abs(X)
    z_base = np.minimum(
        np.minimum(6.0 + 12.0 * np.clip(1.0 - ((ax - 30.0) / 22.0) ** 2 - ((Y + 58.0) / 30.0) ** 2, 0.0, 1.0)
                   + 5.0 * np.clip(Y + 30.0, 0.0, None),
                   -26.0 + 10.0 * (((ax - 38.0) / 25.0) ** 2 + ((Y + 8.0) / 25.0) ** 2)),
        -46.0 + 30.0 * ((X / 50.0) ** 2 + ((Y - 40.0) / 45.0) ** 2),
    )
    cavity = fr.ellipsoid(head_c, head_r - 13.0, p=2.4) & (Z >= z_base)
    skull = fr.ellipsoid(head_c, head_r - 6.0, p=2.4) & (Z >= z_base - np.where(Y < -25.0, 4.0, 7.0)) & ~cavity
    skull &= ~((X**2 + (Y - 20.0) ** 2 < 14.0**2) & (Z < -25.0))  # foramen magnum
    petrous = fr.empty()
    for s in (1, -1):
        petrous |= fr.ellipsoid((-18.0, 12.0, s * 33.0), (7.0, 9.0, 22.0), angle=s * 40.0)
    sella = fr.ellipsoid((-11.0, -19.0, 0.0), (4.0, 8.0, 10.0))
    clivus = fr.tube([(-12.0, -17.0, 0.0), (-42.0, 2.0, 0.0)], 6.0)

    # Eyes, lenses, optic pathway, pituitary, lacrimal glands, cochleae.
    orbits = fr.empty()
    orbit_soft = fr.empty()
    for s, lat in ((1, "L"), (-1, "R")):
        ec = j.p((0.0, -66.0, s * 32.0), 1.0)
        er = 12.0 * j.f(0.03)
        add(f"Eye_{lat}", fr.ellipsoid(ec, (er, er, er)), ec)
        lc = (ec[0], ec[1] - er + 3.5, ec[2])
        add(f"Lens_{lat}", fr.ellipsoid(lc, (4.0, 2.5, 4.5)), lc)
        gc = j.p((8.0, -58.0, s * 40.0), 1.0)
        add(f"LacrimalGland_{lat}", fr.ellipsoid(gc, (5.0, 9.0, 4.5), angle=-s * 20.0), gc)
        nerve = [(ec[0], ec[1] + er - 1.0, ec[2] - s * 2.0), (3.0, -40.0, s * 19.0), (5.0, -26.0, s * 8.0)]
        add(f"OpticNerve_{lat}", fr.tube(nerve, 2.6), nerve[1])
        cc = j.p((-17.0, 9.0, s * 30.0), 1.0)
        add(f"Cochlea_{lat}", fr.ellipsoid(cc, (3.0, 3.5, 4.0)), cc)
        oc, orr = (ec[0], ec[1] + 8.0, ec[2] - s * 2.0), np.array([15.0, 22.0, 16.0])
        orbit_in = fr.ellipsoid(oc, orr)
        orbits |= (fr.ellipsoid(oc, orr + 3.0) & ~orbit_in) & (Y > ec[1] - 2.0)
        orbit_soft |= orbit_in
    chiasm_c = (6.0, -21.0, 0.0)
    add("Chiasm", fr.ellipsoid(chiasm_c, (2.5, 4.5, 8.0)), chiasm_c)
    pit_c = (-4.0, -19.0, 0.0)
    add("Pituitary", fr.ellipsoid(pit_c, (4.0, 5.0, 6.0)), pit_c)

    bs_z = [-44, -30, -15, 0, 14]
    brainstem = fr.loft(bs_z, [17, 11, 7, 2, -3], 0.0, [8, 10, 13, 12, 11], np.array([8, 11, 14, 14, 13]) * j.f(0.04))
    add("BrainStem", brainstem, (-15.0, 7.0, 0.0))
    cord = fr.loft([zlo, -44.0 - 1e-6], y_cord, 0.0, 4.5, 6.5 * j.f(0.04))
    add("SpinalCord", cord, (-100.0, float(y_cord(-100.0)), 0.0))

    soft_head = (
        parts.masks["Eye_L"] | parts.masks["Eye_R"] | parts.masks["LacrimalGland_L"] | parts.masks["LacrimalGland_R"]
        | parts.masks["OpticNerve_L"] | parts.masks["OpticNerve_R"] | parts.masks["Chiasm"] | parts.masks["Pituitary"]
    )
    brain = cavity & ~brainstem & ~petrous & ~sella & ~soft_head
    add("Brain", brain, (25.0, 5.0, 0.0))

    # ----- Air spaces of the head --------------------------------------
    air = fr.ellipsoid((-14.0, -36.0, 0.0), (8.0, 9.0, 11.0))  # sphenoid sinus
    air |= fr.ellipsoid((-20.0, -62.0, 0.0), (20.0, 20.0, 8.0))  # nasal cavity
    air |= fr.ellipsoid((-36.0, -22.0, 0.0), (7.0, 7.0, 12.0))  # nasopharynx
    for s in (1, -1):
        air |= fr.ellipsoid((-25.0, -52.0, s * 26.0), (14.0, 15.0, 12.0))  # maxillary sinus
        air |= fr.ellipsoid((-18.0, 10.0, s * 62.0), (4.0, 4.0, 10.0))  # external auditory canal

    # ----- Jaw, mouth, salivary glands --------------------------------
    fm = j.f(0.04)
    ax_m, ay_m, y0_m = 47.0 * fm, 82.0 * fm, -4.0 + j.n(1.5)
    mandible = fr.empty()
    b = fr.box((-112.0, y0_m - ay_m - 8.0, -ax_m - 8.0), (-58.0, y0_m + 2.0, ax_m + 8.0))
    teeth = fr.empty()
    if b is not None:
        sl, z, y, x = b
        u, v = x / ax_m, (y - y0_m) / ay_m
        rho = np.sqrt(u * u + v * v)
        radius = np.sqrt(x * x + (y - y0_m) ** 2) / np.maximum(rho, 1e-9)
        dist = (rho - 1.0) * radius
        phi = np.arctan2(-v, np.abs(u)) / (np.pi / 2.0)  # 0 at the angle, 1 at the chin
        z_top = -64.0 - 8.0 * phi
        z_bot = -88.0 - 20.0 * phi
        arch = (np.abs(dist) <= 5.0) & (y <= y0_m + 2.0) & (z <= z_top) & (z >= z_bot)
        mandible[sl] = arch
        teeth[sl] = arch & (z >= z_top - 6.0) & (phi > 0.15)
    for s in (1, -1):
        mandible |= fr.ellipsoid((-58.0, -8.0, s * 47.0 * fm), (30.0, 13.0, 5.0))  # ramus
        mandible |= fr.ellipsoid((-31.0, -6.0, s * 50.0 * fm), (6.0, 5.0, 9.0))  # condyle
    mandible &= inset
    teeth &= inset
    add("Mandible", mandible, (-85.0, y0_m - ay_m, 0.0))
    for s, lat in ((1, "L"), (-1, "R")):
        tc = j.p((-30.0, -6.0, s * 51.0 * fm), 1.0)
        add(f"TMJoint_{lat}", fr.ellipsoid(tc, (6.0, 8.0, 11.0)) & ~cavity, tc)
    # Maxillary alveolar ridge and upper teeth.
    maxilla = fr.empty()
    b = fr.box((-57.0, -90.0, -50.0), (-44.0, -18.0, 50.0))
    if b is not None:
        sl, z, y, x = b
        u, v = x / 44.0, (y + 8.0) / 76.0
        rho = np.sqrt(u * u + v * v)
        maxilla[sl] = (rho >= 0.86) & (rho <= 1.0) & (y < -18.0)
        teeth[sl] |= maxilla[sl] & (z <= -50.0)
    maxilla &= inset

    bone_jaw = mandible | maxilla
    for s, lat in ((1, "L"), (-1, "R")):
        pc = j.p((-45.0, 8.0, s * 49.0 * fm), 1.5)
        pr = np.array([25.0, 18.0, 12.0]) * j.f(0.06)
        parotid = fr.ellipsoid(pc, pr, angle=s * 10.0)
        parotid |= fr.ellipsoid((pc[0] + 3.0, pc[1] - 4.0, pc[2] - s * 15.0), (12.0, 10.0, 8.0))  # deep lobe
        parotid |= fr.ellipsoid((pc[0] - 24.0, pc[1] + 5.0, pc[2] - s * 3.0), (11.0, 9.0, 8.0))  # tail
        parotid &= ~bone_jaw & ~parts.masks[f"TMJoint_{lat}"] & ~air & ~petrous & ~cavity
        add(f"Parotid_{lat}", parotid, pc)
        sc = j.p((-96.0, -26.0, s * 33.0), 1.5)
        sm = fr.ellipsoid(sc, np.array([12.0, 14.0, 10.0]) * j.f(0.06), angle=-s * 15.0) & ~mandible
        add(f"Submandibular_{lat}", sm, sc)

    lips_c = (-62.0, -84.0, 0.0)
    lips = fr.ellipsoid(lips_c, (12.0, 6.0, 24.0)) & ~teeth
    add("Lips", lips, lips_c)

    # ----- Pharynx, larynx, airway, oesophagus, trachea, thyroid --------
    def y_ph(z):
        return y_vb(z) - np.where(z > -104.0, 19.0, 16.0)

    ph_z = [-146.0, -104.0, -40.0]
    lumen_ry = _profile([-146, -110, -100, -40], [3.0, 3.0, 6.0, 6.0])
    outer = fr.loft(ph_z, y_ph, 0.0, lambda z: lumen_ry(z) + 4.0, 18.0)
    inner = fr.loft(ph_z, y_ph, 0.0, lumen_ry, 14.0)
    pharynx_const = outer & ~inner & (Y >= y_ph(Z) - 2.0)
    airway = fr.loft([-104.0, -44.0], y_ph, 0.0, 4.0, 10.0)  # oropharyngeal airway

    def y_lar(z):
        return y_vb(z) - 38.0

    lar_z = [-146, -140, -120, -104]
    larynx = fr.loft(lar_z, y_lar, 0.0, [12, 15, 16, 13], np.array([15, 18, 19, 17]) * j.f(0.04))
    lar_lumen = fr.loft([-146, -132, -125, -104], lambda z: y_lar(z) + 2.0, 0.0, [7, 7, 8, 9], [7.5, 5, 3, 7])
    hyoid = fr.empty()
    b = fr.box((-107.0, -45.0, -30.0), (-101.0, -10.0, 30.0))
    if b is not None:
        sl, z, y, x = b
        rho = np.sqrt((x / 22.0) ** 2 + ((y + 14.0) / 24.0) ** 2)
        hyoid[sl] = (rho >= 0.85) & (rho <= 1.0) & (y < -14.0)
    cartilage = larynx & ~fr.loft(lar_z, y_lar, 0.0, [10, 13, 14, 11], [13, 16, 17, 15])

    def y_tr(z):
        return y_vb(z) - 33.0

    trachea = fr.loft([zlo, -146.0], y_tr, 0.0, 9.0, 10.0 * j.f(0.04))
    tr_lumen = fr.loft([zlo, -146.0], y_tr, 0.0, 7.0, 8.0)
    esophagus = fr.loft([zlo, -146.0], lambda z: y_vb(z) - 15.0, 4.0, 6.0, 8.0 * j.f(0.05))
    airway |= lar_lumen | tr_lumen
    add("PharynxConst", pharynx_const, (-75.0, float(y_ph(-75.0)) + 8.0, 0.0))
    add("Larynx", larynx, (-125.0, float(y_lar(-125.0)), 0.0))
    add("Trachea", trachea, (-165.0, float(y_tr(-165.0)), 0.0))
    add("Esophagus", esophagus, (-165.0, float(y_vb(-165.0)) - 15.0, 4.0))

    thyroid = fr.empty()
    for s in (1, -1):
        tc = j.p((-158.0, float(y_tr(-158.0)) + 4.0, s * 19.0), 1.0)
        thyroid |= fr.ellipsoid(tc, np.array([18.0, 9.0, 8.0]) * j.f(0.06), angle=-s * 20.0)
    isthmus_c = (-166.0, float(y_tr(-166.0)) - 13.0, 0.0)
    thyroid |= fr.ellipsoid(isthmus_c, (5.0, 4.0, 11.0))
    thyroid &= ~trachea & ~esophagus
    add("Thyroid", thyroid, (-158.0, float(y_tr(-158.0)) + 4.0, 19.0))

    oc_c = j.p((-74.0, -46.0, 0.0), 1.5)
    oral = fr.ellipsoid(oc_c, np.array([22.0, 30.0, 30.0]) * j.f(0.05))
    oral &= ~bone_jaw & ~lips & ~airway & ~pharynx_const & ~inner
    add("OralCavity", oral, oc_c)

    # ----- Spine, shoulder girdle, lungs -------------------------------
    vb = fr.loft([zlo, -38.0], y_vb, 0.0, ry_vb, rx_vb)
    vb &= ((Z + 400.0) % 17.0) >= 4.0  # intervertebral discs
    canal = fr.loft([zlo, -40.0], y_cord, 0.0, 7.0, 8.5)
    arch = fr.loft([zlo, -40.0], y_cord, 0.0, 11.0, 14.0) & ~canal & (Y >= y_cord(Z) - 4.0)
    spinous = fr.loft([zlo, -44.0], lambda z: y_cord(z) + 20.0 + np.clip(-(z + 130.0), 0, 40) * 0.2, 0.0, 12.0, 3.5)
    transverse = fr.loft([zlo, -40.0], lambda z: y_vb(z) + 3.0, 0.0, 5.0, lambda z: rx_vb(z) + 11.0)
    transverse &= ((Z + 406.0) % 17.0) >= 9.0
    dens = fr.tube([(-38.0, 0.0, 0.0), (-50.0, 2.0, 0.0)], 5.5)
    spine = vb | ((arch | spinous | transverse) & (((Z + 408.0) % 17.0) >= 5.0)) | dens
    skull_bone = ((skull & ~orbit_soft) | orbits) & ~cavity | petrous | sella | clivus

    girdle = fr.empty()
    for s in (1, -1):
        girdle |= fr.tube([(-172.0, -40.0, s * 18.0), (-168.0, -38.0, s * 60.0), (-160.0, -20.0, s * 100.0),
                           (-155.0, 5.0, s * 120.0)], 7.0)  # clavicle
        girdle |= fr.tube([(-158.0, 48.0, s * 70.0), (-152.0, 25.0, s * 116.0)], 6.0)  # scapular spine, acromion
        girdle |= fr.ellipsoid((-182.0, 50.0, s * 95.0), (30.0, 6.0, 35.0), angle=-s * 30.0)  # scapula
        girdle |= fr.ellipsoid((-165.0, 10.0, s * 110.0), (19.0, 19.0, 19.0))  # humeral head
        girdle |= fr.tube([(-168.0, float(y_vb(-168.0)) + 12.0, s * 22.0), (-174.0, 36.0, s * 50.0),
                           (-182.0, 20.0, s * 74.0), (-192.0, -12.0, s * 74.0), (-200.0, -35.0, s * 45.0)],
                          5.0)  # first rib

    lungs = fr.empty()
    for s in (1, -1):
        lc = j.p((-240.0, 22.0, s * 45.0), 1.5)
        lungs |= fr.ellipsoid(lc, (72.0, 42.0, 38.0))
    bones = (spine | skull_bone | girdle | bone_jaw | hyoid) & inset
    lungs &= ~bones & ~trachea & ~esophagus
    add("Lungs", lungs, (-175.0, 24.0, 48.0))
    add("Shoulders", body & (Z < -118.0) & (np.abs(X) > neck_rx(Z) + 5.0), (-170.0, 15.0, 110.0))

    post = body & (Y > y_cord(Z) + 12.0) & (Z <= -45.0) & (Z >= -150.0) & (np.abs(X) <= neck_rx(Z)) & ~bones
    add("Posterior_Neck", post, (-100.0, float(y_cord(-100.0)) + 30.0, 0.0))

    for s, lat in ((1, "L"), (-1, "R")):
        path = [(-120.0, float(y_vb(-120.0)) + 8.0, s * 16.0), (-138.0, 14.0, s * 32.0), (-155.0, 12.0, s * 55.0),
                (-168.0, 5.0, s * 80.0), (-176.0, 0.0, s * 100.0)]
        path = [j.p(pt, 1.0) for pt in path]
        add(f"BrachialPlexus_{lat}", fr.tube(path, 5.0) & ~bones & ~lungs, path[2])

    # Soft-tissue organs hold no bone or air; everything lies in the body.
    for name in ("Parotid_L", "Parotid_R", "Submandibular_L", "Submandibular_R", "OralCavity", "Lips", "Larynx",
                 "PharynxConst", "Thyroid", "Esophagus", "Trachea", "Posterior_Neck"):
        parts.masks[name] &= ~bones
    for name, mask in parts.masks.items():
        if name != "Body":
            mask &= body

    soft = brain | brainstem | cord | soft_head | parts.masks["Cochlea_L"] | parts.masks["Cochlea_R"]
    return {
        "y_vb": y_vb, "y_cord": y_cord, "y_ph": y_ph, "neck_rx": neck_rx,
        "bones": bones & ~soft, "skull": skull_bone & ~soft, "teeth": teeth & ~soft, "jaw": bone_jaw,
        "air": (air | airway) & body & ~soft, "cartilage": cartilage, "canal": canal, "inset": inset,
    }


def _hn_ct(fr: _Frame, parts: _Parts, anat: dict) -> np.ndarray:
    m = parts.masks
    body = m["Body"]
    ct = np.full(fr.shape, float(HU_AIR), dtype=np.float32)
    ct[body] = HU_SOFT
    ct[body & ~anat["inset"]] = HU_FAT
    for name in ("Parotid_L", "Parotid_R"):
        ct[m[name]] = HU_GLAND
    ct[m["Brain"] | m["BrainStem"]] = HU_BRAIN
    ct[anat["canal"] & body] = HU_WATERY
    ct[m["SpinalCord"]] = HU_BRAIN
    ct[m["Eye_L"] | m["Eye_R"]] = HU_WATERY
    ct[m["Lens_L"] | m["Lens_R"]] = 90
    ct[anat["cartilage"] & body] = HU_CARTILAGE
    ct[anat["bones"] & body] = HU_BONE_SPONGY
    ct[anat["jaw"] & body] = HU_BONE
    ct[anat["skull"] & body] = HU_BONE_DENSE
    ct[anat["teeth"] & body] = HU_TEETH
    ct[m["Cochlea_L"] | m["Cochlea_R"]] = HU_WATERY
    ct[m["Lungs"]] = HU_LUNG
    ct[anat["air"]] = HU_AIR
    return ct


def _hn_targets(fr: _Frame, parts: _Parts, anat: dict, tj: _Jitter, side: int, n_ptv: int, spacing) -> dict:
    """PTV70 (+ PTV63, PTV56): disjoint, 3 mm inside the body, clear of cord and brainstem."""
    m = parts.masks
    y_vb, y_ph = anat["y_vb"], anat["y_ph"]
    s = side
    f1 = tj.u(1.0, 1.15)
    pz = -75.0 + tj.n(3.0)
    prim_c = (pz, float(y_ph(pz)) - 2.0 + tj.n(2.0), s * (12.0 + tj.n(2.5)))
    primary = fr.ellipsoid(prim_c, np.array([30.0, 27.0, 25.0]) * f1, angle=tj.n(10.0))
    nz = -82.0 + tj.n(4.0)
    node_c = (nz, float(y_vb(nz)) - 6.0 + tj.n(2.0), s * (36.0 + tj.n(2.0)))
    node = fr.ellipsoid(node_c, np.array([26.0, 21.0, 19.0]) * tj.u(0.9, 1.12))

    inside = margin(m["Body"], -3.0, spacing)
    keep_out = margin(m["SpinalCord"] | m["BrainStem"], 3.0, spacing)
    allowed = inside & ~keep_out
    ptv70 = (primary | node) & allowed
    out = {"PTV70": ptv70}
    parts.add("PTV70", ptv70, prim_c)

    def column(xc, z_top, z_bot):
        return fr.loft([z_bot, z_top], lambda z: y_vb(z) - 8.0, xc, 23.0 * tj.f(0.04), 17.0 * tj.f(0.04))

    x_col = 36.0 + tj.n(1.5)
    if n_ptv >= 2:
        z_bot = -163.0 + tj.n(2.0)
        elective = column(-s * x_col, -56.0, z_bot) | column(s * x_col, -56.0, z_bot)
    if n_ptv == 3:
        mid = margin(ptv70, 10.0, spacing) | column(s * (x_col + 1.0), -62.0, -132.0 + tj.n(3.0))
        ptv63 = mid & allowed & ~ptv70
        out["PTV63"] = ptv63
        parts.add("PTV63", ptv63, node_c)
        ptv56 = elective & allowed & ~ptv70 & ~ptv63
    elif n_ptv == 2:
        ptv56 = elective & allowed & ~ptv70
    if n_ptv >= 2:
        out["PTV56"] = ptv56
        parts.add("PTV56", ptv56, (-120.0, float(y_vb(-120.0)) - 8.0, -s * x_col))
    return out


# ---------------------------------------------------------------------------
# Lung
# ---------------------------------------------------------------------------
def lung(side: str = "left", seed: int = 0, spacing_mm=DEFAULT_SPACING_MM) -> Case:
    """A synthetic thorax with a lung tumour: GTV, CTV = GTV + 5 mm, PTV = CTV + 5 mm.

    Parameters
    ----------
    side : "left", "right" or "central"
        Left or right: a peripheral tumour in that lung, its centre more than
        5 cm from the mid-sagittal plane. Central: a mediastinal/para-hilar
        (subcarinal) tumour within 2 cm of it, which may extend beyond the lungs.
    seed : int >= 0
        Varies the anatomy and the tumour position and radius (10-25 mm).
    spacing_mm : (z, y, x) mm
        Voxel spacing; the field of view stays :data:`LUNG_FOV_MM`.

    Returns
    -------
    Case with site "lung", patient_id ``f"lung-{side}-seed{seed}"``, structures
    :data:`airtp.structures.names.LUNG_OARS` then GTV, CTV, PTV, and the
    prescription PTV 60 Gy in 30 fractions. CTV is limited to the lungs
    (peripheral) or to non-bone, non-airway body (central); PTV to the body
    less 3 mm. ``BrachialPlexus`` is on the tumour's side (right for central).
    Lung_L and Lung_R include the part of the GTV that lies in them.
    """
    if not isinstance(side, str) or side.lower() not in LUNG_SIDES:
        raise AirtpError(f"lung: side must be one of {', '.join(LUNG_SIDES)}, got {side!r}")
    side = side.lower()
    seed = _check_seed(seed)
    spacing = _check_spacing(spacing_mm, LUNG_FOV_MM)
    grid = _make_grid(LUNG_FOV_MM, spacing)
    rng_anat, _, rng_noise = _streams(seed, 2)
    j = _Jitter(rng_anat)

    size = j.f(0.03)
    scale = (j.u(0.95, 1.02), size * j.f(0.012), size * j.f(0.012))
    # Lung apex 12 mm below the top voxel.
    shift_z = (grid.shape[0] - 1) / 2.0 * spacing[0] - 12.0 + j.n(1.0)
    fr = _Frame(grid, shift_z, scale)
    parts = _Parts(fr, {}, {})
    bp_side = 1 if side == "left" else -1
    anat = _lung_anatomy(fr, parts, j, bp_side, spacing)

    # The tumour has its own stream per side: the same seed is the same patient with a different tumour.
    tj = _Jitter(np.random.default_rng(np.random.SeedSequence([seed, 2, 10 + LUNG_SIDES.index(side)])))
    gtv, centre, radius = _lung_tumour(fr, parts, anat, tj, side)
    lungs = parts.masks["Lung_L"] | parts.masks["Lung_R"]
    body = parts.masks["Body"]
    if side == "central":
        allowed = body & ~anat["bones"] & ~anat["airway"]
    else:
        allowed = lungs
    ctv = (margin(gtv, 5.0, spacing) & allowed) | gtv
    ptv = margin(ctv, 5.0, spacing) & margin(body, -3.0, spacing)
    parts.add("GTV", gtv, centre)
    parts.add("CTV", ctv, centre)
    parts.add("PTV", ptv, centre)
    parts.ensure_nonempty()

    ct = _lung_ct(fr, parts, anat)
    masks = {name: parts.masks[name] for name in (*LUNG_OARS, "GTV", "CTV", "PTV")}
    structures = StructureSet(grid, masks)
    ct_hu = _paint_noise(ct, body, rng_noise)
    meta = {
        "phantom": "lung",
        "phantom_version": _PHANTOM_VERSION,
        "seed": seed,
        "side": side,
        "tumour_centre_mm": [round(float(v), 2) for v in fr.to_patient(centre)],
        "gtv_radius_mm": round(float(radius), 2),
    }
    return Case(ct_hu, structures, [Prescription("PTV", 60.0, 30)], "lung", f"lung-{side}-seed{seed}", meta)


def _lung_anatomy(fr: _Frame, parts: _Parts, j: _Jitter, bp_side: int, spacing) -> dict:
    """Thorax organs in canonical mm (z = 0 at the lung apex)."""
    add = parts.add
    Z, Y, X = fr.zyx()
    zlo = float(fr.c[0][0]) - 10.0
    zhi = float(fr.c[0][-1]) + 10.0

    bz = [zlo, -140.0, -80.0, -30.0, 0.0, zhi]
    body_rx = np.array([154.0, 154.0, 150.0, 144.0, 135.0, 128.0]) * j.f(0.02)
    body_ry = np.array([105.0, 105.0, 102.0, 95.0, 86.0, 80.0]) * j.f(0.02)
    body = fr.loft(bz, 0.0, 0.0, body_ry, body_rx, p=2.2)
    add("Body", body, (-100.0, 0.0, 0.0))
    # Approximate inner surfaces of the body (the loft with smaller radii): 4 mm for bone, 10 mm of fat.
    inset = fr.loft(bz, 0.0, 0.0, body_ry - 4.0, body_rx - 4.0, p=2.2)
    under_fat = fr.loft(bz, 0.0, 0.0, body_ry - 10.0, body_rx - 10.0, p=2.2)
    cavity = fr.loft(bz, 2.0, 0.0, body_ry - 22.0, body_rx - 20.0, p=2.2)

    # Spine.
    vb = fr.loft([zlo, zhi], 42.0, 0.0, 14.0, 17.0) & (((Z + 400.0) % 23.0) >= 4.0)
    canal = fr.loft([zlo, zhi], 65.0, 0.0, 8.0, 8.0)
    arch = fr.loft([zlo, zhi], 65.0, 0.0, 13.0, 14.0) & ~canal & (Y >= 60.0)
    spinous = fr.loft([zlo, zhi], 85.0, 0.0, 12.0, 4.0)
    transverse = fr.loft([zlo, zhi], 60.0, 0.0, 6.0, 30.0) & ~canal
    spine = vb | ((arch | spinous | transverse) & (((Z + 410.0) % 23.0) >= 8.0))
    cord = fr.loft([zlo, zhi], 65.0 + j.n(1.0), 0.0, 4.5, 5.5 * j.f(0.04))
    add("SpinalCord", cord, (-100.0, 65.0, 0.0))

    # Ribs: a sloping, interrupted shell just outside the cavity; sternum; girdle.
    shell = fr.loft(bz, 2.0, 0.0, body_ry - 13.0, body_rx - 12.0, p=2.2) & ~cavity
    rib_phase = (Z + 0.3 * (80.0 - Y) + 400.0) % 24.0
    ribs = shell & (rib_phase < 9.0) & (Z <= -5.0) & ~((np.abs(X) < 25.0) & (Y < 0.0)) & ~(np.abs(X) < 20.0)
    front = _profile(bz, -(body_ry - 0.0))
    sternum = fr.loft([-185.0, -25.0], lambda z: front(z) + 14.0, 0.0, 6.0, [16.0, 24.0])
    girdle = fr.empty()
    for s in (1, -1):
        girdle |= fr.tube([(-22.0, -78.0, s * 22.0), (-12.0, -74.0, s * 60.0), (-2.0, -58.0, s * 100.0),
                           (4.0, -35.0, s * 125.0)], 7.0)  # clavicle
        girdle |= fr.ellipsoid((-60.0, 76.0, s * 95.0), (70.0, 6.0, 40.0), angle=-s * 35.0)  # scapula
    bones = (spine | ribs | sternum | girdle) & inset

    # Airways.
    tr_z = [-85.0, zhi]
    y_tr = _profile([-85.0, 15.0], [2.0, -15.0])
    trachea = fr.loft(tr_z, y_tr, 0.0, 9.0, 10.0 * j.f(0.04))
    tr_lumen = fr.loft(tr_z, y_tr, 0.0, 7.0, 8.0)
    carina = (-85.0, 2.0, 0.0)
    bronchi = fr.tube([carina, (-100.0, 8.0, -28.0), (-110.0, 10.0, -45.0)], 6.0)
    bronchi |= fr.tube([carina, (-102.0, 10.0, 30.0), (-115.0, 14.0, 50.0)], 6.0)
    br_lumen = fr.tube([carina, (-100.0, 8.0, -28.0), (-110.0, 10.0, -45.0)], 4.5)
    br_lumen |= fr.tube([carina, (-102.0, 10.0, 30.0), (-115.0, 14.0, 50.0)], 4.5)
    airway = tr_lumen | br_lumen
    add("Trachea", trachea, (-40.0, float(y_tr(-40.0)), 0.0))

    esophagus = fr.loft([zlo, -215.0, -180.0, -100.0, zhi], [0.0, 0.0, 10.0, 22.0, 20.0], [14.0, 14.0, 12.0, 5.0, 2.0],
                        6.0, 8.0 * j.f(0.05))

    # Heart: long axis from the base to the apex, to the left, anterior and inferior.
    hc = j.p((-145.0, -35.0, 15.0), 2.5)
    e1 = _unit((-0.45, -0.35, 0.82))
    ant = np.array([0.0, -1.0, 0.0])
    e_a = _unit(ant - (ant @ e1) * e1)
    e3 = np.cross(e1, e_a)
    hr = np.array([62.0, 45.0, 50.0]) * j.f(0.05)
    heart = fr.ellipsoid_axes(hc, hr, (e1, e_a, e3)) & ~esophagus & ~spine
    add("Heart", heart, hc)
    # LAD: in the anterior interventricular groove, from the base to the apex, 0.9 of the way to the surface.
    lad_pts = []
    for a in (-0.55, -0.3, 0.0, 0.3, 0.6, 0.85):
        w = np.sqrt(1.0 - a * a)
        local = a * hr[0] * e1 + w * np.cos(0.25) * hr[1] * e_a + w * np.sin(0.25) * hr[2] * e3
        lad_pts.append(np.asarray(hc) + 0.9 * local)
    add("LAD", fr.tube(lad_pts, 3.0), lad_pts[2])

    # Great vessels: aorta, SVC, pulmonary trunk and arteries (outside the heart).
    gv = fr.tube([(-135.0, -25.0, 6.0), (-100.0, -28.0, 2.0), (-70.0, -22.0, 0.0)], 15.0)
    gv |= fr.tube([(-70.0, -22.0, 0.0), (-60.0, -8.0, 8.0), (-62.0, 12.0, 18.0), (-72.0, 26.0, 26.0)], 13.0)
    gv |= fr.tube([(-72.0, 26.0, 26.0), (-120.0, 30.0, 30.0), (-190.0, 28.0, 26.0), (zlo, 20.0, 18.0)], 12.0)
    gv |= fr.tube([(-20.0, -25.0, -20.0), (-110.0, -28.0, -22.0)], 10.0)
    gv |= fr.tube([(-140.0, -45.0, 18.0), (-110.0, -30.0, 18.0)], 14.0)
    gv |= fr.tube([(-110.0, -30.0, 18.0), (-100.0, -15.0, 25.0), (-100.0, 0.0, 50.0)], 11.0)
    gv |= fr.tube([(-110.0, -30.0, 18.0), (-100.0, -14.0, 4.0), (-102.0, -12.0, -25.0), (-106.0, -8.0, -45.0)], 9.0)
    gv &= ~heart & ~trachea & ~bronchi & ~esophagus & ~spine
    add("GreatVessels", gv, (-100.0, -28.0, 2.0))
    esophagus &= ~trachea
    add("Esophagus", esophagus, (-100.0, 22.0, 5.0))

    # Lungs: the cavity less the mediastinum, below the apices and above the diaphragm.
    envelope = fr.loft([zlo, -150.0, -110.0, -70.0, -40.0, zhi], [0, -15, -15, -10, -10, -5], 0.0,
                       [60, 70, 70, 55, 45, 30], [25, 30, 45, 40, 28, 22])
    envelope |= margin(heart | gv | trachea | bronchi | esophagus, 2.0, spacing)
    envelope |= (np.abs(X) <= 22.0) & (Y >= 25.0)
    envelope |= bones
    med_fat = envelope & cavity & ~(heart | gv | trachea | bronchi | esophagus | bones) & (Z > -172.0)
    for s, lat in ((1, "L"), (-1, "R")):
        apex = (-(((s * X - 52.0) / 30.0) ** 2 + ((Y - 25.0) / 35.0) ** 2) * 10.0) >= Z
        top = -150.0 - (10.0 if s > 0 else 0.0) + j.n(3.0)
        q = ((X - s * 55.0) / 70.0) ** 2 + (np.clip(Y + 5.0, 0.0, None) / 90.0) ** 2
        q = np.minimum(q + (np.clip(-5.0 - Y, 0.0, None) / 150.0) ** 2, 1.4)
        above_diaphragm = Z > top - 30.0 * q
        lung_mask = cavity & (s * X > 0) & ~envelope & apex & above_diaphragm
        add(f"Lung_{lat}", lung_mask, (-100.0, 20.0, s * 80.0))

    lung_side = parts.masks["Lung_L" if bp_side > 0 else "Lung_R"]
    s = bp_side
    path = [(15.0, 20.0, s * 35.0), (6.0, 8.0, s * 58.0), (-6.0, -8.0, s * 82.0), (-18.0, -22.0, s * 105.0)]
    path = [j.p(pt, 1.0) for pt in path]
    add("BrachialPlexus", fr.tube(path, 5.0) & ~bones & ~lung_side, path[1])

    for name, mask in parts.masks.items():
        if name != "Body":
            mask &= body
    return {"bones": bones, "airway": airway & body, "canal": canal & body, "med_fat": med_fat & body,
            "fat": body & ~under_fat,
            "spine": spine & bones, "ribs": ribs & bones, "lung_hu": HU_LUNG + j.n(15.0)}


def _lung_tumour(fr: _Frame, parts: _Parts, anat: dict, tj: _Jitter, side: str):
    """GTV mask, canonical centre and nominal radius (mm) of the tumour.

    Peripheral: a centre 62-105 mm (canonical) lateral, drawn until at least
    95 % of the GTV lies in the lung of that side. Central: a subcarinal /
    para-hilar mass within 10 mm of the midline, drawn until at most 15 % of it
    falls in the heart, great vessels, oesophagus, bone or airway lumen. Either
    way the GTV excludes these and the spinal canal, whatever the draw: the
    tumour abuts the organs rather than containing them.
    """
    m = parts.masks
    radius = tj.u(10.0, 25.0)
    excluded = m["Heart"] | m["GreatVessels"] | m["Esophagus"] | anat["bones"] | anat["airway"] | anat["canal"]
    best = None
    for _ in range(200):
        r = np.clip(radius * np.array([tj.f(0.08), tj.f(0.08), tj.f(0.08)]), 10.0, 25.0)
        angle = tj.u(0.0, 180.0)
        if side == "central":
            c = (tj.u(-112.0, -95.0), tj.u(2.0, 12.0), tj.u(-10.0, 10.0))
            sphere = fr.ellipsoid(c, r, angle=angle)
            score = 1.0 - (sphere & excluded).sum() / max(int(sphere.sum()), 1)
            ok = score >= 0.85
        else:
            s = 1 if side == "left" else -1
            c = (tj.u(-150.0, -35.0), tj.u(-45.0, 55.0), s * tj.u(62.0, 105.0))
            sphere = fr.ellipsoid(c, r, angle=angle)
            score = (sphere & m["Lung_L" if s > 0 else "Lung_R"]).sum() / max(int(sphere.sum()), 1)
            ok = score >= 0.95
        if best is None or score > best[0]:
            best = (score, sphere, c)
        if ok:
            break
    _, sphere, c = best
    return sphere & m["Body"] & ~excluded, c, radius


def _lung_ct(fr: _Frame, parts: _Parts, anat: dict) -> np.ndarray:
    m = parts.masks
    body = m["Body"]
    ct = np.full(fr.shape, float(HU_AIR), dtype=np.float32)
    ct[body] = HU_SOFT
    ct[anat["fat"]] = HU_FAT
    ct[anat["med_fat"]] = -80
    ct[anat["canal"]] = HU_WATERY
    ct[m["SpinalCord"]] = HU_BRAIN
    ct[anat["bones"]] = HU_BONE_SPONGY
    ct[anat["ribs"]] = HU_BONE
    ct[m["Lung_L"] | m["Lung_R"]] = anat["lung_hu"]
    ct[m["GTV"]] = 30
    ct[anat["airway"]] = HU_AIR
    return ct
