"""Subcommand ``airtp reproduce``: a reference 3D dose to a deliverable plan (paper Figure 5b).

``airtp reproduce CASE --dose REF.npy --technique T --out DIR`` reads the
case (a case file, or a plan folder's ``case.npz``) and the reference dose
(``.npy``, Gy, on the case grid, (z, y, x)), reproduces it
(:func:`airtp.planning.reproduce.reproduce`) and writes DIR: the plan folder
with ``reproduction.json``, ``reproduction.txt`` and ``reproduction_dvh.png``.
It prints the comparison table: per structure D95, D2, mean and max of both
doses, gamma pass rates and the GDP-HMM mean absolute error.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["add_parsers", "cmd_reproduce"]


def _case_path(text: str) -> Path:
    path = Path(text)
    return path / "case.npz" if path.is_dir() else path


def cmd_reproduce(args) -> int:
    from airtp.case import Case, Prescription
    from airtp.planning import Progress
    from airtp.planning.reproduce import (
        ReproduceSettings, format_comparison, load_reference_dose, reproduce, reproduction_title,
        write_reproduction,
    )

    prescriptions = [Prescription.parse(p) for p in args.prescription] if args.prescription else None
    case = Case.load(_case_path(args.case), prescriptions=prescriptions, site=args.site)
    reference = load_reference_dose(args.dose, case)
    settings = ReproduceSettings(technique=args.technique, rounds=args.rounds, scorecard=args.scorecard,
                                 rules=tuple(r for r in args.rules.split(",") if r), dose_grid_mm=args.dose_grid,
                                 optimizer_options={"max_iterations": args.optimizer_iterations},
                                 dose_shells=not args.no_dose_shells)
    rep = reproduce(case, reference, settings, Progress(quiet=args.quiet), source=str(args.dose))
    out = write_reproduction(rep, args.out, reference_path=args.dose)
    print(format_comparison(rep.comparison, reproduction_title(rep, args.dose)))
    for w in rep.warnings:
        print(f"warning: {w}")
    print(f"wrote {out}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("reproduce", help="turn a reference 3D dose into a deliverable plan (paper Figure 5b)")
    p.add_argument("case", help="case file (.npz), or a plan folder (its case.npz)")
    p.add_argument("--dose", required=True, metavar="REF.npy",
                   help="reference dose: .npy, Gy, on the case's CT grid, (z, y, x)")
    p.add_argument("--technique", default="imrt9", choices=["imrt9", "imrt15", "imrt7", "vmat"])
    p.add_argument("--rounds", type=int, default=2,
                   help="feedback rounds after the first plan (default 2; 0: objectives from the reference only)")
    p.add_argument("--scorecard", help="scorecard name or JSON path for the scorecard2dose rule (default: the site's)")
    p.add_argument("--rules", default="dose2obj,scorecard2dose",
                   help="objective-rule plugins run on the reference, comma-separated "
                        "(default: dose2obj,scorecard2dose)")
    p.add_argument("--no-dose-shells", action="store_true",
                   help="no dose-shell helpers (bands of the reference dose in normal tissue): organ and recipe-helper "
                        "objectives only")
    p.add_argument("--dose-grid", type=float, default=3.0, metavar="MM",
                   help="dose grid spacing in mm (default 3, as ReproduceSettings: a reference is reproduced voxel "
                        "by voxel)")
    p.add_argument("--optimizer-iterations", type=int, default=150, metavar="N",
                   help="fluence-optimiser iterations per plan (default 150)")
    p.add_argument("--prescription", action="append", metavar="NAME:GY[:FX]",
                   help="prescription replacing the file's (repeatable)")
    p.add_argument("--site", choices=["hn", "lung", "generic"], help="site replacing the file's")
    p.add_argument("--out", required=True, help="plan folder to write")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_reproduce)
