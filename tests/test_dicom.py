"""DICOM RT import, export and the ``dvh`` command (issue 8: Import, Export, Real files, Bad input).

Fixtures build everything they read: a coarse lung phantom, an analytic dose
and a hand-made deliverable plan (sliding window, VMAT, step-and-shoot) are
exported once per module; the tests import, alter and re-import copies.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from airtp import phantoms
from airtp.beams.beam import Beam
from airtp.cli import main
from airtp.errors import AirtpError, DicomError
from airtp.evaluation.dvh import compute_dvhs
from airtp.grid import Grid
from airtp.io.dicom import export_plan, import_dicom
from airtp.io.dicom.contours import mask_contours, rasterize
from airtp.io.dicom.ct import ct_datasets
from airtp.io.dicom.files import new_uid, save_dataset
from airtp.io.dicom.rtdose import read_rtdose
from airtp.io.dicom.rtplan import read_rtplan, to_machine_angles, to_model_angles
from airtp.io.dicom.rtstruct import read_rtstruct
from airtp.sequencing.plan import ControlPoint, DeliveryBeam, DeliveryPlan

DCIODVFY = shutil.which("dciodvfy")
SPACING_MM = (5.0, 5.0, 5.0)


# ---------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------
def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def _cp(gantry, mu, x1, x2, n=40):
    return ControlPoint(gantry_deg=gantry, cumulative_mu=mu, jaw_x_mm=(-50.0, 50.0), jaw_y_mm=(-60.0, 60.0),
                        mlc_x1_mm=[float(x1)] * n, mlc_x2_mm=[float(x2)] * n)


def _delivery_plan(iso_zyx) -> DeliveryPlan:
    """One beam of each kind, with leaves, jaws and MU that a reader can get wrong."""
    bounds = [float(v) for v in np.linspace(-100, 100, 41)]
    sliding = [_cp(30.0, 100.0 * i / 4, -10 - i, 10 + 2 * i) for i in range(5)]
    arc = [_cp(float((181 + 45 * i) % 360), 300.0 * i / 8, -20 + i, 15 + i) for i in range(9)]
    segments = [_cp(300.0, 0.0, -10, 10), _cp(300.0, 50.0, -10, 10), _cp(300.0, 50.0, -5, 5), _cp(300.0, 80.0, -5, 5)]
    iso = tuple(float(v) for v in iso_zyx)
    return DeliveryPlan("TrueBeam", "hand", [
        DeliveryBeam("IMRT30", "sliding_window", 0.0, 0.0, iso, bounds, sliding),
        DeliveryBeam("ARC1", "vmat", 10.0, 0.0, iso, bounds, arc, gantry_direction="CW"),
        DeliveryBeam("SS300", "step_and_shoot", 90.0, 20.0, iso, bounds, segments),
    ], fractions=30, limits_checked=["hand-made"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(plan folder, case, dose, plan, DICOM folder) of a 5 mm lung phantom."""
    root = tmp_path_factory.mktemp("dicom")
    case = phantoms.lung(spacing_mm=SPACING_MM)
    plan_dir = root / "plan"
    plan_dir.mkdir()
    case.save(plan_dir / "case.npz")
    z, y, x = np.meshgrid(*case.grid.axes_mm(), indexing="ij")
    iso = np.array([0.0, 0.0, 40.0])
    dose = (62.0 * np.exp(-((z - iso[0]) ** 2 + (y - iso[1]) ** 2 + (x - iso[2]) ** 2) / 4000.0)).astype(np.float32)
    np.save(plan_dir / "dose.npy", dose)
    plan = _delivery_plan(iso)
    plan.save(plan_dir / "delivery.json")
    result = export_plan(plan_dir, root / "dicom")
    return plan_dir, case, dose, plan, result.folder


@pytest.fixture(scope="module")
def imported(exported):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return import_dicom(exported[4], site="lung")


def _copy(src: Path, dst: Path, drop=()) -> Path:
    shutil.copytree(src, dst)
    for name in drop:
        for p in dst.glob(name):
            p.unlink()
    return dst


def _edit(path: Path, change) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


