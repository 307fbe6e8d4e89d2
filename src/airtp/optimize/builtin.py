"""The built-in fluence-map optimizer (the default optimizer target).

Minimises the priority-weighted sum of the objectives plus a fluence
smoothing term over beamlet weights w >= 0 with L-BFGS-B (bound-constrained
quasi-Newton, SciPy). Each evaluation computes the dose ``D w`` and the
gradient ``D^T g`` in the native core (parallel, float32; on the GPU when
present); the objectives' penalties and voxel gradients are NumPy.

Smoothing (as Eclipse's X and Y smoothing): for each beam, the squared
differences of the weights of neighbouring beamlets along x and along y,
expressed in dose units (weight / w0 * reference dose, w0 the start weight
that gives the targets their prescription on average), averaged over the
pairs and multiplied by ``smoothing * 1e-3``.

After optimisation the plan is normalised (default: the highest-dose target
receives its prescription to 95 % of its volume; ``normalization_volume_pct
= 97`` gives GDP-HMM's D97 = prescription; None leaves the weights as they
are).
"""

from __future__ import annotations

import time

import numpy as np
import scipy.optimize as so
import scipy.sparse as sp

from airtp.evaluation.dvh import compute_dvhs
from airtp.objectives import NormalTissueObjective, ObjectiveSet
from airtp.optimize.problem import OptimizationError, PlanningProblem
from airtp.optimize.target import OptimizationResult

__all__ = ["BuiltinTarget", "smoothing_operators", "normalize_weights", "normalization_factor", "fluence_maps"]

SMOOTHING_SCALE = 1e-3
# Below this many nonzeros the products are cheap enough to iterate on the whole matrix.
SPLIT_MIN_NNZ = 2_000_000


