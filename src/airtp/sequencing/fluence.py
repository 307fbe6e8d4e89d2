"""What a sequenced beam delivers: the fluence of MLC apertures and of leaves sweeping between control points.

Geometry: BEV mm at the isocentre plane; leaf pair ``p`` spans BEV y in
``[b_p, b_p+1]`` and opens x in ``[x1_p, x2_p]``; the jaws cut both.

Between two control points the leaves move linearly with the cumulative MU
(DICOM), so the fluence an interval of ``dMU`` gives to a strip ``[lo, hi]``
of a leaf pair is ``dMU`` times the mean, over the interval, of the open
length of the strip divided by its width. That open length is piecewise linear
in the meterset fraction with kinks only where a leaf crosses ``lo`` or
``hi``, so the trapezoid rule over those crossings is exact
(:func:`swept_fraction`); a static segment is the special case of leaves that
do not move.

Fluence is kept in MU per fraction here; the dose engine's weight is
``MU * fractions / mu_per_weight`` (see :meth:`airtp.beams.machine.Machine.mu_per_weight`).
"""

from __future__ import annotations

import numpy as np

from airtp.beams.beam import BeamletGrid
from airtp.errors import SequencingError

__all__ = [
    "swept_fraction", "BeamArrays", "beam_arrays", "row_pair_overlap", "pair_row_weights", "beam_fluence_on_grid",
    "fine_fluence_grids", "grid_edges", "interval_midpoints", "nearest_angle",
]


def swept_fraction(x1a, x2a, x1b, x2b, lo, hi) -> np.ndarray:
    """Mean open fraction of strips [lo, hi] while a leaf pair moves linearly from (x1a, x2a) to (x1b, x2b).

    Arrays broadcast (leaves typically (P, 1), strip edges (1, E)); strips of
    zero width give 0. Exact for linear leaf motion (see the module doc).
    """
    x1a, x2a, x1b, x2b, lo, hi = np.broadcast_arrays(*(np.asarray(v, float) for v in (x1a, x2a, x1b, x2b, lo, hi)))
    d1, d2 = x1b - x1a, x2b - x2a

    def crossing(start, delta, at):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (at - start) / delta
        return np.where(np.isfinite(t), np.clip(t, 0.0, 1.0), 0.0)

    # the leaves cannot cross in a valid interval, but a closing gap is a kink too
    ts = np.stack([np.zeros_like(lo), np.ones_like(lo), crossing(x1a, d1, lo), crossing(x1a, d1, hi),
                   crossing(x2a, d2, lo), crossing(x2a, d2, hi), crossing(x1a - x2a, d1 - d2, 0.0)], axis=-1)
    ts.sort(axis=-1)
    x1 = x1a[..., None] + ts * d1[..., None]
    x2 = x2a[..., None] + ts * d2[..., None]
    open_ = np.maximum(0.0, np.minimum(hi[..., None], x2) - np.maximum(lo[..., None], x1))
    mean = np.sum(0.5 * (open_[..., 1:] + open_[..., :-1]) * np.diff(ts, axis=-1), axis=-1)
    width = hi - lo
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(width > 0, mean / width, 0.0)


class BeamArrays:
    """A delivery beam's control points as arrays: gantry (N,), cumulative MU (N,), leaves (N, P), jaws (N, 2)."""

    def __init__(self, beam):
        cps = beam.control_points
        if len(cps) < 2:
            raise SequencingError(f"beam '{beam.name}': needs at least two control points, has {len(cps)}")
        self.name = beam.name
        self.boundaries = np.asarray(beam.leaf_boundaries_mm, float)
        self.gantry = np.array([cp.gantry_deg for cp in cps], float)
        self.mu = np.array([cp.cumulative_mu for cp in cps], float)
        try:
            self.x1 = np.array([cp.mlc_x1_mm for cp in cps], float)
            self.x2 = np.array([cp.mlc_x2_mm for cp in cps], float)
            self.jaw_x = np.array([cp.jaw_x_mm for cp in cps], float).reshape(len(cps), 2)
            self.jaw_y = np.array([cp.jaw_y_mm for cp in cps], float).reshape(len(cps), 2)
        except ValueError:
            raise SequencingError(f"beam '{beam.name}': control points have leaf or jaw lists of different lengths") \
                from None
        n_pairs = self.boundaries.size - 1
        if self.x1.shape != (len(cps), n_pairs) or self.x2.shape != self.x1.shape:
            raise SequencingError(f"beam '{beam.name}': every control point needs {n_pairs} positions per leaf bank "
                                  f"(one per leaf pair of the boundaries)")
        self.dose_rate = np.array([np.nan if cp.dose_rate_mu_min is None else cp.dose_rate_mu_min for cp in cps], float)

    @property
    def n(self) -> int:
        return self.gantry.size

    @property
    def dmu(self) -> np.ndarray:
        """MU of each interval between consecutive control points (N - 1,)."""
        return np.diff(self.mu)


