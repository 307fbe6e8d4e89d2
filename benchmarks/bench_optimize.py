"""Fluence optimisation: AIRTP's built-in target against pyRadPlan, side by side.

Run: python benchmarks/bench_optimize.py [--iterations N] [--no-peer]

With pyRadPlan installed (``pip install pyradplan``; it ships the TG-119
phantom) both optimise the TG-119 C-shape on the same 9 equispaced 6 MV beams,
5 mm beamlets, 3 mm dose grid, with the objectives of pyRadPlan's structure
table: OuterTarget squared deviation from 50 Gy (priority 1000), Core squared
overdose above 25 Gy (300), BODY squared overdose above 30 Gy (100), voxels
assigned to the highest-priority structure (target, then core, then body) as
pyRadPlan does. Each uses its own dose engine. In AIRTP's terms these are
point objectives: a squared deviation is a Lower (50 Gy, 100 %) plus an Upper
(50 Gy, 0 %) objective, an overdose an Upper (D, 0 %) one.

Printed: time of each optimiser; pyRadPlan's final objective evaluated with
AIRTP's objective function on pyRadPlan's dose (resampled to AIRTP's dose
grid); AIRTP's time to reach an equal or lower value, and the ratio; target
D95 and core D10 of both. Goal: at least 10 times faster, target D95 >= 49 Gy,
core D10 <= 25 Gy. Without pyRadPlan, AIRTP alone plans a synthetic
head-and-neck patient and prints its times.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from airtp import Case, Grid, Prescription, StructureSet, phantoms
from airtp.grid import resample
from airtp.beams.beam import equispaced_beams
from airtp.dose.engine import dose_influence
from airtp.evaluation.dvh import compute_dvhs
from airtp.objectives import MeanObjective, NormalTissueObjective, ObjectiveSet, PointObjective
from airtp.optimize import PlanningProblem
from airtp.optimize.builtin import BuiltinTarget, _Terms


def tg119_objectives() -> ObjectiveSet:
    return ObjectiveSet([
        PointObjective("OuterTarget", "lower", 50.0, 100.0, 1000.0),
        PointObjective("OuterTarget", "upper", 50.0, 0.0, 1000.0),
        PointObjective("CoreOpt", "upper", 25.0, 0.0, 300.0),
        PointObjective("BodyOpt", "upper", 30.0, 0.0, 100.0),
    ])


def tg119_case(ct, cst) -> Case:
    """pyRadPlan's TG-119 CT and structures as an AIRTP case (arrays (z, y, x), LPS mm)."""
    import SimpleITK as sitk

    img = ct.cube_hu
    hu = sitk.GetArrayFromImage(img)
    sx, sy, sz = img.GetSpacing()
    ox, oy, oz = img.GetOrigin()
    grid = Grid(hu.shape, (sz, sy, sx), (oz, oy, ox))
    masks = {v.name: sitk.GetArrayFromImage(v.mask).astype(bool) for v in cst.vois}
    body = masks["BODY"]
    target, core = masks["OuterTarget"] & body, masks["Core"] & body
    structures = StructureSet(grid, {
        "Body": body, "OuterTarget": target, "Core": core,
        # pyRadPlan's overlap priorities: each voxel counts for its highest-priority structure
        "CoreOpt": core & ~target, "BodyOpt": body & ~target & ~core,
    })
    return Case(np.clip(hu, -1024, 3071).astype(np.int16), structures, [Prescription("OuterTarget", 50.0, 30)],
                "generic", "TG119")


def run_pyradplan(ct, cst, iterations: int):
    from pyRadPlan import PhotonPlan, calc_dose_influence, fluence_optimization, generate_stf

    pln = PhotonPlan(machine="Generic")
    pln.prop_stf = {"gantry_angles": np.arange(9) * 40.0, "couch_angles": np.zeros(9), "bixel_width": 5.0}
    pln.prop_dose_calc = {"dose_grid": {"resolution": {"x": 3.0, "y": 3.0, "z": 3.0}}}
    pln.prop_opt = {"max_iter": iterations}
    t0 = time.perf_counter()
    stf = generate_stf(ct, cst, pln)
    dij = calc_dose_influence(ct, cst, stf, pln)
    t1 = time.perf_counter()
    info: dict = {}
    fluence = fluence_optimization(ct, cst, stf, dij, pln, opt_info=info)
    t2 = time.perf_counter()
    dose = dij.compute_result_ct_grid(fluence)["physical_dose"]
    import SimpleITK as sitk

    dose = sitk.GetArrayFromImage(dose) if not isinstance(dose, np.ndarray) else dose
    return {"dij_s": t1 - t0, "optimize_s": t2 - t1, "dose_ct": np.asarray(dose, np.float32),
            "iterations": info.get("num_iter"), "nnz": int(dij.physical_dose.flat[0].nnz)}


def objective_value(problem: PlanningProblem, objectives: ObjectiveSet, dose_grid_values: np.ndarray) -> float:
    """AIRTP's objective function of a dose given on the problem's dose grid."""
    return _Terms(problem, objectives)(dose_grid_values.ravel()[problem.influence.voxels].astype(np.float64))[0]


