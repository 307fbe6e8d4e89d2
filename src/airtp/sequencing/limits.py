"""Machine limits of a delivery plan: timing of control-point intervals and the checks.

Timing of the interval from control point i to i + 1 (MU dMU, gantry step
dG, largest leaf travel dX):

- beam on (dMU > 0): the machine runs as fast as its slowest axis allows,
  ``t = max(dMU / max dose rate, dG / max gantry speed, dX / max leaf speed)``,
  and the dose rate set at control point i is ``dMU / t``;
- beam off (step-and-shoot moves between segments): ``t = max(dG / gantry speed, dX / leaf speed)``.

:func:`check_limits` recomputes speeds from the recorded dose rates, so it
also catches a plan written with impossible ones.
"""

from __future__ import annotations

import numpy as np

from airtp.errors import SequencingError
from airtp.sequencing.fluence import BeamArrays
from airtp.sequencing.plan import DeliveryBeam, DeliveryPlan

__all__ = ["check_limits", "time_beam", "time_plan", "interval_times", "gantry_steps"]

# Relative slack on speed and dose-rate checks and absolute slack on positions (mm): float rounding only.
RTOL = 1e-6
ATOL_MM = 1e-6


def gantry_steps(gantry_deg: np.ndarray, direction: str) -> np.ndarray:
    """Gantry travel (deg, >= 0) between consecutive control points in the beam's direction (CW: increasing)."""
    d = np.diff(np.asarray(gantry_deg, float))
    if direction == "CW":
        return np.mod(d, 360.0)
    if direction == "CC":
        return np.mod(-d, 360.0)
    return np.abs(d)


def interval_times(a: BeamArrays, direction: str, machine) -> np.ndarray:
    """Fastest time (s) of each interval under the machine's limits (see the module doc)."""
    dmu = a.dmu
    travel = np.max(np.maximum(np.abs(np.diff(a.x1, axis=0)), np.abs(np.diff(a.x2, axis=0))), axis=1) \
        if a.x1.shape[1] else np.zeros(dmu.size)
    t = np.maximum(gantry_steps(a.gantry, direction) / machine.max_gantry_speed_deg_s,
                   travel / machine.max_leaf_speed_mm_s)
    return np.maximum(t, np.maximum(dmu, 0.0) / machine.max_dose_rate_mu_s)


def time_beam(beam: DeliveryBeam, machine) -> DeliveryBeam:
    """Set each control point's dose rate and the beam's delivery time (s) from its MU and motions; returns `beam`."""
    a = BeamArrays(beam)
    t = interval_times(a, beam.gantry_direction, machine)
    for i, cp in enumerate(beam.control_points[:-1]):
        cp.dose_rate_mu_min = float(60.0 * a.dmu[i] / t[i]) if a.dmu[i] > 0 else None
    beam.control_points[-1].dose_rate_mu_min = None
    beam.delivery_time_s = float(np.sum(t))
    return beam


def time_plan(plan: DeliveryPlan, machine) -> DeliveryPlan:
    for b in plan.beams:
        time_beam(b, machine)
    return plan


def _fail(beam, i, what) -> SequencingError:
    return SequencingError(f"beam '{beam.name}', control point {i}: {what}")


