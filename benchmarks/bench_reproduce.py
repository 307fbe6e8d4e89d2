"""Dose-to-plan reproduction (paper Figure 5b) of AIRTP plans of synthetic patients.

For each case: plan it with AIRTP (``plan_case``; ``--iterations`` of
Algorithm 1), take the plan's dose as the reference, then reproduce it from
a fresh copy of the patient (``airtp.planning.reproduce.reproduce``: objectives
from the prescriptions and the reference's DVHs, ``--rounds`` feedback
rounds) and compare. Prints per case the gamma pass rates (3 %/3 mm and
2 %/2 mm, global, 10 % threshold), the mean |difference| of organ mean doses,
the worst organ, the GDP-HMM mean absolute error and the times; then the
goals of the issue: gamma 3 %/3 mm >= 95 % and mean |difference of organ
mean doses| <= 1 Gy, met or not, per case.

    python benchmarks/bench_reproduce.py [--cases hn2:0 hn3:1 lung-left:0] [--technique imrt9]
        [--iterations 2] [--rounds 2] [--spacing 3,2.5,2.5] [--dose-grid 4] [--no-dose-shells]
"""

from __future__ import annotations

import argparse
import time

from airtp import phantoms
from airtp.planning import PlanSettings, plan_case
from airtp.planning.reproduce import ReproduceSettings, reproduce

GOAL_GAMMA_PCT = 95.0
GOAL_ORGAN_MEAN_GY = 1.0


def make_case(spec: str, spacing):
    kind, seed = spec.split(":") if ":" in spec else (spec, "0")
    if kind.startswith("hn"):
        return phantoms.head_neck(n_ptv=int(kind[2:] or 3), seed=int(seed), spacing_mm=spacing)
    if kind.startswith("lung"):
        side = kind.split("-", 1)[1] if "-" in kind else "left"
        return phantoms.lung(side, seed=int(seed), spacing_mm=spacing)
    raise SystemExit(f"unknown case '{spec}': hnN:SEED or lung-SIDE:SEED")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["hn2:0", "hn3:1", "lung-left:0"])
    ap.add_argument("--technique", default="imrt9")
    ap.add_argument("--iterations", type=int, default=2, help="Algorithm 1 iterations of the reference plan")
    ap.add_argument("--rounds", type=int, default=2, help="feedback rounds of the reproduction")
    ap.add_argument("--spacing", default="3,2.5,2.5", help="CT voxel spacing z,y,x in mm")
    ap.add_argument("--dose-grid", type=float, default=4.0)
    ap.add_argument("--optimizer-iterations", type=int, default=150)
    ap.add_argument("--no-dose-shells", action="store_true", help="reproduce without the dose-shell helpers")
    args = ap.parse_args()
    spacing = tuple(float(v) for v in args.spacing.split(","))
    opt = {"max_iterations": args.optimizer_iterations}
    met = 0
    for spec in args.cases:
        technique = "imrt7" if spec.startswith("lung") and args.technique == "imrt9" else args.technique
        t = time.perf_counter()
        ref_plan = plan_case(make_case(spec, spacing), PlanSettings(technique=technique, iterations=args.iterations,
                                                                    dose_grid_mm=args.dose_grid, optimizer_options=opt))
        t_plan = time.perf_counter() - t
        t = time.perf_counter()
        rep = reproduce(make_case(spec, spacing), ref_plan.plan_dose,
                        ReproduceSettings(technique=technique, rounds=args.rounds, dose_grid_mm=args.dose_grid,
                                          optimizer_options=opt, dose_shells=not args.no_dose_shells))
        t_rep = time.perf_counter() - t
        c = rep.comparison
        g33, g22 = c["gamma"]["3%/3mm"]["pass_rate_pct"], c["gamma"]["2%/2mm"]["pass_rate_pct"]
        organ = c["organ_mean_abs_diff_gy"]
        ok = g33 >= GOAL_GAMMA_PCT and organ <= GOAL_ORGAN_MEAN_GY
        met += ok
        rounds = " ".join(f"{r.gamma_pass_pct:.1f}%/{r.organ_mean_abs_diff_gy:.2f}Gy/DVH {r.dvh_score_gy:.2f}Gy"
                          for r in rep.rounds)
        print(f"{spec:<14} {technique}: gamma 3%/3mm {g33:6.2f} %, 2%/2mm {g22:6.2f} %; organ mean |diff| "
              f"{organ:.3f} Gy (worst {c['organ_max_abs_diff_gy']:.2f} Gy {c['organ_worst']}); GDP-HMM MAE "
              f"{c['gdp_hmm_mae_gy']:.3f} Gy; rounds {rounds} (kept {rep.best}); plan {t_plan:.0f} s, "
              f"reproduce {t_rep:.0f} s; goals {'met' if ok else 'NOT met'}", flush=True)
    print(f"\ngoals (gamma 3%/3mm >= {GOAL_GAMMA_PCT:g} %, organ mean |diff| <= {GOAL_ORGAN_MEAN_GY:g} Gy) met in "
          f"{met} of {len(args.cases)} cases")


if __name__ == "__main__":
    main()
