"""Subcommands ``airtp names``, ``airtp harmonize`` and ``airtp contour``, added to the main CLI.

``airtp names NAME... [--site hn|lung] [--mapping FILE] [--json]`` says what
each name is (matched, ambiguous or unmatched, and why).
``airtp harmonize CASE [--mapping FILE] [--out FILE] [--json]`` does the same
for a case's structures and, with ``--out``, writes the case with the matched
ones renamed. ``airtp contour CASE [--plugin NAME] [--replace] [--out FILE]``
runs a contouring plugin and, with ``--out``, writes the case with what it
added.
"""

from __future__ import annotations

import json

__all__ = ["add_parsers", "cmd_names", "cmd_harmonize", "cmd_contour"]


def _print_matches(matches, as_json: bool) -> None:
    from airtp.structures.harmonize import format_matches

    if as_json:
        print(json.dumps([m.to_dict() for m in matches], indent=2))
    else:
        print(format_matches(matches))


def cmd_names(args) -> int:
    from airtp.structures.harmonize import harmonize, load_mapping

    mapping = load_mapping(args.mapping) if args.mapping else None
    _print_matches(harmonize(args.names, site=args.site, mapping=mapping), args.json)
    return 0


def cmd_harmonize(args) -> int:
    from airtp.case import Case
    from airtp.structures.harmonize import harmonize_case, load_mapping

    mapping = load_mapping(args.mapping) if args.mapping else None
    case = Case.load(args.case)
    _print_matches(harmonize_case(case, mapping=mapping), args.json)
    if args.out:
        case.save(args.out)
        print(f"wrote {args.out}")
    return 0


def cmd_contour(args) -> int:
    from airtp.case import Case
    from airtp.contouring import contour

    case = Case.load(args.case)
    report = contour(case, args.plugin, replace=args.replace)
    print(report.format())
    if args.out:
        case.save(args.out)
        print(f"wrote {args.out}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("names", help="harmonise structure names to AIRTP's standard names (TG-263 and rules)")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--site", choices=["hn", "lung", "generic"])
    p.add_argument("--mapping", metavar="FILE", help="user mapping (JSON or CSV: clinical name -> standard name)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_names)

    p = sub.add_parser("harmonize", help="harmonise a case's structure names; --out writes the renamed case")
    p.add_argument("case", help="case file (.npz)")
    p.add_argument("--mapping", metavar="FILE", help="user mapping (JSON or CSV: clinical name -> standard name)")
    p.add_argument("--out", metavar="FILE", help="write the case with matched structures renamed")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_harmonize)

    p = sub.add_parser("contour", help="add missing structures with a contouring plugin (airtp.contouring)")
    p.add_argument("case", help="case file (.npz)")
    p.add_argument("--plugin", default="existing", help="contouring plugin (default: existing; built-in: threshold)")
    p.add_argument("--replace", action="store_true", help="replace given structures with the plugin's")
    p.add_argument("--out", metavar="FILE", help="write the case with the added structures")
    p.set_defaults(func=cmd_contour)
