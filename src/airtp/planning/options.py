"""Command-line options of a plan (``airtp plan``, ``airtp demo``, ``airtp batch``) and their PlanSettings."""

from __future__ import annotations

__all__ = ["add_plan_options", "plan_settings"]

TECHNIQUES = ["imrt9", "imrt15", "imrt7", "vmat"]


def add_plan_options(p, technique: bool = True, objectives: bool = True) -> None:
    """Add the planning options to argparse parser `p` (without ``--technique`` for a batch, which has its list)."""
    if technique:
        p.add_argument("--technique", default="imrt9", choices=TECHNIQUES)
    p.add_argument("--iterations", type=int, default=5, help="refinement iterations of Algorithm 1 (default 5)")
    p.add_argument("--scorecard", help="scorecard name or JSON path (default: the site's)")
    p.add_argument("--dose-grid", type=float, default=4.0, metavar="MM", help="dose grid spacing in mm (default 4)")
    p.add_argument("--rules", default="dose2obj,scorecard2dose",
                   help="objective-rule plugins of each iteration, comma-separated (default: dose2obj,scorecard2dose)")
    p.add_argument("--optimizer-iterations", type=int, default=150, metavar="N",
                   help="fluence-optimiser iterations per plan (default 150)")
    p.add_argument("--sequencer", metavar="NAME",
                   help="sequencer plugin: step-and-shoot, sliding-window, vmat, ... (default: vmat for VMAT, "
                        "step-and-shoot otherwise)")
    p.add_argument("--machine", metavar="FILE", help="machine description (JSON; default: TrueBeam, Millennium 120)")
    p.add_argument("--fluence-only", action="store_true",
                   help="stop at the ideal fluence: no sequencing, no deliverable plan")
    if objectives:
        p.add_argument("--objectives", metavar="FILE", help="initial objectives (JSON) replacing the site's defaults")


def plan_settings(args):
    """The :class:`~airtp.planning.PlanSettings` of parsed options (see :func:`add_plan_options`)."""
    from airtp.objectives import ObjectiveSet
    from airtp.planning import PlanSettings

    settings = PlanSettings(iterations=args.iterations, scorecard=args.scorecard, dose_grid_mm=args.dose_grid,
                            rules=tuple(r for r in args.rules.split(",") if r),
                            optimizer_options={"max_iterations": args.optimizer_iterations},
                            deliverable=not args.fluence_only, sequencer=args.sequencer, machine=args.machine)
    if getattr(args, "technique", None):
        settings.technique = args.technique
    if getattr(args, "objectives", None):
        settings.objectives = ObjectiveSet.load(args.objectives)
    return settings