def _check_beam(beam: DeliveryBeam, machine) -> None:
    a = BeamArrays(beam)
    if not np.allclose(a.boundaries, machine.leaf_boundaries_mm):
        raise SequencingError(f"beam '{beam.name}': its leaf boundaries are not those of machine '{machine.name}'")
    if beam.kind not in ("step_and_shoot", "sliding_window", "vmat"):
        raise SequencingError(f"beam '{beam.name}': unknown kind '{beam.kind}'")
    finite = np.isfinite(a.mu) & np.isfinite(a.gantry) & np.isfinite(a.x1).all(1) & np.isfinite(a.x2).all(1) \
        & np.isfinite(a.jaw_x).all(1) & np.isfinite(a.jaw_y).all(1)
    if not finite.all():
        raise _fail(beam, int(np.argmin(finite)), "non-finite MU, angle, leaf or jaw position")
    # MU >= 0 and cumulative
    if abs(a.mu[0]) > 1e-9:
        raise _fail(beam, 0, f"cumulative MU must start at 0, got {a.mu[0]:g}")
    bad = np.flatnonzero(a.dmu < -1e-9)
    if bad.size:
        i = int(bad[0]) + 1
        raise _fail(beam, i, f"cumulative MU decreases ({a.mu[i - 1]:g} -> {a.mu[i]:g}): negative MU")
    # leaves: order, gap, range
    gap = a.x2 - a.x1
    i, p = np.unravel_index(int(np.argmin(gap)), gap.shape) if gap.size else (0, 0)
    if gap.size and gap[i, p] < -ATOL_MM:
        raise _fail(beam, i, f"leaf pair {p + 1} crosses (x1 {a.x1[i, p]:.2f} > x2 {a.x2[i, p]:.2f} mm)")
    if gap.size and gap[i, p] < machine.min_leaf_gap_mm - ATOL_MM:
        raise _fail(beam, i, f"leaf pair {p + 1} gap {gap[i, p]:.3f} mm is below the minimum "
                             f"{machine.min_leaf_gap_mm:g} mm")
    lo, hi = machine.leaf_range_mm
    out = (a.x1 < lo - ATOL_MM) | (a.x2 > hi + ATOL_MM)
    if out.any():
        i, p = np.argwhere(out)[0]
        raise _fail(beam, int(i), f"leaf pair {p + 1} at [{a.x1[i, p]:.1f}, {a.x2[i, p]:.1f}] mm leaves the range "
                                  f"[{lo:g}, {hi:g}] mm")
    # jaws
    for name, jaw, (jlo, jhi) in (("X", a.jaw_x, machine.jaw_x_range_mm), ("Y", a.jaw_y, machine.jaw_y_range_mm)):
        bad = (jaw[:, 0] >= jaw[:, 1]) | (jaw[:, 0] < jlo - ATOL_MM) | (jaw[:, 1] > jhi + ATOL_MM)
        if bad.any():
            i = int(np.argmax(bad))
            raise _fail(beam, i, f"jaw {name} [{jaw[i, 0]:.1f}, {jaw[i, 1]:.1f}] mm must be open and within "
                                 f"[{jlo:g}, {jhi:g}] mm")
    on = a.dmu > 0
    moves = np.any(np.abs(np.diff(a.jaw_x, axis=0)) > ATOL_MM, axis=1) | np.any(np.abs(np.diff(a.jaw_y, axis=0)) > ATOL_MM, axis=1)
    if np.any(on & moves):
        raise _fail(beam, int(np.argmax(on & moves)), "jaws move while the beam is on")
    # gantry
    steps = gantry_steps(a.gantry, beam.gantry_direction)
    if beam.kind == "vmat":
        if beam.gantry_direction not in ("CW", "CC"):
            raise SequencingError(f"beam '{beam.name}': an arc needs gantry_direction CW or CC")
        if np.any(steps > 180.0):
            i = int(np.argmax(steps > 180.0))
            raise _fail(beam, i + 1, f"gantry turns against the arc direction {beam.gantry_direction}")
    elif np.any(steps > 1e-6):
        raise _fail(beam, int(np.argmax(steps > 1e-6)) + 1, f"the gantry moves in a {beam.kind} beam")
    travel = np.maximum(np.abs(np.diff(a.x1, axis=0)), np.abs(np.diff(a.x2, axis=0))).max(axis=1)
    if beam.kind == "step_and_shoot" and np.any(on & (travel > ATOL_MM)):
        raise _fail(beam, int(np.argmax(on & (travel > ATOL_MM))), "leaves move while the beam is on "
                                                                   "in a step-and-shoot beam")
    # speeds from the recorded dose rates (beam on); beam-off moves run at the machine's own pace
    for i in np.flatnonzero(on):
        rate = a.dose_rate[i]
        if not (np.isfinite(rate) and rate > 0):
            raise _fail(beam, int(i), "no dose rate set for an interval with MU")
        if rate > machine.max_dose_rate_mu_min * (1 + RTOL):
            raise _fail(beam, int(i), f"dose rate {rate:.1f} MU/min exceeds {machine.max_dose_rate_mu_min:g}")
        t = a.dmu[i] / (rate / 60.0)
        if steps[i] / t > machine.max_gantry_speed_deg_s * (1 + RTOL):
            raise _fail(beam, int(i), f"gantry speed {steps[i] / t:.2f} deg/s exceeds "
                                      f"{machine.max_gantry_speed_deg_s:g}")
        if travel[i] / t > machine.max_leaf_speed_mm_s * (1 + RTOL) + ATOL_MM:
            raise _fail(beam, int(i), f"leaf speed {travel[i] / t:.2f} mm/s exceeds {machine.max_leaf_speed_mm_s:g}")


def check_limits(plan: DeliveryPlan, machine) -> list[str]:
    """Check every beam of `plan` against `machine`; returns the checks done, raises SequencingError on a violation.

    The error names the beam and the control point (0-based) at fault.
    """
    if not plan.beams:
        raise SequencingError("the delivery plan has no beams")
    for beam in plan.beams:
        _check_beam(beam, machine)
    m = machine
    return [
        f"MLC leaf boundaries of {m.name} ({m.n_pairs} pairs)",
        "cumulative MU starts at 0 and never decreases (MU >= 0)",
        "leaf pairs never cross (x1 <= x2)",
        f"leaf gap >= {m.min_leaf_gap_mm:g} mm",
        f"leaves within [{m.leaf_range_mm[0]:g}, {m.leaf_range_mm[1]:g}] mm",
        (f"jaws open within X [{m.jaw_x_range_mm[0]:g}, {m.jaw_x_range_mm[1]:g}] and "
         f"Y [{m.jaw_y_range_mm[0]:g}, {m.jaw_y_range_mm[1]:g}] mm, still while the beam is on"),
        "step-and-shoot: leaves still while the beam is on; static beams: gantry still",
        "arcs: gantry turns one way",
        f"dose rate <= {m.max_dose_rate_mu_min:g} MU/min",
        f"gantry speed <= {m.max_gantry_speed_deg_s:g} deg/s",
        f"leaf speed <= {m.max_leaf_speed_mm_s:g} mm/s",
    ]
