"""Step-and-shoot decomposition of an integer intensity matrix (Engel 2005).

Rows are leaf pairs, columns fluence bins. A matrix A >= 0 is written as
``A = sum_k u_k S_k``, each S_k a 0/1 segment with one run of ones per row
(one leaf opening per pair; rows may be closed), u_k > 0 integers.

Row complexity ``c_i = sum_j max(0, a_ij - a_i,j-1)`` (a_i,-1 = 0) is the least
MU a row can be delivered in, and ``c(A) = max_i c_i`` the least total MU of
any decomposition (interdigitation allowed, as on the Millennium MLC). Engel's
algorithm keeps the total MU at that optimum: each step takes the largest u
for which every row has an opening [l, r) with ``a >= u`` on it and a
remainder of complexity ``<= c(A) - u``; the segment count is heuristic. Per
row we take the opening that leaves the least complexity, then the longest.

Subtracting u on [l, r) changes the row complexity only at the two ends:
at l the rise ``a_l - a_l-1`` shrinks by u, at r (inside the row) the step
``a_r - a_r-1`` grows by u. A unit step always exists (the first rise to the
first fall), so the loop ends after at most c(A) steps.
"""

from __future__ import annotations

import numpy as np

__all__ = ["row_complexity", "engel_decompose"]


def row_complexity(a: np.ndarray) -> np.ndarray:
    """Sum of positive increments along each row (zero before the first column)."""
    a = np.asarray(a)
    d = np.diff(a, axis=-1, prepend=0)
    return np.maximum(d, 0).sum(axis=-1)


def _openings(a: np.ndarray, u: int, cap: int):
    """Per row, the best opening [l, r) for weight u with complexity <= cap afterwards, or None if none.

    Returns (ok, l, r, new_complexity) arrays over rows; l == r is a closed row.
    """
    n_rows, n = a.shape
    prev = np.concatenate([np.zeros((n_rows, 1), a.dtype), a[:, :-1]], axis=1)
    rise = a - prev
    c = np.maximum(rise, 0).sum(axis=1)
    # change of complexity at the left end l (index 0..n-1) and right end r (1..n; none at n)
    dl = np.maximum(rise - u, 0) - np.maximum(rise, 0)
    dr = np.zeros((n_rows, n + 1), a.dtype)
    dr[:, 1:n] = np.maximum(rise[:, 1:] + u, 0) - np.maximum(rise[:, 1:], 0)
    # a >= u on [l, r): r runs to the first column below u after l
    below = a < u
    new = c[:, None, None] + dl[:, :, None] + dr[:, None, :]  # (rows, l, r)
    l_idx = np.arange(n)[:, None]
    r_idx = np.arange(n + 1)[None, :]
    # first column >= l that is below u: cumulative trick per row
    nxt = np.full((n_rows, n + 1), n, int)
    for j in range(n - 1, -1, -1):
        nxt[:, j] = np.where(below[:, j], j, nxt[:, j + 1])
    feasible = (r_idx > l_idx)[None] & (r_idx <= nxt[:, :n, None]) & (new <= cap)
    # rank: least new complexity, then the longest opening, then the leftmost
    length = (r_idx - l_idx)[None].astype(float)
    score = np.where(feasible, new * (n + 2.0) - length, np.inf)
    flat = score.reshape(n_rows, -1)
    best = np.argmin(flat, axis=1)
    ok_open = np.isfinite(flat[np.arange(n_rows), best])
    l, r = np.divmod(best, n + 1)
    new_c = np.where(ok_open, new.reshape(n_rows, -1)[np.arange(n_rows), best], c)
    closed_ok = c <= cap
    ok = ok_open | closed_ok
    l = np.where(ok_open, l, 0)
    r = np.where(ok_open, r, 0)
    return ok, l, r, new_c


def engel_decompose(a, max_segments: int | None = None) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Segments (u, l, r) of integer matrix `a` (rows x bins): opening [l_i, r_i) of row i, weight u.

    ``sum u == c(a)`` (optimal total MU) and the segments add up to `a` exactly.
    """
    a = np.array(a, dtype=np.int64, copy=True)
    if a.ndim != 2 or np.any(a < 0):
        raise ValueError("intensity matrix must be 2-D and >= 0")
    segments = []
    while a.any():
        c = int(row_complexity(a).max())
        for u in range(int(a.max()), 0, -1):
            ok, l, r, _ = _openings(a, u, c - u)
            if ok.all():
                break
        else:  # pragma: no cover - a unit step always exists (module doc)
            raise RuntimeError("no unit segment found")
        for i in np.flatnonzero(r > l):
            a[i, l[i]:r[i]] -= u
        segments.append((u, l.copy(), r.copy()))
        if max_segments is not None and len(segments) > max_segments:
            raise RuntimeError("too many segments")
    return segments
