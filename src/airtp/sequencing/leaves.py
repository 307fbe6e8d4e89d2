"""Leaf-level building blocks shared by the sequencers.

- :func:`leaf_profiles`: a beam's fluence as one profile per leaf pair (rows of
  beamlets averaged under wide leaves), MU per fraction, with its bin edges;
- :func:`sweep`: unidirectional sliding-window leaf trajectories of one
  profile over a given MU (the leading leaf waits where the profile falls, the
  trailing one where it rises, both cross bins at one pace);
- :func:`speed_project`: leaf positions over control points made to move at
  most a given distance per interval;
- :func:`jaws_for`, :func:`park_closed`: jaws around what opens, closed pairs
  hidden under the X1 jaw;
- :func:`control_points`: the arrays as :class:`ControlPoint` objects.

All positions are BEV mm at the isocentre plane; MU are per fraction.
"""

from __future__ import annotations

import numpy as np

from airtp.errors import SequencingError
from airtp.sequencing.fluence import grid_edges, pair_row_weights
from airtp.sequencing.plan import ControlPoint

__all__ = ["leaf_profiles", "sweep", "total_variation", "speed_project", "jaws_for", "park_closed", "control_points",
           "fix_gaps", "is_open"]


def leaf_profiles(problem, b: int):
    """(pairs, profiles, x_edges): machine pair indices over beam `b`'s grid, (pairs, nx) MU per fraction, (nx + 1,) mm."""
    beam, grid = problem.beams[b], problem.grids[b]
    pairs, weights = pair_row_weights(problem.machine.leaf_boundaries_mm, grid, beam.name)
    profiles = weights @ problem.fluence_mu(b)
    xe, _ = grid_edges(grid)
    lo, hi = problem.machine.leaf_range_mm
    cols = np.flatnonzero((profiles > 0).any(axis=0)) if profiles.size else np.zeros(0, int)
    if cols.size and (xe[cols[0]] < lo - 1e-6 or xe[cols[-1] + 1] > hi + 1e-6):
        raise SequencingError(f"beam '{beam.name}': the fluence spans BEV x [{xe[cols[0]]:.1f}, {xe[cols[-1] + 1]:.1f}] "
                              f"mm, beyond the leaves' range [{lo:g}, {hi:g}] mm")
    return pairs, profiles, xe


def total_variation(profile: np.ndarray) -> float:
    """Sum of the rises of a profile from 0 (= the sum of its falls back to 0): its least MU."""
    return float(np.maximum(np.diff(np.asarray(profile, float), prepend=0.0), 0.0).sum())


