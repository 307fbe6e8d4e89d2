"""The sequencer plugin API: what a sequencer is given and what it returns.

A sequencer turns the optimised fluence of every beam (IMRT fields, or the
static sector beams that stand for VMAT arcs) into a :class:`DeliveryPlan`
that the machine can deliver. Sequencers are plugins in the entry-point group
``airtp.sequencers``, classes whose instances have::

    name: str
    techniques: tuple of str   # "imrt" and/or "vmat"
    def sequence(self, problem: SequencingProblem) -> DeliveryPlan

The plan they return is timed (:func:`airtp.sequencing.limits.time_plan`) and
checked (:func:`airtp.sequencing.check_limits`, its ``limits_checked`` set).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from airtp import plugins
from airtp.beams.beam import Beam, BeamletGrid
from airtp.beams.machine import Machine
from airtp.errors import SequencingError

__all__ = ["SequencingProblem", "Sequencer", "get_sequencer", "default_sequencer", "arc_sectors"]


@dataclass
class SequencingProblem:
    """Everything a sequencer needs.

    Attributes
    ----------
    beams, grids : list of Beam, list of BeamletGrid
        The static beams of the fluence optimisation and their beamlet grids
        (IMRT fields; for VMAT the sector beams, arc by arc in arc order).
    fluences : list of (ny, nx) arrays
        Optimised beamlet weights per beam, dose-engine units for the whole
        course (0 where no beamlet).
    machine : Machine
    fractions : int
        Fractions of the course; MU and delivery times are per fraction.
    arcs : list of Arc
        VMAT: the arcs the sector beams stand for (empty for IMRT).
    influence : DoseInfluence or None
        The beamlet dose-influence matrix of `beams` (same beamlet order); with
        it, MU weights are refined against the ideal dose, else against the
        ideal fluence.
    target_rows : array or None
        Rows (voxels) of the influence matrix that refinement weights more.
    mu_per_weight : float
        MU per unit beamlet weight (:meth:`Machine.mu_per_weight`).
    """

    beams: list
    grids: list
    fluences: list
    machine: Machine
    fractions: int = 1
    arcs: list = field(default_factory=list)
    influence: object = None
    target_rows: np.ndarray | None = None
    mu_per_weight: float = 1.0
    case_id: str = ""

    def __post_init__(self):
        if not (len(self.beams) == len(self.grids) == len(self.fluences)) or not self.beams:
            raise SequencingError(f"case '{self.case_id}': need one beamlet grid and one fluence per beam "
                                  f"({len(self.beams)} beams, {len(self.grids)} grids, {len(self.fluences)} fluences)")
        if int(self.fractions) < 1:
            raise SequencingError(f"case '{self.case_id}': fractions must be >= 1, got {self.fractions}")
        if not (np.isfinite(self.mu_per_weight) and self.mu_per_weight > 0):
            raise SequencingError(f"MU per unit weight must be positive, got {self.mu_per_weight}")
        fl = []
        for beam, grid, f in zip(self.beams, self.grids, self.fluences):
            if not isinstance(beam, Beam) or not isinstance(grid, BeamletGrid):
                raise SequencingError(f"beam '{getattr(beam, 'name', beam)}': expected a Beam and its BeamletGrid")
            f = np.asarray(f, float)
            if f.shape != grid.shape:
                raise SequencingError(f"beam '{beam.name}': fluence shape {f.shape} differs from its beamlet grid "
                                      f"{grid.shape}")
            if not np.all(np.isfinite(f)):
                n = int(np.sum(~np.isfinite(f)))
                raise SequencingError(f"beam '{beam.name}': fluence has {n} NaN or infinite values")
            if np.any(f < 0):
                raise SequencingError(f"beam '{beam.name}': fluence has negative values (min {f.min():.4g})")
            fl.append(np.where(grid.active, f, 0.0))
        self.fluences = fl
        self.fractions = int(self.fractions)
        if self.influence is not None and self.influence.n_beamlets != sum(int(g.active.sum()) for g in self.grids):
            raise SequencingError(f"case '{self.case_id}': the influence matrix has {self.influence.n_beamlets} "
                                  f"beamlets, the grids {sum(int(g.active.sum()) for g in self.grids)}")

    @property
    def weight_per_mu(self) -> float:
        """Beamlet weight of the whole course per MU of one fraction."""
        return self.fractions / self.mu_per_weight

    def fluence_mu(self, b: int) -> np.ndarray:
        """Beam `b`'s ideal fluence in MU per fraction."""
        return self.fluences[b] / self.weight_per_mu


@runtime_checkable
class Sequencer(Protocol):
    name: str
    techniques: tuple

    def sequence(self, problem: SequencingProblem): ...


def default_sequencer(technique: str) -> str:
    """The sequencer a technique gets by default: ``vmat`` for arcs, ``step-and-shoot`` for fields."""
    return "vmat" if technique == "vmat" else "step-and-shoot"


def get_sequencer(name: str, **options) -> Sequencer:
    """An instance of the sequencer registered as `name` (entry-point group airtp.sequencers)."""
    cls = plugins.load("airtp.sequencers", name)
    try:
        seq = cls(**options)
    except TypeError as exc:
        raise SequencingError(f"sequencer '{name}': bad options {options} ({exc})") from None
    if not isinstance(seq, Sequencer):
        raise plugins.PluginError(f"sequencer plugin '{name}' does not provide name, techniques and sequence(problem)")
    return seq


def arc_sectors(beams: list[Beam], arcs) -> list[list[int]]:
    """Indices of the sector beams of each arc: the beams come arc by arc, at ``arc.angles(span / n)``.

    Raises when the beams do not follow the arcs (each arc must have at
    least one sector beam with its collimator).
    """
    out, start = [], 0
    for k, arc in enumerate(arcs):
        found = None
        for n in range(1, len(beams) - start + 1):
            angles = arc.angles(arc.span_deg / n)
            chunk = beams[start:start + n]
            if len(angles) == n and all(abs(((b.gantry_deg - g + 180.0) % 360.0) - 180.0) < 1e-6
                                        and abs(b.collimator_deg - arc.collimator_deg) < 1e-6
                                        for b, g in zip(chunk, angles)):
                found = n
                break
        if found is None:
            raise SequencingError(f"arc {k + 1} ({arc.start_deg:g} -> {arc.stop_deg:g} deg {arc.direction}): the beams "
                                  f"from '{beams[start].name if start < len(beams) else '-'}' on are not its sectors")
        out.append(list(range(start, start + found)))
        start += found
    if start != len(beams):
        raise SequencingError(f"{len(beams) - start} beams belong to no arc")
    return out
