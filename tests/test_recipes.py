"""Helper recipes against the formulas of paper Tables 3 and 4, computed directly."""

import numpy as np
import pytest

from airtp import Case, Grid, Prescription, StructureSet
from airtp.errors import RecipeError
from airtp.structures import margin, ring
from airtp.structures.recipes import add_helpers, head_neck, lung

SP = (3.0, 2.5, 2.5)
GRID = Grid((24, 48, 48), SP)


def ball(center_mm, radius_mm):
    z, y, x = np.indices(GRID.shape) * np.asarray(SP)[:, None, None, None]
    cz, cy, cx = center_mm
    return (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= radius_mm**2


def hn_case(levels=3):
    body = ball((36, 60, 60), 55)
    s = {"Body": body}
    ptv70 = ball((36, 55, 45), 15) & body
    ptv63 = ball((36, 55, 80), 12) & body & ~ptv70
    ptv56 = ball((36, 60, 60), 32) & body & ~ptv70 & ~ptv63
    rx = [Prescription("PTV70", 70, 35)]
    s["PTV70"] = ptv70
    if levels >= 2:
        s["PTV56"] = ptv56
        rx.append(Prescription("PTV56", 56, 35))
    if levels == 3:
        s["PTV63"] = ptv63
        rx.append(Prescription("PTV63", 63, 35))
    s["BrachialPlexus_L"] = ball((30, 55, 58), 4)  # grazes PTV70
    s["Parotid_L"] = ball((45, 60, 95), 9)
    s["Parotid_R"] = ball((45, 60, 30), 9)
    s["OralCavity"] = ball((36, 24, 60), 12)  # partly inside PTV56
    s["Larynx"] = ball((36, 55, 45), 5)  # entirely inside PTV70
    s["Lens_L"] = ball((60, 30, 70), 0.5)
    s["BrainStem"] = ball((50, 75, 60), 6)
    s["SpinalCord"] = ball((20, 85, 60), 5)
    ct = np.where(body, 40, -1000).astype(np.int16)
    return Case(ct, StructureSet(GRID, s), rx, "hn", f"hn{levels}")


def test_three_levels_follow_table_3():
    case = hn_case(3)
    res = head_neck(case)
    st = res.structures
    S = case.structures
    body = S["Body"]
    hi, mid, lo = S["PTV70"], S["PTV63"], S["PTV56"]
    np.testing.assert_array_equal(st["PTVHigh"], hi)
    np.testing.assert_array_equal(st["PTVMid"], mid)
    np.testing.assert_array_equal(st["PTVLow"], lo)
    np.testing.assert_array_equal(st["PTVTotal"], hi | mid | lo)
    np.testing.assert_array_equal(st["PTVHighOPT"], hi & ~margin(S["BrachialPlexus_L"], 2, SP) & body)
    np.testing.assert_array_equal(st["PTVMidOPT"], mid & ~margin(hi, 3, SP) & body)
    np.testing.assert_array_equal(st["PTVLowOPT"], lo & ~margin(mid, 3, SP) & ~margin(hi, 6, SP) & body)
    np.testing.assert_array_equal(st["PTVMid-PTVHigh"], mid & ~hi)
    np.testing.assert_array_equal(st["PTVLow-PTVMid"], lo & ~mid)
    np.testing.assert_array_equal(st["RingPTVHigh"], margin(hi, 30, SP) & ~margin(hi, 2, SP) & body)
    np.testing.assert_array_equal(
        st["RingPTVMid"], margin(mid, 30, SP) & ~margin(mid, 2, SP) & ~margin(hi, 6, SP) & body
    )
    np.testing.assert_array_equal(
        st["RingPTVLow"],
        margin(lo, 30, SP) & ~margin(lo, 2, SP) & ~margin(mid, 6, SP) & ~margin(hi, 9, SP) & body,
    )
    np.testing.assert_array_equal(st["BrainStem_03"], margin(S["BrainStem"], 3, SP))
    np.testing.assert_array_equal(st["SpinalCord_05"], margin(S["SpinalCord"], 5, SP))
    ptv_total = hi | mid | lo
    np.testing.assert_array_equal(st["OCavity-PTV"], S["OralCavity"] & ~ptv_total)
    np.testing.assert_array_equal(st["Parotids"], S["Parotid_L"] | S["Parotid_R"])
    # PTVHigh sits on the patient's right (small x): the right parotid is ipsilateral
    np.testing.assert_array_equal(st["ParotdIps-PTV"], S["Parotid_R"] & ~ptv_total)
    np.testing.assert_array_equal(st["ParotdCon-PTV"], S["Parotid_L"] & ~ptv_total)
    for name, mask in st.items():
        assert mask.any(), f"{name} is empty"
        assert mask.dtype == bool and mask.shape == GRID.shape


def test_report_says_why_helpers_were_skipped():
    res = head_neck(hn_case(3))
    reasons = {e.name: (e.status, e.reason) for e in res.report}
    assert reasons["Larynx-PTV"][0] == "skipped" and "inside PTVTotal" in reasons["Larynx-PTV"][1]
    assert reasons["Thyroid-PTV"] == ("skipped", "missing input: Thyroid")
    assert reasons["Eyes"][0] == "skipped" and "Eye_L" in reasons["Eyes"][1]
    assert reasons["Mandible-PTV"] == ("skipped", "missing input: Mandible")
    assert reasons["PTVHighOPT"][0] == "made" and "BrachialPlexus + 2 mm" in reasons["PTVHighOPT"][1]
    assert "Larynx-PTV" not in res.structures and "Eyes" not in res.structures
    assert {e.name for e in res.skipped}.isdisjoint(res.structures)
    text = res.format()
    assert "Larynx-PTV" in text and "skipped" in text


def test_too_small_helper_is_skipped_not_made():
    case = hn_case(1)
    case.structures.add("Thyroid", ball((36, 55, 45), 10) | ball((3, 2.5, 2.5), 0.1))  # one voxel outside PTV
    res = head_neck(case, max_inside_ptv=1.0)
    e = res.entry("Thyroid-PTV")
    assert e.status == "skipped" and "too small to score" in e.reason


def test_two_levels_use_table_3_gaps_and_names():
    case = hn_case(2)
    st = head_neck(case).structures
    S = case.structures
    hi, lo, body = S["PTV70"], S["PTV56"], S["Body"]
    assert "PTVMid" not in st and "PTVLow-PTVHigh" in st and "PTVLow-PTVMid" not in st
    np.testing.assert_array_equal(st["PTVLowOPT"], lo & ~margin(hi, 6, SP) & body)
    np.testing.assert_array_equal(st["RingPTVLow"], margin(lo, 30, SP) & ~margin(lo, 2, SP) & ~margin(hi, 9, SP) & body)


def test_one_level_and_no_brachial_plexus():
    case = hn_case(1)
    case.structures.remove("BrachialPlexus_L")
    res = head_neck(case)
    assert {"PTVHigh", "PTVHighOPT", "RingPTVHigh", "PTVTotal"} <= set(res.structures)
    assert not {"PTVMid", "PTVLow", "RingPTVLow"} & set(res.structures)
    np.testing.assert_array_equal(res.structures["PTVHighOPT"], case.structures["PTV70"] & case.structures["Body"])
    assert "no BrachialPlexus" in res.entry("PTVHighOPT").reason


def test_add_helpers_is_idempotent():
    case = hn_case(3)
    first = add_helpers(case)
    n = len(case.structures)
    second = add_helpers(case)
    assert len(case.structures) == n
    assert all(e.status in ("kept", "skipped") for e in second.report)
    assert second.entry("PTVHighOPT").status == "kept" and first.entry("PTVHighOPT").status == "made"


def test_lung_recipe():
    body = ball((36, 60, 60), 58)
    lung_l = ball((36, 60, 85), 22) & body
    lung_r = ball((36, 60, 35), 22) & body
    gtv = ball((36, 60, 85), 6)
    ptv = margin(gtv, 10, SP)
    s = StructureSet(GRID, {"Body": body, "Lung_L": lung_l, "Lung_R": lung_r, "GTV": gtv, "PTV_60": ptv})
    case = Case(np.where(body, 40, -1000).astype(np.int16), s, [Prescription("PTV_60", 60, 30)], "lung", "l1")
    st = lung(case).structures
    np.testing.assert_array_equal(st["PTV"], ptv)
    np.testing.assert_array_equal(st["Lungs"], lung_l | lung_r)
    np.testing.assert_array_equal(st["TotalLung-GTV"], (lung_l | lung_r) & ~gtv)
    np.testing.assert_array_equal(st["RingPTV"], margin(ptv, 30, SP) & ~margin(ptv, 3, SP) & body)
    np.testing.assert_array_equal(st["BodyRing"], body & ~margin(body, -20, SP))
    np.testing.assert_array_equal(st["BodyRing"], ring(body, -20, 0, SP))
    case.structures.remove("GTV")
    res = lung(case)
    assert res.entry("TotalLung-GTV").status == "skipped" and "GTV" in res.entry("TotalLung-GTV").reason


def test_recipe_errors_name_case_and_structure():
    case = hn_case(1)
    case.structures.remove("Body")
    with pytest.raises(RecipeError, match="'hn1' has no Body"):
        head_neck(case)
    case = hn_case(1)
    case.prescriptions = [Prescription("PTV70", 70, 35), Prescription("PTV99", 60, 30)]
    with pytest.raises(RecipeError, match="'PTV99'"):
        head_neck(case)
    case.prescriptions = []
    with pytest.raises(RecipeError, match="no prescription"):
        head_neck(case)
    case = hn_case(3)
    case.structures.add("PTV50", ball((10, 30, 30), 5))
    case.prescriptions.append(Prescription("PTV50", 50, 25))
    with pytest.raises(RecipeError, match="4 dose levels"):
        head_neck(case)
