"""Grid, case file format and prescriptions."""

import json
import os

import numpy as np
import pytest

from airtp import Case, Grid, Prescription, StructureSet
from airtp.case import atomic_write
from airtp.errors import CaseFileError, GridError, PrescriptionError, StructureError


def small_case(**kw):
    grid = Grid((4, 6, 5), (3.0, 2.5, 2.5), (-10.0, 20.0, -5.0))
    body = np.zeros(grid.shape, bool)
    body[:, 1:5, 1:4] = True
    ptv = np.zeros(grid.shape, bool)
    ptv[1:3, 2:4, 2] = True
    ct = np.full(grid.shape, -1000, np.int16)
    ct[body] = 40
    s = StructureSet(grid, {"Body": body, "PTV": ptv})
    return Case(ct, s, [Prescription("PTV", 60.0, 30)], "lung", "p1", **kw)


def test_grid_transforms():
    g = Grid((4, 6, 5), (3.0, 2.5, 2.0), (-10.0, 20.0, -5.0))
    np.testing.assert_allclose(g.index_to_mm([0, 0, 0]), [-10, 20, -5])
    np.testing.assert_allclose(g.index_to_mm([2, 1, 3]), [-4, 22.5, 1])
    np.testing.assert_allclose(g.mm_to_index(g.index_to_mm([[1.5, 2, 3]])), [[1.5, 2, 3]])
    assert g.voxel_volume_cc == pytest.approx(0.015)
    assert g.contains_mm([-10, 20, -5]) and not g.contains_mm([-13.1, 20, -5])
    z, y, x = g.axes_mm()
    assert z[-1] == pytest.approx(-1.0) and len(y) == 6 and x[1] == pytest.approx(-3.0)


@pytest.mark.parametrize("spacing", [(0, 1, 1), (1, -2, 1), (1, 1, np.nan)])
def test_grid_rejects_non_positive_spacing(spacing):
    with pytest.raises(GridError, match="spacing"):
        Grid((2, 2, 2), spacing)


def test_round_trip_is_exact(tmp_path):
    case = small_case(meta={"note": "x"}, arrays={"reference_dose_gy": np.arange(120, dtype=np.float32).reshape(4, 6, 5)})
    path = case.save(tmp_path / "c.npz")
    back = Case.load(path)
    np.testing.assert_array_equal(back.ct_hu, case.ct_hu)
    assert back.ct_hu.dtype == np.int16
    assert back.grid == case.grid
    assert list(back.structures) == ["Body", "PTV"]
    for name in case.structures:
        np.testing.assert_array_equal(back.structures[name], case.structures[name])
    assert back.prescriptions == case.prescriptions
    assert (back.site, back.patient_id, back.meta) == ("lung", "p1", {"note": "x"})
    np.testing.assert_array_equal(back.arrays["reference_dose_gy"], case.arrays["reference_dose_gy"])
    assert not [p for p in tmp_path.iterdir() if p.name != "c.npz"]  # no temporary left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain open() would make it


def test_file_without_meta_takes_prescriptions_from_caller(tmp_path):
    case = small_case()
    path = tmp_path / "bare.npz"
    np.savez_compressed(path, ct_hu=case.ct_hu, spacing_mm=np.array(case.grid.spacing_mm),
                        origin_mm=np.array(case.grid.origin_mm), **{"mask/OuterTarget": case.structures["PTV"]})
    bare = Case.load(path)
    assert bare.prescriptions == [] and bare.site == "generic" and bare.patient_id == "bare"
    with pytest.raises(PrescriptionError, match="no prescription"):
        bare.check_prescriptions()
    rx = Case.load(path, prescriptions=[Prescription.parse("OuterTarget:50:25")], site="hn")
    assert rx.prescriptions == [Prescription("OuterTarget", 50.0, 25)] and rx.site == "hn"
    rx.check_prescriptions()


