"""The ``airtp`` command.

Errors from bad input (:class:`airtp.AirtpError`) are printed as one line,
``airtp: error: ...``, with exit status 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from airtp import __version__
from airtp.case import Case, Prescription
from airtp.errors import AirtpError
from airtp.planning.options import add_plan_options, plan_settings

__all__ = ["main", "build_parser"]

# Modules that contribute subcommands through add_parsers(subparsers).
_COMMAND_MODULES = ("airtp.evaluation.commands", "airtp.dose.commands", "airtp.batch.commands",
                    "airtp.io.dicom.commands", "airtp.planning.commands", "airtp.io.gdphmm_commands",
                    "airtp.structures.commands")


def _format_structure_table(case: Case) -> str:
    rows = case.structures.table()
    w = max([len(r[0]) for r in rows] + [9])
    lines = [f"{'Structure':<{w}}  {'Volume (cc)':>11}  {'Voxels':>9}"]
    lines += [f"{name:<{w}}  {cc:11.2f}  {n:9d}" for name, cc, n in rows]
    return "\n".join(lines)


def _describe(case: Case) -> str:
    g = case.grid
    rx = ", ".join(f"{p.structure} {p.dose_gy:g} Gy/{p.fractions} fx" for p in case.prescriptions) or "none"
    return (
        f"Case {case.patient_id} (site {case.site}): grid {g.shape[2]} x {g.shape[1]} x {g.shape[0]} voxels "
        f"(x, y, z) at {g.spacing_mm[2]:g} x {g.spacing_mm[1]:g} x {g.spacing_mm[0]:g} mm; prescriptions: {rx}"
    )


def _load_case(args) -> Case:
    prescriptions = [Prescription.parse(p) for p in args.prescription] if args.prescription else None
    return Case.load(args.case, prescriptions=prescriptions, site=args.site)


def cmd_phantom(args) -> int:
    from airtp import phantoms

    if args.site == "hn":
        case = phantoms.head_neck(n_ptv=args.n_ptv, seed=args.seed)
    else:
        case = phantoms.lung(side=args.side, seed=args.seed)
    case.save(args.out)
    print(_describe(case))
    print(f"wrote {args.out}")
    return 0


def cmd_structures(args) -> int:
    from airtp.structures.recipes import add_helpers

    case = _load_case(args)
    print(_describe(case))
    if args.helpers:
        report = add_helpers(case)
        print()
        print(report.format())
    print()
    print(_format_structure_table(case))
    return 0


def _plan_and_write(case: Case, args) -> int:
    from airtp.planning import Progress, plan_case
    from airtp.planning.outputs import summary, write_plan

    progress = Progress(quiet=args.quiet)
    result = plan_case(case, plan_settings(args), progress)
    out = write_plan(result, args.out)
    s = summary(result)
    if not args.quiet:
        print(result.plan_report.table() if result.plan_report is not None else "")
    traj = " -> ".join(f"{v:.2f}" for v in s["score_trajectory"])
    print(f"\nscore {s['score_initial']:.2f} (initial) -> {s['score_final']:.2f} (final); trajectory {traj}")
    if s["delivery"]:
        d = s["delivery"]
        counts = sum(b.get("segments", b.get("control_points", 0)) for b in d["beams"])
        what = "segments" if all("segments" in b for b in d["beams"]) else "control points"
        print(f"deliverable ({d['sequencer']}, {d['machine']}): score {d['score_deliverable']:.2f} against "
              f"{d['score_ideal']:.2f} for the ideal fluence; {counts} {what}, {d['total_mu']:.0f} MU and "
              f"{d['delivery_time_s']:.0f} s per fraction, fluence fidelity {d['fluence_fidelity']:.3f}")
    for name, m in s["targets"].items():
        print(f"{name}: D95 {m['D95_gy']:.2f} Gy, D5/D95 {m['d5_over_d95']:.3f}, Dmax/D95 {m['dmax_over_d95']:.3f}")
    for w in s["warnings"]:  # e.g. no organ at risk, structures outside Body: said, not buried in summary.json
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {out}")
    return 0


def cmd_plan(args) -> int:
    case = _load_case(args)
    return _plan_and_write(case, args)


def _real_demo_case() -> Case:
    """The shipped OpenKBP patient, its names harmonised (printed as they change)."""
    from airtp.data import real_case
    from airtp.planning.intake import harmonize_names

    case = real_case()
    print(_describe(case))
    print("Real patient: OpenKBP pt_48 (MIT licence, Copyright (c) 2021 Aaron Babier; CT and contours from "
          "TCIA, CC BY; cite Babier et al., Med Phys 48(9), 2021)")
    renamed, unmatched = harmonize_names(case)
    if renamed:
        print("Names harmonised: " + ", ".join(f"{a} -> {b}" for a, b in renamed))
    if unmatched:
        print("No standard name (kept as given): " + ", ".join(unmatched))
    return case


def _compare_with_reference(case: Case, own: list[str], out: Path) -> None:
    """Print the plan against the case's reference plan; write a DVH figure (reference dashed) and JSON."""
    import json

    import numpy as np

    from airtp.case import atomic_write
    from airtp.evaluation.compare import compare_doses
    from airtp.evaluation.dvh import compute_dvhs
    from airtp.evaluation.scorecard import score_plan
    from airtp.report.plots import dvh_figure

    body = case.structures.find("Body")
    masks = {n: case.structures[n] for n in own if n != body}
    dose = np.load(out / "plan" / "dose.npy")
    cmp = compare_doses(case, dose, masks=masks, within=case.structures[body] if body else None)
    ref_score = score_plan(case, cmp.reference_dose, "hn").total
    print("\nAgainst the reference plan (OpenKBP), both normalised to the highest PTV's D95 = prescription:")
    print(cmp.table())
    for note in cmp.notes:
        print(f"  note: {note}")
    print(f"scorecard total: AIRTP {score_plan(case, dose, 'hn').total:.2f}, reference {ref_score:.2f}")
    plan_dvhs = compute_dvhs(cmp.plan_dose, masks, grid=case.grid)
    ref_dvhs = compute_dvhs(cmp.reference_dose, masks, grid=case.grid)
    fig = dvh_figure(plan_dvhs, out / "dvh_vs_reference.png", reference=ref_dvhs, labels=("AIRTP", "reference"),
                     title=f"{case.patient_id}: AIRTP (solid) and reference plan (dashed)")
    text = json.dumps({**cmp.to_dict(), "reference_score_total": ref_score}, indent=2)
    atomic_write(out / "comparison.json", lambda f: f.write(text.encode()))
    print(f"wrote {fig} and {out / 'comparison.json'}")


