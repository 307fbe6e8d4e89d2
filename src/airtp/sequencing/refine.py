"""Direct aperture refinement of MU weights: with the apertures fixed, the MU of every segment or interval.

Each segment (IMRT) or control-point interval (VMAT) ``k`` gives, per MU, a
fluence ``phi_k`` on its beam's beamlet grid (open fractions of leaf and jaw
edges included, :func:`airtp.sequencing.fluence.beam_fluence_on_grid`). The MU
``m >= lower`` minimise a bounded least-squares misfit plus
``lam * ||m - m0||^2`` (a tiny pull toward the sequencer's own MU that only
settles directions the fit cannot tell apart):

- ``fluence`` (default): ``sum_b ||sum_k m_k phi_k - F_b||^2``, the ideal
  fluence F of every beam; beams do not overlap, so the normal equations are
  block-diagonal and cheap;
- ``dose``: ``sum_v w_v (sum_k m_k (D phi_k)_v - d*_v)^2`` with ``d* = D w*``
  the ideal dose; target voxels weigh ``target_weight``, the others are
  sampled (every k-th, weighted k) when the dense basis would be large.

On the head-and-neck phantom the dose fit lowered the deliverable plan's
score (it trades what the scorecard rewards for a uniform voxel misfit),
while the fluence fit kept it; hence the default.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
import scipy.optimize as so

__all__ = ["refine_mu", "refine_mode"]


def refine_mode(value, who: str) -> str:
    """'fluence', 'dose' or 'none' from a sequencer option (True: 'fluence', False: 'none')."""
    from airtp.errors import SequencingError

    mode = {True: "fluence", False: "none"}.get(value, value) if isinstance(value, bool) else value
    if mode not in ("fluence", "dose", "none"):
        raise SequencingError(f"{who}: refine must be 'fluence', 'dose' or 'none', got {value!r}")
    return mode

# Dense basis entries (voxels x columns) kept at most; beyond it, voxels are sampled.
MAX_BASIS_ENTRIES = 8_000_000


def _dose_basis(problem, columns, target_weight: float):
    inf = problem.influence
    n_vox = inf.matrix.shape[0]
    k_total = sum(phi.shape[0] for _, phi in columns)
    w_ideal = np.concatenate([f[g.active] for f, g in zip(problem.fluences, problem.grids)]).astype(np.float32)
    d_ideal = inf.dose_vector(w_ideal).astype(np.float64)
    weight = np.ones(n_vox)
    targets = np.zeros(n_vox, bool)
    if problem.target_rows is not None and len(problem.target_rows):
        targets[np.asarray(problem.target_rows)] = True
    # all target voxels; every k-th other voxel, weighted k, to bound memory
    others = ~targets
    stride = max(1, int(np.ceil(others.sum() * k_total / MAX_BASIS_ENTRIES)))
    keep = targets | (others & (np.cumsum(others) % stride == 0))
    weight[others] = stride
    weight[targets] = target_weight
    rows = np.flatnonzero(keep)
    cols_of = {}
    for b in range(len(problem.grids)):
        cols_of[b] = inf.beam_columns(b)
    basis = np.empty((rows.size, k_total), np.float32)
    j = 0
    for b, phi in columns:
        grid = problem.grids[b]
        p = (phi[:, grid.active] * problem.weight_per_mu).T.astype(np.float32)  # (beamlets, k) weight per MU
        block = inf.matrix[:, cols_of[b]] @ p
        basis[:, j:j + phi.shape[0]] = np.asarray(block)[rows]
        j += phi.shape[0]
    return basis, d_ideal[rows], weight[rows]


def _fluence_gram(problem, columns):
    """Gram matrix and right-hand side of the fluence fit; block-diagonal (beams do not overlap), built per block."""
    k_total = sum(phi.shape[0] for _, phi in columns)
    gram = np.zeros((k_total, k_total))
    rhs = np.zeros(k_total)
    j = 0
    for b, phi in columns:
        flat = phi.reshape(phi.shape[0], -1)
        k = flat.shape[0]
        gram[j:j + k, j:j + k] += flat @ flat.T
        rhs[j:j + k] += flat @ problem.fluence_mu(b).ravel()
        j += k
    # columns of one beam given in several groups couple too
    groups = {}
    j = 0
    for b, phi in columns:
        groups.setdefault(b, []).append((j, phi.reshape(phi.shape[0], -1)))
        j += phi.shape[0]
    for parts in groups.values():
        for x, (ja, fa) in enumerate(parts):
            for jb, fb in parts[x + 1:]:
                block = fa @ fb.T
                gram[ja:ja + fa.shape[0], jb:jb + fb.shape[0]] += block
                gram[jb:jb + fb.shape[0], ja:ja + fa.shape[0]] += block.T
    return gram, rhs


def refine_mu(problem, columns, mu0, lower=None, mode: str = "fluence", target_weight: float = 1.0,
              lam: float = 1e-4) -> np.ndarray:
    """Refined MU per column (see the module doc).

    Parameters
    ----------
    columns : list of (beam index, (k, ny, nx) array)
        Per-MU fluence of each segment/interval on that beam's beamlet grid, MU per fraction.
    mu0 : (K,) array
        The sequencer's MU (start and Tikhonov anchor).
    lower : (K,) array or None
        Lower bounds (default 0).
    mode : str
        ``fluence``: fit each beam's ideal fluence; ``dose``: fit the ideal
        dose through the influence matrix (falls back to fluence without one).
    """
    mu0 = np.asarray(mu0, float)
    if mu0.size == 0:
        return mu0
    if mode not in ("fluence", "dose"):
        raise ValueError(f"refinement mode must be 'fluence' or 'dose', got {mode!r}")
    if mode == "dose" and problem.influence is not None:
        basis, goal, weight = _dose_basis(problem, columns, target_weight)
        bw = basis * np.sqrt(weight)[:, None]
        gram = (bw.T @ bw).astype(np.float64)
        rhs = (bw.T @ (goal * np.sqrt(weight))).astype(np.float64)
    else:
        gram, rhs = _fluence_gram(problem, columns)
    scale = max(float(np.trace(gram)) / mu0.size, 1e-30)
    gram /= scale
    rhs /= scale
    lower = np.zeros_like(mu0) if lower is None else np.asarray(lower, float)
    q = gram + lam * np.eye(mu0.size)
    # m = lower + z, z >= 0
    return lower + _nonnegative_qp(q, rhs + lam * mu0 - q @ lower)


def _nonnegative_qp(q: np.ndarray, c: np.ndarray) -> np.ndarray:
    """argmin z^T q z - 2 c^T z over z >= 0 (q symmetric positive definite) by active-set NNLS on its Cholesky form."""
    chol = np.linalg.cholesky(q)  # q = L L^T:  z^T q z - 2 c^T z = ||L^T z - L^-1 c||^2 + const
    b = sla.solve_triangular(chol, c, lower=True)
    z, _ = so.nnls(chol.T, b, maxiter=50 * c.size)
    return z
