"""Dose of a delivery plan, its fluence on the beamlet grids and the fidelity to the ideal fluence.

:func:`plan_dose` is the dose of what the machine delivers: every beam's
control-point intervals become a fine fluence (1 mm along the leaves by one
leaf width, each element weighted by its exact MU-weighted open fraction,
:func:`airtp.sequencing.fluence.fine_fluence_grids`), projected through the
dose engine (:func:`airtp.dose.dose_of_fluence`). For static segments this is
exactly the sum of :func:`airtp.dose.dose_of_aperture` over the segments
(same elements, same kernel; the tests check it).

Arc geometry: the dose of a VMAT interval is computed at a static gantry
angle. With ``arc_dose_angles`` (the pipeline passes the sector beams' angles,
the gantry sampling of the fluence optimisation) each interval is computed at
the nearest of those angles; without it, at its own mid-arc angle (finer,
slower).
"""

from __future__ import annotations

import numpy as np

from airtp.beams.beam import Beam
from airtp.beams.machine import Machine
from airtp.dose.engine import dose_of_fluence, make_dose_grid
from airtp.sequencing.base import arc_sectors
from airtp.sequencing.fluence import (
    BeamArrays, beam_fluence_on_grid, fine_fluence_grids, interval_midpoints, nearest_angle,
)

__all__ = ["plan_dose", "delivered_on_beamlets", "fluence_fidelity", "dose_beams"]


def _beam_at(dbeam, gantry_deg: float, name: str) -> Beam:
    return Beam(float(gantry_deg) % 360.0, tuple(dbeam.isocenter_mm), float(dbeam.collimator_deg),
                float(dbeam.couch_deg), float(dbeam.sad_mm), name)


def dose_beams(dbeam, arc_angles=None) -> list[tuple[Beam, np.ndarray | None]]:
    """Static beams that carry `dbeam`'s dose and the intervals each carries (None: all)."""
    a = BeamArrays(dbeam)
    if dbeam.kind != "vmat":
        return [(_beam_at(dbeam, a.gantry[0], dbeam.name), None)]
    mids = interval_midpoints(a.gantry, dbeam.gantry_direction)
    if arc_angles is None:
        return [(_beam_at(dbeam, g, f"{dbeam.name}@{g:.1f}"), np.array([i])) for i, g in enumerate(mids)]
    which = nearest_angle(mids, arc_angles)
    return [(_beam_at(dbeam, g, f"{dbeam.name}@{g:.1f}"), np.flatnonzero(which == j))
            for j, g in enumerate(arc_angles) if np.any(which == j)]


def plan_dose(case, plan, machine=None, dose_grid_mm=None, model=None, hu_table=None, arc_dose_angles=None,
              resolution_mm: float = 1.0, backend=None) -> np.ndarray:
    """Dose (Gy, whole course, (z, y, x) on the dose grid) of delivery plan `plan` (see the module doc).

    Parameters
    ----------
    machine : Machine, path or None
        For the MU calibration (None: the packaged machine).
    arc_dose_angles : dict or None
        Per VMAT beam name, the gantry angles (deg) at which its intervals are computed.
    resolution_mm : float
        Element size along the leaves (mm).
    """
    machine = Machine.load(machine)
    scale = plan.fractions / machine.mu_per_weight(model)  # beamlet weight of the course per MU of a fraction
    beams, grids = [], []
    for dbeam in plan.beams:
        angles = (arc_dose_angles or {}).get(dbeam.name)
        a = BeamArrays(dbeam)
        for beam, intervals in dose_beams(dbeam, angles):
            for g in fine_fluence_grids(a, scale, resolution_mm, intervals):
                beams.append(beam)
                grids.append(g)
    if not grids:
        return np.zeros(make_dose_grid(case.grid, dose_grid_mm).shape, np.float32)
    return dose_of_fluence(case, beams, grids, dose_grid_mm=dose_grid_mm, model=model, hu_table=hu_table,
                           backend=backend)


def delivered_on_beamlets(plan, problem) -> list[np.ndarray]:
    """Per beam of the sequencing problem, what the plan delivers on its beamlet grid (MU per fraction).

    Static beams pair up in order; the intervals of arc k go to the nearest
    of its sector beams.
    """
    out = [np.zeros(g.shape) for g in problem.grids]
    if problem.arcs:
        for dbeam, idx in zip(plan.beams, arc_sectors(problem.beams, problem.arcs)):
            a = BeamArrays(dbeam)
            which = nearest_angle(interval_midpoints(a.gantry, dbeam.gantry_direction),
                                  [problem.beams[i].gantry_deg for i in idx])
            for j, b in enumerate(idx):
                ints = np.flatnonzero(which == j)
                if ints.size:
                    out[b] += beam_fluence_on_grid(a, problem.grids[b], intervals=ints)
    else:
        for b, dbeam in enumerate(plan.beams):
            out[b] += beam_fluence_on_grid(dbeam, problem.grids[b])
    return out


def _fidelity(delivered, ideal) -> float | None:
    norm = float(np.linalg.norm(ideal))
    return None if norm == 0 else 1.0 - float(np.linalg.norm(delivered - ideal)) / norm


def fluence_fidelity(plan, problem) -> dict:
    """``1 - ||delivered - ideal|| / ||ideal||`` over beamlets: ``per_beam`` (delivery beam name) and ``plan``.

    For an arc, over all its sector beams together.
    """
    got = delivered_on_beamlets(plan, problem)
    ideal = [problem.fluence_mu(b) for b in range(len(problem.grids))]
    groups = arc_sectors(problem.beams, problem.arcs) if problem.arcs else [[b] for b in range(len(plan.beams))]
    per = {}
    for dbeam, idx in zip(plan.beams, groups):
        per[dbeam.name] = _fidelity(np.concatenate([got[b].ravel() for b in idx]),
                                    np.concatenate([ideal[b].ravel() for b in idx]))
    total = _fidelity(np.concatenate([g.ravel() for g in got]), np.concatenate([f.ravel() for f in ideal]))
    return {"per_beam": per, "plan": total}
