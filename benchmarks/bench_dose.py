"""Dose-influence matrix: AIRTP's native pencil beam vs pyRadPlan, side by side.

    python benchmarks/bench_dose.py [--grid 3] [--repeat 2] [--skip-pyradplan]

Setup: 9 equispaced coplanar beams, 5 mm beamlets, 3 mm dose grid. When
`pyRadPlan` is importable, both engines run on pyRadPlan's TG-119 phantom
(`load_tg119()`, target OuterTarget), each in its own process, and the script
prints wall time, peak resident memory of that process, beamlets, nonzeros and
the ratios, for the fastest of ``--repeat`` runs of each. Without pyRadPlan it times AIRTP alone on the synthetic
head-and-neck patient (`airtp.phantoms.head_neck(n_ptv=3, seed=0)`), or on a
water box when that is not importable.

Reference (2 cores): pyRadPlan 0.5.0 about 200 s, 4.7 GB, 2,851 beamlets,
173 M nonzeros. Goal: >= 20x faster, <= half the memory. CPU time is printed
beside wall time: on a shared machine it is the steadier of the two (AIRTP
uses every core through OpenMP; pyRadPlan mostly one).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import queue
import resource
import time

import numpy as np

ANGLES = [i * 40.0 for i in range(9)]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def tg119_case():
    """pyRadPlan's TG-119 phantom as an AIRTP Case (grid (z, y, x), LPS mm)."""
    import SimpleITK as sitk
    from pyRadPlan import load_tg119

    from airtp.case import Case
    from airtp.grid import Grid
    from airtp.structures import StructureSet

    ct, cst = load_tg119()
    img = ct.cube_hu
    sx, sy, sz = img.GetSpacing()
    ox, oy, oz = img.GetOrigin()
    hu = sitk.GetArrayFromImage(img)
    grid = Grid(hu.shape, (sz, sy, sx), (oz, oy, ox))
    masks = {}
    for v in cst.vois:
        name = "Body" if v.name.upper() == "BODY" else v.name
        masks[name] = sitk.GetArrayFromImage(v.mask).astype(bool)
    return Case(np.clip(np.rint(hu), -1024, 3071).astype(np.int16), StructureSet(grid, masks), patient_id="TG119")


def convert_tg119(path: str, queue) -> None:
    """Write pyRadPlan's TG-119 as an AIRTP case file (own process: AIRTP's run does not import pyRadPlan)."""
    tg119_case().save(path)
    queue.put(path)


def run_airtp(which: str, grid_mm: float, queue) -> None:
    from airtp.beams import Beam
    from airtp.dose import dose_influence

    if which.endswith(".npz"):
        from airtp.case import Case

        case, targets, which = Case.load(which), ["OuterTarget"], "tg119"
    elif which == "head_neck":
        from airtp import phantoms

        case = phantoms.head_neck(n_ptv=3, seed=0)
        targets = [p.structure for p in case.prescriptions]
    else:
        from airtp.case import Case
        from airtp.grid import Grid
        from airtp.structures import StructureSet

        grid = Grid((100, 120, 160), (2.5, 2.5, 2.5), (-125.0, -150.0, -200.0))
        hu = np.zeros(grid.shape, np.int16)
        ptv = np.zeros(grid.shape, bool)
        ptv[35:65, 45:75, 60:100] = True
        case, targets = Case(hu, StructureSet(grid, {"Body": hu > -500, "PTV": ptv})), ["PTV"]
    tmask = np.zeros(case.grid.shape, bool)
    for t in targets:
        tmask |= case.structures[t]
    iso = tuple(case.grid.index_to_mm(np.argwhere(tmask).mean(axis=0)))
    beams = [Beam(a, iso) for a in ANGLES]
    rss0 = _peak_rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    D = dose_influence(case, beams, dose_grid_mm=grid_mm, beamlet_mm=5.0, targets=targets)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    queue.put({"engine": "airtp", "phantom": which, "time_s": dt, "cpu_s": cpu, "peak_rss_mb": _peak_rss_mb(),
               "rss_before_mb": rss0, "beamlets": D.n_beamlets, "nnz": D.nnz, "voxels": int(D.voxels.size),
               "backend": D.backend, "timings": D.timings,
               "matrix_mb": (D.matrix.data.nbytes + D.matrix.indices.nbytes + D.matrix.indptr.nbytes) / 2**20})


