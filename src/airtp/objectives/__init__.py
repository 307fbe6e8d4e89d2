"""Optimisation objectives (value and gradient with respect to voxel dose)."""

from airtp.objectives.objective_set import ObjectiveSet, objective_from_dict
from airtp.objectives.objectives import (
    LOWER,
    UPPER,
    GEUDObjective,
    MeanObjective,
    NormalTissueObjective,
    ObjectiveError,
    PointObjective,
)

__all__ = [
    "ObjectiveSet", "objective_from_dict", "PointObjective", "MeanObjective", "GEUDObjective",
    "NormalTissueObjective", "ObjectiveError", "UPPER", "LOWER",
]
