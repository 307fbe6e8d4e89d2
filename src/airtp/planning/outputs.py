"""Writing a planned case to its folder.

DIR holds ``summary.json``, ``plan.json`` (beams, arcs, objectives of every
iteration, recipe report), ``fluences.npz`` (per beam, the final ideal fluence on
its beamlet grid), ``delivery.json`` (the deliverable plan: control points,
MLC, jaws, MU; :class:`airtp.sequencing.DeliveryPlan`), ``dose.npy`` (Gy,
case grid: the deliverable plan's dose, or the ideal fluence's for a
fluence-only plan), ``case.npz`` (the case with its helper
structures, so the folder stands alone for export), ``scorecard.txt`` and
``scorecard.json`` (initial and final reports, each as ideal fluence and deliverable), and ``report.html`` with its
PNG figures. Everything is written into a temporary folder beside DIR and
renamed into place at the end, so a crash never leaves a plan that looks
complete.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from airtp import __version__
from airtp.case import atomic_folder
from airtp.evaluation.dvh import compute_dvhs
from airtp.planning.pipeline import PlanResult
from airtp.planning.quality import meets_quality_filter

__all__ = ["summary", "write_plan"]


def _delivery(result: PlanResult) -> dict:
    """Per beam or arc: segments or control points, MU, delivery time, fidelity; the plan's limits and scores."""
    d = result.delivery
    plan = d.plan
    beams = []
    for b in plan.beams:
        count = "segments" if b.kind == "step_and_shoot" else "control_points"
        beams.append({"name": b.name, "kind": b.kind, count: b.n_segments, "mu": b.mu,
                      "delivery_time_s": b.delivery_time_s, "fluence_fidelity": d.fidelity["per_beam"].get(b.name)})
    return {
        "sequencer": plan.sequencer, "machine": plan.machine, "fractions": plan.fractions,
        "total_mu": plan.total_mu, "delivery_time_s": sum(b.delivery_time_s for b in plan.beams),
        "fluence_fidelity": d.fidelity["plan"], "normalization_factor": d.normalization_factor,
        "score_ideal": result.final.score, "score_deliverable": d.score, "score_drop": result.final.score - d.score,
        "dose": ("fine fluence of the control-point apertures (1 mm x leaf width) through the dose engine"
                 + ("; arc intervals at the nearest sector beam's gantry angle" if d.arc_dose_angles else "")),
        "deliverable": plan.deliverable, "limits_checked": plan.limits_checked, "beams": beams,
        # every iteration sequenced (the initial plan and the refined candidates), by iteration index
        "sequenced": {str(i): {"score": x.score, "quality_filter": x.meets_quality_filter}
                      for i, x in sorted(result.deliveries.items())},
    }


def summary(result: PlanResult) -> dict:
    """The plan's summary: scores, trajectory, target metrics, delivery, timings, software version.

    ``score_final`` is the plan's score: the deliverable plan's when there
    is one (``score_ideal`` is then the best iteration's ideal fluence);
    ``score_initial`` is the initial plan's of the same kind
    (``score_initial_ideal``: its ideal fluence's).
    ``quality_filter``: whether the plan's highest-dose target passes the
    GDP-HMM filter (:mod:`airtp.planning.quality`).
    """
    case, final = result.case, result.final
    report = result.plan_report
    targets = result.scored_plan.targets
    return {
        "case": case.patient_id,
        "site": case.site,
        "technique": result.settings.technique,
        "template": result.setup.template,
        "n_beams": len(result.setup.beams),
        "score_initial": result.scored_initial.score,
        "score_initial_ideal": result.initial.score,
        "score_final": result.plan_score,
        "score_ideal": final.score,
        "score_max": report.max_total if report is not None else None,
        "score_trajectory": result.score_trajectory,
        "quality_filter_trajectory": [it.meets_quality_filter for it in result.iterations],
        "best_iteration": result.best,
        "deliverable": result.delivery is not None and result.delivery.plan.deliverable,
        "delivery": _delivery(result) if result.delivery is not None else None,
        "targets": targets,
        "quality_filter": meets_quality_filter(targets),
        "timings_s": {**result.timings, "iterations": [it.seconds for it in result.iterations]},
        "optimizer": final.result.target,
        "warnings": result.warnings,
        "software": {"airtp": __version__},
    }


def _plan_json(result: PlanResult) -> dict:
    return {
        "case": result.case.patient_id,
        "prescriptions": [p.to_dict() for p in result.case.prescriptions],
        "beams": result.setup.to_dict(),
        "recipe": [vars(e) for e in result.recipe.report] if result.recipe else [],
        "iterations": [
            {"score": it.score, "objectives": json.loads(it.objectives.to_json())["objectives"],
             "optimizer_iterations": it.result.iterations, "normalization_factor": it.result.normalization_factor,
             "skipped_objectives": it.result.skipped_objectives, "transition_mm": it.transition_mm,
             "blend": it.blend, "stage": it.stage}
            for it in result.iterations
        ],
        "best_iteration": result.best,
    }


def _write_files(result: PlanResult, folder: Path) -> None:
    from airtp.report import write_report

    final, initial = result.final, result.initial
    (folder / "summary.json").write_text(json.dumps(summary(result), indent=2))
    (folder / "plan.json").write_text(json.dumps(_plan_json(result), indent=2))
    np.save(folder / "dose.npy", result.plan_dose.astype(np.float32))
    if result.delivery is not None:
        result.delivery.plan.save(folder / "delivery.json")
    result.case.save(folder / "case.npz")
    np.savez_compressed(folder / "fluences.npz", **{b.name: f for b, f in zip(result.setup.beams, final.result.fluences)})
    plan_report = result.plan_report
    if plan_report is not None:
        if result.initial_delivery is not None:
            text = "Initial plan, ideal fluence\n" + initial.report.table() + "\n\nInitial plan, deliverable\n" \
                + result.scored_initial.report.table() + "\n\n"
        else:
            text = "Initial plan\n" + initial.report.table() + "\n\n"
        if result.delivery is not None:
            text += "Final plan, ideal fluence\n" + final.report.table() + "\n\nFinal plan, deliverable\n"
        else:
            text += "Final plan\n"
        (folder / "scorecard.txt").write_text(text + plan_report.table() + "\n")
        (folder / "scorecard.json").write_text(json.dumps(
            {"initial": result.scored_initial.report.to_dict(), "initial_ideal": initial.report.to_dict(),
             "final": plan_report.to_dict(), "ideal": final.report.to_dict()},
            indent=2))
    # DVH figure and table: the patient's own structures (the scorecard lists the helpers)
    made = {e.name for e in result.recipe.report if e.status == "made"} if result.recipe else set()
    shown = [n for n in result.case.structures if n != "Body" and n not in made]
    dvhs = compute_dvhs(result.plan_dose, {n: result.case.structures[n] for n in shown}, grid=result.case.grid)
    ref = compute_dvhs(result.scored_initial.dose, {n: result.case.structures[n] for n in shown}, grid=result.case.grid)
    write_report(folder, case=result.case, dose=result.plan_dose, dvhs=dvhs, reference_dvhs=ref,
                 score_initial=result.scored_initial.report, score_final=plan_report, summary=summary(result))


def write_plan(result: PlanResult, out_dir, extra=None) -> Path:
    """Write the plan folder atomically (see the module doc); returns its path.

    `extra(folder)`, when given, adds files to the folder before it is renamed
    into place (a reproduction's report, for instance).
    """
    def build(folder: Path) -> None:
        _write_files(result, folder)
        if extra is not None:
            extra(folder)

    return atomic_folder(Path(out_dir), build)
