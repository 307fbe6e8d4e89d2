"""DVHs of every structure of a head-and-neck patient: AIRTP vs NumPy.

Patient: ``airtp.phantoms.head_neck(n_ptv=3, seed=0)`` with its helper
structures (``airtp.structures.recipes.add_helpers``); random ellipsoids on a
160 x 256 x 256 grid with ``--synthetic``. Bins of 0.01 Gy.

- NumPy (reference): for each structure ``np.histogram(dose[mask])`` with
  the same bins, then the reversed cumulative sum (the cumulative DVH).
- AIRTP, per dose: ``compute_dvhs(dose, prepared)`` with the structures
  prepared once (``PreparedStructures``: runs along x), then the cumulative
  DVH of every structure (``DVH.cumulative_cc()``). This includes the dose
  validation (NaN/inf/negative) that NumPy does not do. In a planning loop
  the same structures are evaluated for many doses, so this is the time that
  counts; the ratio against NumPy is printed as "per dose".
- AIRTP, preparation: ``PreparedStructures(masks)``, paid once per
  structure set; and ``compute_dvhs(dose, masks)``, which prepares on the
  fly (preparation + one dose), for comparison.

Timing: ``--repeat`` rounds; each round evaluates ``--doses`` different doses
with both methods, alternating, so that load on the machine hits both alike.
The minimum (and median) over rounds of the per-dose time are reported; the
checks compare the cumulative DVHs of both methods for every dose.

    python benchmarks/bench_dvh.py [--repeat 30] [--doses 4] [--synthetic]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


def synthetic_patient(seed=0):
    rng = np.random.default_rng(seed)
    shape = (160, 256, 256)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    masks = {"Body": ((y - 128) / 110.0) ** 2 + ((x - 128) / 120.0) ** 2 <= 1}
    masks["Body"] = np.broadcast_to(masks["Body"], shape).copy()
    for i in range(40):
        c = rng.uniform([20, 60, 60], [140, 196, 196])
        r = rng.uniform([4, 4, 4], [30, 40, 40])
        masks[f"S{i:02d}"] = ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 <= 1
    return shape, (2.5, 1.0, 1.0), masks, (np.array(shape) / 2.0)


def phantom_patient():
    from airtp import phantoms
    from airtp.structures.recipes import add_helpers

    case = phantoms.head_neck(n_ptv=3, seed=0)
    add_helpers(case)
    masks = {n: case.structures[n] for n in case.structures}
    ptv = next((m for n, m in masks.items() if n.upper().startswith("PTV")), None)
    centre = np.argwhere(ptv).mean(axis=0) if ptv is not None and ptv.any() else np.array(case.grid.shape) / 2.0
    return case.grid.shape, case.grid.spacing_mm, masks, centre


def smooth_dose(shape, spacing, centre, peak=72.0, phase=0.0):
    """A smooth dose: `peak` Gy, Gaussian fall-off (sigma 35 mm) plus a gentle ripple."""
    z, y, x = (np.arange(n, dtype=np.float32) * s for n, s in zip(shape, spacing))
    cz, cy, cx = (c * s for c, s in zip(centre, spacing))
    r2 = ((z - cz) ** 2)[:, None, None] + ((y - cy) ** 2)[None, :, None] + ((x - cx) ** 2)[None, None, :]
    ripple = 1 + 0.03 * np.sin(x / 7.0 + phase)[None, None, :] * np.cos(y / 9.0)[None, :, None]
    return (peak * np.exp(-r2 / (2 * 35.0**2)) * ripple).astype(np.float32)


def numpy_dvhs(dose, masks, bin_width, n_bins):
    out = {}
    for name, m in masks.items():
        h, _ = np.histogram(dose[m], bins=n_bins, range=(0.0, n_bins * bin_width))
        out[name] = np.cumsum(h[::-1])[::-1]
    return out


def ours_dvhs(compute_dvhs, dose, structures, bin_width):
    dvhs = compute_dvhs(dose, structures, bin_width_gy=bin_width, use_gpu=False)
    return dvhs, {n: d.cumulative_cc() for n, d in dvhs.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30, help="rounds (minimum and median over them)")
    ap.add_argument("--doses", type=int, default=4, help="different doses per round")
    ap.add_argument("--synthetic", action="store_true", help="random ellipsoids instead of the phantom")
    args = ap.parse_args()

    from airtp import _core
    from airtp.evaluation.dvh import PreparedStructures, compute_dvhs

    if args.synthetic:
        shape, spacing, masks, centre = synthetic_patient()
        source = "synthetic ellipsoids"
    else:
        shape, spacing, masks, centre = phantom_patient()
        source = "airtp.phantoms.head_neck(n_ptv=3, seed=0) + add_helpers"
    doses = [smooth_dose(shape, spacing, centre, peak=72.0 - 1.5 * i, phase=0.7 * i) for i in range(args.doses)]
    n_vox = int(np.prod(shape))
    in_structs = sum(int(np.count_nonzero(m)) for m in masks.values())
    print(f"patient: {source}; grid {tuple(shape)} ({n_vox / 1e6:.2f} M voxels), {len(masks)} structures, "
          f"{in_structs / 1e6:.2f} M structure voxels; {len(doses)} doses, 0.01 Gy bins; "
          f"threads {_core.max_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")

    w = 0.01
    t_prep = []
    for _ in range(3):
        t0 = time.perf_counter()
        prep = PreparedStructures(masks)
        t_prep.append(time.perf_counter() - t0)
    print(f"prepared: {prep!r}")

    # warm-up (and the bin counts for NumPy: the same bins as ours)
    n_bins = []
    for d in doses:
        dv, _ = ours_dvhs(compute_dvhs, d, prep, w)
        n_bins.append(next(iter(dv.values())).differential_cc.size)
        numpy_dvhs(d, masks, w, n_bins[-1])

    # Agreement, on every dose. NumPy bins float32 doses against float32-rounded
    # edges, we against exact double edges k * 0.01: a dose within float32
    # rounding of an edge may land one bin apart, so a few voxels may differ
    # at an edge.
    worst = 0
    for d, nb in zip(doses, n_bins):
        o, r = ours_dvhs(compute_dvhs, d, prep, w)[1], numpy_dvhs(d, masks, w, nb)
        for name in masks:
            diff = int(np.abs(o[name][:-1] - r[name]).max()) if r[name].size else 0
            assert diff <= max(3, 1e-3 * np.count_nonzero(masks[name])), f"{name}: DVHs disagree by {diff} voxels"
            worst = max(worst, diff)
        del o, r

    # Timing: as in a planning loop, each result is used (the cumulative DVHs
    # are built) and dropped before the next dose.
    t_ours, t_np, t_fly = [], [], []
    for rnd in range(args.repeat):
        t0 = time.perf_counter()
        for d in doses:
            res = ours_dvhs(compute_dvhs, d, prep, w)
            del res
        t_ours.append((time.perf_counter() - t0) / len(doses))
        t0 = time.perf_counter()
        for d, nb in zip(doses, n_bins):
            res = numpy_dvhs(d, masks, w, nb)
            del res
        t_np.append((time.perf_counter() - t0) / len(doses))
        if rnd < 3:
            t0 = time.perf_counter()
            res = ours_dvhs(compute_dvhs, doses[rnd % len(doses)], masks, w)
            t_fly.append(time.perf_counter() - t0)
            del res

    a, b = min(t_ours), min(t_np)
    am, bm = statistics.median(t_ours), statistics.median(t_np)
    print(f"agreement: cumulative DVHs differ by at most {worst} voxel(s), at single bin edges")
    print(f"numpy  (per-structure np.histogram + cumsum), per dose: {b * 1e3:8.2f} ms  (median {bm * 1e3:.2f})")
    print(f"airtp  (prepared structures),            per dose: {a * 1e3:8.2f} ms  (median {am * 1e3:.2f})")
    print(f"ratio numpy / airtp, per dose: {b / a:.1f}x  (medians: {bm / am:.1f}x)")
    print(f"one-off preparation PreparedStructures(masks): {min(t_prep) * 1e3:.1f} ms "
          f"(= {min(t_prep) / a:.0f} per-dose evaluations; paid once per structure set)")
    print(f"airtp from masks (prepares on the fly + one dose): {min(t_fly) * 1e3:.1f} ms; "
          f"ratio numpy / that: {b / min(t_fly):.1f}x")

    from airtp import core

    if core.backend() == "cuda":
        compute_dvhs(doses[0], prep, bin_width_gy=w, use_gpu=True)
        t0 = time.perf_counter()
        gpu = compute_dvhs(doses[0], prep, bin_width_gy=w, use_gpu=True)
        tg = time.perf_counter() - t0
        cpu = compute_dvhs(doses[0], prep, bin_width_gy=w, use_gpu=False)
        same = all(np.array_equal(gpu[n].differential_cc, cpu[n].differential_cc) for n in masks)
        print(f"airtp CUDA (prepared), per dose: {tg * 1e3:8.2f} ms; identical histograms: {same}")


if __name__ == "__main__":
    main()
