"""Subcommands ``airtp batch`` and ``airtp phantoms``, added to the main CLI.

``airtp batch COHORT... --techniques imrt9,imrt15,vmat --out DIR [--workers N | --scheduler tcp://HOST:PORT]``
plans every (case, technique) on Dask (see :mod:`airtp.batch.runner`):
progress on stderr, the summary table on stdout, ``DIR/manifest.json`` and
``DIR/scores.png``. Exit status 0 when every task gave a plan, 1 when some
failed (the table says why), 2 for bad input, 130 when interrupted (run the
same command again to resume).

``airtp phantoms --site hn|lung --n N --out DIR`` writes a synthetic cohort.
"""

from __future__ import annotations

import sys
from pathlib import Path

from airtp.errors import BatchError
from airtp.planning.options import add_plan_options, plan_settings

__all__ = ["add_parsers", "cmd_batch", "cmd_phantoms"]


def _spacing(text: str):
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise BatchError(f"--spacing must be three mm values Z,Y,X, got '{text}'") from None
    if len(values) != 3:
        raise BatchError(f"--spacing must be three mm values Z,Y,X, got '{text}'")
    return values


def cmd_batch(args) -> int:
    from airtp.batch.figures import summary_table
    from airtp.batch.runner import BatchOptions, run_batch
    from airtp.case import Prescription

    options = BatchOptions(workers=args.workers, scheduler=args.scheduler, native_threads=args.native_threads,
                           max_retries=args.max_retries, quiet=args.quiet, progress_interval_s=args.progress_interval)
    try:
        prescriptions = [Prescription.parse(p) for p in args.prescription or ()]
        result = run_batch(args.cohort, args.techniques, args.out, plan_settings(args), options, dicom_site=args.site,
                           dicom_prescriptions=prescriptions)
    except KeyboardInterrupt:
        print(f"airtp: interrupted; finished plans are kept in {args.out}: run the same command to resume",
              file=sys.stderr)
        return 130
    print(summary_table(result.records))
    print(f"\n{result.ran} planned, {result.reused} already complete, {len(result.failed)} failed "
          f"in {result.seconds:.1f} s; manifest {Path(result.out) / 'manifest.json'}")
    if result.figure is not None:
        print(f"figure {result.figure}")
    return 0 if result.ok else 1


def cmd_phantoms(args) -> int:
    from airtp.batch.cohort import write_phantom_cohort

    spacing = _spacing(args.spacing) if args.spacing else None
    for path in write_phantom_cohort(args.site, args.n, args.out, seed=args.seed, spacing_mm=spacing):
        print(f"wrote {path}")
    return 0


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


def add_parsers(subparsers) -> None:
    """Add ``batch`` and ``phantoms`` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "batch", help="plan a cohort on Dask: one task per (case, technique), resumable",
        description="Plan every case of the cohort with every technique on a Dask cluster. Finished plans go to "
                    "DIR/plans/<case>__<technique>; running the same command again skips them and redoes the rest.",
        epilog="Exit status: 0 when every task gave a plan, 1 when some failed (the summary says why), "
               "2 for bad input, 130 when interrupted.")
    p.add_argument("cohort", nargs="+", metavar="COHORT", help="case files (.npz), folders of them, DICOM folders")
    p.add_argument("--techniques", default="imrt9", help="comma-separated, e.g. imrt9,imrt15,vmat (default imrt9)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (plans, manifest.json, scores.png)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive_int, metavar="N",
                       help="worker processes of a local cluster (default: cores / --native-threads)")
    where.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="address of a running Dask scheduler")
    p.add_argument("--native-threads", type=_positive_int, default=1, metavar="T",
                   help="OpenMP threads per local worker (default 1)")
    p.add_argument("--max-retries", type=int, default=2, metavar="N",
                   help="times a task is run again after its worker process died while planning it; "
                        "then it is recorded as failed (default 2)")
    add_plan_options(p, technique=False)
    p.add_argument("--site", choices=["hn", "lung", "generic"],
                   help="site of the DICOM cases (default generic); case files carry their own")
    p.add_argument("--prescription", action="append", metavar="NAME:GY[:FX]",
                   help="prescription of the DICOM cases, replacing their RTPLAN's (repeatable)")
    p.add_argument("--progress-interval", type=float, default=30.0, metavar="S",
                   help="seconds between progress lines while no task finishes (default 30)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_batch)

    p = subparsers.add_parser("phantoms", help="write a diverse synthetic cohort (case files)",
                              description="Write N synthetic patients: head and neck with 1, 2 and 3 PTVs in turn, "
                                          "or lung with left, right and central tumours in turn; seeds START, "
                                          "START+1, ...")
    p.add_argument("--site", required=True, choices=["hn", "lung"])
    p.add_argument("--n", required=True, type=_positive_int, metavar="N", help="number of patients")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the case files")
    p.add_argument("--seed", type=int, default=0, metavar="START", help="seed of the first patient (default 0)")
    p.add_argument("--spacing", metavar="Z,Y,X", help="voxel spacing in mm (default: the phantoms' 3,2.5,2.5)")
    p.set_defaults(func=cmd_phantoms)
