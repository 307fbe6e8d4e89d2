"""Beamlet dose-influence matrices and doses of fluences and MLC apertures.

Policy lives here (which voxels, which beamlets, which grid, which device);
the hot loops (Siddon ray tracing, the pencil-beam kernel written straight
into CSC arrays, sparse products) are in the native core (csrc/raytrace,
csrc/pencilbeam, csrc/spmv), on the GPU when one is present and the problem
is large enough (see :func:`airtp.core.use_gpu`).

Rows of the matrix are the dose-grid voxels inside the body (``voxels``: flat
indices into the dose grid, increasing); columns are beamlets, beam by beam,
within a beam row by row of the beam's-eye view (y-major, x-minor).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from airtp import _core, core
from airtp.beams.beam import Beam, BeamletGrid
from airtp.case import Case
from airtp.dose.beam_model import BeamModel
from airtp.dose.hu_density import HuDensityTable
from airtp.errors import BeamError, DoseError
from airtp.grid import Grid
from airtp.structures.structure_set import StructureSet

__all__ = [
    "DoseInfluence", "dose_influence", "dose_of_fluence", "dose_of_aperture", "make_dose_grid",
    "resample_mask", "BEAMLET_DTYPE", "CPU_GPU_RTOL", "CPU_GPU_ATOL_OF_MAX",
]

# CPU and CUDA matrices agree on every value to this relative tolerance, or to
# CPU_GPU_ATOL_OF_MAX times the matrix maximum where values are small: the same
# double-precision formula rounded to float32, with erf from a table (error
# < 3e-8) on the CPU and exact on the GPU. Pairs exactly at the cut-off may be
# kept by one and dropped by the other. Not yet verified on a GPU.
CPU_GPU_RTOL = 1e-5
CPU_GPU_ATOL_OF_MAX = 1e-6

BEAMLET_DTYPE = np.dtype([("beam", np.int32), ("ix", np.int32), ("iy", np.int32), ("x_mm", np.float32), ("y_mm", np.float32)])


# --------------------------------------------------------------------------- grids
def make_dose_grid(ct: Grid, dose_grid_mm=None) -> Grid:
    """The dose grid: the CT grid itself, or a grid of spacing `dose_grid_mm` (scalar or (z, y, x)) over the same box."""
    if dose_grid_mm is None:
        return ct
    ds = np.broadcast_to(np.asarray(dose_grid_mm, float), (3,)).copy()
    if not np.all(np.isfinite(ds) & (ds > 0)):
        raise DoseError(f"dose grid spacing must be positive mm, got {dose_grid_mm}")
    sp_ct, n_ct = np.asarray(ct.spacing_mm), np.asarray(ct.shape)
    extent = n_ct * sp_ct
    n = np.maximum(1, np.ceil(extent / ds - 1e-6)).astype(int)
    centre = np.asarray(ct.origin_mm) + (n_ct - 1) * sp_ct / 2.0
    origin = centre - (n - 1) * ds / 2.0
    return Grid(tuple(n), tuple(ds), tuple(origin))


def resample_mask(mask: np.ndarray, src: Grid, dst: Grid) -> np.ndarray:
    """Nearest-neighbour resampling of a mask from grid `src` to grid `dst` (outside `src`: False)."""
    if dst == src:
        return np.asarray(mask, bool)
    idx = []
    inside = []
    for o_d, s_d, n_d, o_s, s_s, n_s in zip(dst.origin_mm, dst.spacing_mm, dst.shape, src.origin_mm, src.spacing_mm, src.shape):
        i = np.rint((o_d + s_d * np.arange(n_d) - o_s) / s_s).astype(np.int64)
        inside.append((i >= 0) & (i < n_s))
        idx.append(np.clip(i, 0, n_s - 1))
    out = np.asarray(mask, bool)[np.ix_(*idx)]
    return out & inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]


def _body_mask(case: Case) -> np.ndarray:
    name = case.structures.find("Body") or case.structures.find("External")
    if name is not None:
        return case.structures[name]
    return case.ct_hu > -400  # no body contour: everything denser than lung-ish air


# --------------------------------------------------------------------------- problem
@dataclass
class _Setup:
    case: Case
    model: BeamModel
    density: np.ndarray
    grid: Grid
    structures: StructureSet
    voxels: np.ndarray
    cutoff_mm: float


def _setup(case: Case, dose_grid_mm, model, hu_table, cutoff_mm, structures: bool = True) -> _Setup:
    model = BeamModel.load(model)
    table = HuDensityTable.load(hu_table)
    density = table(case.ct_hu)
    grid = make_dose_grid(case.grid, dose_grid_mm)
    body = resample_mask(_body_mask(case), case.grid, grid)
    masks = {}
    if structures:
        masks = {n: resample_mask(m, case.grid, grid) for n, m in case.structures.items()}
    voxels = np.flatnonzero(body).astype(np.int64)
    if voxels.size == 0:
        raise DoseError(f"case '{case.patient_id}': the body is empty on the dose grid")
    cutoff = model.cutoff_mm if cutoff_mm is None else float(cutoff_mm)
    if not cutoff > 0:
        raise DoseError(f"lateral cut-off must be positive, got {cutoff_mm}")
    return _Setup(case, model, density, grid, StructureSet(grid, masks), voxels, cutoff)


def _mm(values) -> str:
    return ", ".join(f"{float(v):.1f}" for v in values)


def _check_beam(case: Case, beam: Beam) -> None:
    if not isinstance(beam, Beam):
        raise BeamError(f"expected a Beam, got {type(beam).__name__}")
    if not case.grid.contains_mm(beam.isocenter_mm):
        lo = case.grid.index_to_mm([0, 0, 0])
        hi = case.grid.index_to_mm(np.asarray(case.grid.shape) - 1)
        raise BeamError(
            f"beam '{beam.name}': isocentre ({_mm(beam.isocenter_mm)}) mm (z, y, x) lies outside "
            f"the CT of case '{case.patient_id}', which spans ({_mm(lo)}) to ({_mm(hi)}) mm"
        )


def _problem(s: _Setup, beams: list[Beam], grids: list[BeamletGrid]) -> tuple[dict, int]:
    rows, maps, offset, col = [], [], 0, 0
    for beam, g in zip(beams, grids):
        u, v, w = beam.axes()
        ny, nx = g.active.shape
        m = np.full((ny, nx), -1, np.int32)
        n_act = int(g.active.sum())
        m[g.active] = np.arange(col, col + n_act, dtype=np.int32)
        col += n_act
        maps.append(m.ravel())
        rows.append(np.concatenate([beam.source_mm(), u, v, w, [beam.sad_mm, g.x0_mm, g.y0_mm, g.size_mm[0], g.size_mm[1], nx, ny, offset]]))
        offset += nx * ny
    amp, sigma, step = s.model.tables()
    ct = s.case.grid
    problem = {
        "density": s.density, "ct_origin": ct.origin_mm, "ct_spacing": ct.spacing_mm,
        "dose_shape": s.grid.shape, "dose_origin": s.grid.origin_mm, "dose_spacing": s.grid.spacing_mm,
        "voxels": s.voxels, "beams": np.asarray(rows, np.float64).reshape(len(beams), 20),
        "column_map": np.concatenate(maps) if maps else np.zeros(0, np.int32), "ncols": col,
        "amp": amp, "sigma": sigma, "depth_step": step, "cutoff_mm": s.cutoff_mm,
    }
    return problem, col


def _use_cuda(backend: str | None, work: int) -> bool:
    if backend is None:
        return core.use_gpu(work)
    if backend not in ("cpu", "cuda"):
        raise DoseError(f"backend must be 'cpu', 'cuda' or None, got {backend!r}")
    if backend == "cuda" and core.backend() != "cuda":
        raise DoseError("backend 'cuda' requested but no CUDA device is usable")
    return backend == "cuda"


def _target_mask(case: Case, targets) -> tuple[np.ndarray, list[str]]:
    if targets is None:
        targets = [p.structure for p in case.prescriptions]
        if not targets:
            raise DoseError(f"case '{case.patient_id}': no target (give targets= or a prescription)")
    elif isinstance(targets, str):
        targets = [targets]
    mask = np.zeros(case.grid.shape, bool)
    for name in targets:
        if name not in case.structures:
            raise DoseError(f"case '{case.patient_id}': target '{name}' is not in the structure set")
        m = case.structures[name]
        if not m.any():
            raise DoseError(f"case '{case.patient_id}': target '{name}' is empty")
        mask |= m
    return mask, list(targets)


# --------------------------------------------------------------------------- result
@dataclass
class DoseInfluence:
    """A beamlet dose-influence matrix D (Gy per unit weight), float32 CSC, voxels x beamlets."""

    matrix: sp.csc_matrix
    grid: Grid
    voxels: np.ndarray
    beamlets: np.ndarray
    beams: list[Beam]
    beamlet_grids: list[BeamletGrid]
    structures: StructureSet
    model: BeamModel
    backend: str = "cpu"
    timings: dict = field(default_factory=dict)

    @property
    def n_beamlets(self) -> int:
        return self.matrix.shape[1]

    @property
    def nnz(self) -> int:
        return int(self.matrix.nnz)

    def beam_columns(self, b: int) -> slice:
        """Columns of beam `b`."""
        cols = np.flatnonzero(self.beamlets["beam"] == b)
        return slice(int(cols[0]), int(cols[-1]) + 1) if cols.size else slice(0, 0)

    def _parts(self):
        m = self.matrix
        return np.asarray(m.indptr, np.int64), np.asarray(m.indices, np.int32), m.data

    # The products run on the CPU by default: the CUDA ones copy the whole
    # matrix to the device on every call, which pays only for a single large
    # product; pass backend="cuda" to use them.
    def dose_vector(self, weights, backend: str = "cpu") -> np.ndarray:
        """D w at the body voxels (float32)."""
        w = np.ascontiguousarray(weights, np.float32)
        if w.shape != (self.n_beamlets,):
            raise DoseError(f"weights must have {self.n_beamlets} entries, got shape {w.shape}")
        return _core.csc_matvec(*self._parts(), self.matrix.shape[0], w, _use_cuda(backend, 0))

    def gradient(self, g, backend: str = "cpu") -> np.ndarray:
        """D^T g for g at the body voxels (float32)."""
        g = np.ascontiguousarray(g, np.float32)
        if g.shape != (self.matrix.shape[0],):
            raise DoseError(f"g must have {self.matrix.shape[0]} entries, got shape {g.shape}")
        return _core.csc_rmatvec(*self._parts(), self.matrix.shape[0], g, _use_cuda(backend, 0))

    def split_tail(self, rel_threshold: float = 0.003) -> tuple["DoseInfluence", "DoseInfluence"]:
        """(core, tail): the matrix split by value, ``core + tail`` being exactly this one.

        The tail holds the entries below ``rel_threshold`` of their column's
        maximum: the broad scatter tail of each beamlet, most of the nonzeros
        but a small, smooth share of the dose. Optimisers iterate on the core
        with the tail dose held fixed and refreshed now and then.
        """
        if rel_threshold < 0:
            raise DoseError(f"tail threshold must be >= 0, got {rel_threshold}")
        m = self.matrix
        cp, cr, cv, tp, tr, tv = _core.csc_split(*self._parts(), m.shape[0], float(rel_threshold))
        parts = []
        for ptr, rows, vals in ((cp, cr, cv), (tp, tr, tv)):
            if ptr[-1] < 2**31:  # int32 throughout: SciPy would otherwise widen the row indices
                ptr = ptr.astype(np.int32)
            mat = sp.csc_matrix((vals, rows, ptr), shape=m.shape)
            parts.append(DoseInfluence(mat, self.grid, self.voxels, self.beamlets, self.beams, self.beamlet_grids,
                                       self.structures, self.model, self.backend, dict(self.timings)))
        return parts[0], parts[1]

    def to_grid(self, values) -> np.ndarray:
        """Values at the body voxels as a (z, y, x) float32 array on the dose grid (0 elsewhere)."""
        out = np.zeros(self.grid.size, np.float32)
        out[self.voxels] = values
        return out.reshape(self.grid.shape)

    def dose(self, weights) -> np.ndarray:
        """Dose (Gy) on the dose grid of beamlet weights."""
        return self.to_grid(self.dose_vector(weights))


# --------------------------------------------------------------------------- API
def dose_influence(
    case: Case,
    beams: list[Beam],
    dose_grid_mm=None,
    beamlet_mm: float = 5.0,
    margin_mm: float = 5.0,
    targets=None,
    model=None,
    hu_table=None,
    cutoff_mm: float | None = None,
    backend: str | None = None,
) -> DoseInfluence:
    """Dose-influence matrix of 5 x 5 mm (default) beamlets covering the targets' projection plus `margin_mm`.

    Parameters
    ----------
    case : Case
        CT (HU) and structures; voxels outside ``Body`` are dropped.
    beams : list of Beam
    dose_grid_mm : None, float or (z, y, x)
        Dose grid spacing; None uses the CT grid. Structures are resampled
        (nearest neighbour) and returned in ``DoseInfluence.structures``.
    targets : None, str or list of str
        Structures whose projection the beamlets cover; default: the
        prescribed structures.
    model, hu_table : None, path or object
        Beam-data file (:class:`BeamModel`) and HU-to-density table; None uses
        the packaged defaults.
    cutoff_mm : float
        Lateral cut-off (default: the model's).
    backend : None, 'cpu' or 'cuda'
        None chooses the GPU when present and the problem is large.
    """
    import time

    t0 = time.perf_counter()
    beams = list(beams)
    if not beams:
        raise BeamError("no beams given")
    for b in beams:
        _check_beam(case, b)
    tmask, tnames = _target_mask(case, targets)
    s = _setup(case, dose_grid_mm, model, hu_table, cutoff_mm)
    tpts = case.grid.index_to_mm(np.argwhere(tmask))
    grids = []
    for b in beams:
        bx, by, z = b.project(tpts)
        if np.any(z <= 0):
            raise BeamError(f"beam '{b.name}': target '{', '.join(tnames)}' reaches behind the source")
        grids.append(BeamletGrid.covering(bx, by, beamlet_mm, margin_mm))
    del tmask, tpts, bx, by, z  # the matrix is the peak: hold nothing else that is large while it is built
    problem, ncols = _problem(s, beams, grids)
    use_cuda = _use_cuda(backend, s.voxels.size * len(beams))
    t1 = time.perf_counter()
    colptr, rows, vals = _core.pencil_influence(problem, use_cuda)
    t2 = time.perf_counter()
    if rows.size < 2**31:
        colptr = colptr.astype(np.int32)
    else:
        rows = rows.astype(np.int64)
    matrix = sp.csc_matrix((vals, rows, colptr), shape=(s.voxels.size, ncols))
    # beamlet table
    table = np.zeros(ncols, BEAMLET_DTYPE)
    c = 0
    for bi, (b, g) in enumerate(zip(beams, grids)):
        iy, ix = np.nonzero(g.active)
        n = ix.size
        table["beam"][c : c + n] = bi
        table["ix"][c : c + n], table["iy"][c : c + n] = ix, iy
        table["x_mm"][c : c + n] = g.x0_mm + ix * g.size_mm[0]
        table["y_mm"][c : c + n] = g.y0_mm + iy * g.size_mm[1]
        if matrix.indptr[c + n] == matrix.indptr[c]:
            raise BeamError(f"beam '{b.name}' misses the body of case '{case.patient_id}': no body voxel within reach of its beamlets")
        c += n
    return DoseInfluence(matrix, s.grid, s.voxels, table, beams, grids, s.structures, s.model,
                         "cuda" if use_cuda else "cpu", {"setup_s": t1 - t0, "native_s": t2 - t1})


def dose_of_fluence(
    case: Case,
    beams: list[Beam],
    fluences: list[BeamletGrid],
    dose_grid_mm=None,
    model=None,
    hu_table=None,
    cutoff_mm: float | None = None,
    backend: str | None = None,
) -> np.ndarray:
    """Dose (Gy, (z, y, x) on the dose grid, 0 outside the body) of one fluence map per beam.

    Each fluence is a :class:`BeamletGrid` whose ``weights`` (ny, nx) give the
    weight (MU-like units) of every element; the matrix is not stored.
    """
    beams, fluences = list(beams), list(fluences)
    if len(beams) != len(fluences):
        raise BeamError(f"{len(beams)} beams but {len(fluences)} fluence maps")
    for b in beams:
        _check_beam(case, b)
    s = _setup(case, dose_grid_mm, model, hu_table, cutoff_mm, structures=False)
    grids, weights = [], []
    for b, f in zip(beams, fluences):
        w = np.ones(f.active.shape, np.float32) if f.weights is None else np.asarray(f.weights, np.float32)
        if w.shape != f.active.shape or not np.all(np.isfinite(w)):
            raise BeamError(f"beam '{b.name}': fluence weights must be finite with the beamlet grid's shape")
        g = BeamletGrid(f.x0_mm, f.y0_mm, f.size_mm, f.active & (w != 0))
        grids.append(g)
        weights.append(w[g.active])
    problem, ncols = _problem(s, beams, grids)
    out = np.zeros(s.grid.size, np.float32)
    if ncols:
        w = np.concatenate(weights).astype(np.float32)
        out[s.voxels] = _core.pencil_fluence_dose(problem, w, _use_cuda(backend, s.voxels.size * len(beams)))
    return out.reshape(s.grid.shape)


def dose_of_aperture(
    case: Case,
    beam: Beam,
    leaf_positions_mm,
    leaf_width_mm: float = 5.0,
    y_start_mm: float | None = None,
    weight: float = 1.0,
    resolution_mm: float = 1.0,
    **kw,
) -> np.ndarray:
    """Dose of one MLC aperture: leaf pair i opens BEV x in [left_i, right_i] (mm at the isocentre plane).

    Leaf pairs are stacked along BEV y from ``y_start_mm`` (default: centred on
    the axis), each ``leaf_width_mm`` wide. The aperture becomes a fluence of
    ``resolution_mm`` x leaf-width elements weighted by their open fraction
    times `weight`; other keywords go to :func:`dose_of_fluence`.
    """
    lp = np.asarray(leaf_positions_mm, float)
    if lp.ndim != 2 or lp.shape[1] != 2 or not np.all(np.isfinite(lp)):
        raise BeamError(f"beam '{beam.name}': leaf positions must be (n_pairs, 2) finite mm")
    if np.any(lp[:, 1] < lp[:, 0]):
        raise BeamError(f"beam '{beam.name}': a leaf pair overlaps (right < left)")
    n = lp.shape[0]
    y0 = -n * leaf_width_mm / 2.0 if y_start_mm is None else float(y_start_mm)
    open_ = lp[:, 1] > lp[:, 0]
    if not open_.any():
        return np.zeros(make_dose_grid(case.grid, kw.get("dose_grid_mm")).shape, np.float32)
    r = float(resolution_mm)
    ix1 = int(np.floor(lp[open_, 0].min() / r))
    ix2 = int(np.ceil(lp[open_, 1].max() / r))
    edges = (ix1 + np.arange(ix2 - ix1 + 1)) * r
    lo, hi = edges[:-1], edges[1:]
    frac = np.clip(np.minimum(hi[None, :], lp[:, 1:2]) - np.maximum(lo[None, :], lp[:, 0:1]), 0, r) / r
    g = BeamletGrid((ix1 + 0.5) * r, y0 + leaf_width_mm / 2.0, (r, float(leaf_width_mm)), frac > 0,
                    (frac * weight).astype(np.float32))
    return dose_of_fluence(case, [beam], [g], **kw)
