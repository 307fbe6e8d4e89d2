"""GDP-HMM training-data export: challenge npz layout, plates, meta files, fluences and leaves, bad input."""

import csv
import json
import shutil

import numpy as np
import pytest

from airtp import phantoms
from airtp.cli import main
from airtp.errors import AirtpError
from airtp.evaluation.dvh import DoseError
from airtp.grid import Grid
from airtp.io.gdphmm import DOSE_SCALE_GY, META_COLUMNS, export_dataset
from airtp.io.plates import angle_plate, beam_plate
from airtp.planning import PlanSettings, plan_case
from airtp.planning.outputs import write_plan
from airtp.sequencing.plan import ControlPoint, DeliveryBeam, DeliveryPlan

COARSE = (6.0, 5.0, 5.0)


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory):
    case = phantoms.head_neck(n_ptv=2, seed=4, spacing_mm=COARSE)
    result = plan_case(case, PlanSettings(iterations=0, dose_grid_mm=8.0, optimizer_options={"max_iterations": 20}))
    return write_plan(result, tmp_path_factory.mktemp("plans") / "plan")


@pytest.fixture(scope="module")
def exported(plan_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("dataset")
    return export_dataset([plan_dir], out, cohort=7, phase="valid", dev_split="test")


def load_challenge_way(path):
    return np.load(path, allow_pickle=True)["arr_0"].item()


def test_npz_has_the_challenge_keys_and_layout(plan_dir, exported):
    from airtp.case import Case

    case = Case.load(plan_dir / "case.npz")
    plan = json.loads((plan_dir / "plan.json").read_text())
    pid = case.patient_id
    d = load_challenge_way(exported.out / f"{pid}+imrt9.npz")
    shape = case.grid.shape
    for key in ("img", "dose", "beam_plate", "Body", "PTV70", "PTVHighOPT", "RingPTVHigh"):
        assert d[key].shape == shape, key
    assert d["img"].dtype == np.int16 and np.array_equal(d["img"], case.ct_hu)
    for name in case.structures:
        assert d[name].dtype == np.uint8 and np.array_equal(d[name].astype(bool), case.structures[name]), name
    assert d["all_mask"] == list(case.structures)
    gy = d["dose"] * d["dose_scale"]
    assert d["dose_scale"] == DOSE_SCALE_GY and d["dose"].dtype == np.uint32
    np.testing.assert_allclose(gy, np.load(plan_dir / "dose.npy"), atol=DOSE_SCALE_GY / 2 + 1e-9)
    assert d["dose"].max() > 200  # counts, as the challenge's files (DICOM RT Dose scaling)
    assert d["isVMAT"] is False
    np.testing.assert_allclose(d["angle_list"], [0, 40, 80, 120, 160, 200, 240, 280, 320])
    np.testing.assert_allclose(d["isocenter"], case.grid.mm_to_index(plan["beams"]["isocenter_mm"]), atol=1e-4)
    assert d["angle_plate"].shape == shape[1:]
    z, y, x = case.grid.origin_mm
    assert tuple(d["origin"]) == (x, y, z) and tuple(d["spacing"]) == (COARSE[2], COARSE[1], COARSE[0])
    assert tuple(d["size"]) == shape and len(d["direction"]) == 9
    # the challenge's normalisation runs on it: D97 of the high OPT target to its prescription
    ptv_dict = json.loads((exported.out / "PTV_DICT.json").read_text())
    high = ptv_dict[pid]["PTV_High"]
    d97 = np.percentile(gy[d[high["OPTName"]].astype(bool)], 3)
    assert 0.8 * high["PDose"] < d97 < 1.2 * high["PDose"]


def test_meta_files_follow_the_challenge(plan_dir, exported):
    summary = json.loads((plan_dir / "summary.json").read_text())
    with open(exported.out / "meta_data.csv", newline="") as f:
        rows = list(csv.DictReader(f))
        f.seek(0)
        assert tuple(next(csv.reader(f))) == META_COLUMNS
    (row,) = rows
    pid = summary["case"]
    assert row["PID"] == pid and row["PlanID"] == "imrt9" and row["isVMAT"] == "False"
    assert (row["cohort"], row["site"], row["phase"], row["dev_split"]) == ("7", "1", "valid", "test")
    assert row["npz_path"] == f"{pid}+imrt9.npz" and (exported.out / row["npz_path"]).is_file()
    t = summary["targets"]["PTV70"]
    assert float(row["D05_div_D95"]) == pytest.approx(t["d5_over_d95"], abs=1.5e-3)
    assert float(row["max_div_D95"]) == pytest.approx(t["dmax_over_d95"], abs=1.5e-3)
    assert row["num_PTV"] == "2" and float(row["HighDose"]) == 70.0
    ptv = json.loads((exported.out / "PTV_DICT.json").read_text())[pid]
    assert ptv["PTV_High"] == {"OPTName": "PTVHighOPT", "PDose": 70.0, "RingName": "RingPTVHigh"}
    assert ptv["PTV_Low"] == {"OPTName": "PTVLowOPT", "PDose": 56.0, "RingName": "RingPTVLow",
                              "StructName": "PTVLow", "MinusName": "PTVLow-PTVHigh"}
    objs = json.loads((exported.out / "Pat_Obj_DICT.json").read_text())[pid]
    assert "PTVHighOPT" in objs and "SpinalCord_05" in objs


def test_fluences_and_leaf_sequences_of_the_plan_folder(plan_dir, exported):
    beams = np.load(exported.out / exported.plans[0]["beams"])
    with np.load(plan_dir / "fluences.npz") as fl:
        assert sorted(k for k in beams.files if k.startswith("fluence/")) == sorted(f"fluence/{k}" for k in fl.files)
        for k in fl.files:
            np.testing.assert_array_equal(beams[f"fluence/{k}"], fl[k])
    notes = json.loads((exported.out / "export.json").read_text())["plans"][0]["notes"]
    if (plan_dir / "delivery.json").exists():  # a sequenced plan: its control points, beam by beam
        delivery = DeliveryPlan.load(plan_dir / "delivery.json")
        for b in delivery.beams:
            np.testing.assert_allclose(beams[f"leaves/{b.name}/mlc_x2_mm"], [cp.mlc_x2_mm for cp in b.control_points])
            np.testing.assert_allclose(beams[f"leaves/{b.name}/cumulative_mu"],
                                       [cp.cumulative_mu for cp in b.control_points], rtol=1e-6)
        assert not notes
    else:
        assert any("delivery.json" in n for n in notes)


def test_a_plan_without_delivery_json_is_exported_with_a_note(plan_dir, tmp_path):
    folder = tmp_path / "fluence_only"
    shutil.copytree(plan_dir, folder)
    (folder / "delivery.json").unlink(missing_ok=True)
    res = export_dataset([folder], tmp_path / "out")
    assert any("no delivery.json" in n for n in res.plans[0]["notes"])
    beams = np.load(tmp_path / "out" / res.plans[0]["beams"])
    assert beams.files and all(k.startswith("fluence/") for k in beams.files)


def _delivery(kind: str, angles) -> DeliveryPlan:
    bounds = [-10.0, -5.0, 0.0, 5.0, 10.0]
    cps = [ControlPoint(float(g), 10.0 * i, (-20.0, 20.0), (-10.0, 10.0), [-5.0 - i] * 4, [5.0 + i] * 4)
           for i, g in enumerate(angles)]
    beam = DeliveryBeam("A1", kind, 30.0, 0.0, (0.0, 0.0, 0.0), bounds, cps, "CW" if kind == "vmat" else "NONE")
    return DeliveryPlan("TestLinac", "test", [beam], limits_checked=["mlc"])


def test_leaf_sequences_and_vmat_angles_come_from_delivery_json(plan_dir, tmp_path):
    folder = tmp_path / "vmat_plan"
    shutil.copytree(plan_dir, folder)
    plan = json.loads((folder / "plan.json").read_text())
    plan["beams"]["technique"] = "vmat"
    (folder / "plan.json").write_text(json.dumps(plan))
    _delivery("vmat", [181.0, 270.0, 0.0, 90.0, 179.0]).save(folder / "delivery.json")
    res = export_dataset([folder], tmp_path / "out")
    d = load_challenge_way(tmp_path / "out" / res.plans[0]["npz"])
    assert d["isVMAT"] is True
    np.testing.assert_allclose(d["angle_list"], [0.0, 90.0, 179.0, 181.0, 270.0])
    beams = np.load(tmp_path / "out" / res.plans[0]["beams"])
    assert beams["leaves/A1/mlc_x1_mm"].shape == (5, 4)
    np.testing.assert_allclose(beams["leaves/A1/cumulative_mu"], [0, 10, 20, 30, 40])
    np.testing.assert_allclose(beams["leaves/A1/gantry_deg"], [181.0, 270.0, 0.0, 90.0, 179.0])
    assert not res.plans[0]["notes"]


def test_angle_plate_draws_one_line_per_gantry_direction():
    grid = Grid((3, 41, 41), (2.0, 2.0, 2.0), (-2.0, -40.0, -40.0))  # isocentre (0, 0, 0) at pixel (20, 20)
    plate = angle_plate(grid, (0.0, 0.0, 0.0), [0.0])
    # gantry 0 irradiates from anterior (-y in LPS): a line from the isocentre to row 0
    assert np.array_equal(np.argwhere(plate), np.array([[r, 20] for r in range(21)]))
    plate = angle_plate(grid, (0.0, 0.0, 0.0), [90.0])
    # gantry 90 from the patient's left (+x): to the last column
    assert np.array_equal(np.argwhere(plate), np.array([[20, c] for c in range(20, 41)]))
    both = angle_plate(grid, (0.0, 0.0, 0.0), [0.0, 90.0, 450.0])
    assert both.sum() == 41 and both.max() == 1.0  # union; 450 is 90


def test_beam_plate_is_the_divergent_extrusion_weighted_by_inverse_square():
    grid = Grid((21, 301, 21), (2.0, 2.0, 2.0), (-20.0, -300.0, -20.0))  # y from -300 to +300 mm
    ptv = np.zeros(grid.shape, bool)
    ptv[8:13, 148:153, 8:13] = True  # a 10 mm cube of voxels around the isocentre (0, 0, 0)
    plate = beam_plate(grid, ptv, (0.0, 0.0, 0.0), [0.0])
    # gantry 0: the source is 1000 mm anterior (-y); the column through the cube is in, front and back
    assert plate[10, :, 10].min() > 0
    np.testing.assert_allclose(plate[10, 150, 10], 1.0, rtol=1e-6)  # at the isocentre: (SAD / SAD)^2
    np.testing.assert_allclose(plate[10, 0, 10], (1000.0 / 700.0) ** 2, rtol=1e-5)  # 300 mm nearer the source
    np.testing.assert_allclose(plate[10, 300, 10], (1000.0 / 1300.0) ** 2, rtol=1e-5)
    # divergence: the outline is +-5 mm at the isocentre (voxel centres +-4 mm, half a voxel around them),
    # so +-3.5 mm at 300 mm towards the source and +-6.5 mm 300 mm beyond
    assert plate[10, 150, 12] > 0 and plate[10, 150, 13] == 0  # x = 4 mm in, 6 mm out
    assert plate[10, 0, 12] == 0 and plate[10, 0, 11] > 0  # anterior: 4 mm out, 2 mm in
    assert plate[10, 300, 13] > 0 and plate[10, 300, 14] == 0  # posterior: 6 mm in, 8 mm out
    # the plate of several angles is the sum; voxels outside the body get nothing
    body = np.zeros(grid.shape, bool)
    body[:, 100:200] = True
    two = beam_plate(grid, ptv, (0.0, 0.0, 0.0), [0.0, 90.0], body=body)
    one = beam_plate(grid, ptv, (0.0, 0.0, 0.0), [90.0], body=body)
    np.testing.assert_allclose(two, np.where(body, plate, 0) + one, rtol=1e-6)
    assert two[:, :100].max() == 0 and one[10, 150, 0] > 0  # gantry 90 runs along x


def test_bad_plan_folders_are_refused(plan_dir, tmp_path):
    with pytest.raises(AirtpError, match="no dose.npy"):
        broken = tmp_path / "nodose"
        shutil.copytree(plan_dir, broken)
        (broken / "dose.npy").unlink()
        export_dataset([broken], tmp_path / "o1")
    bad = tmp_path / "nandose"
    shutil.copytree(plan_dir, bad)
    dose = np.load(bad / "dose.npy")
    dose[1, 1, 1] = np.nan
    np.save(bad / "dose.npy", dose)
    with pytest.raises(DoseError, match=r"nandose/dose\.npy.*NaN"):
        export_dataset([bad], tmp_path / "o2")
    np.save(bad / "dose.npy", dose[:, :, :-1])
    with pytest.raises(DoseError, match="shape"):
        export_dataset([bad], tmp_path / "o3")
    with pytest.raises(AirtpError, match="not a plan folder"):
        export_dataset([tmp_path / "nowhere"], tmp_path / "o4")
    assert not (tmp_path / "o2" / "meta_data.csv").exists()


def test_cli_exports_two_plans_of_one_patient(plan_dir, tmp_path, capsys):
    second = tmp_path / "again"
    shutil.copytree(plan_dir, second)
    assert main(["dataset", str(plan_dir), str(second), "--out", str(tmp_path / "ds"), "--quiet"]) == 0
    assert "wrote 2 plan(s)" in capsys.readouterr().out
    with open(tmp_path / "ds" / "meta_data.csv", newline="") as f:
        ids = [r["PlanID"] for r in csv.DictReader(f)]
    assert ids == ["imrt9-plan", "imrt9-again"]  # same patient and technique: the folder names tell them apart
    assert main(["dataset", str(tmp_path / "nowhere"), "--out", str(tmp_path / "ds2")]) == 2
