"""Real patients: two vendored OpenKBP head-and-neck cases through case loading, naming, recipe,
scorecard, planning, comparison with the reference plan, the real demo and the benchmark."""

import hashlib
import importlib.util
import json
import re
import subprocess
import sys
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from airtp import Case, Prescription
from airtp.case import CaseFileWarning
from airtp.errors import CaseFileError, PrescriptionError
from airtp.evaluation.compare import compare_doses
from airtp.evaluation.dvh import compute_dvhs
from airtp.evaluation.scorecard import score_plan
from airtp.planning import PlanSettings, plan_case
from airtp.planning.intake import prepare_case
from airtp.structures.recipes import add_helpers

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "openkbp"
OPENKBP_ORGANS = {"Brainstem": "BrainStem", "SpinalCord": "SpinalCord", "LeftParotid": "Parotid_L",
                  "RightParotid": "Parotid_R", "Larynx": "Larynx", "Mandible": "Mandible"}
# coarse planning: real anatomy end to end in seconds (8 mm dose grid, one short refinement)
COARSE = dict(dose_grid_mm=8.0, iterations=1, optimizer_options={"max_iterations": 40})


def load(pid="pt_48") -> Case:
    return Case.load(DATA / f"{pid}.npz")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rewrite(src: Path, dst: Path, **changes) -> Path:
    """A copy of a case file with some arrays replaced (None removes one)."""
    with np.load(src) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for k, v in changes.items():
        k = k.replace("__", "/")
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    np.savez_compressed(dst, **arrays)
    return dst


# The vendored data ------------------------------------------------------------

def test_vendored_patients_are_the_readme_files_with_their_attribution():
    readme = (DATA / "README.md").read_text()
    for pid in ("pt_48", "pt_5"):
        assert sha256(DATA / f"{pid}.npz") in readme, f"{pid}.npz differs from the file its README describes"
    for text in (readme, (ROOT / "src" / "airtp" / "data" / "openkbp" / "README.md").read_text()):
        assert "MIT licence, Copyright (c) 2021" in text and "Aaron Babier" in text
        assert "Cancer Imaging Archive" in text and "Creative Commons Attribution" in text
    for folder in (DATA, ROOT / "src" / "airtp" / "data" / "openkbp"):
        assert "Permission is hereby granted" in (folder / "LICENSE-OpenKBP.txt").read_text()
    metrics = json.loads((DATA / "reference_dose_metrics.json").read_text())
    assert sorted(m["case"] for m in metrics) == ["pt_48", "pt_5"]


def test_the_shipped_patient_is_package_data_and_not_ignored():
    shipped = resources.files("airtp.data").joinpath("openkbp", "pt_48.npz")
    assert shipped.is_file()
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == sha256(DATA / "pt_48.npz")
    assert len(shipped.read_bytes()) < 1_000_000  # the wheel stays small
    # the wheel takes every file of src/airtp that git does not ignore
    r = subprocess.run(["git", "check-ignore", "-q", "src/airtp/data/openkbp/pt_48.npz"], cwd=ROOT,
                       capture_output=True)
    if r.returncode == 128:
        pytest.skip("not a git checkout")
    assert r.returncode == 1, "src/airtp/data/openkbp/pt_48.npz is git-ignored and would miss the wheel"


# Case files with a reference dose ------------------------------------------------

