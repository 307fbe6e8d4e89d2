"""Deliverable plans: beams as control points with MLC leaves, jaws and MU.

The layout follows DICOM RT Plan, so that export is a direct mapping:

- a :class:`ControlPoint` holds the gantry angle, the jaws, both MLC banks and
  the *cumulative* MU delivered when this control point is reached;
- step-and-shoot IMRT: each segment is two control points with the same
  leaves, the second carrying the segment's MU on top of the first;
- sliding window: leaves move between control points at a fixed gantry;
- VMAT: gantry angle and leaves change between control points.

Between control points leaves move linearly with the cumulative MU (DICOM
semantics), so the fluence of an interval is the MU-weighted sweep of the
leaf opening; ``dose_rate_mu_min`` (DICOM Dose Rate Set) is the dose rate of
the interval that starts at a control point (None: not set, e.g. the last
one), and with the MU it fixes the interval's time, hence gantry and leaf
speeds (checked by :func:`airtp.sequencing.check_limits`).

Coordinates are BEV mm on the isocentre plane (IEC 61217 beam-limiting-device
system): ``mlc_x1_mm`` is the bank on the negative X side, ``mlc_x2_mm`` the
positive one (x1 <= x2 pair by pair); leaf pair ``i`` spans BEV y in
``[leaf_boundaries_mm[i], leaf_boundaries_mm[i + 1]]``.

``delivery.json`` in a plan folder is :meth:`DeliveryPlan.to_dict`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["ControlPoint", "DeliveryBeam", "DeliveryPlan"]


@dataclass
class ControlPoint:
    """One control point: machine state and the cumulative MU at that state."""

    gantry_deg: float
    cumulative_mu: float
    jaw_x_mm: tuple[float, float]
    jaw_y_mm: tuple[float, float]
    mlc_x1_mm: list[float]
    mlc_x2_mm: list[float]
    dose_rate_mu_min: float | None = None


@dataclass
class DeliveryBeam:
    """A static (IMRT) or arc (VMAT) beam as the machine delivers it.

    ``kind`` is ``step_and_shoot``, ``sliding_window`` or ``vmat``; for a VMAT
    arc ``gantry_direction`` is ``CW`` or ``CC``; ``mu`` equals the last control
    point's ``cumulative_mu``.
    """

    name: str
    kind: str
    collimator_deg: float
    couch_deg: float
    isocenter_mm: tuple[float, float, float]
    leaf_boundaries_mm: list[float]
    control_points: list[ControlPoint]
    gantry_direction: str = "NONE"
    delivery_time_s: float = 0.0
    sad_mm: float = 1000.0

    @property
    def mu(self) -> float:
        return self.control_points[-1].cumulative_mu if self.control_points else 0.0

    @property
    def n_segments(self) -> int:
        """Step-and-shoot: segments (control-point pairs); otherwise control points."""
        if self.kind == "step_and_shoot":
            return len(self.control_points) // 2
        return len(self.control_points)


@dataclass
class DeliveryPlan:
    """All beams of a deliverable plan, the machine they were sequenced for and the limits checked."""

    machine: str
    sequencer: str
    beams: list[DeliveryBeam]
    fractions: int = 1
    limits_checked: list[str] = field(default_factory=list)

    @property
    def deliverable(self) -> bool:
        return bool(self.limits_checked)

    @property
    def total_mu(self) -> float:
        return sum(b.mu for b in self.beams)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["deliverable"] = self.deliverable
        d["total_mu"] = self.total_mu
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DeliveryPlan":
        beams = []
        for b in d["beams"]:
            cps = [ControlPoint(**{**cp, "jaw_x_mm": tuple(cp["jaw_x_mm"]), "jaw_y_mm": tuple(cp["jaw_y_mm"])})
                   for cp in b["control_points"]]
            beams.append(DeliveryBeam(**{**b, "control_points": cps, "isocenter_mm": tuple(b["isocenter_mm"])}))
        return cls(machine=d["machine"], sequencer=d["sequencer"], beams=beams,
                   fractions=int(d.get("fractions", 1)), limits_checked=list(d.get("limits_checked", [])))

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path) -> "DeliveryPlan":
        from airtp.errors import AirtpError

        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AirtpError(f"{path}: not a delivery plan ({type(exc).__name__}: {exc})") from None
