"""Subcommands ``airtp import``, ``airtp export`` and ``airtp dvh``, added to the main CLI.

``airtp import DICOM_DIR --out case.npz`` reads a CT series with its RTSTRUCT,
RTDOSE and RTPLAN into a case file (the plan, when there is one, beside it as
``case.delivery.json``); ``--out DIR`` (no ``.npz``) writes a plan folder
instead (``case.npz``, ``dose.npy``, ``delivery.json``) that ``airtp export``
takes back. ``airtp export PLAN_DIR --out DICOM_DIR`` writes CT (for cases
not from DICOM), RTSTRUCT, RTPLAN and RTDOSE. ``airtp dvh RTSTRUCT RTDOSE``
prints DVH metrics computed on the dose grid.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["add_parsers", "cmd_dvh", "cmd_export", "cmd_import"]


def _write_import(result, out: Path) -> list[Path]:
    import numpy as np

    from airtp.case import atomic_write
    from airtp.io.dicom.files import write_folder

    def plan_bytes() -> bytes:
        return json.dumps(result.plan.to_dict(), indent=1).encode()

    if out.suffix == ".npz":
        written = []
        if result.plan is not None:
            side = out.with_name(out.stem + ".delivery.json")
            atomic_write(side, lambda f: f.write(plan_bytes()))
            written.append(side)
        written.insert(0, result.case.save(out))
        return written

    def build(folder: Path) -> None:
        result.case.save(folder / "case.npz")
        if result.dose_gy is not None:
            np.save(folder / "dose.npy", result.dose_gy.astype(np.float32))
        if result.plan is not None:
            (folder / "delivery.json").write_bytes(plan_bytes())

    # an earlier plan folder is replaced whole; any other non-empty folder is refused, never emptied
    return [write_folder(out, build, overwrite=(out / "case.npz").is_file(),
                         hint="and holds no case.npz: give a new folder or a .npz path")]


def cmd_import(args) -> int:
    from airtp.case import Prescription
    from airtp.io.dicom.importer import import_dicom

    prescriptions = [Prescription.parse(p) for p in args.prescription] if args.prescription else None
    result = import_dicom(args.folder, series=args.series, rtstruct=args.rtstruct, rtplan=args.rtplan,
                          rtdose=args.rtdose, site=args.site, patient_id=args.patient_id, prescriptions=prescriptions,
                          names=args.names, harmonize=not args.keep_names, uneven=args.uneven_slices)
    case = result.case
    g = case.grid
    print(f"Case {case.patient_id}: CT {g.shape[2]} x {g.shape[1]} x {g.shape[0]} voxels (x, y, z) at "
          f"{g.spacing_mm[2]:g} x {g.spacing_mm[1]:g} x {g.spacing_mm[0]:g} mm, patient position "
          f"{case.meta['dicom']['patient_position']}")
    for kind, what in result.files.items():
        print(f"  {kind}: {what}")
    print()
    print(result.name_table())
    if result.plan is not None:
        print(f"\nPlan: {len(result.plan.beams)} beams ({', '.join(sorted({b.kind for b in result.plan.beams}))}), "
              f"{result.plan.total_mu:.1f} MU per fraction, {result.plan.fractions} fractions")
    rx = ", ".join(f"{p.structure} {p.dose_gy:g} Gy/{p.fractions} fx" for p in case.prescriptions) or "none"
    print(f"Prescriptions: {rx}")
    for note in result.notes:
        print(f"note: {note}")
    for path in _write_import(result, Path(args.out)):
        print(f"wrote {path}")
    return 0


def cmd_export(args) -> int:
    from airtp.io.dicom.export import export_plan

    with_ct = True if args.with_ct else (False if args.no_ct else None)
    result = export_plan(args.plan, args.out, with_ct=with_ct, overwrite=args.overwrite)
    cts = [f for f in result.files if f.startswith("CT_")]
    others = [f for f in result.files if not f.startswith("CT_")]
    print(f"study {result.uids['study']}, frame of reference {result.uids['frame']}")
    if cts:
        print(f"  CT: {len(cts)} slices ({cts[0]} .. {cts[-1]})")
    for name in others:
        print(f"  {name}")
    for note in result.notes:
        print(f"note: {note}")
    print(f"wrote {result.folder}")
    return 0


def cmd_dvh(args) -> int:
    from airtp.io.dicom.dvh import dicom_dvhs

    result = dicom_dvhs(args.rtstruct, args.rtdose, structures=args.structure, supersample=args.supersample,
                        small_cc=args.supersample_below)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(result.table())
    for note in result.notes:
        print(f"note: {note}")
    return 0


def add_parsers(subparsers) -> None:
    """Add ``import``, ``export`` and ``dvh`` to an argparse subparsers object."""
    p = subparsers.add_parser("import", help="read a DICOM folder (CT, RTSTRUCT, RTDOSE, RTPLAN) into a case",
                              description="Read a DICOM folder into a case file (or a plan folder).")
    p.add_argument("folder", help="folder with the DICOM files (searched recursively)")
    p.add_argument("--out", required=True,
                   help="case file to write (.npz; the plan beside it as NAME.delivery.json), or a plan folder")
    p.add_argument("--series", metavar="UID", help="CT SeriesInstanceUID to use when the folder holds several")
    p.add_argument("--rtstruct", metavar="FILE", help="structure set to use")
    p.add_argument("--rtplan", metavar="FILE", help="plan to use")
    p.add_argument("--rtdose", metavar="FILE", help="dose to use")
    p.add_argument("--site", choices=["hn", "lung", "generic"], help="treatment site (default generic)")
    p.add_argument("--patient-id", help="case name (default: the DICOM PatientID)")
    p.add_argument("--prescription", action="append", metavar="NAME:GY[:FX]",
                   help="prescription replacing the plan's (repeatable)")
    p.add_argument("--names", metavar="FILE", help="user name mapping for harmonisation (JSON object or CSV "
                                                   "'input,standard')")
    p.add_argument("--keep-names", action="store_true", help="keep structure names as given (no harmonisation)")
    p.add_argument("--uneven-slices", choices=["error", "resample"], default="error",
                   help="uneven CT slice gaps: stop (default) or resample onto the median gap")
    p.set_defaults(func=cmd_import)

    p = subparsers.add_parser("export", help="write a plan folder as DICOM RT (CT, RTSTRUCT, RTPLAN, RTDOSE)",
                              description="Write a plan folder (case.npz, dose.npy, delivery.json) as DICOM RT.")
    p.add_argument("plan", help="plan folder (or a case file)")
    p.add_argument("--out", required=True, help="folder to write the DICOM files into")
    ct = p.add_mutually_exclusive_group()
    ct.add_argument("--with-ct", action="store_true", help="always write the CT (new UIDs)")
    ct.add_argument("--no-ct", action="store_true", help="never write the CT")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser("dvh", help="DVH metrics from an RTSTRUCT and an RTDOSE, on the dose grid",
                              description="DVH metrics (volume, min/mean/max, D95, D2, D0.03cc) of every ROI of "
                                          "an RTSTRUCT in an RTDOSE, computed on the dose grid.")
    p.add_argument("rtstruct", help="RTSTRUCT file")
    p.add_argument("rtdose", help="RTDOSE file (dose units GY)")
    p.add_argument("--structure", action="append", metavar="NAME", help="only this ROI (repeatable)")
    p.add_argument("--supersample", type=int, default=4, metavar="N",
                   help="samples per voxel along each axis for small structures (default 4; 1: off)")
    p.add_argument("--supersample-below", type=float, default=5.0, metavar="CC",
                   help="supersample structures smaller than this (default 5 cc)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=cmd_dvh)
