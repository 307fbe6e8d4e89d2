"""Subcommands ``airtp score`` and ``airtp scorecard``, added to the main CLI.

``airtp score CASE DOSE [--scorecard NAME|PATH] [--json]`` scores a dose
(``.npy``, Gy, on the case grid) and prints the paper's Table 7 layout.
``airtp scorecard show NAME|PATH [--json]`` prints a scorecard's items and
points; ``airtp scorecard list`` the installed scorecards.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from airtp.evaluation.dvh import DoseError

__all__ = ["add_parsers", "cmd_score", "cmd_scorecard_show", "cmd_scorecard_list", "load_dose"]

_SITE_SCORECARD = {"hn": "hn", "lung": "lung"}


def load_dose(path) -> np.ndarray:
    """Read a dose ``.npy`` (Gy); raises DoseError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DoseError(f"{path}: no such dose file")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DoseError(f"{path}: not a readable .npy dose ({exc})") from None


def cmd_score(args) -> int:
    from airtp.case import Case, Prescription
    from airtp.errors import AirtpError
    from airtp.evaluation.scorecard import score_plan

    prescriptions = [Prescription.parse(p) for p in args.prescription] if args.prescription else None
    case = Case.load(args.case, prescriptions=prescriptions)
    name = args.scorecard or _SITE_SCORECARD.get(case.site)
    if name is None:
        raise AirtpError(f"case '{case.patient_id}' has site '{case.site}': give a scorecard with --scorecard NAME|PATH")
    dose = load_dose(args.dose)
    try:
        report = score_plan(case, dose, name)
    except DoseError as exc:
        raise DoseError(f"{args.dose}: {exc}") from None
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.table())
    return 0


def cmd_scorecard_show(args) -> int:
    from airtp.evaluation.scorecard import get_scorecard

    card = get_scorecard(args.name)
    summary = card.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{card.name} ({card.site}); {len(card.items)} items, max total {card.max_total:g}")
    if card.levels:
        print("prescription levels: " + ", ".join(f"{k} {v:g} Gy" for k, v in card.levels.items()))
    for it in summary["items"]:
        pts = " ".join(f"({x:g}, {s:g})" for x, s in it["points"])
        inp = "" if it["input_unit"] is None else f"{it['input_value']:g} {it['input_unit']}"
        lvl = f" [{it['level']}]" if it["level"] else ""
        print(f"  {it['structure']:<18} {it['metric_type']:<14} {inp:<10} -> {it['output_unit'] or '':<3}{lvl}  {pts}")
    return 0


def cmd_scorecard_list(args) -> int:
    from airtp.evaluation.scorecard import builtin_names

    for name in builtin_names():
        print(name)
    return 0


def add_parsers(subparsers) -> None:
    """Add ``score`` and ``scorecard`` to an argparse subparsers object."""
    p = subparsers.add_parser("score", help="score a dose with a scorecard (paper Table 7 layout)",
                              description="Score a dose (.npy, Gy, on the case grid) with a Varian-format scorecard.")
    p.add_argument("case", help="case file (.npz)")
    p.add_argument("dose", help="dose in Gy on the case grid (.npy)")
    p.add_argument("--scorecard", help="scorecard name (hn, lung, plugins) or path to a JSON file; "
                                       "default: by the case's site")
    p.add_argument("--prescription", action="append", metavar="NAME:GY[:FX]",
                   help="replace the case's prescriptions (repeatable)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_score)

    s = subparsers.add_parser("scorecard", help="show or list scorecards")
    ssub = s.add_subparsers(dest="scorecard_command", required=True)
    show = ssub.add_parser("show", help="print a scorecard's items and score points")
    show.add_argument("name", help="scorecard name (hn, lung, plugins) or path to a JSON file")
    show.add_argument("--json", action="store_true", help="print as JSON")
    show.set_defaults(func=cmd_scorecard_show)
    lst = ssub.add_parser("list", help="list installed scorecards")
    lst.set_defaults(func=cmd_scorecard_list)
