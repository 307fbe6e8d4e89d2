"""Optimizer targets: the plugin API and the built-in fluence-map optimizer."""

from airtp.optimize.problem import OptimizationError, PlanningProblem
from airtp.optimize.target import OptimizationResult, OptimizerTarget, get_optimizer

__all__ = ["PlanningProblem", "OptimizationError", "OptimizationResult", "OptimizerTarget", "get_optimizer"]
