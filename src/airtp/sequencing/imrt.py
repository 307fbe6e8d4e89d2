"""IMRT leaf sequencing: step-and-shoot (Engel) and sliding window.

Step-and-shoot (``step-and-shoot``): each beam's fluence, as one profile per
leaf pair (:func:`airtp.sequencing.leaves.leaf_profiles`), is quantised to
``levels`` intensity levels of its maximum and decomposed by Engel's
algorithm (least total MU, few segments); segments are then re-weighted
(:func:`airtp.sequencing.refine.refine_mu`) and those under
``min_segment_mu`` dropped before a final re-weighting with that floor.
Segment edges fall on beamlet edges. Segments are delivered in a greedy
order of short leaf moves, closed pairs wait behind the X jaw on the side
where they open next, and the jaws frame every opening of the beam.

Sliding window (``sliding-window``): each pair sweeps left to right at most at
the maximum leaf speed (at the maximum dose rate) delivering its profile
(:func:`airtp.sequencing.leaves.sweep`); control points sample the sweep
every ``resolution_mm`` of leaf travel; one MU scale per beam is refined.
"""

from __future__ import annotations

import numpy as np

from airtp.errors import SequencingError
from airtp.sequencing.base import SequencingProblem
from airtp.sequencing.engel import engel_decompose
from airtp.sequencing.fluence import beam_fluence_on_grid, grid_edges, row_pair_overlap, swept_fraction
from airtp.sequencing.leaves import (
    control_points, fix_gaps, is_open, jaws_for, leaf_profiles, park_closed, sweep, total_variation,
)
from airtp.sequencing.limits import check_limits, time_plan
from airtp.sequencing.plan import DeliveryBeam, DeliveryPlan
from airtp.sequencing.refine import refine_mode, refine_mu

__all__ = ["StepAndShoot", "SlidingWindow", "aperture_on_grid"]


def aperture_on_grid(x1: np.ndarray, x2: np.ndarray, grid, boundaries) -> np.ndarray:
    """Open fraction (ny, nx) of each beamlet of `grid` under static leaves x1, x2 (one value per machine pair)."""
    xe, ye = grid_edges(grid)
    frac = swept_fraction(x1[:, None], x2[:, None], x1[:, None], x2[:, None], xe[None, :-1], xe[None, 1:])
    return row_pair_overlap(boundaries, ye) @ frac


def _check_fields(problem: SequencingProblem, name: str) -> None:
    if problem.arcs:
        raise SequencingError(f"sequencer '{name}' sequences static fields, not arcs; use the 'vmat' sequencer")


def _park_side(x1: np.ndarray, x2: np.ndarray, open_: np.ndarray, jaw_x) -> np.ndarray:
    """(N, P): park a closed pair behind X2 when its next opening (else its last) lies on the X2 half of the field."""
    mid = 0.5 * (jaw_x[0] + jaw_x[1])
    centre = np.where(open_, 0.5 * (x1 + x2), np.nan)
    ahead = centre.copy()
    for i in range(centre.shape[0] - 2, -1, -1):  # next opening at or after each control point
        ahead[i] = np.where(np.isnan(ahead[i]), ahead[i + 1], ahead[i])
    behind = centre.copy()
    for i in range(1, centre.shape[0]):  # else the last one before it
        behind[i] = np.where(np.isnan(behind[i]), behind[i - 1], behind[i])
    where = np.where(np.isnan(ahead), behind, ahead)
    return np.nan_to_num(where, nan=mid - 1.0) > mid


def _beam(problem, b, kind, cum_mu, x1, x2) -> DeliveryBeam:
    """A static-gantry DeliveryBeam from leaf arrays (N, P) with NaN for closed pairs."""
    m = problem.machine
    closed = np.isnan(x1)
    x1, x2 = np.where(closed, 0.0, x1), np.where(closed, m.min_leaf_gap_mm, x2)
    x1, x2 = fix_gaps(x1, x2, m)
    open_ = is_open(x1, x2, m) & ~closed
    jaw_x, jaw_y = jaws_for(x1, x2, open_, m)
    # closed pairs wait behind the jaw on the side where they open next: short moves between segments
    x1, x2 = park_closed(x1, x2, ~open_, jaw_x, m, _park_side(x1, x2, open_, jaw_x))
    beam = problem.beams[b]
    cps = control_points(np.full(len(cum_mu), beam.gantry_deg % 360.0), cum_mu, x1, x2, jaw_x, jaw_y)
    return DeliveryBeam(beam.name, kind, float(beam.collimator_deg), float(beam.couch_deg), tuple(beam.isocenter_mm),
                        list(m.leaf_boundaries_mm), cps, sad_mm=float(beam.sad_mm))