def _dciodvfy_errors(path: Path) -> list[str]:
    run = subprocess.run([DCIODVFY, str(path)], check=False, capture_output=True, text=True, timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    # dciodvfy aborts (assertion) on some inputs instead of reporting: that is a failure too
    return [line for line in lines if line.startswith("Error") or "Assertion" in line]


def _sq(a, z, cx=0.0, cy=0.0):
    return np.array([[cx - a, cy - a, z], [cx + a, cy - a, z], [cx + a, cy + a, z], [cx - a, cy + a, z]], float)


# ---------------------------------------------------------------------------
# Contours <-> masks
# ---------------------------------------------------------------------------
def test_masks_to_contours_and_back_is_exact():
    """Marching-squares contours rasterized on the same grid give the mask back, holes and edges included."""
    rng = np.random.default_rng(3)
    grid = Grid((5, 30, 40), (3.0, 2.5, 2.0), (-10.0, -40.0, -50.0))
    mask = rng.random(grid.shape) > 0.5  # many holes, islands and diagonal touches
    mask[1] = False
    mask[2, :, 0] = True  # touching the grid edge
    z, y, x = grid.axes_mm()
    contours = [np.column_stack([c, np.full(len(c), z[k])])
                for k in range(grid.shape[0]) for c in mask_contours(mask[k], x, y)]
    assert len(contours) > 50
    np.testing.assert_array_equal(rasterize(contours, grid), mask)


def test_even_odd_rule_holes_islands_and_several_contours():
    """Nested contours alternate inside/outside; disjoint contours of one plane all count."""
    grid = Grid((1, 41, 61), (2.0, 1.0, 1.0), (0.0, -20.0, -20.0))
    mask = rasterize([_sq(15.5, 0.0), _sq(10.5, 0.0), _sq(5.5, 0.0), _sq(3.5, 0.0, cx=33.0)], grid)[0]
    row = mask[20].astype(int)  # y = 0, x from -20 to 40
    expected = np.zeros(61, int)
    expected[5:10] = expected[31:36] = 1  # ring between 15.5 and 10.5
    expected[15:26] = 1  # island inside the 5.5 square
    expected[50:57] = 1  # the separate square at x = 33
    np.testing.assert_array_equal(row, expected)


def test_supersampling_gives_partial_volumes_of_small_structures():
    """A 6 mm cylinder on a 4 mm grid: the supersampled volume is within 3 %, voxel centres are far off."""
    grid = Grid((10, 20, 20), (4.0, 4.0, 4.0), (-18.0, -38.0, -38.0))
    angles = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    r = 3.0
    zs = grid.axes_mm()[0]
    contours = [np.column_stack([r * np.cos(angles) + 1.3, r * np.sin(angles) - 0.7, np.full(200, z)]) for z in zs[2:7]]
    exact_cc = np.pi * r * r * 5 * 4.0 / 1000.0
    weights = rasterize(contours, grid, supersample=8)
    assert weights.dtype == np.float32 and 0 < weights.max() <= 1
    assert weights.sum() * grid.voxel_volume_cc == pytest.approx(exact_cc, rel=0.03)
    centres = rasterize(contours, grid).sum() * grid.voxel_volume_cc
    assert abs(centres - exact_cc) > 0.1 * exact_cc  # why supersampling exists


# ---------------------------------------------------------------------------
# Patient positions and the beam model
# ---------------------------------------------------------------------------
_IOP = {"HFS": ((1, 0, 0), (0, 1, 0)), "FFS": ((-1, 0, 0), (0, 1, 0)),
        "HFP": ((-1, 0, 0), (0, -1, 0)), "FFP": ((1, 0, 0), (0, -1, 0))}


def _write_series(folder: Path, hu: np.ndarray, grid: Grid, position: str, frame: str, series: str | None = None,
                  skip: int | None = None) -> list[Path]:
    """Slices of an LPS volume as a scanner in `position` writes them (its orientation), in shuffled file order."""
    row, col = (np.array(v, float) for v in _IOP[position])
    uids = {"study": "1.2.3.4", "frame": frame, "ct_series": series or new_uid(),
            "ct_sops": [new_uid() for _ in range(grid.shape[0])]}
    patient = {"name": "Test^", "id": "T1", "study_date": "20240101", "study_time": "120000", "date": "20240101",
               "time": "120000"}
    z_axis, y_axis, x_axis = grid.axes_mm()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    order = np.random.default_rng(0).permutation(grid.shape[0])
    for k, ds in enumerate(ct_datasets(hu, grid, uids, patient, position)):
        if k == skip:
            continue
        img = hu[k][:, ::-1] if row[0] < 0 else hu[k]  # columns run along the row direction
        img = img[::-1, :] if col[1] < 0 else img
        ds.ImageOrientationPatient = [str(int(v)) for v in (*row, *col)]
        ds.ImagePositionPatient = [str(x_axis[0] if row[0] > 0 else x_axis[-1]),
                                   str(y_axis[0] if col[1] > 0 else y_axis[-1]), str(z_axis[k])]
        ds.PixelData = np.ascontiguousarray(img, dtype="<i2").tobytes()
        path = folder / f"slice_{order[k]:03d}.dcm"
        save_dataset(ds, path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("position", ["HFS", "FFS", "HFP", "FFP"])
def test_ct_in_any_patient_position_lands_in_lps_order(tmp_path, position):
    rng = np.random.default_rng(1)
    grid = Grid((6, 7, 9), (2.5, 1.5, 1.0), (-10.0, 20.0, -30.0))
    hu = rng.integers(-1000, 1500, grid.shape).astype(np.int16)
    _write_series(tmp_path / "ct", hu, grid, position, frame=new_uid())
    result = import_dicom(tmp_path / "ct")
    np.testing.assert_array_equal(result.case.ct_hu, hu)
    assert result.case.grid.shape == grid.shape
    np.testing.assert_allclose(result.case.grid.origin_mm, grid.origin_mm, atol=1e-6)
    np.testing.assert_allclose(result.case.grid.spacing_mm, grid.spacing_mm, atol=1e-6)
    assert result.case.meta["dicom"]["patient_position"] == position


@pytest.mark.parametrize("position,flip_zyx", [("HFS", (1, 1, 1)), ("FFS", (-1, 1, -1)), ("HFP", (1, -1, -1)),
                                               ("FFP", (-1, -1, 1))])
def test_plan_angles_of_other_positions_irradiate_the_same_patient_directions(position, flip_zyx):
    """The model (HFS) beam equals the machine beam seen by a patient turned as `position` says."""
    rng = np.random.default_rng(2)
    for g, c, t in rng.uniform(0, 360, (20, 3)):
        gm, tm = to_model_angles(position, g, t)
        np.testing.assert_allclose(to_machine_angles(position, gm, tm), (g, t), atol=1e-9)
        model = Beam(gm, (0, 0, 0), c, tm).axes()
        machine = Beam(g, (0, 0, 0), c, t).axes()
        for a, b in zip(model, machine):
            np.testing.assert_allclose(a, np.array(flip_zyx) * b, atol=1e-12)
    with pytest.raises(DicomError, match="HFDL"):
        to_model_angles("HFDL", 0.0, 0.0)


# ---------------------------------------------------------------------------
# Export: validity and consistency
# ---------------------------------------------------------------------------
@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian package dicom3tools) is not installed")
def test_every_exported_file_passes_dciodvfy(exported):
    folder = exported[4]
    files = sorted(folder.glob("*.dcm"))
    assert {"RTSTRUCT.dcm", "RTPLAN.dcm", "RTDOSE.dcm", "CT_0001.dcm"} <= {f.name for f in files}
    cts = [f for f in files if f.name.startswith("CT_")]
    for path in [f for f in files if f not in cts] + [cts[0], cts[len(cts) // 2]]:
        assert _dciodvfy_errors(path) == [], path.name


def test_exported_files_share_study_frame_and_reference_each_other(exported):
    folder = exported[4]
    ct = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob("CT_*.dcm"))]
    rs, rp, rd = (pydicom.dcmread(folder / f"{k}.dcm", stop_before_pixels=True) for k in ("RTSTRUCT", "RTPLAN", "RTDOSE"))
    for ds in [*ct, rs, rp, rd]:
        assert ds.StudyInstanceUID == ct[0].StudyInstanceUID
    for ds in [*ct, rs, rp, rd]:
        assert ds.FrameOfReferenceUID == ct[0].FrameOfReferenceUID
    assert rs.StructureSetROISequence[0].ReferencedFrameOfReferenceUID == ct[0].FrameOfReferenceUID
    assert rp.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == rs.SOPInstanceUID
    assert rd.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == rp.SOPInstanceUID
    assert rp.FractionGroupSequence[0].ReferencedDoseSequence[0].ReferencedSOPInstanceUID == rd.SOPInstanceUID
    ct_uids = {d.SOPInstanceUID for d in ct}
    referenced = {im.ReferencedSOPInstanceUID for roi in rs.ROIContourSequence for c in roi.ContourSequence
                  for im in c.ContourImageSequence}
    assert referenced <= ct_uids
    assert len({d.SeriesInstanceUID for d in [ct[0], rs, rp, rd]}) == 4


def test_rtplan_holds_kinds_angles_mlc_jaws_mu_and_fractions(exported):
    plan = exported[3]
    rp = pydicom.dcmread(exported[4] / "RTPLAN.dcm")
    assert rp.FractionGroupSequence[0].NumberOfFractionsPlanned == 30
    assert [float(b.BeamMeterset) for b in rp.FractionGroupSequence[0].ReferencedBeamSequence] == [100.0, 300.0, 80.0]
    arc = rp.BeamSequence[1]
    assert arc.BeamType == "DYNAMIC" and arc.ControlPointSequence[0].GantryRotationDirection == "CW"
    assert [float(cp.GantryAngle) for cp in arc.ControlPointSequence] == [cp.gantry_deg for cp in plan.beams[1].control_points]
    mlc = arc.ControlPointSequence[3].BeamLimitingDevicePositionSequence[2]
    assert mlc.RTBeamLimitingDeviceType == "MLCX" and len(mlc.LeafJawPositions) == 80
    assert float(mlc.LeafJawPositions[0]) == -17.0 and float(mlc.LeafJawPositions[40]) == 18.0
    assert rp.DoseReferenceSequence[0].TargetPrescriptionDose == 60.0


# ---------------------------------------------------------------------------
# Round trip
# ---------------------------------------------------------------------------
def test_round_trip_masks_dose_ct_and_plan(exported, imported):
    _, case, dose, plan, _ = exported
    new = imported.case
    assert new.grid == case.grid
    np.testing.assert_array_equal(new.ct_hu, case.ct_hu)
    compared = 0
    for name in case.structures:
        if case.structures.volume_cc(name) >= 1.0:
            assert _dice(case.structures[name], new.structures[name]) >= 0.98, name
            compared += 1
    assert compared >= 10
    assert np.abs(imported.dose_gy - dose).max() <= 1e-3 * dose.max()
    np.testing.assert_array_equal(new.arrays["reference_dose_gy"], imported.dose_gy)
    assert [(p.structure, p.dose_gy, p.fractions) for p in new.prescriptions] == [("PTV", 60.0, 30)]
    got = imported.plan
    assert [b.kind for b in got.beams] == ["sliding_window", "vmat", "step_and_shoot"]
    assert got.total_mu == pytest.approx(plan.total_mu, abs=1e-6) and got.fractions == 30
    for a, b in zip(plan.beams, got.beams):
        assert (a.name, a.collimator_deg, a.couch_deg, a.gantry_direction) == \
            (b.name, b.collimator_deg, b.couch_deg, b.gantry_direction)
        np.testing.assert_allclose(a.isocenter_mm, b.isocenter_mm)
        assert b.leaf_boundaries_mm == a.leaf_boundaries_mm
        for ca, cb in zip(a.control_points, b.control_points):
            assert cb.gantry_deg == pytest.approx(ca.gantry_deg) and cb.cumulative_mu == pytest.approx(ca.cumulative_mu)
            assert (cb.jaw_x_mm, cb.jaw_y_mm, cb.mlc_x1_mm, cb.mlc_x2_mm) == \
                (ca.jaw_x_mm, ca.jaw_y_mm, ca.mlc_x1_mm, ca.mlc_x2_mm)
    assert [b.gantry_deg for b in imported.beams] == [30.0, 181.0, 300.0]


def test_reexport_of_an_imported_case_references_the_original_ct(exported, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["import", str(exported[4]), "--out", str(tmp_path / "plan"), "--site", "lung"]) == 0
    assert {p.name for p in (tmp_path / "plan").iterdir()} == {"case.npz", "dose.npy", "delivery.json"}
    assert main(["export", str(tmp_path / "plan"), "--out", str(tmp_path / "again")]) == 0
    names = {p.name for p in (tmp_path / "again").iterdir()}
    assert names == {"RTSTRUCT.dcm", "RTPLAN.dcm", "RTDOSE.dcm"}  # the CT exists already
    original = pydicom.dcmread(exported[4] / "CT_0001.dcm", stop_before_pixels=True)
    rs = pydicom.dcmread(tmp_path / "again" / "RTSTRUCT.dcm")
    assert rs.FrameOfReferenceUID == original.FrameOfReferenceUID
    assert rs.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0] \
        .SeriesInstanceUID == original.SeriesInstanceUID
    # the new files import against the original CT
    mixed = _copy(exported[4], tmp_path / "mixed", drop=["RT*.dcm"])
    for p in (tmp_path / "again").iterdir():
        shutil.copy(p, mixed / p.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = import_dicom(mixed, site="lung")
    assert _dice(again.case.structures["PTV"], exported[1].structures["PTV"]) == 1.0


def test_phantom_exported_and_reimported_plans_the_same(tmp_path):
    from airtp.planning import PlanSettings, plan_case

    case = phantoms.lung(spacing_mm=(6.0, 6.0, 6.0))
    case.save(tmp_path / "case.npz")
    export_plan(tmp_path / "case.npz", tmp_path / "dicom")
    back = import_dicom(tmp_path / "dicom", site="lung", prescriptions=case.prescriptions).case
    settings = PlanSettings(iterations=0, dose_grid_mm=8.0, optimizer_options={"max_iterations": 20})
    a = plan_case(case, settings)
    b = plan_case(back, PlanSettings(iterations=0, dose_grid_mm=8.0, optimizer_options={"max_iterations": 20}))
    assert b.final.score == pytest.approx(a.final.score, abs=0.05)
    assert np.abs(b.final.dose - a.final.dose).max() <= 1e-3 * a.final.dose.max()


# ---------------------------------------------------------------------------
# airtp dvh
# ---------------------------------------------------------------------------
def test_dvh_command_on_dicom_matches_the_case_dvh(exported, capsys):
    _, case, dose, _, folder = exported
    assert main(["dvh", str(folder / "RTSTRUCT.dcm"), str(folder / "RTDOSE.dcm"), "--json"]) == 0
    rows = {r["structure"]: r for r in json.loads(capsys.readouterr().out)["structures"]}
    ref = compute_dvhs(dose, case.structures, grid=case.grid)
    for name in ("PTV", "Heart", "Lung_L", "Body"):
        r, d = rows[name], ref[name]
        assert r["supersample"] == 1
        assert r["volume_cc"] == pytest.approx(d.volume_cc, rel=1e-9)
        assert r["mean_gy"] == pytest.approx(d.mean_gy, abs=1e-3)
        assert r["max_gy"] == pytest.approx(d.max_gy, abs=1e-3)
        assert r["D95_gy"] == pytest.approx(float(d.dose_at_percent(95)), abs=0.02)
        assert r["D2_gy"] == pytest.approx(float(d.dose_at_percent(2)), abs=0.02)
        assert r["D0.03cc_gy"] == pytest.approx(float(d.dose_at(0.03)), abs=0.02)
    assert rows["LAD"]["supersample"] == 4  # 2.4 cc: partial volumes
    assert main(["dvh", str(folder / "RTSTRUCT.dcm"), str(folder / "RTDOSE.dcm"), "--structure", "PTV"]) == 0
    out = capsys.readouterr().out
    assert "D0.03cc" in out and "PTV" in out and "Heart" not in out


def test_cli_import_prints_names_and_writes_case_and_plan(exported, tmp_path, capsys):
    mapping = tmp_path / "names.json"
    mapping.write_text(json.dumps({"GreatVessels": "GreatVes"}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["import", str(exported[4]), "--out", str(tmp_path / "c.npz"), "--site", "lung",
                     "--names", str(mapping)]) == 0
    out = capsys.readouterr().out
    assert "Input name" in out and "Prescriptions: PTV 60 Gy/30 fx" in out
    assert (tmp_path / "c.npz").is_file() and (tmp_path / "c.delivery.json").is_file()
    assert DeliveryPlan.load(tmp_path / "c.delivery.json").total_mu == pytest.approx(480.0)
    try:
        import airtp.structures.harmonize  # noqa: F401
    except ImportError:
        return
    assert "GreatVes" in out  # the user's mapping went through the harmoniser
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kept = import_dicom(exported[4], harmonize=False)
    assert {r.status for r in kept.names} == {"kept"}


# ---------------------------------------------------------------------------
# Real files (pydicom's bundled RT test files)
# ---------------------------------------------------------------------------
def _testfile(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} not available offline")
    return Path(path)


def test_pydicom_rt_files_load_or_fail_clearly(capsys):
    rs = read_rtstruct(_testfile("rtstruct.dcm"))  # no preamble: read anyway
    assert [r.name for r in rs.rois] == ["patient", "Isocenter 1", "Isocenter 2"]
    assert len(rs.rois[0].contours) == 3 and rs.rois[1].skipped == 1  # points are not rasterized
    plan = read_rtplan(_testfile("rtplan.dcm"))
    assert plan.plan.total_mu == pytest.approx(116.0036697) and plan.plan.fractions == 30
    assert plan.plan.beams[0].control_points[-1].jaw_x_mm == (-100.0, 100.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the file's UIDs are invalid; pydicom says so
        doses = [read_rtdose(_testfile(n)) for n in ("rtdose.dcm", "rtdose_rle.dcm", "rtdose_expb.dcm")]
    for d in doses:
        assert d.grid.shape == (15, 10, 10)
        np.testing.assert_array_equal(d.dose, doses[0].dose)
    with pytest.raises(DicomError, match="RELATIVE"):
        doses[0].gy()
    with pytest.raises(DicomError, match="rtplan_truncated.dcm.*truncated"):
        read_rtplan(_testfile("rtplan_truncated.dcm"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["dvh", str(_testfile("rtstruct.dcm")), str(_testfile("rtdose.dcm"))])
    err = capsys.readouterr().err
    assert rc == 2 and "rtdose.dcm" in err and "frame of reference" in err


def test_pydicom_ct_small_is_a_one_slice_case(tmp_path):
    shutil.copy(_testfile("CT_small.dcm"), tmp_path / "ct.dcm")
    case = import_dicom(tmp_path).case
    assert case.grid.shape == (1, 128, 128) and case.grid.spacing_mm[0] == 5.0
    assert case.meta["dicom"]["patient_position"] == "FFS"
    assert case.ct_hu.min() >= -1024


# ---------------------------------------------------------------------------
# Choices and bad input
# ---------------------------------------------------------------------------
def test_uneven_slices_stop_or_resample(tmp_path):
    grid = Grid((6, 5, 5), (2.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    hu = np.broadcast_to((np.arange(6) * 100).astype(np.int16)[:, None, None], grid.shape).copy()
    _write_series(tmp_path / "ct", hu, grid, "HFS", frame=new_uid(), skip=3)
    with pytest.raises(DicomError, match="uneven slice spacing.*slice_"):
        import_dicom(tmp_path / "ct")
    case = import_dicom(tmp_path / "ct", uneven="resample").case
    assert case.grid.shape == (6, 5, 5) and case.grid.spacing_mm[0] == pytest.approx(2.0)
    np.testing.assert_array_equal(case.ct_hu[:, 2, 2], [0, 100, 200, 300, 400, 500])  # the gap interpolated


def test_several_series_are_chosen_or_listed(exported, tmp_path):
    folder = _copy(exported[4], tmp_path / "two")
    frame = pydicom.dcmread(folder / "CT_0001.dcm", stop_before_pixels=True).FrameOfReferenceUID
    grid = exported[1].grid
    other = new_uid()
    _write_series(folder / "second", exported[1].ct_hu, grid, "HFS", frame=frame, series=other)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chosen = import_dicom(folder)  # the structure set names its series
    assert chosen.case.meta["dicom"]["ct_series_uid"] != other
    for p in folder.glob("RT*.dcm"):
        p.unlink()
    with pytest.raises(DicomError, match="2 CT series.*--series"):
        import_dicom(folder)
    assert import_dicom(folder, series=other).case.meta["dicom"]["ct_series_uid"] == other


def test_truncated_file_is_named_and_nothing_is_written(exported, tmp_path, capsys):
    folder = _copy(exported[4], tmp_path / "cut")
    victim = folder / "CT_0007.dcm"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 1000])
    out = tmp_path / "case.npz"
    assert main(["import", str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "CT_0007.dcm: truncated DICOM file" in err
    assert not out.exists() and not list(tmp_path.glob(".case*"))


def test_folder_without_ct(exported, tmp_path):
    folder = _copy(exported[4], tmp_path / "noct", drop=["CT_*.dcm"])
    (folder / "README.txt").write_text("not DICOM")
    with pytest.raises(DicomError, match="no CT image series.*RTSTRUCT x1"):
        import_dicom(folder)


@pytest.mark.parametrize("fault,match", [
    ("missing image", r"RTSTRUCT.dcm: ROI '.*': contour 1 .*references image .* not in the CT series"),
    ("non-planar", r"RTSTRUCT.dcm: ROI '.*': contour 1 is not planar"),
    ("structure frame", r"RTSTRUCT.dcm: .*frame of reference"),
    ("dose frame", r"RTDOSE.dcm: frame of reference .* does not match"),
    ("plan truncated", r"RTPLAN.dcm: beam 'ARC1': NumberOfControlPoints is 9 but the sequence holds 8"),
])
def test_bad_rt_files_are_refused_naming_the_file(exported, tmp_path, fault, match):
    folder = _copy(exported[4], tmp_path / "bad")

    def missing_image(ds):
        ds.ROIContourSequence[0].ContourSequence[0].ContourImageSequence[0].ReferencedSOPInstanceUID = new_uid()

    def non_planar(ds):
        c = ds.ROIContourSequence[0].ContourSequence[0]
        data = [float(v) for v in c.ContourData]
        data[5] += 2.0  # the second point's z
        c.ContourData = [f"{v:.3f}" for v in data]

    def structure_frame(ds):
        ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = new_uid()

    def dose_frame(ds):
        ds.FrameOfReferenceUID = new_uid()

    def plan_truncated(ds):
        del ds.BeamSequence[1].ControlPointSequence[-1]

    change, name = {"missing image": (missing_image, "RTSTRUCT"), "non-planar": (non_planar, "RTSTRUCT"),
                    "structure frame": (structure_frame, "RTSTRUCT"), "dose frame": (dose_frame, "RTDOSE"),
                    "plan truncated": (plan_truncated, "RTPLAN")}[fault]
    _edit(folder / f"{name}.dcm", change)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DicomError, match=match):
            import_dicom(folder)


def test_failed_export_leaves_nothing(exported, tmp_path):
    plan_dir = _copy(exported[0], tmp_path / "plan")
    bad = DeliveryPlan.load(plan_dir / "delivery.json")
    bad.beams[0].control_points[1].mlc_x1_mm = [0.0] * 3  # 3 leaves on a 40-pair MLC
    bad.save(plan_dir / "delivery.json")
    with pytest.raises(DicomError, match="beam 'IMRT30' control point 1"):
        export_plan(plan_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(AirtpError, match="not empty"):
        export_plan(exported[0], tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "x"


def test_dose_without_a_deliverable_plan_is_not_exported(exported, tmp_path, capsys):
    plan_dir = _copy(exported[0], tmp_path / "plan")
    (plan_dir / "delivery.json").unlink()
    assert main(["export", str(plan_dir), "--out", str(tmp_path / "out")]) == 0
    assert "RTDOSE needs the deliverable plan" in capsys.readouterr().out
    assert not (tmp_path / "out" / "RTDOSE.dcm").exists() and (tmp_path / "out" / "RTSTRUCT.dcm").exists()


def test_dvh_on_a_coarser_shifted_dose_grid(exported, tmp_path):
    """Contour planes stand for their slabs: a 9 mm dose grid, offset from the CT, sees the organs whole."""
    from airtp.io.dicom.dvh import dicom_dvhs
    from airtp.io.dicom.rtdose import rtdose_dataset

    _, case, _, _, folder = exported
    coarse = Grid((25, 27, 39), (9.0, 9.0, 9.0), (-110.0, -120.0, -172.0))
    z, _, x = np.meshgrid(*coarse.axes_mm(), indexing="ij")
    dose = 10.0 + 0.05 * x + 0.02 * z  # linear: a structure's mean dose is the dose at its centroid
    frame = pydicom.dcmread(folder / "RTDOSE.dcm", stop_before_pixels=True).FrameOfReferenceUID
    uids = {"study": "1.2.3", "frame": frame, "rtdose": new_uid(), "rtdose_series": new_uid(), "rtplan": new_uid()}
    patient = {"name": "T^", "id": "T", "study_date": "", "study_time": "", "date": "", "time": ""}
    save_dataset(rtdose_dataset(dose, coarse, uids, patient), tmp_path / "coarse.dcm")
    rows = {r["structure"]: r for r in dicom_dvhs(folder / "RTSTRUCT.dcm", tmp_path / "coarse.dcm").rows}
    cz, _, cx = np.meshgrid(*case.grid.axes_mm(), indexing="ij")
    for name in ("Heart", "Lung_L", "Lung_R", "Body"):
        m = case.structures[name]
        expected = 10.0 + 0.05 * cx[m].mean() + 0.02 * cz[m].mean()
        assert rows[name]["mean_gy"] == pytest.approx(expected, abs=0.15), name
        assert rows[name]["volume_cc"] == pytest.approx(case.structures.volume_cc(name), rel=0.05), name


def test_plan_of_a_prone_feet_first_patient_keeps_its_geometry(exported, tmp_path):
    """Written for FFP, the machine angles differ; read back, the model angles are the plan's own."""
    from airtp.io.dicom.rtplan import rtplan_dataset

    plan = exported[3]
    uids = {"study": "1.2.3", "frame": new_uid(), "rtplan": new_uid(), "rtplan_series": new_uid(), "rtstruct": ""}
    patient = {"name": "T^", "id": "T", "study_date": "", "study_time": "", "date": "", "time": ""}
    save_dataset(rtplan_dataset(plan, uids, patient, position="FFP"), tmp_path / "ffp.dcm")
    ds = pydicom.dcmread(tmp_path / "ffp.dcm")
    assert ds.PatientSetupSequence[0].PatientPosition == "FFP"
    cp0 = ds.BeamSequence[2].ControlPointSequence[0]
    assert (float(cp0.GantryAngle), float(cp0.PatientSupportAngle)) == (120.0, 160.0)  # 300 - 180, 180 - 20
    back = read_rtplan(tmp_path / "ffp.dcm")
    assert back.patient_position == "FFP"
    for a, b in zip(plan.beams, back.plan.beams):
        assert b.couch_deg == pytest.approx(a.couch_deg)
        assert [cp.gantry_deg for cp in b.control_points] == pytest.approx([cp.gantry_deg for cp in a.control_points])


def test_per_beam_doses_are_summed(exported, imported, tmp_path):
    folder = _copy(exported[4], tmp_path / "beams")
    ds = pydicom.dcmread(folder / "RTDOSE.dcm")
    (folder / "RTDOSE.dcm").unlink()
    pixels = ds.pixel_array.astype(np.uint32)
    for i, part in enumerate((pixels // 2, pixels - pixels // 2)):
        ds.DoseSummationType = "BEAM"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
        ds.PixelData = part.astype("<u2").tobytes()
        ds.save_as(folder / f"RD_beam{i}.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summed = import_dicom(folder)
    assert any("sum of 2 per-beam" in n for n in summed.notes)
    np.testing.assert_allclose(summed.dose_gy, imported.dose_gy, atol=1e-6 * float(imported.dose_gy.max()))


def test_a_folder_of_pydicom_rt_files_fails_or_imports_clearly(tmp_path):
    for name in ("rtstruct.dcm", "rtplan.dcm", "rtdose.dcm", "CT_small.dcm"):
        shutil.copy(_testfile(name), tmp_path / name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DicomError, match=r"rtstruct.dcm: frame of reference .* does not match the CT"):
            import_dicom(tmp_path)
        (tmp_path / "rtstruct.dcm").unlink()
        result = import_dicom(tmp_path)  # the unrelated plan and the relative dose are left out, saying so
        assert result.plan is None and result.dose_gy is None
        assert any("rtplan.dcm" in n and "skipped" in n for n in result.notes)
        assert any("rtdose.dcm" in n and "RELATIVE" in n for n in result.notes)
        with pytest.raises(DicomError, match="rtdose.dcm: dose units are RELATIVE"):
            import_dicom(tmp_path, rtdose=tmp_path / "rtdose.dcm")
