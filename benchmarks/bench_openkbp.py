"""Plan the OpenKBP head-and-neck cohort and compare with its reference plans (paper section 3.3, Figure 8).

Run: python benchmarks/bench_openkbp.py [--data ../shared/data/openkbp] [--patients N | --ids pt_1 pt_2 ...]
     [--technique imrt9] [--iterations 5] [--dose-grid 4] [--optimizer-iterations 150] [--fluence-only]
     [--no-spare] [--spare-fraction 0.5]
     [--out bench-openkbp] [--reproduce | --reproduce-only] [--reproduce-rounds N] [--reproduce-dose-grid 3]

Each patient (an AIRTP case file with ``reference_dose_gy``, see the data
folder's README) is planned by the pipeline with 9 equispaced coplanar 6 MV
fields (``imrt9``, the technique family of the reference plans; the dose of
the sequenced, deliverable plan, or of the ideal fluence with
``--fluence-only``), then
compared with the reference dose on the patient's own structures, under
their OpenKBP names: D95 (and D99, D1) of each PTV, mean and D0.1cc of each
organ -- the metrics of ``reference_dose_metrics.json`` --, the scorecard
total of both doses, and a DVH figure per patient with the reference dashed
(``<out>/<id>_dvh.png``, the paper's Figure 8). A summary table (median and
worst difference of every metric) is printed and everything is written to
``<out>/openkbp.json``.

How the two plans are made comparable (stated so a physicist can check it):

- Normalisation: AIRTP normalises its plans so that PTV70's D95 is 70 Gy. The
  reference plans are not (their PTV70 D95 ranges about 66-71 Gy), so the
  whole reference dose is scaled by one factor to the same normalisation;
  the factor is reported per patient. PTV70 D95 then agrees by construction,
  which makes the coverage goal a check of the normalisation and of the
  metric code; the coverage that can differ is PTV63/PTV56 D95 and every D99.
- Region: the reference dose exists only inside ``Body`` (OpenKBP's
  possible-dose mask, which ends a few slices beyond the targets). Outside it
  the reference is 0 because it was not computed, so the AIRTP dose is set
  to 0 there too before any metric; organs reaching outside it are named.
- Metric code: the reference metrics are recomputed with AIRTP's DVHs and
  checked against ``reference_dose_metrics.json`` (the ``metric_check``
  entry). D95 and means agree within a few tenths of a Gy; D0.1cc may
  differ by Gy where the dose is steep, since 0.1 cc is under 3 voxels of
  0.038 cc and the two codes interpolate differently. Both plans are read
  with AIRTP's code, so the comparison itself is consistent.

Goals (issue 11): equal target coverage (PTV70 D95 within 0.5 Gy of the
reference after normalisation) and OAR sparing no worse than the reference on
the median of every organ's mean dose. Each patient's shortfalls are listed
with the reasons the benchmark can tell: how much of the organ lies within
10 mm of the targets, and whether the scorecard (hence the objectives) asks
anything of the organ's mean dose at all.

Reproducing the reference doses (paper Figure 9): ``--reproduce`` is the hook
for ``airtp.planning.reproduce`` (see :func:`reproduce_patient`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from airtp.case import Case, atomic_write
from airtp.errors import AirtpError
from airtp.evaluation.compare import compare_doses, structure_metrics
from airtp.evaluation.dvh import compute_dvhs
from airtp.evaluation.gamma import gamma_index
from airtp.evaluation.scorecard import get_scorecard, score_plan
from airtp.planning import PlanSettings, plan_case
from airtp.planning.intake import prepare_case
from airtp.report.plots import dvh_figure
from airtp.structures.morphology import margin

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "openkbp"

COVERAGE_TOL_GY = 0.5  # issue goal: PTV70 D95 within 0.5 Gy of the reference
OAR_TOL_GY = 1.0  # a patient's organ mean above the reference by more than this is a shortfall
NEAR_MM = 10.0  # "near the targets": within this distance of PTVTotal
BEYOND_FIELDS_PCT = 1.0  # "beyond the reference plan's fields": reference dose under this % of the prescription


# Patients ----------------------------------------------------------------------

def _patient_number(pid: str) -> int:
    m = re.search(r"(\d+)$", pid)
    return int(m.group(1)) if m else 0


def patient_ids(data: Path, ids=None, n=None) -> list[str]:
    """The patients to plan: `ids`, else the first `n` case files of `data` by OpenKBP number."""
    if ids:
        return list(ids)
    found = sorted((p.stem for p in data.glob("*.npz")), key=_patient_number)
    if not found:
        raise SystemExit(f"no case files (*.npz) in {data}")
    return found[:n] if n else found


def reference_metrics(data: Path) -> dict[str, dict]:
    """``reference_dose_metrics.json`` by patient id ({} when the folder has none)."""
    path = data / "reference_dose_metrics.json"
    if not path.is_file():
        return {}
    return {r["case"]: r for r in json.loads(path.read_text())}


# Reproduction hook (paper Figure 9) ----------------------------------------------

def reproduce_patient(path: Path, settings: PlanSettings, rounds: int | None = None):
    """Reproduce the reference dose of the case file `path` with a plan; returns the :class:`Reproduction`.

    The hook of the "Reproducing the reference doses" part of issue 11: the
    dose -> plan method of paper Figure 5(b), :func:`airtp.planning.reproduce.reproduce`,
    on a fresh copy of the case (the automatic plan has already added its
    helpers to the other), with the benchmark's technique, dose grid and
    optimizer iterations, and `rounds` feedback rounds (None: its default).
    Its dose is compared by :func:`plan_patient` exactly like the automatic
    plan (same structures, region, normalisation; figure
    ``<id>_reproduce_dvh.png``).
    """
    try:
        from airtp.planning.reproduce import ReproduceSettings, reproduce
    except ImportError as exc:
        if exc.name != "airtp.planning.reproduce":
            raise
        raise SystemExit("--reproduce needs airtp.planning.reproduce, which is not installed") from None
    case = Case.load(path)
    prepare_case(case)  # standard names before the reproduction's recipe reads them
    options = dict(technique=settings.technique, dose_grid_mm=settings.dose_grid_mm,
                   optimizer_options=dict(settings.optimizer_options))
    if rounds is not None:
        options["rounds"] = rounds
    return reproduce(case, case.reference_dose, ReproduceSettings(**options), source=str(path))


# One patient -----------------------------------------------------------------

def _own_structures(case: Case) -> tuple[dict, list[str], np.ndarray | None]:
    """(the patient's masks by their given names, without Body; target names, highest first; Body)."""
    body_name = case.structures.find("Body")
    masks = {n: case.structures[n] for n in case.structures if n != body_name}
    targets = [case.structures.find(p.structure) or p.structure for p in case.prescriptions_by_dose()]
    body = case.structures[body_name] if body_name else None
    return masks, [t for t in targets if t in masks], body


def metric_check(case: Case, masks: dict, targets: list[str], entry: dict | None) -> dict | None:
    """Largest |AIRTP metric - shipped metric| (Gy) of the raw reference dose, per metric kind."""
    if not entry:
        return None
    ours = structure_metrics(case.reference_dose, masks, case.grid, targets)
    worst: dict[str, float] = {}
    for key, value in entry.items():
        if key in ("case", "ptvs") or key not in ours:
            continue
        kind = key.split("_", 1)[1]
        worst[kind] = max(worst.get(kind, 0.0), abs(ours[key] - float(value)))
    return worst


def _standard_of(case: Case, mask: np.ndarray, given: str) -> str:
    """The name a given structure has after the pipeline's harmonisation (same mask)."""
    if given in case.structures:
        return case.structures.find(given)
    for name in case.structures:
        if case.structures[name] is mask or np.array_equal(case.structures[name], mask):
            return name
    return given


def _derived(organ: str, recipe) -> set[str]:
    """Helpers the recipe made from `organ`, directly or through other helpers (by their formulas)."""
    out, grew = {organ}, True
    while grew:
        grew = False
        for e in (recipe.report if recipe else ()):
            made_from = any(re.search(rf"\b{re.escape(o)}\b", e.reason) for o in out)
            if e.status == "made" and e.name not in out and made_from:
                out.add(e.name)
                grew = True
    return out


def why_organ(case: Case, organ: str, mask: np.ndarray, ptv_total: np.ndarray | None, recipe, report) -> list[str]:
    """Reasons an organ's mean dose may exceed the reference's (what the benchmark can tell)."""
    reasons = []
    n = np.count_nonzero(mask)
    if ptv_total is not None and n:
        inside = np.count_nonzero(mask & ptv_total) / n
        near = np.count_nonzero(mask & margin(ptv_total, NEAR_MM, case.grid.spacing_mm)) / n
        if near >= 0.2:
            reasons.append(f"{near:.0%} of it lies within {NEAR_MM:g} mm of the targets ({inside:.0%} inside)")
    std = _standard_of(case, mask, organ)
    related = _derived(std, recipe)
    items = [r for r in (report.results if report else ()) if r.struct_id in related]
    means = [r for r in items if r.item.metric == "MeanDose"]
    if not items:
        reasons.append("no scorecard item scores it, so no objective pushes its dose down beyond the rings")
    elif not means:
        labels = ", ".join(sorted({f"{r.struct_id} {r.item.metric} {r.item.input_text()}" for r in items}))
        reasons.append(f"the scorecard asks nothing of its mean dose (only {labels})")
    else:
        for r in means:
            if r.scored:
                reasons.append(f"its mean-dose item {r.struct_id} scored {r.score:.2f} of {r.item.max_score:g} "
                               f"({r.output_value:.1f} Gy)")
    return reasons


def shortfalls(case: Case, cmp, masks: dict, targets: list[str], recipe, report) -> list[str]:
    """Where the plan falls short of the reference, each with its reasons."""
    out = []
    diff = cmp.difference
    top = targets[0] if targets else None
    if top and abs(diff.get(f"{top}_D95", 0.0)) > COVERAGE_TOL_GY:
        out.append(f"{top} D95 differs by {diff[f'{top}_D95']:+.2f} Gy (goal: within {COVERAGE_TOL_GY} Gy)")
    for t in targets[1:]:
        d = diff.get(f"{t}_D95")
        if d is not None and d < -COVERAGE_TOL_GY:
            out.append(f"{t} D95 {-d:.2f} Gy below the reference")
    ptv_total = None
    if targets:
        ptv_total = np.logical_or.reduce([masks[t] for t in targets])
    for organ in cmp.organs:
        d = diff.get(f"{organ}_mean")
        if d is None or d <= OAR_TOL_GY:
            continue
        why = why_organ(case, organ, masks[organ], ptv_total, recipe, report)
        out.append(f"{organ} mean {d:+.2f} Gy" + (f": {'; '.join(why)}" if why else ""))
    return out


def plan_patient(path: Path, settings: PlanSettings, entry: dict | None, out: Path, scorecard,
                 reproduce: bool = False, reproduce_rounds: int | None = None, plan: bool = True,
                 reproduce_settings: PlanSettings | None = None) -> dict:
    """Plan one patient and compare with its reference; a dict for the JSON (``error`` set on failure).

    ``plan=False`` skips the automatic plan (reproduction only);
    `reproduce_settings` (default `settings`) are the reproduction's.
    """
    pid = path.stem
    rec: dict = {"id": pid, "file": str(path)}
    case = Case.load(path)
    if case.reference_dose is None:
        raise AirtpError(f"{path}: no reference_dose_gy to compare with")
    masks, targets, body = _own_structures(case)
    rec["metric_check"] = metric_check(case, masks, targets, entry)
    reference = case.reference_dose
    rec["seconds"] = 0.0
    if plan:
        _plan_and_compare(rec, case, settings, masks, targets, body, reference, out, scorecard)
    if reproduce:
        t1 = time.perf_counter()
        reproduction = reproduce_patient(path, reproduce_settings or settings, reproduce_rounds)
        rep = compare_doses(case, reproduction.dose, reference, masks=masks, targets=targets, within=body)
        rec["reproduce"] = {"comparison": rep.to_dict(), **openkbp_scores(case, rep, body),
                            "kept_round": reproduction.best,
                            "rounds": [{"dvh_score_gy": r.dvh_score_gy, "gamma_3_3_pct": r.gamma_pass_pct}
                                       for r in reproduction.rounds],
                            "seconds": time.perf_counter() - t1,
                            "figure": str(_figure(case, rep, masks, targets, out / f"{pid}_reproduce_dvh.png",
                                                  "reproduction"))}
    return rec


def _plan_and_compare(rec: dict, case: Case, settings: PlanSettings, masks: dict, targets: list[str], body,
                      reference, out: Path, scorecard) -> None:
    t0 = time.perf_counter()
    pid = rec["id"]
    result = plan_case(case, settings)
    # the deliverable plan's dose when the pipeline sequenced one, else the ideal fluence's
    cmp = compare_doses(case, result.plan_dose, reference, masks=masks, targets=targets, within=body)
    plan_score = score_plan(case, cmp.plan_dose, scorecard)
    rec.update(
        seconds=time.perf_counter() - t0,
        timings=result.timings,
        warnings=result.warnings,
        comparison=cmp.to_dict(),
        score_plan=plan_score.total,
        score_plan_unmasked=result.plan_score,
        score_ideal_fluence=result.final.score,
        deliverable=result.delivery is not None,
        score_reference=score_plan(case, cmp.reference_dose, scorecard).total,
        shortfalls=shortfalls(case, cmp, masks, targets, result.recipe, plan_score),
        beyond_reference_fields=beyond_reference_fields(case, cmp, masks, targets),
        figure=str(_figure(case, cmp, masks, targets, out / f"{pid}_dvh.png", "AIRTP")),
    )


def beyond_reference_fields(case: Case, cmp, masks: dict, targets: list[str],
                            percent: float = BEYOND_FIELDS_PCT) -> dict[str, float]:
    """Per organ, the part (Gy) of its mean-dose difference (plan - reference) from the voxels where the
    reference dose is under `percent` of the highest prescription.

    A diagnostic of the two dose engines, not of the plans: there the
    reference plan leaves the tissue all but unirradiated, where a 6 MV
    beam's scatter tail still gives a few per cent of the field's dose
    (MPPG 5.b tests a model's tail to 3 % of the maximum up to 5 cm from
    the field edge), so an organ lying beyond the fields (a brainstem above
    an oropharynx target) differs by the engines' tails whatever the plan.
    """
    rx = max(p.dose_gy for p in case.prescriptions)
    low = cmp.reference_dose < percent / 100.0 * rx
    out = {}
    for name, mask in masks.items():
        if name in targets or not mask.any():
            continue
        beyond = mask & low
        diff = cmp.plan_dose[beyond].astype(np.float64) - cmp.reference_dose[beyond]
        out[name] = float(diff.sum() / mask.sum())
    return out


def openkbp_scores(case: Case, cmp, body: np.ndarray) -> dict:
    """OpenKBP's scores of a reproduction and its gamma pass rate against the reference.

    Dose score: mean |reference - reproduction| (Gy) over the possible-dose
    mask (``Body``); DVH score: mean |difference| (Gy) of D99, D95, D1 of the
    targets and D0.1cc and mean of the organs (the comparison's metrics);
    gamma 3 %/3 mm global, 10 % threshold, reference as normalised.
    """
    diff = np.abs(cmp.reference_dose.astype(np.float64) - cmp.plan_dose)[body]
    dvh = [abs(v) for v in cmp.difference.values()]
    g = gamma_index(cmp.reference_dose, cmp.plan_dose, case.grid, dose_percent=3.0, dta_mm=3.0, cutoff_percent=10.0)
    return {"dose_score_gy": float(diff.mean()), "dvh_score_gy": float(np.mean(dvh)) if dvh else None,
            "gamma_3_3_pct": g.pass_rate}


def _figure(case: Case, cmp, masks: dict, targets: list[str], path: Path, label: str) -> Path:
    """DVHs of the compared doses, reference dashed; structures under their standard names (fixed colours)."""
    named = {_standard_of(case, m, n): m for n, m in masks.items()}
    plan = compute_dvhs(cmp.plan_dose, named, grid=case.grid)
    ref = compute_dvhs(cmp.reference_dose, named, grid=case.grid)
    return dvh_figure(plan, path, reference=ref, targets=targets, labels=(label, "reference"),
                      title=f"{case.patient_id}: {label} (solid) and reference plan (dashed)")


# Summary ---------------------------------------------------------------------

def difference_table(comparisons: list[dict]) -> dict[str, dict]:
    """Per metric: n, median and worst difference (Gy) over the comparisons' ``difference`` dicts."""
    diffs: dict[str, list[float]] = {}
    for c in comparisons:
        for k, v in c["difference"].items():
            diffs.setdefault(k, []).append(v)
    table = {}
    for k, vals in diffs.items():
        # worse is more dose for organs and for a target's hot spot (D1), less for its coverage (D95, D99)
        higher_is_worse = k.endswith(("_mean", "_D0.1cc", "_D1"))
        worst = max(vals) if higher_is_worse else min(vals)
        table[k] = {"n": len(vals), "median": float(np.median(vals)), "worst": float(worst)}
    return table


def summarize(records: list[dict]) -> dict:
    """Median and worst difference (plan - reference, Gy) of every metric, and the goals."""
    ok = [r for r in records if "error" not in r and "comparison" in r]
    table = difference_table([r["comparison"] for r in ok])
    check: dict[str, float] = {}
    for r in ok:
        for kind, v in (r.get("metric_check") or {}).items():
            check[kind] = max(check.get(kind, 0.0), v)
    ptv70 = [r["comparison"]["difference"].get("PTV70_D95") for r in ok]
    ptv70 = [v for v in ptv70 if v is not None]
    organ_medians = {k[:-5]: v["median"] for k, v in table.items() if k.endswith("_mean")}
    scores = [(r["score_plan"], r["score_reference"]) for r in ok]
    out = {
        "patients": len(records), "planned": len(ok), "failed": [{"id": r["id"], "error": r["error"]} for r in records
                                                                 if "error" in r],
        "metrics": table,
        "metric_check_max_gy": check,
        "goal_coverage_met": bool(ptv70) and all(abs(v) <= COVERAGE_TOL_GY for v in ptv70),
        "goal_oar_mean_met": {k: v <= 0.0 for k, v in organ_medians.items()},
        "score_median_plan": float(np.median([s[0] for s in scores])) if scores else None,
        "score_median_reference": float(np.median([s[1] for s in scores])) if scores else None,
        "seconds_median": float(np.median([r["seconds"] for r in ok])) if ok else None,
    }
    within: dict[str, list[float]] = {}  # organ mean differences without the voxels beyond the reference's fields
    for r in ok:
        for name, part in (r.get("beyond_reference_fields") or {}).items():
            d = r["comparison"]["difference"].get(f"{name}_mean")
            if d is not None:
                within.setdefault(name, []).append(d - part)
    out["organ_mean_median_within_reference_fields"] = {k: float(np.median(v)) for k, v in within.items()}
    reproduced = [r["reproduce"] for r in records if "reproduce" in r]
    if reproduced:
        out["reproduce_metrics"] = difference_table([r["comparison"] for r in reproduced])
        for key in ("dose_score_gy", "dvh_score_gy", "gamma_3_3_pct"):
            out[f"reproduce_{key}_median"] = float(np.median([r[key] for r in reproduced]))
        out["goal_reproduce_met"] = (out["reproduce_dose_score_gy_median"] <= 2.5
                                     and out["reproduce_dvh_score_gy_median"] <= 1.5)
    return out


def _metric_order(key: str) -> tuple:
    name, kind = key.split("_", 1)
    return (0 if name.startswith("PTV") else 1, name, kind)


def print_table(table: dict, what: str) -> None:
    print(f"\n{'metric':<22} {'n':>3} {'median':>8} {'worst':>8}   ({what} - reference, Gy)")
    for k in sorted(table, key=_metric_order):
        v = table[k]
        print(f"{k:<22} {v['n']:>3} {v['median']:+8.2f} {v['worst']:+8.2f}")


def print_summary(s: dict) -> None:
    if s["metrics"]:
        print_table(s["metrics"], "AIRTP plan")
    if "reproduce_metrics" in s:
        print_table(s["reproduce_metrics"], "reproduction (Figure 9)")
        print(f"reproduction, median: OpenKBP dose score {s['reproduce_dose_score_gy_median']:.2f} Gy (goal <= 2.5), "
              f"DVH score {s['reproduce_dvh_score_gy_median']:.2f} Gy (goal <= 1.5), "
              f"gamma 3 %/3 mm {s['reproduce_gamma_3_3_pct_median']:.1f} %: goal "
              f"{'met' if s['goal_reproduce_met'] else 'NOT met'}")
    print(f"\nplanned {s['planned']} of {s['patients']}; failed: {s['failed'] or 'none'}")
    if s["metric_check_max_gy"]:
        print("reference metrics recomputed vs reference_dose_metrics.json, largest |difference| (Gy): "
              + ", ".join(f"{k} {v:.2f}" for k, v in s["metric_check_max_gy"].items()))
    if s["score_median_plan"] is not None:
        print(f"scorecard total, median: AIRTP {s['score_median_plan']:.2f}, "
              f"reference {s['score_median_reference']:.2f}")
    if not s["planned"]:
        return  # reproduction only: the plan goals do not apply
    met = "met" if s["goal_coverage_met"] else "NOT met"
    print(f"goal, PTV70 D95 within {COVERAGE_TOL_GY} Gy in every patient: {met}")
    missed = [k for k, v in s["goal_oar_mean_met"].items() if not v]
    print("goal, median organ mean no worse than the reference: "
          + ("met for every organ" if not missed else f"NOT met for {', '.join(missed)}"))
    within = s.get("organ_mean_median_within_reference_fields")
    if within:
        print(f"diagnostic (not the goal), median organ mean - reference without the voxels where the reference "
              f"is under {BEYOND_FIELDS_PCT:g} % of the prescription (the engines' out-of-field tails): "
              + ", ".join(f"{k} {v:+.2f}" for k, v in sorted(within.items())))


# Main ----------------------------------------------------------------------------

def _settings(args) -> PlanSettings:
    settings = PlanSettings(technique=args.technique, iterations=args.iterations, dose_grid_mm=args.dose_grid,
                            optimizer_options={"max_iterations": args.optimizer_iterations},
                            spare=not args.no_spare, spare_fraction=args.spare_fraction)
    if args.fluence_only:  # the ideal-fluence dose instead of the sequenced, deliverable one
        settings.deliverable = False
    return settings


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"case folder (default {DEFAULT_DATA})")
    who = ap.add_mutually_exclusive_group()
    who.add_argument("--patients", type=int, metavar="N", help="the first N patients by OpenKBP number")
    who.add_argument("--ids", nargs="+", metavar="ID", help="patient ids (file stems), e.g. pt_1 pt_48")
    ap.add_argument("--technique", default="imrt9", choices=["imrt9", "imrt15", "vmat"])
    ap.add_argument("--iterations", type=int, default=5, help="refinement iterations (default 5)")
    ap.add_argument("--dose-grid", type=float, default=4.0, metavar="MM", help="dose grid spacing (default 4 mm)")
    ap.add_argument("--optimizer-iterations", type=int, default=150, metavar="N")
    ap.add_argument("--fluence-only", action="store_true",
                    help="compare the optimised (ideal) fluence's dose, not the sequenced deliverable plan's")
    ap.add_argument("--no-spare", action="store_true",
                    help="no organ-sparing step after navigation (PlanSettings.spare)")
    ap.add_argument("--spare-fraction", type=float, default=PlanSettings.spare_fraction, metavar="F",
                    help="the sparing objectives' dose, x each organ's mean (PlanSettings.spare_fraction)")
    ap.add_argument("--out", type=Path, default=Path("bench-openkbp"), help="folder for the JSON and figures")
    ap.add_argument("--reproduce", action="store_true",
                    help="also reproduce each reference dose with airtp.planning.reproduce (paper Figure 9)")
    ap.add_argument("--reproduce-rounds", type=int, metavar="N", help="feedback rounds of the reproduction "
                    "(default: the reproduction's own)")
    ap.add_argument("--reproduce-only", action="store_true", help="reproduce the references without planning")
    ap.add_argument("--reproduce-dose-grid", type=float, default=3.0, metavar="MM",
                    help="dose grid of the reproduction (default 3 mm: it is read voxel by voxel; on pt_1 a 4 mm "
                    "grid gave a dose score of 2.64 Gy, 3 mm 1.98)")
    return ap