def run_pyradplan(grid_mm: float, queue) -> None:
    import logging

    logging.disable(logging.WARNING)
    from pyRadPlan import PhotonPlan, calc_dose_influence, generate_stf, load_tg119

    ct, cst = load_tg119()
    pln = PhotonPlan(machine="Generic")
    pln.prop_stf = {"gantry_angles": ANGLES, "couch_angles": [0.0] * len(ANGLES), "bixel_width": 5.0}
    pln.prop_dose_calc = {"dose_grid": {"resolution": {"x": grid_mm, "y": grid_mm, "z": grid_mm}}}
    rss0 = _peak_rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    stf = generate_stf(ct, cst, pln)
    dij = calc_dose_influence(ct, cst, stf, pln)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    m = dij.physical_dose.flat[0] if hasattr(dij, "physical_dose") else dij["physical_dose"].flat[0]
    queue.put({"engine": "pyRadPlan", "phantom": "tg119", "time_s": dt, "cpu_s": cpu, "peak_rss_mb": _peak_rss_mb(),
               "rss_before_mb": rss0, "beamlets": int(m.shape[1]), "nnz": int(m.nnz), "voxels": int(m.shape[0])})


def in_process(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    while True:
        try:
            out = q.get(timeout=1.0)
            break
        except queue.Empty:
            if not p.is_alive():
                raise RuntimeError(f"{target.__name__} failed (exit code {p.exitcode})") from None
    p.join()
    return out


def fastest(runs: list[dict]) -> dict:
    """The fastest of repeated runs (each in a fresh process), with every run's time kept.

    On a virtual machine the first touch of memory just released by another
    process can cost seconds (the host backs the pages again); the fastest of
    a few runs measures the engine rather than that.
    """
    best = dict(min(runs, key=lambda r: r["time_s"]))
    best["all_times_s"] = [r["time_s"] for r in runs]
    return best


def show(r: dict) -> None:
    print(f"{r['engine']:>10} on {r['phantom']}: {r['time_s']:8.2f} s (CPU {r['cpu_s']:.1f} s)  peak RSS {r['peak_rss_mb']:8.0f} MB "
          f"(before: {r['rss_before_mb']:.0f} MB)  beamlets {r['beamlets']:6d}  nonzeros {r['nnz'] / 1e6:7.1f} M  "
          f"voxels {r['voxels']}  runs {', '.join(f'{t:.2f}' for t in r.get('all_times_s', [r['time_s']]))} s"
          + (f"  [{r['backend']}, matrix {r['matrix_mb']:.0f} MB, {r['timings']}]" if "backend" in r else ""))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", type=float, default=3.0, help="dose grid spacing, mm (default 3)")
    ap.add_argument("--skip-pyradplan", action="store_true", help="time AIRTP alone even when pyRadPlan is installed")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each engine, each in a fresh process; the fastest "
                    "is compared (default 2)")
    args = ap.parse_args(argv)
    from airtp import _core

    print(f"9 beams ({', '.join(f'{a:g}' for a in ANGLES)} deg), 5 mm beamlets, {args.grid:g} mm dose grid; "
          f"AIRTP threads: {_core.max_threads()}")
    try:
        import pyRadPlan  # noqa: F401

        have_prp = not args.skip_pyradplan
    except ImportError:
        have_prp = False
    if have_prp:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = in_process(convert_tg119, f"{tmp}/tg119.npz")
            ours = fastest([in_process(run_airtp, path, args.grid) for _ in range(args.repeat)])
        show(ours)
        ref = fastest([in_process(run_pyradplan, args.grid) for _ in range(args.repeat)])
        show(ref)
        print(f"speed-up {ref['time_s'] / ours['time_s']:.1f}x wall, {ref['cpu_s'] / ours['cpu_s']:.1f}x CPU time "
              f"(goal >= 20x), memory ratio "
              f"{ours['peak_rss_mb'] / ref['peak_rss_mb']:.2f} (goal <= 0.5), nonzeros ratio {ours['nnz'] / ref['nnz']:.2f}")
        return 0
    try:
        import airtp.phantoms  # noqa: F401

        which = "head_neck"
    except ImportError:
        which = "water"
    print("pyRadPlan not installed: timing AIRTP alone")
    show(fastest([in_process(run_airtp, which, args.grid) for _ in range(args.repeat)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
