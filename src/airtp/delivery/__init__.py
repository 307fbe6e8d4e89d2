"""Deliverable plans: machine limits, leaf sequencing (IMRT) and arc sequencing (VMAT)."""

from airtp.delivery.plan import ControlPoint, DeliveryBeam, DeliveryPlan

__all__ = ["ControlPoint", "DeliveryBeam", "DeliveryPlan"]
