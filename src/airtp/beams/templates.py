"""Beam templates: the beam set-ups of paper section 2.2, step 2.

A template is data (gantry angles or arcs, collimator) plus a small rule that
picks it for a case (the lung side rule). Templates are plugins in the
entry-point group ``airtp.beam_templates``, one per site, each a callable
``template(case, technique) -> BeamSetup``; a clinic registers its own the
same way.

The isocentre is the centre of mass of the union of the prescribed targets.

VMAT arcs are planned here as fluence on static beams spaced ``sector_deg``
apart along each arc (the usual starting point of arc sequencing); the arcs
themselves are kept in :attr:`BeamSetup.arcs` for the sequencer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from airtp.beams.beam import Beam
from airtp.case import Case
from airtp.errors import BeamError

__all__ = ["Arc", "BeamSetup", "head_neck", "lung", "generic", "target_centre_mm", "LATERAL_LIMIT_MM", "TECHNIQUES"]

# Lung: a target centre farther than this from the mid-sagittal plane takes the side template.
LATERAL_LIMIT_MM = 50.0
TECHNIQUES = ("imrt7", "imrt9", "imrt15", "vmat")


@dataclass(frozen=True)
class Arc:
    """A gantry arc: start and stop (degrees, IEC 61217), direction 'cw' or 'ccw', collimator."""

    start_deg: float
    stop_deg: float
    direction: str
    collimator_deg: float

    @property
    def span_deg(self) -> float:
        d = (self.stop_deg - self.start_deg) % 360.0 if self.direction == "cw" else (self.start_deg - self.stop_deg) % 360.0
        return d if d > 0 else 360.0

    def angles(self, sector_deg: float) -> list[float]:
        """Gantry angles at the centres of `sector_deg` sectors along the arc."""
        n = max(1, int(round(self.span_deg / sector_deg)))
        step = self.span_deg / n
        sign = 1.0 if self.direction == "cw" else -1.0
        return [float((self.start_deg + sign * (i + 0.5) * step) % 360.0) for i in range(n)]


@dataclass
class BeamSetup:
    """Beams of a plan, with the arcs they stand for (VMAT) and a description."""

    technique: str
    template: str
    isocenter_mm: tuple[float, float, float]
    beams: list[Beam]
    arcs: list[Arc] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict:
        return {
            "technique": self.technique, "template": self.template, "isocenter_mm": list(self.isocenter_mm),
            "note": self.note,
            "beams": [{"name": b.name, "gantry_deg": b.gantry_deg, "collimator_deg": b.collimator_deg,
                       "couch_deg": b.couch_deg} for b in self.beams],
            "arcs": [{"start_deg": a.start_deg, "stop_deg": a.stop_deg, "direction": a.direction,
                      "collimator_deg": a.collimator_deg} for a in self.arcs],
        }


def target_centre_mm(case: Case) -> np.ndarray:
    """Centre of mass (z, y, x) mm of the union of the prescribed targets."""
    case.check_prescriptions()
    mask = np.zeros(case.grid.shape, bool)
    for p in case.prescriptions:
        mask |= case.structures[p.structure]
    return case.grid.index_to_mm(np.argwhere(mask).mean(axis=0))


def _static(case: Case, technique: str, template: str, angles, collimator: float = 0.0, note: str = "") -> BeamSetup:
    iso = tuple(float(v) for v in target_centre_mm(case))
    beams = [Beam(gantry_deg=float(a) % 360.0, isocenter_mm=iso, collimator_deg=collimator, name=f"F{i + 1}G{a % 360:g}")
             for i, a in enumerate(angles)]
    return BeamSetup(technique, template, iso, beams, [], note)


def _arcs(case: Case, technique: str, template: str, arcs: list[Arc], sector_deg: float, note: str = "") -> BeamSetup:
    iso = tuple(float(v) for v in target_centre_mm(case))
    beams = []
    for k, arc in enumerate(arcs):
        for g in arc.angles(sector_deg):
            beams.append(Beam(gantry_deg=g, isocenter_mm=iso, collimator_deg=arc.collimator_deg, name=f"A{k + 1}G{g:g}"))
    return BeamSetup(technique, template, iso, beams, list(arcs), note)


def _equispaced(n: int) -> list[float]:
    return [i * 360.0 / n for i in range(n)]


def _unknown(site: str, technique: str, have) -> BeamError:
    return BeamError(f"no beam template for technique '{technique}' at site '{site}' (have: {', '.join(have)})")


FULL_ARCS_4 = [Arc(181.0, 179.0, "cw", 30.0), Arc(179.0, 181.0, "ccw", 330.0),
               Arc(181.0, 179.0, "cw", 330.0), Arc(179.0, 181.0, "ccw", 30.0)]


def head_neck(case: Case, technique: str, sector_deg: float = 40.0) -> BeamSetup:
    """Head and neck: IMRT 9 or 15 equispaced coplanar fields; VMAT 4 full arcs (CW/CCW, collimator 30/330)."""
    if technique == "imrt9":
        return _static(case, technique, "hn-imrt9", _equispaced(9))
    if technique == "imrt15":
        return _static(case, technique, "hn-imrt15", _equispaced(15))
    if technique == "vmat":
        return _arcs(case, technique, "hn-vmat4", FULL_ARCS_4, sector_deg,
                     "4 full arcs, alternating CW/CCW, collimator 30 and 330 degrees")
    raise _unknown("hn", technique, ("imrt9", "imrt15", "vmat"))


def lung_side(case: Case) -> str:
    """'left', 'right' or 'central': where the target centre lies from the mid-sagittal plane.

    The mid-sagittal plane is x = the Body's centre of mass (x increases to
    the patient's left); beyond :data:`LATERAL_LIMIT_MM` the tumour is lateral.
    """
    centre_x = target_centre_mm(case)[2]
    body = case.structures.find("Body")
    mid_x = case.grid.index_to_mm(np.argwhere(case.structures[body]).mean(axis=0))[2] if body else 0.0
    dx = centre_x - mid_x
    if dx > LATERAL_LIMIT_MM:
        return "left"
    if dx < -LATERAL_LIMIT_MM:
        return "right"
    return "central"


# Angles on the tumour side: from 30 degrees across the anterior midline to
# 30 degrees past the posterior one (gantry 90 irradiates from the patient's left).
_LEFT_7 = [330.0, 0.0, 30.0, 60.0, 90.0, 120.0, 150.0]


def lung(case: Case, technique: str, sector_deg: float = 20.0) -> BeamSetup:
    """Lung: a lateral tumour (> 5 cm from mid-sagittal) gets angles on its side, else the full range.

    IMRT: 7 fields on the tumour side when lateral, 9 equispaced otherwise
    (``imrt7``/``imrt9`` pick explicitly); VMAT: 2 arcs (CW then CCW), partial
    arcs of 180 degrees on the tumour side when lateral, full arcs otherwise.
    """
    side = lung_side(case)
    note = f"tumour {side}"
    if technique in ("imrt7", "imrt9"):
        if side == "central" or technique == "imrt9":
            return _static(case, technique, "lung-imrt9", _equispaced(9), note=note)
        angles = _LEFT_7 if side == "left" else [(360.0 - a) % 360.0 for a in _LEFT_7]
        return _static(case, technique, f"lung-imrt7-{side}", angles, note=note)
    if technique == "vmat":
        if side == "central":
            arcs = [Arc(181.0, 179.0, "cw", 30.0), Arc(179.0, 181.0, "ccw", 330.0)]
        elif side == "left":
            arcs = [Arc(330.0, 150.0, "cw", 30.0), Arc(150.0, 330.0, "ccw", 330.0)]
        else:
            arcs = [Arc(210.0, 30.0, "cw", 30.0), Arc(30.0, 210.0, "ccw", 330.0)]
        return _arcs(case, technique, f"lung-vmat2-{side}", arcs, sector_deg, note)
    raise _unknown("lung", technique, ("imrt7", "imrt9", "vmat"))


def generic(case: Case, technique: str, sector_deg: float = 30.0) -> BeamSetup:
    """Any site: equispaced IMRT (``imrt7``, ``imrt9``, ``imrt15``) or 2 full arcs."""
    if technique in ("imrt7", "imrt9", "imrt15"):
        n = int(technique[4:])
        return _static(case, technique, f"generic-imrt{n}", _equispaced(n))
    if technique == "vmat":
        return _arcs(case, technique, "generic-vmat2", [Arc(181.0, 179.0, "cw", 30.0), Arc(179.0, 181.0, "ccw", 330.0)],
                     sector_deg)
    raise _unknown("generic", technique, ("imrt7", "imrt9", "imrt15", "vmat"))
