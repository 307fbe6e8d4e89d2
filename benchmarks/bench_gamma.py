"""Gamma index: AIRTP's native kernel against pymedphys.gamma on the same dose pair.

Dose pair: the dose of an AIRTP plan of a synthetic head-and-neck patient
(``phantoms.head_neck(n_ptv=3, seed=0)``, default grid 72 x 100 x 136 at
3 x 2.5 x 2.5 mm, 9-field IMRT, no refinement) as the reference, and the same
dose shifted by 2 mm along x (trilinear), scaled by 2 % and with 0.3 Gy
Gaussian noise as the evaluated dose, so that some voxels fail.
``--synthetic`` uses an analytic dose of the same grid instead of planning.

Criteria 3 %/3 mm and 2 %/2 mm, global, 10 % low-dose threshold, search up to
gamma 2, step distance / 10 (both tools' defaults but the cap). pymedphys is
optional (never an AIRTP dependency): install it in a throwaway environment,
``python -m venv --system-site-packages /tmp/pmp && /tmp/pmp/bin/pip install
pymedphys numba``, and run this script with ``/tmp/pmp/bin/python``. Its first
call compiles with numba; a warm-up call on a small grid pays that first.

Prints per criteria: time of AIRTP (minimum of ``--repeat``) and of
pymedphys (one run), the speed ratio, both pass rates, and per voxel the
median and 99th percentile of |gamma difference| (both capped at 2).

    python benchmarks/bench_gamma.py [--repeat 3] [--synthetic] [--gpu]
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np


def planned_dose():
    from airtp import phantoms
    from airtp.planning import PlanSettings, plan_case

    case = phantoms.head_neck(n_ptv=3, seed=0)
    
    result = plan_case(case, PlanSettings(iterations=0))
    return result.plan_dose, case.grid.spacing_mm


def synthetic_dose():
    from airtp.phantoms import DEFAULT_SPACING_MM, HEAD_NECK_FOV_MM

    spacing = DEFAULT_SPACING_MM
    shape = tuple(int(round(f / s)) for f, s in zip(HEAD_NECK_FOV_MM, spacing))
    z, y, x = np.meshgrid(*(np.arange(n) * s - n * s / 2 for n, s in zip(shape, spacing)), indexing="ij")
    dose = 70 / (1 + np.exp((np.sqrt((z / 1.6) ** 2 + y ** 2 + (x / 1.3) ** 2) - 45) / 4))
    return dose.astype(np.float32), spacing


def evaluated_from(ref, spacing, seed=0):
    from scipy.ndimage import shift

    rng = np.random.default_rng(seed)
    ev = shift(ref.astype(np.float64), (0, 0, 2.0 / spacing[2]), order=1, mode="nearest") * 1.02
    ev += rng.normal(0, 0.3, ref.shape)
    return np.clip(ev, 0, None).astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--synthetic", action="store_true", help="an analytic dose instead of an AIRTP plan")
    ap.add_argument("--gpu", action="store_true", help="also time the CUDA kernel (needs a GPU)")
    args = ap.parse_args()

    from airtp import core
    from airtp.evaluation.gamma import gamma_index

    ref, spacing = synthetic_dose() if args.synthetic else planned_dose()
    ev = evaluated_from(ref, spacing)
    print(f"grid {ref.shape} (z, y, x) at {spacing} mm; reference max {ref.max():.2f} Gy; "
          f"{core._core.max_threads()} threads")
    have_pmp = importlib.util.find_spec("pymedphys") is not None
    if have_pmp:
        import pymedphys

        axes = tuple(np.arange(n) * s for n, s in zip(ref.shape, spacing))
        # numba compiles on the first call: pay it on a block around the maximum
        c = np.unravel_index(np.argmax(ref), ref.shape)
        block = tuple(slice(max(0, i - 4), max(0, i - 4) + 8) for i in c)
        small = tuple(a[b] for a, b in zip(axes, block))
        pymedphys.gamma(small, ref[block], small, ev[block], 3, 3, lower_percent_dose_cutoff=10, max_gamma=2.0)
    else:
        print("pymedphys is not installed: AIRTP alone (see the module doc to compare)")
    for dd, dta in ((3.0, 3.0), (2.0, 2.0)):
        kw = dict(dose_percent=dd, dta_mm=dta, cutoff_percent=10.0, max_gamma=2.0, interp_fraction=10)
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            ours = gamma_index(ref, ev, spacing, use_gpu=False, **kw)
            times.append(time.perf_counter() - t)
        line = f"{dd:g}%/{dta:g}mm: AIRTP cpu {min(times):.3f} s, pass {ours.pass_rate:.2f} % of {ours.evaluated}"
        if args.gpu and core.backend() == "cuda":
            gpu_times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                g = gamma_index(ref, ev, spacing, use_gpu=True, **kw)
                gpu_times.append(time.perf_counter() - t)
            line += (f"; cuda {min(gpu_times):.3f} s, max |cuda - cpu| "
                     f"{np.nanmax(np.abs(g.gamma - ours.gamma)):.2e}")
        if have_pmp:
            t = time.perf_counter()
            theirs = pymedphys.gamma(axes, ref, axes, ev, dd, dta, lower_percent_dose_cutoff=10,
                                     interp_fraction=10, max_gamma=2.0)
            t_pmp = time.perf_counter() - t
            ok = np.isfinite(theirs) & np.isfinite(ours.gamma)
            diff = np.abs(np.minimum(ours.gamma[ok], 2) - np.minimum(theirs[ok], 2))
            line += (f"; pymedphys {t_pmp:.3f} s, pass {100 * np.mean(theirs[np.isfinite(theirs)] <= 1):.2f} %; "
                     f"speed ratio {t_pmp / min(times):.1f}x; |diff| median {np.median(diff):.4f}, "
                     f"p99 {np.percentile(diff, 99):.4f}")
        print(line)


if __name__ == "__main__":
    main()