def _travel_order(x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """Segment order by a greedy walk: start at the leftmost, then always the segment reached by the shortest
    largest leaf move (pairs closed in either segment are free: they wait behind a jaw)."""
    k = x1.shape[0]
    if k <= 2:
        return np.argsort(np.nanmean(x1 + x2, axis=1), kind="stable")
    with np.errstate(invalid="ignore"):
        d1 = np.abs(x1[:, None, :] - x1[None, :, :])
        d2 = np.abs(x2[:, None, :] - x2[None, :, :])
    cost = np.nanmax(np.fmax(d1, d2), axis=2, initial=0.0)
    order = [int(np.argmin(np.nanmean(x1 + x2, axis=1)))]
    left = set(range(k)) - set(order)
    while left:
        nxt = min(left, key=lambda j: (cost[order[-1], j], j))
        order.append(nxt)
        left.remove(nxt)
    return np.array(order)


def _finish(problem, name, beams) -> DeliveryPlan:
    plan = DeliveryPlan(problem.machine.name, name, beams, fractions=problem.fractions)
    time_plan(plan, problem.machine)
    plan.limits_checked = check_limits(plan, problem.machine)
    return plan


class StepAndShoot:
    """Step-and-shoot segments by Engel's decomposition (see the module doc).

    Parameters
    ----------
    levels : int
        Intensity levels of each beam's maximum fluence (2..100). Scorecard
        items with cliffs (e.g. lung CTV coverage 100 %) made 20 levels lose
        up to 5 points on the phantoms; 30 lost under 1 at about 19
        segments per head-and-neck beam.
    min_segment_mu : float
        Least MU per segment and fraction; smaller segments are dropped.
    refine : str or bool
        Re-weighting of segment MU (:func:`airtp.sequencing.refine.refine_mu`):
        ``fluence`` (default), ``dose`` or ``none`` (segments keep their
        quantised MU).
    target_weight : float
        Weight of target voxels in a ``dose`` re-weighting.
    """

    name = "step-and-shoot"
    techniques = ("imrt",)

    def __init__(self, levels: int = 30, min_segment_mu: float = 1.0, refine="fluence", target_weight: float = 4.0):
        if not 2 <= int(levels) <= 100:
            raise SequencingError(f"step-and-shoot: levels must be 2..100, got {levels}")
        if not (np.isfinite(min_segment_mu) and min_segment_mu >= 0):
            raise SequencingError(f"step-and-shoot: min_segment_mu must be >= 0, got {min_segment_mu}")
        self.levels = int(levels)
        self.min_segment_mu = float(min_segment_mu)
        self.refine = refine_mode(refine, self.name)
        self.target_weight = float(target_weight)

    def segments(self, problem: SequencingProblem, b: int):
        """(x1, x2, mu): leaf positions (k, P) (NaN: closed) and MU per fraction of beam `b`'s segments."""
        n_pairs = problem.machine.n_pairs
        pairs, prof, xe = leaf_profiles(problem, b)
        peak = float(prof.max()) if prof.size else 0.0
        if peak <= 0:
            return np.zeros((0, n_pairs)), np.zeros((0, n_pairs)), np.zeros(0)
        unit = peak / self.levels
        found: dict[tuple, float] = {}
        for u, l, r in engel_decompose(np.rint(prof / unit).astype(np.int64)):
            key = tuple(zip(l.tolist(), r.tolist()))
            found[key] = found.get(key, 0.0) + u * unit  # identical apertures become one segment
        x1 = np.full((len(found), n_pairs), np.nan)
        x2 = np.full((len(found), n_pairs), np.nan)
        for k, key in enumerate(found):
            l, r = np.array(key).T
            rows = r > l
            x1[k, pairs[rows]] = xe[l[rows]]
            x2[k, pairs[rows]] = xe[r[rows]]
        order = _travel_order(x1, x2)
        return x1[order], x2[order], np.array(list(found.values()))[order]

    def _columns(self, problem, segs):
        cols = []
        for b, (x1, x2, _) in enumerate(segs):
            if x1.shape[0]:
                phi = np.stack([aperture_on_grid(np.nan_to_num(a), np.nan_to_num(c), problem.grids[b],
                                                 problem.machine.leaf_boundaries_mm) for a, c in zip(x1, x2)])
                cols.append((b, phi))
        return cols

    def _weights(self, problem, segs) -> list:
        mu0 = np.concatenate([s[2] for s in segs])
        floor = self.min_segment_mu
        if self.refine == "none":
            mu = np.where(mu0 >= floor, mu0, 0.0)
        else:
            cols = self._columns(problem, segs)
            mu = refine_mu(problem, cols, mu0, mode=self.refine, target_weight=self.target_weight)
            small = mu < floor
            if small.any() and floor > 0:
                keep = ~small
                kept = [(b, phi[keep[o:o + phi.shape[0]]]) for (b, phi), o in
                        zip(cols, np.cumsum([0] + [c[1].shape[0] for c in cols])[:-1])]
                kept = [(b, phi) for b, phi in kept if phi.shape[0]]
                mu = np.zeros_like(mu0)
                if keep.any():
                    mu[keep] = refine_mu(problem, kept, np.maximum(mu0[keep], floor), lower=np.full(keep.sum(), floor),
                                         mode=self.refine, target_weight=self.target_weight)
        out, o = [], 0
        for _, _, m in segs:
            out.append(mu[o:o + m.size])
            o += m.size
        return out

    def sequence(self, problem: SequencingProblem) -> DeliveryPlan:
        _check_fields(problem, self.name)
        segs = [self.segments(problem, b) for b in range(len(problem.beams))]
        weights = self._weights(problem, segs)
        beams = []
        for b, ((x1, x2, _), mu) in enumerate(zip(segs, weights)):
            keep = mu > 0
            x1, x2, mu = x1[keep], x2[keep], mu[keep]
            if mu.size == 0:  # nothing to deliver: two closed control points
                x1 = x2 = np.full((1, problem.machine.n_pairs), np.nan)
                mu = np.zeros(1)
            cum = np.repeat(np.concatenate([[0.0], np.cumsum(mu)]), 2)[1:-1]
            beams.append(_beam(problem, b, "step_and_shoot", cum, np.repeat(x1, 2, axis=0), np.repeat(x2, 2, axis=0)))
        return _finish(problem, self.name, beams)


class SlidingWindow:
    """Dynamic MLC (sliding window) at a fixed gantry (see the module doc).

    Parameters
    ----------
    resolution_mm : float
        Most leaf travel between control points.
    max_control_points : int
        Cap on control points per beam (the travel per interval grows past it).
    refine : str or bool
        Refine one MU scale per beam: ``fluence`` (default), ``dose`` or ``none``.
    """

    name = "sliding-window"
    techniques = ("imrt",)

    def __init__(self, resolution_mm: float = 2.5, max_control_points: int = 200, refine="fluence",
                 target_weight: float = 4.0):
        if not (np.isfinite(resolution_mm) and resolution_mm > 0):
            raise SequencingError(f"sliding-window: resolution_mm must be positive, got {resolution_mm}")
        if int(max_control_points) < 3:
            raise SequencingError(f"sliding-window: max_control_points must be >= 3, got {max_control_points}")
        self.resolution_mm = float(resolution_mm)
        self.max_control_points = int(max_control_points)
        self.refine = refine_mode(refine, self.name)
        self.target_weight = float(target_weight)

    def trajectories(self, problem: SequencingProblem, b: int):
        """(cumulative MU (N,), x1 (N, P), x2 (N, P)) of beam `b`; NaN marks pairs that stay closed."""
        m = problem.machine
        pairs, prof, xe = leaf_profiles(problem, b)
        mm_per_mu = m.max_leaf_speed_mm_s / m.max_dose_rate_mu_s  # leaf travel per MU at full dose rate
        need = []
        for row in prof:
            nz = np.flatnonzero(row > 0)
            need.append(0.0 if nz.size == 0 else total_variation(row) + (xe[nz[-1] + 1] - xe[nz[0]]) / mm_per_mu)
        total = max(need, default=0.0)
        if total <= 0:
            return np.zeros(2), np.full((2, m.n_pairs), np.nan), np.full((2, m.n_pairs), np.nan)
        n = int(np.clip(np.ceil(total * mm_per_mu / self.resolution_mm), 2, self.max_control_points - 1))
        taus = np.linspace(0.0, total, n + 1)
        x1 = np.full((n + 1, m.n_pairs), np.nan)
        x2 = np.full((n + 1, m.n_pairs), np.nan)
        for p, row in zip(pairs, prof):
            a, c = sweep(row, xe, total, taus)
            if a is not None:
                x1[:, p], x2[:, p] = a, c
        return taus, x1, x2

    def sequence(self, problem: SequencingProblem) -> DeliveryPlan:
        _check_fields(problem, self.name)
        beams = [_beam(problem, b, "sliding_window", *self.trajectories(problem, b)) for b in range(len(problem.beams))]
        if self.refine != "none":
            cols, mu0, which = [], [], []
            for b, beam in enumerate(beams):
                if beam.mu > 0:
                    cols.append((b, beam_fluence_on_grid(beam, problem.grids[b])[None] / beam.mu))
                    mu0.append(beam.mu)
                    which.append(b)
            if cols:
                mu = refine_mu(problem, cols, np.array(mu0), mode=self.refine, target_weight=self.target_weight)
                for b, new, old in zip(which, mu, mu0):
                    for cp in beams[b].control_points:
                        cp.cumulative_mu *= new / old
        return _finish(problem, self.name, beams)