def test_reference_dose_is_kept_and_saved_back(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", CaseFileWarning)  # a known extra array raises no warning
        case = load()
    ref = case.reference_dose
    assert ref is case.arrays["reference_dose_gy"] and ref.shape == case.grid.shape and ref.dtype == np.float32
    assert 60.0 < float(ref.max()) < 90.0 and case.unknown_arrays == []
    back = Case.load(case.save(tmp_path / "again.npz"))
    np.testing.assert_array_equal(back.reference_dose, ref)


def test_arrays_it_does_not_understand_are_named_and_kept(tmp_path):
    path = rewrite(DATA / "pt_48.npz", tmp_path / "odd.npz", refrence_dose_gy=np.zeros(3, np.float32))
    with pytest.warns(CaseFileWarning, match=r"odd\.npz.*'?refrence_dose_gy'?.*not understood"):
        case = Case.load(path)
    assert case.unknown_arrays == ["refrence_dose_gy"]
    with pytest.warns(CaseFileWarning):
        back = Case.load(case.save(tmp_path / "odd2.npz"))
    np.testing.assert_array_equal(back.arrays["refrence_dose_gy"], np.zeros(3))


@pytest.mark.parametrize("bad, message", [
    (np.zeros((128, 128, 64), np.float32), r"shape \(128, 128, 64\).*CT has shape \(128, 128, 128\)"),
    (np.full((128, 128, 128), np.nan, np.float32), "finite"),
    (np.full((128, 128, 128), -1.0, np.float32), "non-negative"),
])
def test_a_bad_reference_dose_is_refused_naming_the_file(tmp_path, bad, message):
    path = rewrite(DATA / "pt_48.npz", tmp_path / "badref.npz", reference_dose_gy=bad)
    with pytest.raises(CaseFileError, match=r"badref\.npz.*reference_dose_gy.*" + message):
        Case.load(path)


# Names, recipe, scorecard -------------------------------------------------------

def test_openkbp_names_reach_the_recipe_and_scorecard_through_harmonisation():
    case = load("pt_48")
    warnings_ = prepare_case(case)
    assert not any("no standard name" in w for w in warnings_), warnings_
    assert case.meta["original_structure_names"]["Parotid_L"] == "LeftParotid"  # the given name is kept
    for given, standard in OPENKBP_ORGANS.items():
        if given in ("Larynx",):
            continue
        assert standard in case.structures, f"{given} did not become {standard}: {list(case.structures)}"
    recipe = add_helpers(case)
    made = {e.name for e in recipe.report if e.status == "made"}
    assert {"PTVHigh", "PTVMid", "PTVLow", "PTVHighOPT", "PTVMidOPT", "PTVLowOPT", "RingPTVHigh", "RingPTVMid",
            "RingPTVLow", "BrainStem_03", "SpinalCord_05", "Parotids", "Parotids-PTV", "ParotdIps-PTV",
            "ParotdCon-PTV", "Mandible-PTV"} <= made
    assert "missing input" in recipe.entry("Larynx-PTV").reason  # pt_48 has no larynx
    report = score_plan(case, case.reference_dose, "hn")
    by_item = {(r.item.structure, r.item.metric): r for r in report.results}
    assert by_item[("Parotids-PTV", "MeanDose")].scored
    assert by_item[("BrainStem_03", "DoseAtVolume")].scored
    assert by_item[("Mandible-PTV", "VolumeAtDose")].scored
    for absent in ("Brain", "Chiasm", "Larynx-PTV", "Esophagus"):
        r = next(r for r in report.results if r.item.structure == absent)
        assert not r.scored and "not in the case" in r.reason
    assert "Not scored:" in report.table() and report.to_dict()["n_not_scored"] > 0


def test_the_other_patient_builds_its_larynx_helper_instead():
    case = load("pt_5")
    prepare_case(case)
    recipe = add_helpers(case)
    assert recipe.entry("Larynx-PTV").status == "made"
    assert "missing input" in recipe.entry("Mandible-PTV").reason
    report = score_plan(case, case.reference_dose, "hn")
    assert next(r for r in report.results if r.item.structure == "Larynx-PTV").scored
    assert not next(r for r in report.results if r.item.structure == "Mandible-PTV").scored


def test_structures_outside_the_dose_region_are_reported():
    case = load("pt_5")  # OpenKBP's Body (possible-dose mask) leaves the larynx out entirely
    warnings_ = prepare_case(case)
    outside = next(w for w in warnings_ if "outside Body" in w)
    assert "Larynx 100%" in outside and "no dose is computed" in outside
    assert not any("outside Body" in w for w in prepare_case(load("pt_48")) if "SpinalCord" not in w)


# Planning a real patient --------------------------------------------------------

def test_a_real_patient_is_planned_end_to_end_and_compared_with_its_reference():
    case = load("pt_48")
    given = {n: case.structures[n] for n in case.structures if n != "Body"}
    body = case.structures["Body"].copy()
    result = plan_case(case, PlanSettings(technique="imrt9", **COARSE))
    assert len(result.setup.beams) == 9 and len(result.iterations) >= 2
    assert not any("organ at risk" in w or "no standard name" in w for w in result.warnings), result.warnings
    scored = {r.item.structure for r in result.plan_report.results if r.scored}
    assert {"Parotids-PTV", "SpinalCord_05", "BrainStem_03", "Mandible-PTV", "PTVHighOPT"} <= scored
    cmp = compare_doses(case, result.plan_dose, masks=given, targets=["PTV70", "PTV63", "PTV56"], within=body)
    assert cmp.reference_factor == pytest.approx(70.0 / 68.54, abs=0.01)  # OpenKBP's PTV70 D95 68.54 Gy
    assert cmp.plan["PTV70_D95"] == pytest.approx(70.0, abs=0.3) == cmp.reference["PTV70_D95"]
    # even a coarse plan of real anatomy covers its targets and keeps the cord below tolerance
    assert cmp.plan["PTV56_D95"] > 50.0 and cmp.plan["PTV63_D95"] > 57.0
    assert cmp.plan["SpinalCord_D0.1cc"] < 50.0
    assert set(cmp.difference) >= {"LeftParotid_mean", "RightParotid_mean", "Brainstem_mean", "Mandible_D0.1cc"}
    assert np.all(cmp.plan_dose[~body] == 0)  # compared only where the reference was computed
    # organ sparing ran; a blend it kept lowers the summed mean dose of the patient's own organs (recomputed
    # here from its masks) at no cost in scorecard points or target coverage
    stages = [it.stage for it in result.iterations]
    assert "sparing" in stages, stages
    kept = result.iterations[-1]
    if kept.stage == "sparing" and kept.blend is not None:
        _check_free(result.iterations[kept.blend["of"][0]], kept, [given[n] for n in OPENKBP_ORGANS if n in given])


def _check_free(start, kept, organs):
    """`kept` scores no less than `start`, covers every target as well (or to its prescription), spares organs."""
    assert kept.score >= start.score and kept.meets_quality_filter >= start.meets_quality_filter
    assert sum(float(kept.dose[m].mean()) for m in organs) < sum(float(start.dose[m].mean()) for m in organs)
    for name, m in start.targets.items():
        assert kept.targets[name]["D95_gy"] >= min(m["D95_gy"], m["prescription_gy"]) - 0.05, name
    if start.meets_quality_filter:  # kept with the margin for sequencing, or no nearer the limits than before
        from airtp.planning.pipeline import SEQUENCING_MARGIN

        s, k = next(iter(start.targets.values())), next(iter(kept.targets.values()))
        assert (k["d5_over_d95"] < 1.07 - SEQUENCING_MARGIN[0] and k["dmax_over_d95"] < 1.12 - SEQUENCING_MARGIN[1]) \
            or (k["d5_over_d95"] <= s["d5_over_d95"] and k["dmax_over_d95"] <= s["dmax_over_d95"])


def test_organ_sparing_of_a_real_patient_keeps_a_blend_at_no_cost():
    """The sparing step end to end on real anatomy: optimised, blended, rebuilt from its weights, checked."""
    from airtp.dose.engine import dose_influence
    from airtp.evaluation.scorecard import get_scorecard
    from airtp.optimize import PlanningProblem, get_optimizer
    from airtp.planning.pipeline import organs_at_risk, spare_organs

    case = load("pt_48")
    given = {n: case.structures[n] for n in OPENKBP_ORGANS if n in case.structures}
    result = plan_case(case, PlanSettings(technique="imrt9", spare=False, deliverable=False, **COARSE))
    assert "sparing" not in [it.stage for it in result.iterations]
    influence = dose_influence(case, result.setup.beams, dose_grid_mm=COARSE["dose_grid_mm"])
    problem = PlanningProblem(influence, case.prescriptions, case.patient_id, result.settings.refine_transition_mm)
    organs = organs_at_risk(case, result.recipe)
    assert set(given) == {"Brainstem", "SpinalCord", "LeftParotid", "RightParotid", "Mandible"}
    assert sorted(organs) == sorted(OPENKBP_ORGANS[n] for n in given)  # their standard names
    # a mild push (0.9 of each mean) on this coarse plan: measured to keep a blend (0.3 keeps none here)
    iterations, best = list(result.iterations), result.best
    plans, kept = spare_organs(case, problem, get_optimizer("builtin", **COARSE["optimizer_options"]),
                               iterations, best, get_scorecard("hn"), organs, 0.9)
    assert len(plans) == 2 and all(p.stage == "sparing" and p.transition_mm == problem.transition_mm for p in plans)
    assert kept.stage == "sparing" and kept.blend["of"][0] == best
    k = kept.blend["of"][1] - len(iterations)  # the sparing plan blended in, in the order returned
    sparing, t = plans[k], kept.blend["fraction"]
    assert k in (0, 1) and 0 < t < 1
    _check_free(iterations[best], kept, list(given.values()))
    # the kept plan is the blend of the weights, its dose the renormalised mixture of the two doses
    mix = (1 - t) * iterations[best].dose.astype(np.float64) + t * sparing.dose
    d95 = compute_dvhs(mix, {"PTV70": case.structures["PTV70"]}, grid=case.grid)["PTV70"].dose_at_percent(95)
    assert np.abs(kept.dose - mix * (70.0 / d95)).max() < 1e-3


def test_a_prescription_naming_a_missing_ptv_is_refused(tmp_path):
    case = Case.load(DATA / "pt_48.npz", prescriptions=[Prescription("PTV70", 70, 35), Prescription("PTV66", 66, 35)])
    with pytest.raises(PrescriptionError, match="'PTV66'.*not in the case"):
        plan_case(case, PlanSettings(**COARSE))


def test_a_patient_without_organs_is_planned_for_its_targets_with_a_warning():
    case = load("pt_48")
    for name in list(case.structures):
        if name in OPENKBP_ORGANS:
            case.structures.remove(name)
    result = plan_case(case, PlanSettings(**{**COARSE, "iterations": 0}))
    assert any("has no organ at risk" in w and "targets alone" in w for w in result.warnings), result.warnings
    report = result.plan_report
    organ_items = [r for r in report.results if not r.item.structure.upper().startswith(("PTV", "RING"))]
    assert organ_items and not any(r.scored for r in organ_items)
    assert report.total > 0  # the target items are scored


def test_compare_doses_normalises_the_reference_and_reads_both_alike():
    case = load("pt_48")
    ref = case.reference_dose
    cmp = compare_doses(case, ref * np.float32(70.0 / 68.54), reference=ref * np.float32(0.5),
                        masks={n: case.structures[n] for n in ("PTV70", "LeftParotid")})
    assert cmp.reference_factor == pytest.approx(2 * 70.0 / 68.54, rel=2e-3)
    for k, d in cmp.difference.items():
        assert abs(d) < 0.05, k  # one dose, two scalings: the same after normalisation
    assert list(cmp.plan)[:3] == ["PTV70_D95", "PTV70_D99", "PTV70_D1"]
    assert "LeftParotid_mean" in cmp.table()


# The demo and the benchmark ------------------------------------------------------

def test_demo_real_plans_the_shipped_patient(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "airtp", "demo", "--real", "--out", str(out), "--iterations", "0",
                        "--dose-grid", "8", "--optimizer-iterations", "30", "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "openkbp-pt_48" in r.stdout and "Aaron Babier" in r.stdout
    assert "LeftParotid -> Parotid_L" in r.stdout
    assert "Parotids-PTV" in r.stdout and "Against the reference plan" in r.stdout
    assert re.search(r"warning: .*SpinalCord \d+%.* outside Body", r.stderr)  # plan warnings are shown
    for name in ("plan/summary.json", "plan/dose.npy", "case.npz", "dvh_vs_reference.png", "comparison.json"):
        assert (out / name).is_file(), name
    cmp = json.loads((out / "comparison.json").read_text())
    assert abs(cmp["difference"]["PTV70_D95"]) < 0.5
    assert "Parotid_L_mean" in cmp["difference"]  # under the names the demo prints
    assert cmp["reference_score_total"] > 0


def load_benchmark():
    spec = importlib.util.spec_from_file_location("bench_openkbp", ROOT / "benchmarks" / "bench_openkbp.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_compares_each_patient_and_records_bad_input(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("pt_48.npz", "reference_dose_metrics.json"):
        (data / name).write_bytes((DATA / name).read_bytes())
    rewrite(DATA / "pt_48.npz", data / "pt_999.npz", reference_dose_gy=np.zeros((128, 128, 3), np.float32))
    bench = load_benchmark()
    doc = bench.main(["--data", str(data), "--ids", "pt_48", "pt_999", "--iterations", "0", "--dose-grid", "8",
                      "--optimizer-iterations", "30", "--out", str(tmp_path / "out")])
    good, bad = doc["patients"]
    assert re.search(r"pt_999\.npz.*reference_dose_gy has shape", bad["error"])  # recorded, not skipped
    assert doc["summary"]["failed"] == [{"id": "pt_999", "error": bad["error"]}]
    check = good["metric_check"]  # AIRTP's metrics of the reference agree with the shipped ones
    assert check["D95"] < 0.3 and check["mean"] < 0.05
    assert abs(good["comparison"]["difference"]["PTV70_D95"]) <= 0.5
    assert good["score_reference"] > 0 and good["score_plan"] > 0
    assert Path(good["figure"]).is_file() and (tmp_path / "out" / "openkbp.json").is_file()
    for organ in ("Brainstem", "SpinalCord", "LeftParotid", "RightParotid", "Mandible"):
        assert f"{organ}_mean" in doc["summary"]["metrics"]
    means = {k[:-5] for k in good["comparison"]["difference"] if k.endswith("_mean")}
    assert set(good["beyond_reference_fields"]) == means  # the diagnostic covers exactly the compared organs
    assert set(doc["summary"]["organ_mean_median_within_reference_fields"]) == means
    printed = capsys.readouterr().out
    assert "median" in printed and "FAILED" in printed and "goal, PTV70 D95" in printed


def test_benchmark_splits_off_the_difference_beyond_the_reference_fields():
    """The part of an organ's mean difference from voxels where the reference is under 1 % of the prescription."""
    from types import SimpleNamespace

    bench = load_benchmark()
    reference = np.zeros((4, 4, 4), np.float32)
    reference[:2] = 30.0  # slices 2 and 3: beyond the reference's fields (0 Gy)
    reference[2] = 0.69  # just under 1 % of 70 Gy
    plan = reference + np.float32(2.0)
    plan[0] += np.float32(5.0)
    organ = np.zeros_like(reference, bool)
    organ[:, :2] = True  # 8 voxels in each slice: half of it beyond the fields
    ptv = np.zeros_like(organ)
    ptv[0, 3, 3] = True
    case = SimpleNamespace(prescriptions=[SimpleNamespace(dose_gy=70.0), SimpleNamespace(dose_gy=56.0)])
    cmp = SimpleNamespace(plan_dose=plan, reference_dose=reference)
    parts = bench.beyond_reference_fields(case, cmp, {"Brainstem": organ, "PTV70": ptv}, ["PTV70"])
    assert set(parts) == {"Brainstem"}  # targets are not organs
    assert parts["Brainstem"] == pytest.approx(2.0 * 16 / 32)  # +2 Gy on the 16 of 32 voxels beyond
    whole = plan[organ].mean() - reference[organ].mean()
    assert whole - parts["Brainstem"] == pytest.approx((7.0 * 8 + 2.0 * 8) / 32)  # what the fields give


def test_benchmark_reproduce_hook_compares_the_reproduction_like_the_plan(tmp_path, monkeypatch):
    reproduce = pytest.importorskip("airtp.planning.reproduce")
    calls = []

    class Stub:  # the reproduction's own cost (rounds of plans and gamma) belongs to its tests
        def __init__(self, case, reference, settings, source=""):
            calls.append((case, settings))
            self.dose = reference * np.float32(70.0 / 68.54)  # normalised as a plan is (PTV70 D95 68.54 Gy)
            self.best, self.rounds = 0, [reproduce.Round(None, None, 100.0, 0.0, 0.0, 0.0)]

    monkeypatch.setattr(reproduce, "reproduce", Stub)
    bench = load_benchmark()
    doc = bench.main(["--data", str(DATA), "--ids", "pt_48", "--iterations", "0", "--dose-grid", "8",
                      "--optimizer-iterations", "20", "--out", str(tmp_path), "--reproduce", "--reproduce-rounds", "1",
                      "--reproduce-dose-grid", "6"])
    (case, settings), = calls
    assert "Parotid_L" in case.structures and "LeftParotid" not in case.structures  # harmonised first
    assert (settings.technique, settings.dose_grid_mm, settings.rounds) == ("imrt9", 6.0, 1)
    rec = doc["patients"][0]
    rep = rec["reproduce"]["comparison"]
    assert set(rep["difference"]) == set(rec["comparison"]["difference"])  # same structures, same metrics
    for k, d in rep["difference"].items():
        assert abs(d) < 0.1, k  # the reference itself, once normalised, reproduces the reference
    assert Path(rec["reproduce"]["figure"]).is_file() and "reproduce_metrics" in doc["summary"]
    assert rec["reproduce"]["kept_round"] == 0 and rec["reproduce"]["rounds"][0]["gamma_3_3_pct"] == 100.0

    # reproduction alone: no plan, the same reproduction record and summary
    only = bench.main(["--data", str(DATA), "--ids", "pt_48", "--out", str(tmp_path / "only"), "--reproduce-only",
                       "--reproduce-dose-grid", "8"])
    rec = only["patients"][0]
    assert "comparison" not in rec and set(rec["reproduce"]["comparison"]["difference"]) == set(rep["difference"])
    assert only["summary"]["planned"] == 0 and only["summary"]["reproduce_dose_score_gy_median"] < 0.1