def cmd_demo(args) -> int:
    from airtp import phantoms
    from airtp.structures.recipes import add_helpers

    if args.real:
        case = _real_demo_case()
    else:
        case = phantoms.head_neck(n_ptv=3, seed=args.seed)
        print(_describe(case))
    own = list(case.structures)  # the patient's structures, before the helpers join them
    report = add_helpers(case)
    print()
    print("Helper structures (paper Table 3):")
    print(report.format())
    print()
    print(_format_structure_table(case))
    out = Path(args.out)
    path = case.save(out / "case.npz")
    print(f"\nwrote {path}\n")
    args.out = out / "plan"
    status = _plan_and_write(case, args)
    if args.real:
        _compare_with_reference(case, own, out)
    return status


def _add_plan_options(p, objectives: bool = True) -> None:
    add_plan_options(p, objectives=objectives)
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airtp", description="Automated iterative radiotherapy planning.")
    parser.add_argument("--version", action="version", version=f"airtp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("phantom", help="write a synthetic patient case file")
    p.add_argument("site", choices=["hn", "lung"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-ptv", type=int, default=3, choices=[1, 2, 3], help="head and neck: number of PTVs")
    p.add_argument("--side", default="left", choices=["left", "right", "central"], help="lung: tumour side")
    p.add_argument("--out", required=True, help="case file to write (.npz)")
    p.set_defaults(func=cmd_phantom)

    p = sub.add_parser("structures", help="print a case's structures (name, volume, voxels)")
    p.add_argument("case", help="case file (.npz)")
    p.add_argument("--helpers", action="store_true", help="run the site's helper recipe first and print its report")
    p.add_argument("--prescription", action="append", metavar="NAME:GY[:FX]",
                   help="prescription replacing the file's (repeatable)")
    p.add_argument("--site", choices=["hn", "lung", "generic"], help="site replacing the file's")
    p.set_defaults(func=cmd_structures)

    p = sub.add_parser("plan", help="plan a case: helpers, beams, dose, Algorithm 1, outputs")
    p.add_argument("case", help="case file (.npz)")
    _add_plan_options(p)
    p.add_argument("--prescription", action="append", metavar="NAME:GY[:FX]",
                   help="prescription replacing the file's (repeatable)")
    p.add_argument("--site", choices=["hn", "lung", "generic"], help="site replacing the file's")
    p.add_argument("--out", required=True, help="plan folder to write")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("demo", help="the embedded default: a synthetic head-and-neck patient planned end to end")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--real", action="store_true",
                   help="plan the shipped real patient (OpenKBP pt_48) instead, and compare with its reference plan")
    p.add_argument("--out", default="airtp-demo", help="folder for the outputs (default: airtp-demo)")
    _add_plan_options(p, objectives=False)
    p.set_defaults(func=cmd_demo)

    for module in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            if not exc.name or not module.startswith(exc.name):
                raise  # a broken command module must not pass silently
            continue
        mod.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except AirtpError as exc:
        print(f"airtp: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