def sweep(profile, edges, total_mu: float, taus, direction: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Leaf positions (x1, x2) at cumulative MU `taus` of a sliding window delivering `profile` in `total_mu`.

    The leaves start closed at the profile's first edge and end closed at its
    last (direction +1: left to right; -1: right to left). The leading leaf
    waits ``max(0, I_k - I_k+1)`` MU at each falling edge, the trailing one
    ``max(0, I_k - I_k-1)`` at each rising edge, and both cross every mm in
    ``(total_mu - TV) / width`` MU, so the opening at x stays open exactly I(x)
    MU. ``total_mu`` must be at least the profile's total variation TV.
    Returns None for an all-zero profile.
    """
    f = np.asarray(profile, float)
    e = np.asarray(edges, float)
    if direction < 0:
        x1, x2 = sweep(f[::-1], -e[::-1], total_mu, taus, 1) if f.any() else (None, None)
        return (None, None) if x1 is None else (-x2, -x1)
    nz = np.flatnonzero(f > 0)
    if nz.size == 0:
        return None, None
    f = f[nz[0]:nz[-1] + 1]
    e = e[nz[0]:nz[-1] + 2]
    h = np.diff(e)
    tv = total_variation(f)
    slack = total_mu - tv
    if slack < -1e-9 * max(tv, 1.0):
        raise ValueError(f"total MU {total_mu} below the profile's total variation {tv}")
    pace = max(slack, 0.0) / float(e[-1] - e[0])  # MU per mm while crossing a bin
    fall = np.maximum(f - np.append(f[1:], 0.0), 0.0)  # leading leaf waits after bin k
    rise = np.maximum(f - np.concatenate([[0.0], f[:-1]]), 0.0)  # trailing leaf waits before bin k
    n = f.size
    # leading leaf: cross bin k, then wait fall[k]
    lead_t = np.zeros(2 * n + 1)
    lead_x = np.zeros(2 * n + 1)
    lead_x[0] = e[0]
    cross = pace * h
    lead_t[1::2] = np.cumsum(cross + np.concatenate([[0.0], fall[:-1]]))
    lead_t[2::2] = lead_t[1::2] + fall
    lead_x[1::2] = e[1:]
    lead_x[2::2] = e[1:]
    # trailing leaf: wait rise[k], then cross bin k
    trail_t = np.zeros(2 * n + 1)
    trail_x = np.zeros(2 * n + 1)
    trail_t[1::2] = np.cumsum(rise + np.concatenate([[0.0], cross[:-1]]))
    trail_t[2::2] = trail_t[1::2] + cross
    trail_x[0] = e[0]
    trail_x[1::2] = e[:-1]
    trail_x[2::2] = e[1:]
    t = np.asarray(taus, float)
    return np.interp(t, trail_t, trail_x), np.interp(t, lead_t, lead_x)


def speed_project(x: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Positions (N, P) changed as little as a simple rule allows so that |x_i+1 - x_i| <= step_i (N - 1,).

    The mean of the tightest upper and lower envelopes of slope `step` around
    the positions: both envelopes obey the bound, so their mean does, and it
    equals x wherever x already did.
    """
    x = np.asarray(x, float)
    s = np.asarray(step, float)
    up, lo = x.copy(), x.copy()
    for i in range(1, x.shape[0]):
        up[i] = np.minimum(up[i], up[i - 1] + s[i - 1])
        lo[i] = np.maximum(lo[i], lo[i - 1] - s[i - 1])
    for i in range(x.shape[0] - 2, -1, -1):
        up[i] = np.minimum(up[i], up[i + 1] + s[i])
        lo[i] = np.maximum(lo[i], lo[i + 1] - s[i])
    return 0.5 * (up + lo)


def fix_gaps(x1: np.ndarray, x2: np.ndarray, machine) -> tuple[np.ndarray, np.ndarray]:
    """Leaves within the machine's range with at least its minimum gap (the X1 leaf gives way)."""
    lo, hi = machine.leaf_range_mm
    gap = machine.min_leaf_gap_mm
    x2 = np.clip(x2, lo + gap, hi)
    x1 = np.clip(np.minimum(x1, x2 - gap), lo, hi - gap)
    return x1, x2


def is_open(x1: np.ndarray, x2: np.ndarray, machine, tol: float = 1e-6) -> np.ndarray:
    """Pairs wider than the minimum gap (the minimum gap itself counts as closed)."""
    return (x2 - x1) > machine.min_leaf_gap_mm + tol


def jaws_for(x1: np.ndarray, x2: np.ndarray, open_: np.ndarray, machine):
    """Jaws (X, Y) around every opening of the beam: Y on leaf boundaries, X at the extreme leaf tips."""
    b = np.asarray(machine.leaf_boundaries_mm)
    rows = np.flatnonzero(open_.any(axis=0))
    if rows.size == 0:  # nothing opens: a minimal field on the axis
        return (-5.0, 5.0), (-5.0, 5.0)
    jx = (float(np.min(x1[open_])), float(np.max(x2[open_])))
    jy = (float(b[rows[0]]), float(b[rows[-1] + 1]))
    (xlo, xhi), (ylo, yhi) = machine.jaw_x_range_mm, machine.jaw_y_range_mm
    return (max(jx[0], xlo), min(jx[1], xhi)), (max(jy[0], ylo), min(jy[1], yhi))


def park_closed(x1: np.ndarray, x2: np.ndarray, closed: np.ndarray, jaw_x, machine, right=None):
    """Closed pairs at the minimum gap just behind a jaw (no leakage through the gap).

    Behind X1, or behind X2 where `right` (broadcast to the leaves' shape) is
    True, so that a pair opening near the X2 side need not cross the field.
    """
    lo, hi = machine.leaf_range_mm
    gap = machine.min_leaf_gap_mm
    left = max(lo, jaw_x[0] - gap)
    rite = min(hi - gap, jaw_x[1])
    r = np.zeros(x1.shape, bool) if right is None else np.broadcast_to(np.asarray(right, bool), x1.shape)
    px1 = np.where(r, rite, left)
    x1 = np.where(closed, px1, x1)
    x2 = np.where(closed, px1 + gap, x2)
    return x1, x2


def control_points(gantry, cumulative_mu, x1, x2, jaw_x, jaw_y) -> list[ControlPoint]:
    """ControlPoint objects from arrays: gantry (N,), cumulative MU (N,), leaves (N, P), one jaw setting."""
    return [ControlPoint(float(g), float(m), (float(jaw_x[0]), float(jaw_x[1])), (float(jaw_y[0]), float(jaw_y[1])),
                         [float(v) for v in a], [float(v) for v in c])
            for g, m, a, c in zip(gantry, cumulative_mu, x1, x2)]
