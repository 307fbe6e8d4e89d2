"""Structure-name harmonisation (paper Table 1): the labelled variants, PRVs, targets, mappings, cases."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from airtp import Case, Grid, Prescription, StructureSet
from airtp.errors import AirtpError, NameMappingError
from airtp.evaluation.aliases import resolve, standard_name
from airtp.structures.harmonize import (
    AMBIGUOUS, KINDS, MATCHED, UNMATCHED, harmonize, harmonize_case, load_mapping, match_name,
)
from airtp.structures.names import HEAD_NECK_OARS, HELPERS, LUNG_OARS, PRVS, TARGETS, UNIONS

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
MIN_ACCURACY = 0.95  # of the labelled list, overall and on the held-out rows


def labelled_rows() -> list[dict]:
    lines = [line for line in (DATA / "name_variants.csv").read_text().splitlines() if not line.startswith("#")]
    return list(csv.DictReader(lines))


def outcome(m) -> str:
    """What the labelled list records: the standard name, or 'ambiguous' / 'unmatched'."""
    return m.standard if m.status == MATCHED else m.status


def test_labelled_variants_are_harmonised_with_stated_accuracy():
    rows = labelled_rows()
    assert len(rows) >= 150
    assert {r["expected"] for r in rows} >= {AMBIGUOUS, UNMATCHED} and {r["kind"] for r in rows} == set(KINDS)
    wrong, by_source = [], Counter()
    for r in rows:
        m = match_name(r["name"], r["site"] or None)
        source = "held-out" if r["source"] == "held-out" else r["source"].split()[0]
        by_source[source, "n"] += 1
        if outcome(m) == r["expected"] and m.kind == r["kind"]:
            by_source[source, "ok"] += 1
        else:
            wrong.append(f"{r['name']!r}: expected {r['expected']} ({r['kind']}), got {outcome(m)} ({m.kind}): "
                         f"{m.reason}")
    accuracy = 1 - len(wrong) / len(rows)
    print(f"\nname harmonisation: {len(rows) - len(wrong)}/{len(rows)} labelled variants right ({accuracy:.1%})")
    for source in sorted({s for s, _ in by_source}):
        print(f"  {source:<10} {by_source[source, 'ok']}/{by_source[source, 'n']}")
    for w in wrong:
        print("  wrong:", w)
    assert accuracy >= MIN_ACCURACY, "\n".join(wrong)
    held = by_source["held-out", "n"]
    assert held >= 100 and by_source["held-out", "ok"] / held >= MIN_ACCURACY


@pytest.mark.parametrize("name, prv", [
    ("Cord+3", "SpinalCord_03"), ("Cord+5mm", "SpinalCord_05"), ("Cord + 0.5cm", "SpinalCord_05"),
    ("SpinalCord_PRV05", "SpinalCord_05"), ("Cord.PRV", "SpinalCord_PRV"), ("Bstem.PRV", "BrainStem_PRV"),
    ("BrainStem.PRV", "BrainStem_PRV"), ("Brainstem expd", "BrainStem_PRV"), ("PRV_Brainstem", "BrainStem_PRV"),
    ("Brainstem_PRV03", "BrainStem_03"), ("BS_PRV3mm", "BrainStem_03"), ("Cord_05", "SpinalCord_05"),
])
def test_a_prv_is_never_the_organ_itself(name, prv):
    m = match_name(name)
    assert (m.status, m.standard, m.kind) == (MATCHED, prv, "prv"), m
    assert m.standard not in ("SpinalCord", "BrainStem")


def test_margins_are_read_in_mm_and_an_unclear_one_is_ambiguous():
    assert match_name("Cord+3").margin_mm == 3.0  # no unit, 2 or more: mm
    assert match_name("Cord+.5").margin_mm == 5.0  # no unit, below 1: cm
    assert match_name("Cord+1cm").margin_mm == 10.0
    m = match_name("Cord+1")  # 1 mm or 1 cm?
    assert m.status == AMBIGUOUS and "no unit" in m.reason
    m = match_name("ON.03")  # an optic-nerve PRV, but which side?
    assert m.status == AMBIGUOUS and m.kind == "prv" and "OpticNerve_L" in m.reason


@pytest.mark.parametrize("name, standard, dose", [
    ("PTV 70", "PTV70", 70.0), ("3PTV_5600", "PTV56", 56.0), ("PTV5000", "PTV50", 50.0),
    ("PTV_5940", "PTV59.4", 59.4), ("PTV7000cGy", "PTV70", 70.0), ("PTV_60Gy", "PTV60", 60.0),
    ("CTV_7000", "CTV70", 70.0), ("FINAL PTV69", "PTV69", 69.0),
])
def test_targets_take_their_dose_level_from_the_name(name, standard, dose):
    m = match_name(name)
    assert (m.status, m.standard, m.kind, m.dose_gy) == (MATCHED, standard, "target", dose), m


@pytest.mark.parametrize("name, kind", [
    ("ptv-temp", "optimization"), ("Opti.PTV60", "optimization"), ("COLD PTV6996", "optimization"),
    ("MIN PTV66", "optimization"), ("zPTV70", "optimization"), ("Cord< 45", "optimization"),
    ("Brain DNU", "optimization"), ("Parotid_L_opt", "optimization"), ("Ring_PTV70", "helper"),
    ("OC-lips", "helper"), ("PTV70-PTV63", "helper"), ("Lungs-GTV", "helper"), ("Couch Surface", "other"),
])
def test_optimisation_and_derived_structures_are_classified_not_renamed(name, kind):
    m = match_name(name)
    assert (m.status, m.standard, m.kind) == (UNMATCHED, None, kind), m


def test_every_result_has_a_reason_and_known_kind():
    for r in labelled_rows():
        m = match_name(r["name"], r["site"] or None)
        assert m.reason and m.kind in KINDS and m.input == r["name"]
        assert (m.standard is not None) == (m.status == MATCHED)


def test_every_standard_name_of_airtp_is_matched_as_itself():
    names = {*HEAD_NECK_OARS, *LUNG_OARS, *UNIONS, *TARGETS, *PRVS, *HELPERS}
    bad = [(n, match_name(n)) for n in names if outcome(match_name(n)) != n]
    assert not bad, bad


def test_recipe_helpers_are_in_the_standard_set():
    """The names the recipes make are ones harmonisation keeps as they are (names.HELPERS is complete)."""
    from airtp import phantoms
    from airtp.structures.recipes import head_neck, lung

    made = set()
    made |= {e.name for e in head_neck(phantoms.head_neck(n_ptv=3, seed=0, spacing_mm=(6.0, 6.0, 6.0))).report}
    made |= {e.name for e in lung(phantoms.lung("left", seed=0, spacing_mm=(6.0, 6.0, 6.0))).report}
    assert {n for n in made if outcome(match_name(n)) != n} == set()


def test_two_inputs_for_one_standard_name_are_ambiguous_unless_one_is_spelt_so():
    first, second = harmonize(["SpinalCord", "Cord"])
    assert (first.status, first.standard) == (MATCHED, "SpinalCord")
    assert second.status == AMBIGUOUS and "'SpinalCord'" in second.reason
    a, b = harmonize(["Brain1", "Brain2"])
    assert a.status == b.status == AMBIGUOUS


def test_a_user_mapping_overrides_the_rules():
    mapping = {"Parotid": "Parotid_L", "cord": None, "OralCavity.JJC": "OralCavity"}
    parotid, cord, oc, lips = harmonize(["Parotid", "Cord", "ORALCAVITY_JJC", "Lips"], mapping=mapping)
    assert (parotid.status, parotid.standard, parotid.reason) == (MATCHED, "Parotid_L", "user mapping")
    assert (cord.status, cord.standard) == (UNMATCHED, None)  # null: leave it as it is (name looked up loosely)
    assert (oc.status, oc.standard) == (MATCHED, "OralCavity")
    assert lips.reason != "user mapping"


def test_mapping_files_json_and_csv(tmp_path):
    j = tmp_path / "map.json"
    j.write_text(json.dumps({"Parotid": "Parotid_L", "Cord": None}))
    assert load_mapping(j) == {"Parotid": "Parotid_L", "Cord": None}
    c = tmp_path / "map.csv"
    c.write_text("# clinic X\nclinical,standard\nParotid,Parotid_L\n\nCord,\n")
    assert load_mapping(c) == {"Parotid": "Parotid_L", "Cord": None}
    t = tmp_path / "map.tsv"
    t.write_text("Lt Parotid gl\tParotid_L\n")
    assert load_mapping(t) == {"Lt Parotid gl": "Parotid_L"}


@pytest.mark.parametrize("filename, text, match", [
    ("m.json", "{not json", "not valid JSON"),
    ("m.json", '["Cord", "SpinalCord"]', "JSON object"),
    ("m.json", '{"Cord": 3}', "'Cord' must be a string or null"),
    ("m.csv", "Cord,SpinalCord,extra\n", "line 1: expected 2 columns"),
    ("m.csv", "Cord,SpinalCord\nCord,SpinalCord_05\n", "line 2: 'Cord' is mapped twice"),
    ("m.yaml", "Cord: SpinalCord\n", "must be .json, .csv"),
])
def test_bad_mapping_files_name_the_file(tmp_path, filename, text, match):
    path = tmp_path / filename
    path.write_text(text)
    with pytest.raises(NameMappingError, match=match) as info:
        load_mapping(path)
    assert str(path) in str(info.value)
    with pytest.raises(NameMappingError, match="no such"):
        load_mapping(tmp_path / "absent.json")


def test_an_unknown_site_is_refused():
    with pytest.raises(AirtpError, match="site"):
        harmonize(["Cord"], site="prostate")


def _case(names, prescriptions=()):
    grid = Grid((4, 5, 6), (3.0, 2.0, 2.0))
    rng = np.random.default_rng(0)
    masks = {n: rng.random(grid.shape) > 0.5 for n in names}
    return Case(np.zeros(grid.shape, np.int16), StructureSet(grid, masks), list(prescriptions), "hn", "t")


def test_harmonize_case_renames_in_place_and_never_merges_or_drops():
    names = ["External", "Brainstem", "LeftParotid", "Cord", "SpinalCord", "Cord+3", "ptv-temp", "PTV 70"]
    case = _case(names, [Prescription("ptv 70", 70.0, 35)])
    before = {n: case.structures[n].copy() for n in names}
    ss = case.structures
    matches = harmonize_case(case)
    assert case.structures is ss  # the same StructureSet, changed in place
    assert list(case.structures) == ["Body", "BrainStem", "Parotid_L", "Cord", "SpinalCord", "SpinalCord_03",
                                     "ptv-temp", "PTV70"]
    for m, new in zip(matches, case.structures):
        assert np.array_equal(case.structures[new], before[m.input])  # each mask kept its own contents
    assert [m.status for m in matches if m.input == "Cord"] == [AMBIGUOUS]  # SpinalCord already there
    assert case.prescriptions == [Prescription("PTV70", 70.0, 35)]
    assert case.meta["original_structure_names"]["PTV70"] == "PTV 70"
    case.check_prescriptions()


def test_harmonize_case_keeps_a_name_another_structure_already_has():
    case = _case(["Lungs", "Lung"])  # 'Lung' means both lungs, and Lungs exists
    lungs, lung = harmonize_case(case)
    assert lungs.status == MATCHED and lung.status == AMBIGUOUS
    assert list(case.structures) == ["Lungs", "Lung"]


def test_openkbp_names_reach_the_standard_names():
    case = Case.load(DATA / "openkbp" / "pt_48.npz")
    matches = harmonize_case(case)
    assert all(m.status == MATCHED for m in matches), [m for m in matches if m.status != MATCHED]
    assert {"BrainStem", "SpinalCord", "Parotid_L", "Parotid_R", "Mandible", "PTV70", "PTV63", "PTV56"} <= set(
        case.structures)
    assert {p.structure for p in case.prescriptions} == {"PTV70", "PTV63", "PTV56"}


def test_scorecard_resolution_reads_names_through_the_harmoniser():
    grid = Grid((2, 2, 2), (1.0, 1.0, 1.0))
    full = np.ones(grid.shape, bool)
    ss = StructureSet(grid, {"Cord": full, "Lt BP": full, "Bstem.PRV": full, "External": full})
    assert resolve("SpinalCord", ss) == "Cord"
    assert resolve("BrachialPlexus_L", ss) == "Lt BP"
    assert resolve("Body", ss) == "External"
    assert resolve("BrainStem_03", ss) == "Bstem.PRV"  # the scorecard's stand-in for a PRV of unstated margin
    assert resolve("SpinalCord", StructureSet(grid, {"Cord+3": full})) is None  # a PRV never stands for the cord
    assert standard_name("PTV70") == "PTVHigh"  # the scorecard's nominal levels still come first


def test_the_tg263_table_is_vendored_and_nothing_reads_the_shared_folder():
    from importlib import resources

    folder = resources.files("airtp.structures").joinpath("data")
    rows = list(csv.DictReader(folder.joinpath("tg263_names.csv").read_text().splitlines()))
    assert len(rows) == 675 and set(rows[0]) == {"primary", "reverse", "type", "group"}
    assert "licence" in folder.joinpath("TG263_SOURCE.md").read_text().lower()
    mine = [ROOT / "src" / "airtp" / "structures", ROOT / "src" / "airtp" / "contouring",
            ROOT / "plugins" / "airtp-totalsegmentator"]
    for path in (p for folder in mine for p in folder.rglob("*.py")):
        assert "shared/data" not in path.read_text(), path


def test_cli_names_prints_json_and_harmonize_writes_the_case(tmp_path):
    r = subprocess.run([sys.executable, "-m", "airtp", "names", "Cord+3", "PTV 70", "Parotid", "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = {m["input"]: m for m in json.loads(r.stdout)}
    assert out["Cord+3"]["standard"] == "SpinalCord_03" and out["PTV 70"]["dose_gy"] == 70.0
    assert out["Parotid"]["status"] == AMBIGUOUS
    src = _case(["BODY", "Lt Parotid"]).save(tmp_path / "c.npz")
    r = subprocess.run([sys.executable, "-m", "airtp", "harmonize", str(src), "--out", str(tmp_path / "h.npz")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert list(Case.load(tmp_path / "h.npz").structures) == ["Body", "Parotid_L"]
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    r = subprocess.run([sys.executable, "-m", "airtp", "names", "Cord", "--mapping", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "bad.json" in r.stderr and "Traceback" not in r.stderr


def test_find_standard_finds_a_structure_by_any_spelling_but_never_guesses():
    from airtp.structures.harmonize import find_standard

    names = ["Cord", "Lt BP", "Cord+3", "BODY"]
    assert find_standard(names, "SpinalCord") == "Cord"
    assert find_standard(names, "SpinalCord_03") == "Cord+3"
    assert find_standard(names, "Body") == "BODY"
    assert find_standard(names, "Heart") is None
    assert find_standard(["SpinalCord", "Cord"], "SpinalCord") == "SpinalCord"
    assert find_standard(["Brain1", "Brain2"], "Brain") is None
