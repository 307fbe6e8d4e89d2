"""The whole pipeline over a synthetic cohort: score before and after refinement, quality filter, time;
and the deliverable plan: score of the ideal fluence against the sequenced plan's, segments, MU, fidelity.

Run: python benchmarks/bench_pipeline.py [--seeds 0 1 2 3 4] [--technique imrt9] [--iterations 5]
                                         [--sequencer NAME] [--fluence-only] [--refine-transition-mm MM]
                                         [--no-consolidate] [--no-navigate] [--no-spare]
                                         [--cases hn1 hn2 hn3 lung-left lung-right lung-central]

Head and neck with 1, 2 and 3 PTVs and lung (left, right, central), for each
seed; prints per case the initial and final scorecard totals, the GDP-HMM
quality filter of the highest-dose PTV (D5/D95 < 1.07, Dmax/D95 < 1.12) and
the wall time, then the share of cases improved and the mean gain. Goals
(issue): final above initial in at least 80 % of cases, mean gain >= 5
points, the filter held, head-and-neck 9-field IMRT with 5 iterations within
120 s on 2 cores. Lung cases use 7/9 fields (``imrt7``) for ``imrt9``.
Deliverable plans (issue 7): the mean drop from the ideal fluence's score to
the deliverable plan's below 2 points. "initial" is the deliverable plan of
the first iteration (the initial plan, delivered like the final one), "ideal"
the best iteration's ideal fluence, "final" its deliverable plan (the plan's
score; the quality filter is on its dose); with --fluence-only all three are
ideal fluences.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from airtp import phantoms
from airtp.planning import PlanSettings, plan_case
from airtp.planning.outputs import summary


CASES = ("hn1", "hn2", "hn3", "lung-left", "lung-right", "lung-central")


def cases(seeds, kinds=CASES):
    for seed in seeds:
        for kind in kinds:
            if kind.startswith("hn"):
                yield f"{kind}-s{seed}", phantoms.head_neck(n_ptv=int(kind[2:]), seed=seed)
            else:
                yield f"{kind}-s{seed}", phantoms.lung(kind.split("-", 1)[1], seed=seed)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--technique", default="imrt9")
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--sequencer", default=None, help="sequencer plugin (default: the technique's)")
    ap.add_argument("--fluence-only", action="store_true", help="no sequencing: score the ideal fluence")
    ap.add_argument("--refine-transition-mm", type=float, default=PlanSettings.refine_transition_mm,
                    help="transition zone of the refinement iterations (default: PlanSettings')")
    ap.add_argument("--no-consolidate", action="store_true",
                    help="no consolidation iteration after the loop (PlanSettings.consolidate)")
    ap.add_argument("--no-navigate", action="store_true",
                    help="no blending of the best plan with the other iterations (PlanSettings.navigate)")
    ap.add_argument("--no-spare", action="store_true", help="no organ-sparing step (PlanSettings.spare)")
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES, help="which phantoms (default: all)")
    args = ap.parse_args()
    rows, drops = [], []
    print(f"{'case':>16} {'initial':>8} {'ideal':>8} {'final':>8} {'gain':>6} {'drop':>6} {'segs':>5} {'MU/fx':>6} "
          f"{'fidel':>6} {'D5/D95':>7} {'Dmax/D95':>8} {'filter':>6} {'time s':>7}")
    for name, case in cases(args.seeds, args.cases):
        technique = "imrt7" if case.site == "lung" and args.technique == "imrt9" else args.technique
        t0 = time.perf_counter()
        result = plan_case(case, PlanSettings(technique=technique, iterations=args.iterations,
                                              deliverable=not args.fluence_only, sequencer=args.sequencer,
                                              refine_transition_mm=args.refine_transition_mm,
                                              consolidate=not args.no_consolidate,
                                              navigate=not args.no_navigate, spare=not args.no_spare))
        dt = time.perf_counter() - t0
        s = summary(result)
        top = s["targets"][max(case.prescriptions, key=lambda p: p.dose_gy).structure]
        ok = s["quality_filter"]
        gain = s["score_final"] - s["score_initial"]
        d = s["delivery"] or {}
        drop = d.get("score_drop", 0.0)
        segs = sum(b.get("segments", b.get("control_points", 0)) for b in d.get("beams", []))
        rows.append((name, gain, ok, dt, s["score_initial"], s["score_final"]))
        drops.append(drop)
        print(f"{name:>16} {s['score_initial']:8.2f} {s['score_ideal']:8.2f} {s['score_final']:8.2f} {gain:+6.2f} "
              f"{drop:+6.2f} {segs:5d} {d.get('total_mu', 0.0):6.0f} {d.get('fluence_fidelity') or 0.0:6.3f} "
              f"{top['d5_over_d95']:7.3f} {top['dmax_over_d95']:8.3f} {'yes' if ok else 'NO':>6} {dt:7.1f}", flush=True)
    gains = np.array([r[1] for r in rows])
    print(f"\n{len(rows)} cases: improved in {np.mean(gains > 0):.0%} (goal >= 80 %), mean gain {gains.mean():+.2f} "
          f"(goal >= 5), filter held in {np.mean([r[2] for r in rows]):.0%}, "
          f"head-and-neck time max {max((r[3] for r in rows if r[0].startswith('hn')), default=0.0):.0f} s "
          f"(goal <= 120)")
    print(f"mean initial score {np.mean([r[4] for r in rows]):.2f}, mean final score {np.mean([r[5] for r in rows]):.2f}")
    if not args.fluence_only:
        print(f"deliverable: mean score drop from the ideal fluence {np.mean(drops):+.2f} (goal < 2), "
              f"largest {max(drops):+.2f}")


if __name__ == "__main__":
    main()
