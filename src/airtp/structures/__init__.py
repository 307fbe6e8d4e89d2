"""Structures: the structure set, exact mm morphology and helper recipes."""

from airtp.structures.morphology import (
    asymmetric_margin,
    crop_to_body,
    distance_mm,
    intersection,
    margin,
    ring,
    subtract,
    union,
)
from airtp.structures.structure_set import StructureSet

__all__ = [
    "StructureSet", "margin", "asymmetric_margin", "ring", "union", "intersection", "subtract",
    "crop_to_body", "distance_mm",
]