def smoothing_operators(problem: PlanningProblem) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Difference operators (pairs x beamlets) of x- and y-neighbouring beamlets within each beam."""
    table = problem.influence.beamlets
    key = {(int(b), int(iy), int(ix)): c for c, (b, ix, iy) in enumerate(zip(table["beam"], table["ix"], table["iy"]))}
    ops = []
    for dy, dx in ((0, 1), (1, 0)):
        a, b = [], []
        for (beam, iy, ix), c in key.items():
            n = key.get((beam, iy + dy, ix + dx))
            if n is not None:
                a.append(c)
                b.append(n)
        m = len(a)
        rows = np.repeat(np.arange(m), 2)
        cols = np.column_stack([a, b]).ravel() if m else np.zeros(0, int)
        vals = np.tile([1.0, -1.0], m)
        ops.append(sp.csr_matrix((vals, (rows, cols)), shape=(m, problem.n_beamlets)))
    return ops[0], ops[1]


def fluence_maps(problem: PlanningProblem, weights: np.ndarray) -> list[np.ndarray]:
    """Per beam, the weights laid out on its beamlet grid (ny, nx), 0 where no beamlet."""
    inf = problem.influence
    maps = []
    for b, g in enumerate(inf.beamlet_grids):
        m = np.zeros(g.shape, np.float32)
        cols = np.flatnonzero(inf.beamlets["beam"] == b)
        m[inf.beamlets["iy"][cols], inf.beamlets["ix"][cols]] = weights[cols]
        maps.append(m)
    return maps


def normalization_factor(dose: np.ndarray, target: np.ndarray, grid, rx_gy: float, volume_pct: float = 95.0,
                         what: str = "target") -> float:
    """Factor that gives `target` (mask on `grid`) the dose `rx_gy` to `volume_pct` % of its volume."""
    dvh = compute_dvhs(dose, {what: target}, grid=grid)[what]
    d = float(dvh.dose_at_percent(volume_pct))
    if not np.isfinite(d) or d <= 0:
        raise OptimizationError(f"{what} gets no dose; cannot normalise")
    return rx_gy / d


def normalize_weights(problem: PlanningProblem, weights: np.ndarray, volume_pct: float | None = 95.0) -> float:
    """Factor that gives the highest-dose target its prescription to `volume_pct` % of its volume."""
    if volume_pct is None:
        return 1.0
    rx = problem.highest_target()
    inf = problem.influence
    return normalization_factor(inf.dose(weights), problem.structures[rx.structure], inf.grid, rx.dose_gy, volume_pct,
                                f"case '{problem.case_id}': target '{rx.structure}'")


class _Terms:
    """Objectives bound to matrix rows: value and voxel gradient of the sum."""

    def __init__(self, problem: PlanningProblem, objectives: ObjectiveSet):
        self.bound = []
        self.skipped = []
        for obj in objectives:
            rows = problem.rows(obj.structure)
            if rows is None:
                self.skipped.append((repr(obj), f"structure '{obj.structure}' is not in the case"))
                continue
            if isinstance(obj, NormalTissueObjective):
                # normal tissue: the structure's voxels outside the targets
                dist = problem.target_distance_mm()[rows]
                keep = dist > 0
                rows, dist = rows[keep], dist[keep]
                extra = (dist, problem.reference_dose_gy)
            else:
                extra = ()
            if rows.size == 0:
                self.skipped.append((repr(obj), f"structure '{obj.structure}' has no voxel on the dose grid"))
                continue
            self.bound.append((obj, rows, extra))
        if not any(problem.is_target(o.structure) for o, _, _ in self.bound):
            reasons = "; ".join(r for _, r in self.skipped) or "no objective names a target"
            raise OptimizationError(f"case '{problem.case_id}': no usable target objective ({reasons})")

    def __call__(self, dose: np.ndarray) -> tuple[float, np.ndarray]:
        total = 0.0
        grad = np.zeros(dose.size, np.float64)
        for obj, rows, extra in self.bound:
            v, g = obj.penalty(dose[rows], *extra)
            total += v
            grad[rows] += g
        return total, grad


class BuiltinTarget:
    """Fluence-map optimisation with L-BFGS-B; the default optimizer target.

    Parameters
    ----------
    max_iterations : int
        L-BFGS-B iteration limit.
    tolerance : float
        Stop when the relative decrease of the objective is below this.
    smoothing : (float, float)
        X and Y fluence smoothing (Eclipse-like defaults 40, 30); 0 disables.
    normalization_volume_pct : float or None
        Normalise so the highest-dose target gets its prescription to this
        % of its volume (95 by default; 97 for GDP-HMM); None: no normalisation.
    tail_threshold : float or None
        For matrices of more than ``SPLIT_MIN_NNZ`` nonzeros, iterate on the
        entries above this fraction of their beamlet's maximum (about 6 % of
        the nonzeros at 0.003) with the dose of the rest (the smooth scatter
        tail, about a fifth of the dose) held fixed, refreshed from the exact
        matrix ``tail_refreshes`` times; the final dose and objective are
        exact. None always uses the whole matrix.
    record_iterates : bool
        Keep the weights of every iteration in ``timings["iterates"]`` (for
        benchmarks that evaluate the exact objective along the way).
    """

    name = "builtin"

    def __init__(self, max_iterations: int = 300, tolerance: float = 1e-5, smoothing=(40.0, 30.0),
                 normalization_volume_pct: float | None = 95.0, tail_threshold: float | None = 0.003,
                 tail_refreshes: int = 3, record_iterates: bool = False):
        if max_iterations < 1:
            raise OptimizationError(f"max_iterations must be >= 1, got {max_iterations}")
        self.max_iterations = int(max_iterations)
        self.tolerance = float(tolerance)
        self.smoothing = tuple(float(s) for s in smoothing)
        self.normalization_volume_pct = normalization_volume_pct
        self.tail_threshold = tail_threshold
        self.tail_refreshes = max(0, int(tail_refreshes))
        self.record_iterates = bool(record_iterates)

    def start_weights(self, problem: PlanningProblem) -> np.ndarray:
        """Uniform weights that give the targets their highest prescription on average."""
        ones = np.ones(problem.n_beamlets, np.float32)
        d = problem.influence.dose_vector(ones)
        rows = problem.rows(problem.highest_target().structure)
        mean = float(d[rows].mean()) if rows is not None and rows.size else 0.0
        if mean <= 0:
            raise OptimizationError(f"case '{problem.case_id}': the beamlets deliver no dose to the target")
        return ones * np.float32(problem.reference_dose_gy / mean)

    def optimize(self, problem: PlanningProblem, objectives: ObjectiveSet, start=None) -> OptimizationResult:
        t0 = time.perf_counter()
        terms = _Terms(problem, objectives)
        inf = problem.influence
        w0 = self.start_weights(problem)
        if start is not None:
            x0 = np.asarray(start, np.float64)
            if x0.shape != (problem.n_beamlets,) or not np.all(np.isfinite(x0)) or np.any(x0 < 0):
                raise OptimizationError(
                    f"case '{problem.case_id}': start weights must be {problem.n_beamlets} finite values >= 0"
                )
        else:
            x0 = w0.astype(np.float64)
        w_ref = float(w0[0])
        lx, ly = smoothing_operators(problem)
        # smoothing in dose units: (dw / w_ref * Rx)^2, mean over pairs
        unit = (problem.reference_dose_gy / w_ref) ** 2 * SMOOTHING_SCALE
        cx = self.smoothing[0] * unit / max(lx.shape[0], 1)
        cy = self.smoothing[1] * unit / max(ly.shape[0], 1)
        lap = (cx * (lx.T @ lx) + cy * (ly.T @ ly)).tocsr()

        history, history_t = [], []
        last = {}
        if self.tail_threshold is not None and inf.nnz > SPLIT_MIN_NNZ:
            core, tail = inf.split_tail(self.tail_threshold)
            rounds = 1 + self.tail_refreshes
        else:
            core, tail, rounds = inf, None, 1

        def make_fun(offset):
            def fun(x):
                w = x.astype(np.float32)
                dose = core.dose_vector(w).astype(np.float64) + offset
                f, gv = terms(dose)
                grad = core.gradient(gv.astype(np.float32)).astype(np.float64)
                sx = lap @ x
                f += float(x @ sx)
                grad += 2.0 * sx
                last["f"] = f
                return f, grad
            return fun

        iterates = []

        def callback(xk):
            history.append(last["f"])
            history_t.append(time.perf_counter() - t0)
            if self.record_iterates:
                iterates.append(np.asarray(xk, np.float32).copy())

        t1 = time.perf_counter()
        x, nit, success, message = x0, 0, False, ""
        per_round = max(1, -(-self.max_iterations // rounds))
        round_starts = []
        for _ in range(rounds):
            round_starts.append(len(history))
            offset = tail.dose_vector(x.astype(np.float32)).astype(np.float64) if tail is not None else 0.0
            res = so.minimize(make_fun(offset), x, jac=True, method="L-BFGS-B",
                              bounds=[(0.0, None)] * problem.n_beamlets, callback=callback,
                              options={"maxiter": per_round, "ftol": self.tolerance, "gtol": 1e-9, "maxcor": 20})
            x, nit, success, message = res.x, nit + int(res.nit), bool(res.success), str(res.message)
        t2 = time.perf_counter()
        weights = np.maximum(x, 0.0).astype(np.float32)
        factor = normalize_weights(problem, weights, self.normalization_volume_pct)
        weights *= np.float32(factor)
        dose = inf.dose(weights)
        t3 = time.perf_counter()
        return OptimizationResult(
            weights=weights,
            dose=dose,
            fluences=fluence_maps(problem, weights),
            objective_history=history,
            iterations=nit,
            converged=success,
            message=message,
            normalization_factor=float(factor),
            timings={"setup_s": t1 - t0, "optimize_s": t2 - t1, "normalize_s": t3 - t2, "total_s": t3 - t0,
                     "history_s": history_t, "round_starts": round_starts,
                     **({"iterates": iterates} if self.record_iterates else {})},
            skipped_objectives=terms.skipped,
            target=self.name,
        )
