"""Deliverable plans: IMRT leaf sequencing and VMAT arc sequencing under machine limits.

- :mod:`~airtp.sequencing.plan`: the deliverable-plan schema (``delivery.json``);
- :mod:`~airtp.sequencing.base`: the sequencer plugin API (group ``airtp.sequencers``);
- built-in sequencers: ``step-and-shoot`` (Engel) and ``sliding-window``
  (:mod:`~airtp.sequencing.imrt`), ``vmat`` (:mod:`~airtp.sequencing.vmat`);
- :func:`check_limits`: every machine limit, per beam and control point;
- :func:`plan_dose`: the dose of the deliverable plan through the dose engine;
- the machine description is :class:`airtp.beams.machine.Machine`
  (``data/truebeam_m120.json`` by default).
"""

from airtp.sequencing.base import SequencingProblem, Sequencer, arc_sectors, default_sequencer, get_sequencer
from airtp.sequencing.dose import delivered_on_beamlets, fluence_fidelity, plan_dose
from airtp.sequencing.limits import check_limits, time_plan
from airtp.sequencing.plan import ControlPoint, DeliveryBeam, DeliveryPlan

__all__ = [
    "ControlPoint", "DeliveryBeam", "DeliveryPlan", "SequencingProblem", "Sequencer", "get_sequencer",
    "default_sequencer", "arc_sectors", "check_limits", "time_plan", "plan_dose", "delivered_on_beamlets",
    "fluence_fidelity",
]
