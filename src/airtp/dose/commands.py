"""`airtp commission`: the beam model's water figures, for comparison with measured data."""

from __future__ import annotations

import json

__all__ = ["add_parsers", "cmd_commission"]


def cmd_commission(args) -> int:
    from airtp.dose.commission import commission, format_report

    fields = tuple(float(f) for f in args.fields.split(",")) if args.fields else (3, 4, 5, 6, 10, 15, 20)
    fig = commission(args.beam_data, fields_cm=fields)
    print(json.dumps(fig, indent=2) if args.json else format_report(fig))
    return 0


def add_parsers(subparsers) -> None:
    p = subparsers.add_parser("commission", help="print the beam model's PDD, penumbra and output factors in water")
    p.add_argument("--beam-data", metavar="FILE", help="beam-data JSON (default: the packaged TrueBeam-like 6 MV model)")
    p.add_argument("--fields", metavar="CM,CM,...", help="square field sides for output factors (default 3,4,5,6,10,15,20)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=cmd_commission)