def _row(rec: dict) -> str:
    if "error" in rec:
        return f"{rec['id']:>7}  FAILED: {rec['error']}"
    if "comparison" not in rec:
        r = rec["reproduce"]
        return (f"{rec['id']:>7}  reproduction: dose score {r['dose_score_gy']:.2f} Gy, DVH score "
                f"{r['dvh_score_gy']:.2f} Gy, gamma 3 %/3 mm {r['gamma_3_3_pct']:.1f} %, {r['seconds']:.0f} s")
    d = rec["comparison"]["difference"]
    means = [v for k, v in d.items() if k.endswith("_mean")]
    nan = float("nan")
    return (f"{rec['id']:>7} {d.get('PTV70_D95', nan):+7.2f} {np.median(means) if means else nan:+9.2f} "
            f"{max(means) if means else nan:+9.2f} {rec['score_plan']:8.2f} {rec['score_reference']:8.2f} "
            f"{rec['comparison']['reference_factor']:7.4f} {rec['seconds']:6.1f}")


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    data = args.data.resolve()
    if not data.is_dir():
        raise SystemExit(f"no OpenKBP data folder at {data} (give --data)")
    args.out.mkdir(parents=True, exist_ok=True)
    settings = _settings(args)
    scorecard = get_scorecard("hn")
    entries = reference_metrics(data)
    records = []
    print(f"{'patient':>7} {'dD95':>7} {'med dMean':>9} {'max dMean':>9} {'score':>8} {'ref scr':>8} {'ref f':>7} "
          f"{'s':>6}"
          "   (PTV70 D95 and organ means: plan - reference, Gy;"
          " scores; reference scaling factor; seconds)")
    for pid in patient_ids(data, args.ids, args.patients):
        path = data / f"{pid}.npz"
        try:
            rec = plan_patient(path, settings, entries.get(pid), args.out, scorecard,
                               args.reproduce or args.reproduce_only, args.reproduce_rounds,
                               plan=not args.reproduce_only,
                               reproduce_settings=replace(settings, dose_grid_mm=args.reproduce_dose_grid))
        except AirtpError as exc:  # bad input is recorded, never skipped silently
            rec = {"id": pid, "file": str(path), "error": f"{type(exc).__name__}: {exc}"}
        records.append(rec)
        print(_row(rec), flush=True)
        for line in rec.get("shortfalls", ()):
            print(f"          short: {line}")
        for line in rec.get("comparison", {}).get("notes", ()):
            print(f"          note: {line}")
    summary = summarize(records)
    print_summary(summary)
    doc = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "summary": summary, "patients": records}
    text = json.dumps(doc, indent=2, default=float)
    atomic_write(args.out / "openkbp.json", lambda f: f.write(text.encode()))
    figures = summary["planned"] + sum("reproduce" in r for r in records)
    print(f"wrote {args.out / 'openkbp.json'} and {figures} DVH figures")
    return doc


if __name__ == "__main__":
    main(sys.argv[1:])