def beam_arrays(beam) -> BeamArrays:
    return BeamArrays(beam)


def row_pair_overlap(boundaries, row_edges, jaw_y=None) -> np.ndarray:
    """(rows, pairs): the fraction of each row's height that leaf pair p covers inside the jaws."""
    b = np.asarray(boundaries, float)
    lo, hi = b[:-1], b[1:]
    if jaw_y is not None:
        lo, hi = np.maximum(lo, jaw_y[0]), np.minimum(hi, jaw_y[1])
    e = np.asarray(row_edges, float)
    over = np.clip(np.minimum(e[1:, None], hi[None, :]) - np.maximum(e[:-1, None], lo[None, :]), 0.0, None)
    return over / np.diff(e)[:, None]


def grid_edges(grid: BeamletGrid) -> tuple[np.ndarray, np.ndarray]:
    """BEV x and y edges (mm) of a beamlet grid's columns and rows."""
    ny, nx = grid.shape
    sx, sy = grid.size_mm
    return (grid.x0_mm - sx / 2 + sx * np.arange(nx + 1), grid.y0_mm - sy / 2 + sy * np.arange(ny + 1))


def pair_row_weights(boundaries, grid: BeamletGrid, beam_name: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Leaf pairs over a beamlet grid and the (pairs, rows) weights that average rows into pair profiles.

    A 5 mm leaf over 5 mm beamlet rows takes its row; a 10 mm leaf the mean of
    the two rows it covers (it can deliver one profile only). Raises when a
    row that has beamlets lies outside the MLC.
    """
    b = np.asarray(boundaries, float)
    _, ye = grid_edges(grid)
    used = grid.active.any(axis=1)
    if used.any():
        rows = np.flatnonzero(used)
        if ye[rows[0]] < b[0] - 1e-6 or ye[rows[-1] + 1] > b[-1] + 1e-6:
            raise SequencingError(
                f"beam '{beam_name}': the fluence spans BEV y [{ye[rows[0]]:.1f}, {ye[rows[-1] + 1]:.1f}] mm, beyond "
                f"the MLC's [{b[0]:.1f}, {b[-1]:.1f}] mm")
    over = row_pair_overlap(b, ye).T * (np.diff(ye)[None, :] / np.diff(b)[:, None])  # (pairs, rows) / pair width
    pairs = np.flatnonzero(over[:, used].sum(axis=1) > 1e-9) if used.any() else np.zeros(0, int)
    return pairs, over[pairs]


def _interval_mask(a: BeamArrays, intervals) -> np.ndarray:
    keep = a.dmu > 0
    if intervals is not None:
        sel = np.zeros(a.n - 1, bool)
        sel[np.asarray(intervals, int)] = True
        keep &= sel
    return keep


def _static_jaws(a: BeamArrays) -> tuple[np.ndarray, np.ndarray]:
    # the dose model assumes jaws that hold still while the beam is on
    on = np.flatnonzero(a.dmu > 0)
    for i in on:
        if not (np.allclose(a.jaw_x[i], a.jaw_x[i + 1]) and np.allclose(a.jaw_y[i], a.jaw_y[i + 1])):
            raise SequencingError(f"beam '{a.name}': jaws move while the beam is on (control point {i} to {i + 1}); "
                                  f"moving jaws are not supported")
    i = on[0] if on.size else 0
    return a.jaw_x[i], a.jaw_y[i]


def pair_fluence(a: BeamArrays, x_edges, intervals=None, per_interval: bool = False) -> np.ndarray:
    """MU per fraction on strips ``x_edges`` of every leaf pair: (pairs, strips), or (intervals, pairs, strips).

    Jaw X cuts the strips; jaw Y is applied by the callers (it weights whole pairs).
    """
    jx, _ = _static_jaws(a)
    e = np.asarray(x_edges, float)
    lo = np.clip(e[:-1], jx[0], jx[1])[None, :]
    hi = np.clip(e[1:], jx[0], jx[1])[None, :]
    width = np.diff(e)[None, :]
    keep = np.flatnonzero(_interval_mask(a, intervals))
    out = np.zeros((keep.size, a.x1.shape[1], e.size - 1)) if per_interval else np.zeros((a.x1.shape[1], e.size - 1))
    for k, i in enumerate(keep):
        f = swept_fraction(a.x1[i][:, None], a.x2[i][:, None], a.x1[i + 1][:, None], a.x2[i + 1][:, None], lo, hi)
        f = f * ((hi - lo) / width) * a.dmu[i]  # the jaw-cut part of each strip, per strip width
        if per_interval:
            out[k] = f
        else:
            out += f
    return out


def beam_fluence_on_grid(beam, grid: BeamletGrid, intervals=None, per_interval: bool = False) -> np.ndarray:
    """MU per fraction that `beam` (a DeliveryBeam) gives each beamlet of `grid`: (ny, nx), or (intervals, ny, nx).

    A beamlet partly covered by a leaf or jaw edge gets its open fraction
    (area-weighted), which is what the beamlet dose-influence matrix can
    represent; :func:`fine_fluence_grids` resolves the edge at 1 mm instead.
    """
    a = beam if isinstance(beam, BeamArrays) else BeamArrays(beam)
    xe, ye = grid_edges(grid)
    _, jy = _static_jaws(a)
    rows = row_pair_overlap(a.boundaries, ye, jy)  # (ny, pairs)
    f = pair_fluence(a, xe, intervals, per_interval)
    if per_interval:
        return np.einsum("yp,kpx->kyx", rows, f)
    return rows @ f


def fine_fluence_grids(beam, scale: float = 1.0, resolution_mm: float = 1.0, intervals=None) -> list[BeamletGrid]:
    """The beam's fluence as element grids for :func:`airtp.dose.dose_of_fluence`.

    Elements are ``resolution_mm`` (x, on multiples of it, as
    :func:`airtp.dose.dose_of_aperture` lays them) by one leaf width (y); one
    grid per run of equal-width leaf pairs; weights are MU per fraction times
    `scale` (MU -> beamlet weight of the whole course). A pair cut by jaw Y
    gets its open share of the weight over the full leaf width.
    """
    a = beam if isinstance(beam, BeamArrays) else BeamArrays(beam)
    jx, jy = _static_jaws(a)
    keep = _interval_mask(a, intervals)
    if not keep.any():
        return []
    on = np.flatnonzero(keep)
    idx = np.concatenate([on, on + 1])
    r = float(resolution_mm)
    lo = max(jx[0], float(np.min(a.x1[idx])))
    hi = min(jx[1], float(np.max(a.x2[idx])))
    if hi <= lo:
        return []
    k1, k2 = int(np.floor(lo / r + 1e-9)), int(np.ceil(hi / r - 1e-9))
    edges = (k1 + np.arange(k2 - k1 + 1)) * r
    b = a.boundaries
    yfrac = np.clip(np.minimum(b[1:], jy[1]) - np.maximum(b[:-1], jy[0]), 0.0, None) / np.diff(b)
    flu = pair_fluence(a, edges, intervals) * yfrac[:, None] * scale
    grids = []
    widths = np.diff(b)
    p = 0
    while p < widths.size:
        q = p
        while q + 1 < widths.size and np.isclose(widths[q + 1], widths[p]):
            q += 1
        block = flu[p:q + 1].astype(np.float32)
        if np.any(block > 0):
            grids.append(BeamletGrid((k1 + 0.5) * r, 0.5 * (b[p] + b[p + 1]), (r, float(widths[p])), block > 0, block))
        p = q + 1
    return grids


def interval_midpoints(gantry_deg, direction: str) -> np.ndarray:
    """Gantry angle (deg, [0, 360)) halfway through each interval between control points at `gantry_deg`."""
    from airtp.sequencing.limits import gantry_steps

    g = np.asarray(gantry_deg, float)
    sign = -1.0 if direction == "CC" else 1.0
    return np.mod(g[:-1] + sign * 0.5 * gantry_steps(g, direction), 360.0)


def nearest_angle(angles_deg, choices_deg) -> np.ndarray:
    """Index of the nearest of `choices_deg` (circular distance) for every angle; ties go to the first."""
    a = np.asarray(angles_deg, float)[:, None]
    c = np.asarray(choices_deg, float)[None, :]
    d = np.abs(np.mod(a - c + 180.0, 360.0) - 180.0)
    return np.argmin(d, axis=1)
