"""The optimizer-target plugin API.

An optimizer target turns a :class:`PlanningProblem` and an
:class:`~airtp.objectives.ObjectiveSet` into beamlet weights and a dose. The
built-in one (:class:`airtp.optimize.builtin.BuiltinTarget`) and third-party
ones (e.g. Eclipse, in ``plugins/airtp-eclipse``) register alike, in the
entry-point group ``airtp.optimizers``, as a class whose instances have::

    name: str
    def optimize(self, problem, objectives, start=None) -> OptimizationResult
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from airtp import plugins

__all__ = ["OptimizationResult", "OptimizerTarget", "get_optimizer"]


@dataclass
class OptimizationResult:
    """What an optimizer target returns.

    Attributes
    ----------
    weights : (n_beamlets,) float32
        Beamlet weights after normalisation.
    dose : (z, y, x) float32
        Dose (Gy) on the problem's dose grid.
    fluences : list of (ny, nx) float32
        Per beam, the weights on its beamlet grid (0 where no beamlet).
    objective_history : list of float
        Objective value after each iteration (before normalisation).
    iterations : int
    converged : bool
    message : str
    normalization_factor : float
        Factor applied to the optimised weights by the plan normalisation.
    timings : dict
        Seconds per stage; ``history_s`` holds the time of each history entry
        and ``round_starts`` the history index where each restart began (the
        built-in target restarts when it refreshes the scatter-tail dose).
    skipped_objectives : list of (str, str)
        Objectives not used, with the reason.
    target : str
        Name of the optimizer target that produced it.
    """

    weights: np.ndarray
    dose: np.ndarray
    fluences: list
    objective_history: list
    iterations: int
    converged: bool
    message: str
    normalization_factor: float = 1.0
    timings: dict = field(default_factory=dict)
    skipped_objectives: list = field(default_factory=list)
    target: str = ""


@runtime_checkable
class OptimizerTarget(Protocol):
    name: str

    def optimize(self, problem, objectives, start=None) -> OptimizationResult: ...


def get_optimizer(name: str = "builtin", **options) -> OptimizerTarget:
    """An instance of the optimizer target registered as `name` (entry-point group airtp.optimizers)."""
    cls = plugins.load("airtp.optimizers", name)
    target = cls(**options)
    if not isinstance(target, OptimizerTarget):
        raise plugins.PluginError(f"optimizer plugin '{name}' does not provide name and optimize(problem, objectives, start)")
    return target