def report(name, problem, dose):
    d = compute_dvhs(dose, problem.structures, grid=problem.influence.grid)
    return (f"{name:>9}: target D95 {d['OuterTarget'].dose_at_percent(95):5.1f} Gy (goal >= 49), "
            f"core D10 {d['Core'].dose_at_percent(10):5.1f} Gy (goal <= 25)")


def bench_tg119(iterations: int) -> None:
    from pyRadPlan import load_tg119

    ct, cst = load_tg119()
    case = tg119_case(ct, cst)
    iso = case.grid.index_to_mm(np.argwhere(case.structures["OuterTarget"]).mean(axis=0))
    t0 = time.perf_counter()
    influence = dose_influence(case, equispaced_beams(iso, 9), dose_grid_mm=3.0)
    t_dij = time.perf_counter() - t0
    problem = PlanningProblem(influence, case.prescriptions, case.patient_id)
    objectives = tg119_objectives()
    ours = BuiltinTarget(max_iterations=iterations, smoothing=(0, 0), normalization_volume_pct=None,
                         record_iterates=True)
    res = ours.optimize(problem, objectives)
    print(f"AIRTP    : Dij {t_dij:6.1f} s ({influence.n_beamlets} beamlets, {influence.nnz / 1e6:.1f} M nonzeros), "
          f"optimisation {res.timings['total_s']:6.1f} s, {res.iterations} iterations")

    peer = run_pyradplan(ct, cst, iterations)
    print(f"pyRadPlan: Dij {peer['dij_s']:6.1f} s ({peer['nnz'] / 1e6:.1f} M nonzeros), "
          f"optimisation {peer['optimize_s']:6.1f} s, {peer['iterations']} iterations")
    peer_dose = resample(peer["dose_ct"], case.grid, influence.grid)
    f_peer = objective_value(problem, objectives, peer_dose)
    # the exact objective (whole matrix) of every iterate, computed after the timed run
    times = np.asarray(res.timings["history_s"])
    terms = _Terms(problem, objectives)
    hist = np.array([terms(influence.dose_vector(w).astype(np.float64))[0] for w in res.timings["iterates"]])
    reached = np.flatnonzero(hist <= f_peer)
    f_ours = objective_value(problem, objectives, res.dose)
    print(f"objective (AIRTP's function, exact matrices): pyRadPlan final {f_peer:.4g}, AIRTP final {f_ours:.4g}")
    print(f"total optimisation time ratio: {peer['optimize_s'] / res.timings['total_s']:.1f}")
    if reached.size:
        t_ours = times[reached[0]]
        print(f"AIRTP reaches pyRadPlan's objective after {t_ours:.2f} s: ratio {peer['optimize_s'] / t_ours:.1f} (goal >= 10)")
    else:
        print(f"AIRTP did not reach pyRadPlan's objective in {iterations} iterations")
    print(report("AIRTP", problem, res.dose))
    print(report("pyRadPlan", problem, peer_dose))


def bench_synthetic(iterations: int) -> None:
    case = phantoms.head_neck(n_ptv=1, seed=0)
    iso = case.grid.index_to_mm(np.argwhere(case.structures["PTV70"]).mean(axis=0))
    t0 = time.perf_counter()
    influence = dose_influence(case, equispaced_beams(iso, 9), dose_grid_mm=3.0)
    t_dij = time.perf_counter() - t0
    problem = PlanningProblem(influence, case.prescriptions, case.patient_id)
    objectives = ObjectiveSet([
        PointObjective("PTV70", "lower", 69.0, 100.0, 300), PointObjective("PTV70", "upper", 72.0, 0.0, 300),
        PointObjective("SpinalCord", "upper", 40.0, 0.0, 200), MeanObjective("Parotid_L", 20.0, 60),
        MeanObjective("Parotid_R", 20.0, 60), NormalTissueObjective(priority=100),
    ])
    res = BuiltinTarget(max_iterations=iterations).optimize(problem, objectives)
    d = compute_dvhs(res.dose, problem.structures, grid=influence.grid)
    print(f"synthetic head and neck: Dij {t_dij:.1f} s ({influence.n_beamlets} beamlets, {influence.nnz / 1e6:.1f} M nonzeros); "
          f"optimisation {res.timings['total_s']:.1f} s, {res.iterations} iterations")
    print(f"PTV70 D95 {d['PTV70'].dose_at_percent(95):.1f} Gy, D2 {d['PTV70'].dose_at_percent(2):.1f} Gy; "
          f"SpinalCord max {d['SpinalCord'].max_gy:.1f} Gy; parotid means {d['Parotid_L'].mean_gy:.1f} / "
          f"{d['Parotid_R'].mean_gy:.1f} Gy")


def main():
    os.environ.setdefault("TQDM_DISABLE", "1")  # pyRadPlan's progress bars
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--no-peer", action="store_true", help="skip pyRadPlan even when installed")
    args = ap.parse_args()
    try:
        import pyRadPlan  # noqa: F401

        have_peer = not args.no_peer
    except ImportError:
        have_peer = False
        print("pyRadPlan is not installed: timing AIRTP alone on a synthetic patient")
    if have_peer:
        bench_tg119(args.iterations)
    else:
        bench_synthetic(args.iterations)


if __name__ == "__main__":
    main()