def test_prescription_parse():
    assert Prescription.parse("PTV 70:70:35") == Prescription("PTV 70", 70.0, 35)
    assert Prescription.parse("PTV60:60") == Prescription("PTV60", 60.0, 30)  # 2 Gy per fraction
    assert Prescription("PTV", 70, 35).dose_per_fraction_gy == 2.0
    for bad in ("PTV", "PTV:abc", "PTV:-5:5", "PTV:60:0"):
        with pytest.raises(PrescriptionError):
            Prescription.parse(bad)


def test_prescription_naming_absent_structure():
    case = small_case()
    case.prescriptions = [Prescription("PTV70", 70, 35)]
    with pytest.raises(PrescriptionError, match="'PTV70'"):
        case.check_prescriptions()


def test_bad_files_name_the_file(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(CaseFileError, match="nope.npz"):
        Case.load(missing)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(CaseFileError, match="corrupt.npz"):
        Case.load(corrupt)
    partial = tmp_path / "partial.npz"
    np.savez(partial, ct_hu=np.zeros((2, 2, 2), np.int16))
    with pytest.raises(CaseFileError, match="partial.npz.*spacing_mm"):
        Case.load(partial)
    nonbool = tmp_path / "nonbool.npz"
    np.savez(nonbool, ct_hu=np.zeros((2, 2, 2), np.int16), spacing_mm=[1, 1, 1], origin_mm=[0, 0, 0],
             **{"mask/Liver": np.ones((2, 2, 2), np.uint8)})
    with pytest.raises(CaseFileError, match="nonbool.npz.*'Liver'.*boolean"):
        Case.load(nonbool)
    wrongshape = tmp_path / "wrongshape.npz"
    np.savez(wrongshape, ct_hu=np.zeros((2, 2, 2), np.int16), spacing_mm=[1, 1, 1], origin_mm=[0, 0, 0],
             **{"mask/Cord": np.ones((2, 3, 2), bool)})
    with pytest.raises(CaseFileError, match="'Cord'.*shape"):
        Case.load(wrongshape)
    badspacing = tmp_path / "badspacing.npz"
    np.savez(badspacing, ct_hu=np.zeros((2, 2, 2), np.int16), spacing_mm=[1, 0, 1], origin_mm=[0, 0, 0])
    with pytest.raises(CaseFileError, match="badspacing.npz.*spacing"):
        Case.load(badspacing)
    badmeta = tmp_path / "badmeta.npz"
    np.savez(badmeta, ct_hu=np.zeros((2, 2, 2), np.int16), spacing_mm=[1, 1, 1], origin_mm=[0, 0, 0],
             meta=json.dumps({"prescriptions": [{"structure": "PTV", "dose_gy": -1, "fractions": 3}]}))
    with pytest.raises(CaseFileError, match="badmeta.npz.*prescription"):
        Case.load(badmeta)


def test_structure_set_checks_and_lookup():
    g = Grid((2, 3, 4), (1, 1, 1))
    s = StructureSet(g, {"SpinalCord_05": np.ones(g.shape, bool)})
    assert "SpinalCord.05" in s and s.find("spinalcord05") == "SpinalCord_05"
    with pytest.raises(StructureError, match="'Heart' is not in"):
        s["Heart"]
    with pytest.raises(StructureError, match="'Lung'.*boolean"):
        s.add("Lung", np.ones(g.shape, int))
    with pytest.raises(StructureError, match="'Lung'.*shape"):
        s.add("Lung", np.ones((3, 3, 3), bool))
    with pytest.raises(StructureError, match="already exists"):
        s.add("SpinalCord_05", np.ones(g.shape, bool))
    assert s.volume_cc("SpinalCord_05") == pytest.approx(0.024)


def test_ct_grid_mismatch_is_refused():
    case = small_case()
    with pytest.raises(GridError, match="CT"):
        Case(np.zeros((4, 6, 6), np.int16), case.structures, patient_id="p2")


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    def broken(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
