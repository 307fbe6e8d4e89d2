"""Subcommand ``airtp dataset``: plan folders to GDP-HMM challenge training data.

``airtp dataset PLAN_DIRS... --out DIR [--cohort N] [--phase P] [--dev-split S]``
writes one challenge ``.npz`` per plan, ``PTV_DICT.json``,
``Pat_Obj_DICT.json``, ``meta_data.csv``, per plan the fluence maps and leaf
sequences (``*_beams.npz``) and ``export.json`` (see :mod:`airtp.io.gdphmm`).
"""

from __future__ import annotations

import sys

__all__ = ["add_parsers", "cmd_dataset"]


def cmd_dataset(args) -> int:
    from airtp.io.gdphmm import export_dataset

    say = (lambda msg: None) if args.quiet else (lambda msg: print(f"[airtp] {msg}", file=sys.stderr, flush=True))
    result = export_dataset(args.plans, args.out, cohort=args.cohort, phase=args.phase, dev_split=args.dev_split,
                            progress=say)
    for p in result.plans:
        print(f"{p['folder']} -> {p['npz']} ({'VMAT' if p['isVMAT'] else 'IMRT'}, {p['n_angles']} angles)")
        for note in p["notes"]:
            print(f"  note: {note}")
    print(f"wrote {len(result.plans)} plan(s) to {result.out}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("dataset", help="export plan folders as GDP-HMM challenge training data (.npz + meta files)")
    p.add_argument("plans", nargs="+", metavar="PLAN_DIR", help="plan folders written by 'airtp plan'")
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("--cohort", type=int, default=0, help="value of the 'cohort' column (default 0)")
    p.add_argument("--phase", default="train", help="value of the 'phase' column (default train)")
    p.add_argument("--dev-split", default="train", help="value of the 'dev_split' column (default train)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_dataset)
