"""Deliverable plans: IMRT leaf sequencing and VMAT arc sequencing under machine limits."""

from airtp.sequencing.plan import ControlPoint, DeliveryBeam, DeliveryPlan

__all__ = ["ControlPoint", "DeliveryBeam", "DeliveryPlan"]
