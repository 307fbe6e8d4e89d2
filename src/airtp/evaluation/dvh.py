"""Cumulative dose-volume histograms of many structures from one dose.

:func:`compute_dvhs` histograms the dose inside every structure with the
native core (OpenMP, or CUDA when a GPU is in use), in one call. The
structures are first encoded as runs of voxels along x
(:class:`PreparedStructures`, weights kept for partial volumes); the
encoding depends only on the structures, so when the same structures are
evaluated for many doses (a planning loop), prepare them once and pass the
prepared object: each dose then costs one validation pass over the dose and
one pass over the structures' voxels. Passing masks prepares them on the fly.
The arrays of the DVHs of one call (``differential_cc``, ``cumulative_cc()``)
are read-only views of two arrays the native core fills.

Semantics of a :class:`DVH` (what every metric builds on):

- Bins of ``bin_width`` Gy (default 0.01 Gy); bin ``k`` holds doses in
  ``[k w, (k+1) w)``. The minimum, maximum and mean dose and the volume are
  exact (accumulated voxel by voxel), not read from the bins.
- The cumulative DVH ``V(d)`` (volume receiving at least ``d``) is exact at
  the bin edges and linear between them, as if the doses inside a bin were
  spread evenly over it; the first and last occupied bins are narrowed to the
  exact minimum and maximum. So ``V(d) = total`` for ``d <= min``, ``V(d) = 0``
  for ``d > max``, and any dose read from the curve is within one bin width
  of the voxel-exact value.
- ``dose_at_volume(v)`` is the largest dose ``d`` with ``V(d) >= v``, the
  minimum dose of the hottest ``v`` (e.g. D0.03cc); ``v`` beyond the total
  volume gives the minimum dose, ``v <= 0`` the maximum.
- Voxels count with weight 1 (boolean masks) or with a fractional weight in
  [0, 1] (partial volumes, float masks); volumes are weights times the voxel
  volume, in cm^3.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from airtp import _core
from airtp import core as _backend
from airtp.errors import AirtpError, GridError, StructureError

__all__ = ["DVH", "DoseError", "PreparedStructures", "check_dose", "compute_dvhs", "DEFAULT_BIN_WIDTH_GY",
           "MAX_BINS"]

DEFAULT_BIN_WIDTH_GY = 0.01
# A dose of 1000 Gy at 0.01 Gy bins: refuse rather than allocate absurdly.
MAX_BINS = 2_000_000


class DoseError(AirtpError):
    """A dose array is malformed: wrong shape, NaN/inf or negative values."""


def check_dose(dose, shape=None, what: str = "dose") -> np.ndarray:
    """Return `dose` as C-contiguous float32 Gy after checking it.

    Raises :class:`DoseError` when it is not 3D, does not have `shape`, holds
    NaN or infinite values, or negative doses.
    """
    return _check_dose(dose, shape, what)[0]


def _check_dose(dose, shape=None, what: str = "dose") -> tuple[np.ndarray, float]:
    """check_dose, also returning the maximum dose (0 for an empty array).

    The value checks are one native pass (:func:`airtp._core.dose_scan`).
    """
    try:
        dose = np.asarray(dose)
    except Exception as exc:  # noqa: BLE001 - any conversion failure is bad input
        raise DoseError(f"{what}: not an array ({exc})") from None
    if dose.dtype.kind not in "fiu":
        raise DoseError(f"{what}: dose must be numeric (Gy), got dtype {dose.dtype}")
    if dose.ndim != 3:
        raise DoseError(f"{what}: dose must be a 3D (z, y, x) array, got shape {dose.shape}")
    if shape is not None and tuple(dose.shape) != tuple(shape):
        raise DoseError(f"{what}: dose shape {dose.shape} does not match the case grid shape {tuple(shape)}")
    dose = np.ascontiguousarray(dose, dtype=np.float32)
    n_bad, dmin, dmax = _core.dose_scan(dose)
    if n_bad:
        raise DoseError(f"{what}: dose has {n_bad} NaN or infinite value(s)")
    if dmin < 0:
        raise DoseError(f"{what}: dose has negative values (minimum {dmin:.6g} Gy)")
    return dose, dmax


@dataclass(frozen=True)
class DVH:
    """Dose-volume histogram of one structure (see the module doc for semantics).

    Attributes
    ----------
    name : str
    bin_width_gy : float
    differential_cc : ndarray (n_bins,)
        Volume (cm^3) whose dose falls in each bin (read-only when made by
        :func:`compute_dvhs`).
    volume_cc, min_gy, max_gy, mean_gy : float
        Exact totals; min/max/mean are NaN for an empty structure.
    voxels : int
        Voxels that belong (mask true or weight > 0).
    """

    name: str
    bin_width_gy: float
    differential_cc: np.ndarray
    volume_cc: float
    min_gy: float
    max_gy: float
    mean_gy: float
    voxels: int

    # Curve -----------------------------------------------------------------
    @property
    def empty(self) -> bool:
        return self.voxels == 0 or self.volume_cc <= 0

    def edges_gy(self) -> np.ndarray:
        """Bin edges k * w, k = 0 .. n_bins."""
        return np.arange(self.differential_cc.size + 1, dtype=np.float64) * self.bin_width_gy

    def cumulative_cc(self) -> np.ndarray:
        """V(edge_k) for every bin edge: volume (cc) with dose >= edge_k.

        The sum of the differential from the last bin down (n_bins + 1
        values, the last 0). :func:`compute_dvhs` computes it natively with
        the histograms; it is then a read-only view.
        """
        cached = self.__dict__.get("_cum")
        if cached is not None:
            return cached
        c = np.cumsum(self.differential_cc[::-1])[::-1]
        return np.append(c, 0.0)

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """Points (dose Gy, volume cc) of the piecewise-linear cumulative DVH.

        Doses are non-decreasing, volumes non-increasing; a vertical step (a
        point mass, e.g. a uniform dose) appears as two points at one dose.
        """
        cached = self.__dict__.get("_curve")
        if cached is not None:
            return cached
        if self.empty:
            out = (np.array([0.0]), np.array([0.0]))
        else:
            edges, cum = self.edges_gy(), self.cumulative_cc()
            inside = (edges > self.min_gy) & (edges <= self.max_gy)
            x = np.concatenate(([self.min_gy], edges[inside], [self.max_gy]))
            y = np.concatenate(([self.volume_cc], cum[inside], [0.0]))
            y = np.minimum(y, self.volume_cc)
            out = (x, y)
        object.__setattr__(self, "_curve", out)
        return out

    # Reading the curve ---------------------------------------------------
    def volume_at(self, dose_gy) -> np.ndarray | float:
        """V(d) in cc: volume receiving at least `dose_gy` (scalar or array)."""
        d = np.asarray(dose_gy, dtype=np.float64)
        if self.empty:
            return np.zeros_like(d)[()] if d.ndim else 0.0
        x, y = self.curve()
        i = np.searchsorted(x, d, side="left")  # first point with x >= d
        i_c = np.clip(i, 1, x.size - 1)
        x0, x1, y0, y1 = x[i_c - 1], x[i_c], y[i_c - 1], y[i_c]
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.where(x1 > x0, (d - x0) / (x1 - x0), 1.0)
        v = y0 + np.clip(t, 0.0, 1.0) * (y1 - y0)
        exact = (i < x.size) & (x[np.minimum(i, x.size - 1)] == d)
        v = np.where(exact, y[np.minimum(i, x.size - 1)], v)
        v = np.where(d <= self.min_gy, self.volume_cc, v)
        v = np.where(d > self.max_gy, 0.0, v)
        return v[()] if v.ndim == 0 else v

    def dose_at(self, volume_cc) -> np.ndarray | float:
        """Largest dose d with V(d) >= `volume_cc` (minimum dose of the hottest volume)."""
        v = np.asarray(volume_cc, dtype=np.float64)
        if self.empty:
            return np.full_like(v, np.nan)[()] if v.ndim else float("nan")
        x, y = self.curve()
        # y is non-increasing; last index with y >= v
        ry = y[::-1]
        j = y.size - np.searchsorted(ry, v, side="left") - 1
        j_c = np.clip(j, 0, x.size - 2)
        x0, x1, y0, y1 = x[j_c], x[j_c + 1], y[j_c], y[j_c + 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.where(y0 > y1, (y0 - v) / (y0 - y1), 0.0)
        d = x0 + np.clip(t, 0.0, 1.0) * (x1 - x0)
        d = np.where(j >= x.size - 1, x[-1], d)
        d = np.where(v >= self.volume_cc, self.min_gy, d)
        d = np.where(v <= 0, self.max_gy, d)
        return d[()] if d.ndim == 0 else d

    def volume_percent_at(self, dose_gy):
        """V(d) as a percentage of the structure volume."""
        if self.empty:
            return float("nan")
        return 100.0 * np.asarray(self.volume_at(dose_gy)) / self.volume_cc

    def dose_at_percent(self, percent):
        """Dose covering `percent` % of the structure (D95%, D99.5% ...)."""
        return self.dose_at(np.asarray(percent, dtype=np.float64) / 100.0 * self.volume_cc)


def _members(structures, names, grid_shape, against="dose"):
    if isinstance(structures, Mapping):
        names = list(structures) if names is None else list(names)
        arrays = [structures[n] for n in names]
    else:
        arrays = list(structures)
        names = [f"structure{i}" for i in range(len(arrays))] if names is None else list(names)
    if len(names) != len(arrays):
        raise StructureError(f"{len(names)} names for {len(arrays)} structures")
    if grid_shape is None:
        if not arrays:
            raise StructureError("no structures: give the grid shape")
        grid_shape = np.shape(arrays[0])
    members = []
    for name, a in zip(names, arrays):
        a = np.asarray(a)
        if a.shape != tuple(grid_shape):
            raise StructureError(f"structure '{name}': shape {a.shape} does not match the {against} shape "
                                 f"{tuple(grid_shape)}")
        if a.dtype == np.bool_ or a.dtype == np.uint8:
            members.append(np.ascontiguousarray(a))
        elif a.dtype.kind == "f":
            w = np.ascontiguousarray(a, dtype=np.float32)
            if not np.isfinite(w).all() or w.min() < 0 or w.max() > 1:
                raise StructureError(f"structure '{name}': partial-volume weights must lie in [0, 1]")
            members.append(w)
        else:
            raise StructureError(f"structure '{name}': mask must be boolean (or float weights in [0, 1]), got {a.dtype}")
    return names, members, tuple(int(n) for n in grid_shape)


class PreparedStructures:
    """Structures encoded once, for the DVHs of many doses.

    Every structure becomes a list of runs of voxels along x (a run never
    crosses a row) that belong to it; float structures keep their weights
    (partial volumes). Pass the object to :func:`compute_dvhs` instead of the
    masks: the encoding is then paid once, not for every dose. The object
    copies what it needs; later changes to the masks do not affect it.

    Parameters
    ----------
    structures : mapping name -> mask, or a sequence of masks
        As for :func:`compute_dvhs` (boolean / uint8 masks, or float weights
        in [0, 1]); any :class:`~airtp.StructureSet` works.
    names : list of str, optional
        Subset / order of the mapping's names, or names for a sequence.
    shape : (z, y, x), optional
        Grid shape; by default that of the first structure (required when
        there are none).

    Attributes
    ----------
    names : tuple of str
    shape : tuple of int
    voxels : dict name -> int
        Voxels that belong to each structure.
    n_runs, nbytes : int
        Runs in total and memory held, in bytes.
    """

    def __init__(self, structures, names=None, shape=None):
        names, members, shape = _members(structures, names, shape, against="grid")
        if len(set(names)) != len(names):
            raise StructureError("structure names must be unique")
        self.names = tuple(names)
        self.shape = shape
        self._index = _core.DvhIndex(members, shape)
        self._pos = {n: i for i, n in enumerate(self.names)}
        self.voxels = dict(zip(self.names, (int(v) for v in self._index.voxels)))

    @property
    def n_runs(self) -> int:
        return int(self._index.n_runs)

    @property
    def nbytes(self) -> int:
        return int(self._index.nbytes)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name) -> bool:
        return name in self._pos

    def __repr__(self) -> str:
        return (f"PreparedStructures({len(self.names)} structures, grid {self.shape}, {self.n_runs} runs, "
                f"{self.nbytes / 1e6:.1f} MB)")


def _make_dvh(name, bin_width_gy, differential_cc, cumulative_cc, volume_cc, min_gy, max_gy, mean_gy, voxels):
    # DVH(...) without the frozen dataclass's per-field object.__setattr__,
    # with the natively computed cumulative curve cached.
    d = object.__new__(DVH)
    d.__dict__.update(name=name, bin_width_gy=bin_width_gy, differential_cc=differential_cc, volume_cc=volume_cc,
                      min_gy=min_gy, max_gy=max_gy, mean_gy=mean_gy, voxels=voxels, _cum=cumulative_cc)
    return d


def compute_dvhs(dose, structures, *, voxel_volume_cc: float | None = None, grid=None, names=None,
                 bin_width_gy: float = DEFAULT_BIN_WIDTH_GY, use_gpu: bool | None = None) -> dict[str, DVH]:
    """DVHs of many structures from one dose, in one native call.

    Parameters
    ----------
    dose : (z, y, x) array, Gy
        Checked by :func:`check_dose` (finite, non-negative).
    structures : PreparedStructures, or mapping name -> mask, or a sequence of masks
        Prepared structures (reused for every dose: see
        :class:`PreparedStructures`), or boolean masks / float32 weights in
        [0, 1] for partial volumes (any :class:`~airtp.StructureSet`),
        prepared on the fly.
    voxel_volume_cc, grid :
        The voxel volume, given directly or through a :class:`~airtp.Grid`
        (whose shape the dose must have). Without either, volumes are voxel
        counts (1 cc per voxel).
    names : list of str, optional
        Subset / order of the names (of the mapping or of the prepared
        structures), or names for a sequence. A prepared object is always
        evaluated whole; `names` only selects what is returned.
    bin_width_gy : float
        Histogram bin width (default 0.01 Gy).
    use_gpu : bool, optional
        Force the CUDA (True) or CPU (False) kernel; default: by
        :func:`airtp.core.use_gpu`.
    """
    if grid is not None:
        dose, dmax = _check_dose(dose, grid.shape)
        if voxel_volume_cc is None:
            voxel_volume_cc = grid.voxel_volume_cc
    else:
        dose, dmax = _check_dose(dose)
    vv = 1.0 if voxel_volume_cc is None else float(voxel_volume_cc)
    if not (np.isfinite(vv) and vv > 0):
        raise GridError(f"voxel volume must be positive, got {voxel_volume_cc}")
    if not (np.isfinite(bin_width_gy) and bin_width_gy > 0):
        raise AirtpError(f"DVH bin width must be positive, got {bin_width_gy} Gy")
    if isinstance(structures, PreparedStructures):
        prep = structures
        if prep.shape != dose.shape:
            raise StructureError(f"prepared structures: grid shape {prep.shape} does not match the dose shape "
                                 f"{dose.shape}")
        if names is None:
            wanted = range(len(prep.names))
        else:
            unknown = [n for n in names if n not in prep._pos]
            if unknown:
                raise StructureError(f"structure '{unknown[0]}' is not among the prepared structures")
            wanted = [prep._pos[n] for n in names]
    else:
        prep = PreparedStructures.__new__(PreparedStructures)
        names_, members, _ = _members(structures, names, dose.shape)
        prep.names = tuple(names_)
        prep._index = _core.DvhIndex(members, dose.shape)
        wanted = range(len(prep.names))
    n_bins = int(np.floor(dmax / bin_width_gy)) + 2
    if n_bins > MAX_BINS:
        raise DoseError(f"dose maximum {dmax:.6g} Gy needs {n_bins} bins of {bin_width_gy} Gy (limit {MAX_BINS}); "
                        "is the dose in Gy?")
    if use_gpu is None:
        use_gpu = _backend.use_gpu(dose.size)
    use_gpu = bool(use_gpu) and _backend.backend() == "cuda"
    w = float(bin_width_gy)
    diff, cum, stats = prep._index.histograms(dose, w, n_bins, vv, use_gpu)
    diff.flags.writeable = False
    cum.flags.writeable = False
    stats = stats.tolist()
    nan = float("nan")
    out = {}
    for i in wanted:
        name = prep.names[i]
        vol, dsum, mn, mx, nvox = stats[i]
        if nvox == 0 or vol <= 0:
            out[name] = _make_dvh(name, w, diff[i], cum[i], vol * vv, nan, nan, nan, int(nvox))
        else:
            out[name] = _make_dvh(name, w, diff[i], cum[i], vol * vv, mn, mx, dsum / vol, int(nvox))
    return out
