"""Synthetic head-and-neck and lung patients (airtp.phantoms).

Plausibility ranges used below (cc; adult anatomy as contoured for RT, widened
for a coarse 3 x 2.5 x 2.5 mm grid and for the head-and-neck field ending
about 3.5 cm above the eyes, which cuts the top of the brain):

Head and neck: Brain 500-1500, BrainStem 15-40, SpinalCord 5-30, Chiasm
0.1-1.5, OpticNerve 0.3-2.5, Eye 5-10, Lens 0.05-0.5, Cochlea 0.05-1,
LacrimalGland 0.3-2, Pituitary 0.2-1.5, Parotid 10-40, Submandibular 3-15,
OralCavity 40-150, Lips 3-20, Mandible 40-120, TMJoint 0.5-5, Larynx 15-60,
PharynxConst 5-30, Esophagus 2-20, Trachea 5-30, Thyroid 5-30,
BrachialPlexus 3-30, Posterior_Neck 100-800, Shoulders 200-2000, Lungs
(apices only) 5-300; PTV70 90-260, PTV63 100-350, PTV56 100-450.

Lung: Lung_L and Lung_R 800-3000 each, Heart 350-900, LAD 0.5-8, Esophagus
15-60, SpinalCord 10-35, BrachialPlexus 2-30, GreatVessels 80-300, Trachea
10-50; GTV 3-70 (radius 10-25 mm), GTV < CTV < PTV.
"""

from functools import lru_cache

import numpy as np
import pytest

from airtp import Case, phantoms
from airtp.errors import AirtpError
from airtp.structures import margin
from airtp.structures.names import HEAD_NECK_OARS, LUNG_OARS

SEEDS = range(5)
PTV_NAMES = {1: ["PTV70"], 2: ["PTV70", "PTV56"], 3: ["PTV70", "PTV63", "PTV56"]}

HN_VOLUMES_CC = {
    "Brain": (500, 1500), "BrainStem": (15, 40), "SpinalCord": (5, 30), "Chiasm": (0.1, 1.5),
    "OpticNerve_L": (0.3, 2.5), "OpticNerve_R": (0.3, 2.5), "Eye_L": (5, 10), "Eye_R": (5, 10),
    "Lens_L": (0.05, 0.5), "Lens_R": (0.05, 0.5), "Cochlea_L": (0.05, 1), "Cochlea_R": (0.05, 1),
    "LacrimalGland_L": (0.3, 2), "LacrimalGland_R": (0.3, 2), "Pituitary": (0.2, 1.5),
    "Parotid_L": (10, 40), "Parotid_R": (10, 40), "Submandibular_L": (3, 15), "Submandibular_R": (3, 15),
    "OralCavity": (40, 150), "Lips": (3, 20), "Mandible": (40, 120), "TMJoint_L": (0.5, 5), "TMJoint_R": (0.5, 5),
    "Larynx": (15, 60), "PharynxConst": (5, 30), "Esophagus": (2, 20), "Trachea": (5, 30), "Thyroid": (5, 30),
    "BrachialPlexus_L": (3, 30), "BrachialPlexus_R": (3, 30), "Posterior_Neck": (100, 800),
    "Shoulders": (200, 2000), "Lungs": (5, 300), "Body": (3000, 8000),
    "PTV70": (90, 260), "PTV63": (100, 350), "PTV56": (100, 450),
}
LUNG_VOLUMES_CC = {
    "Lung_L": (800, 3000), "Lung_R": (800, 3000), "Heart": (350, 900), "LAD": (0.5, 8), "Esophagus": (15, 60),
    "SpinalCord": (10, 35), "BrachialPlexus": (2, 30), "GreatVessels": (80, 300), "Trachea": (10, 50),
    "GTV": (3, 70), "Body": (8000, 16000),
}


@lru_cache(maxsize=None)
def hn(n_ptv=3, seed=0):
    return phantoms.head_neck(n_ptv=n_ptv, seed=seed)


@lru_cache(maxsize=None)
def lung(side="left", seed=0):
    return phantoms.lung(side=side, seed=seed)


def centroid_mm(case, name):
    idx = np.argwhere(case.structures[name])
    return case.grid.index_to_mm(idx.mean(axis=0))


def assert_cases_equal(a, b):
    np.testing.assert_array_equal(a.ct_hu, b.ct_hu)
    assert a.ct_hu.dtype == b.ct_hu.dtype == np.int16
    assert a.grid == b.grid
    assert list(a.structures) == list(b.structures)
    for name in a.structures:
        np.testing.assert_array_equal(a.structures[name], b.structures[name], err_msg=name)
    assert a.prescriptions == b.prescriptions
    assert (a.site, a.patient_id, a.meta) == (b.site, b.patient_id, b.meta)


# Grid, determinism, names -------------------------------------------------
def test_grid_is_centred_and_sized():
    for case, fov in ((hn(), phantoms.HEAD_NECK_FOV_MM), (lung(), phantoms.LUNG_FOV_MM)):
        g = case.grid
        assert g.spacing_mm == phantoms.DEFAULT_SPACING_MM
        assert g.shape == tuple(round(f / s) for f, s in zip(fov, g.spacing_mm))
        centre = np.asarray(g.origin_mm) + (np.asarray(g.shape) - 1) / 2 * np.asarray(g.spacing_mm)
        np.testing.assert_allclose(centre, 0.0, atol=1e-9)
    assert hn().grid.shape == (72, 100, 136)
    assert lung().grid.shape == (76, 100, 144)


def test_spacing_changes_resolution_not_field_of_view():
    case = phantoms.head_neck(n_ptv=1, seed=0, spacing_mm=(5.0, 5.0, 5.0))
    assert case.grid.shape == (43, 50, 68)
    assert all(m.any() for m in case.structures.values())
    assert 90 < case.structures.volume_cc("PTV70") < 260


def test_same_seed_same_arrays():
    assert_cases_equal(hn(2, 1), phantoms.head_neck(n_ptv=2, seed=1))
    assert_cases_equal(lung("central", 1), phantoms.lung(side="central", seed=1))


def test_different_seeds_differ():
    for a, b in ((hn(3, 0), hn(3, 1)), (lung("left", 0), lung("left", 1))):
        assert not np.array_equal(a.ct_hu, b.ct_hu)
        assert not np.array_equal(a.structures["Body"], b.structures["Body"])
        first = a.prescriptions[0].structure
        assert not np.array_equal(a.structures[first], b.structures[first])
    assert abs(hn(3, 0).structures.volume_cc("Body") - hn(3, 1).structures.volume_cc("Body")) > 10


def test_same_seed_shares_the_anatomy_across_target_options():
    for name in HEAD_NECK_OARS:
        np.testing.assert_array_equal(hn(1, 0).structures[name], hn(3, 0).structures[name], err_msg=name)
    np.testing.assert_array_equal(hn(1, 0).structures["PTV70"], hn(3, 0).structures["PTV70"])
    np.testing.assert_array_equal(lung("left", 0).structures["Heart"], lung("right", 0).structures["Heart"])


@pytest.mark.parametrize("n_ptv", [1, 2, 3])
def test_head_neck_structures_present_and_nonempty(n_ptv):
    case = hn(n_ptv, 0)
    assert list(case.structures) == [*HEAD_NECK_OARS, *PTV_NAMES[n_ptv]]
    assert all(case.structures[n].any() for n in case.structures), [n for n in case.structures if not case.structures[n].any()]
    assert case.site == "hn" and case.patient_id == f"hn{n_ptv}-seed0"
    assert case.meta["primary_side"] in ("left", "right")
    case.check_prescriptions()


@pytest.mark.parametrize("side", phantoms.LUNG_SIDES)
def test_lung_structures_present_and_nonempty(side):
    case = lung(side, 0)
    assert list(case.structures) == [*LUNG_OARS, "GTV", "CTV", "PTV"]
    assert all(case.structures[n].any() for n in case.structures)
    assert case.site == "lung" and case.patient_id == f"lung-{side}-seed0"
    case.check_prescriptions()


def test_prescriptions():
    for n_ptv, doses in ((1, [70.0]), (2, [70.0, 56.0]), (3, [70.0, 63.0, 56.0])):
        rx = hn(n_ptv, 0).prescriptions
        assert [p.structure for p in rx] == PTV_NAMES[n_ptv]
        assert [p.dose_gy for p in rx] == doses
        assert all(p.fractions == 35 for p in rx)
    rx = lung("left", 0).prescriptions
    assert [(p.structure, p.dose_gy, p.fractions) for p in rx] == [("PTV", 60.0, 30)]


# Anatomy ------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_head_neck_volumes_plausible(seed):
    case = hn(3, seed)
    for name, (lo, hi) in HN_VOLUMES_CC.items():
        assert lo <= case.structures.volume_cc(name) <= hi, (name, case.structures.volume_cc(name))


@pytest.mark.parametrize("seed", SEEDS)
def test_lung_volumes_plausible(seed):
    case = lung(phantoms.LUNG_SIDES[seed % 3], seed)
    for name, (lo, hi) in LUNG_VOLUMES_CC.items():
        assert lo <= case.structures.volume_cc(name) <= hi, (name, case.structures.volume_cc(name))
    v = [case.structures.volume_cc(n) for n in ("GTV", "CTV", "PTV")]
    assert v[0] < v[1] < v[2]


@pytest.mark.parametrize("seed", range(3))
def test_head_neck_laterality(seed):
    case = hn(3, seed)
    for name in case.structures:
        if name.endswith("_L"):
            left, right = centroid_mm(case, name), centroid_mm(case, name[:-2] + "_R")
            assert left[2] > 10 and right[2] < -10, name  # x grows to the patient's left
            assert abs(left[2] + right[2]) < 10, name  # roughly mirror images
    side = 1 if case.meta["primary_side"] == "left" else -1
    assert side * centroid_mm(case, "PTV70")[2] > 5


def test_head_neck_anatomical_order():
    case = hn(3, 0)
    c = {n: centroid_mm(case, n) for n in case.structures}
    z, y = (lambda n: c[n][0]), (lambda n: c[n][1])
    # Superior to inferior.
    assert z("Brain") > z("Eye_L") > z("Parotid_L") > z("Submandibular_L") > z("Larynx") > z("Thyroid") > z("Lungs")
    assert z("Chiasm") > z("Pituitary") and z("BrainStem") > z("SpinalCord")
    assert z("BrachialPlexus_L") < z("Larynx") and z("Shoulders") < z("Larynx")
    lungs_z = np.nonzero(case.structures["Lungs"].any(axis=(1, 2)))[0]
    assert lungs_z.min() == 0 and lungs_z.max() < 15  # apices at the inferior end
    # Anterior to posterior.
    assert y("Lens_L") < y("Eye_L") < y("OpticNerve_L") < y("Chiasm")
    assert y("Lips") < y("OralCavity") < y("PharynxConst") < y("SpinalCord") < y("Posterior_Neck")
    assert y("Trachea") < y("Esophagus") < y("SpinalCord")
    # The cord lies in the vertebral canal over the whole neck: soft tissue, with bone around it.
    cord = case.structures["SpinalCord"]
    zs = np.nonzero(cord.any(axis=(1, 2)))[0]
    assert zs.min() == 0 and zs.max() > 35
    assert np.abs(case.ct_hu[cord].astype(float)).mean() < 100
    ring = margin(cord, 8.0, case.grid.spacing_mm) & ~margin(cord, 3.0, case.grid.spacing_mm)
    assert (case.ct_hu[ring] > 300).mean() > 0.2
    # Every organ lies in the body.
    body = case.structures["Body"]
    for name in case.structures:
        assert not (case.structures[name] & ~body).any(), name


def test_lung_anatomy():
    case = lung("left", 0)
    c = {n: centroid_mm(case, n) for n in case.structures}
    assert c["Lung_L"][2] > 40 and c["Lung_R"][2] < -40
    assert c["Heart"][2] > 0 and c["Heart"][1] < 0  # left of the midline, anterior
    assert c["LAD"][1] < c["Heart"][1] - 15 and c["LAD"][2] > c["Heart"][2] - 15
    assert c["SpinalCord"][1] > c["Esophagus"][1] > c["Trachea"][1]
    assert c["Trachea"][0] > c["Heart"][0]
    top = case.grid.shape[0]
    for side, other in (("left", "right"), ("right", "left")):
        bp = lung(side, 0).structures["BrachialPlexus"]
        x = centroid_mm(lung(side, 0), "BrachialPlexus")[2]
        assert (x > 40) if side == "left" else (x < -40)
        assert np.nonzero(bp.any(axis=(1, 2)))[0].min() > 0.7 * top  # superior end
    assert centroid_mm(lung("central", 0), "BrachialPlexus")[2] < -40
    body = case.structures["Body"]
    for name in case.structures:
        assert not (case.structures[name] & ~body).any(), name
    lungs = case.structures["Lung_L"] | case.structures["Lung_R"]
    assert not (case.structures["Lung_L"] & case.structures["Lung_R"]).any()
    assert not (lungs & (case.structures["Heart"] | case.structures["SpinalCord"])).any()
    assert not lungs[0].any() and not lungs[-1].any()  # whole lungs in the field


@pytest.mark.parametrize("seed", SEEDS)
def test_body_clear_of_the_grid_sides(seed):
    for case in (hn(3, seed), lung(phantoms.LUNG_SIDES[seed % 3], seed)):
        b = case.structures["Body"]
        assert not (b[:, 0].any() or b[:, -1].any() or b[:, :, 0].any() or b[:, :, -1].any())


# Targets ------------------------------------------------------------------
@pytest.mark.parametrize("n_ptv", [1, 2, 3])
@pytest.mark.parametrize("seed", range(2))
def test_head_neck_targets_inside_body_disjoint_and_clear_of_cord(n_ptv, seed):
    case = hn(n_ptv, seed)
    s = case.structures
    inside = margin(s["Body"], -3.0, case.grid.spacing_mm)
    names = PTV_NAMES[n_ptv]
    for i, name in enumerate(names):
        assert not (s[name] & ~inside).any(), f"{name} closer than 3 mm to the skin"
        assert not (s[name] & (s["SpinalCord"] | s["BrainStem"])).any(), name
        for other in names[i + 1:]:
            assert not (s[name] & s[other]).any(), (name, other)
    # Like a real oropharynx case, PTV70 takes in part of the oral cavity and the pharynx.
    for oar in ("OralCavity", "PharynxConst"):
        assert (s["PTV70"] & s[oar]).any(), oar


def test_head_neck_elective_neck_is_bilateral():
    case = hn(2, 0)
    x = case.grid.axes_mm()[2]
    ptv56 = case.structures["PTV56"]
    assert ptv56[:, :, x < -15].sum() > 1000 and ptv56[:, :, x > 15].sum() > 1000


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("side", phantoms.LUNG_SIDES)
def test_lung_tumour_lateral_distance(side, seed):
    case = lung(side, seed)
    for name in ("GTV", "PTV"):
        x = centroid_mm(case, name)[2]
        if side == "left":
            assert x > 50.0, (name, x)
        elif side == "right":
            assert x < -50.0, (name, x)
        else:
            assert abs(x) < 20.0, (name, x)
    s = case.structures
    radius = case.meta["gtv_radius_mm"]
    assert 10.0 <= radius <= 25.0
    assert not (s["PTV"] & s["SpinalCord"]).any()
    assert not (s["GTV"] & ~s["CTV"]).any() and not (s["CTV"] & ~margin(s["GTV"], 5.0, case.grid.spacing_mm)).any()
    assert not (s["PTV"] & ~margin(s["CTV"], 5.0, case.grid.spacing_mm)).any()
    assert not (s["PTV"] & ~s["Body"]).any()
    lungs = s["Lung_L"] | s["Lung_R"]
    in_lung = (s["GTV"] & lungs).sum() / s["GTV"].sum()
    if side == "central":
        assert not (s["GTV"] & (s["Heart"] | s["Esophagus"] | s["GreatVessels"])).any()
    else:
        assert in_lung > 0.9
        assert not (s["CTV"] & ~s["GTV"] & ~lungs).any()  # the CTV margin stays in the lungs


# CT -----------------------------------------------------------------------
def test_head_neck_ct_values():
    case = hn(3, 0)
    ct, s = case.ct_hu, case.structures
    assert ct.dtype == np.int16
    assert (ct[~s["Body"]] == -1000).all()
    assert ct[s["Lungs"]].mean() < -600
    assert ct[s["Mandible"]].mean() > 500 and (ct[s["Mandible"]] > 300).mean() > 0.9
    assert -20 < ct[s["Brain"]].mean() < 80 and 0 < ct[s["Brain"]].std() < 40  # noisy soft tissue
    assert -20 < ct[s["Parotid_L"]].mean() < 60
    assert (ct[s["Trachea"]] < -900).any()  # air in the airway
    skull = (ct > 700) & (np.arange(ct.shape[0]) > 60)[:, None, None]
    assert skull.sum() > 1000  # cranium


def test_lung_ct_values():
    case = lung("left", 0)
    ct, s = case.ct_hu, case.structures
    assert (ct[~s["Body"]] == -1000).all()
    for name in ("Lung_L", "Lung_R"):
        tissue = s[name] & ~s["GTV"]
        assert -850 <= ct[tissue].mean() <= -750
    assert -20 < ct[s["Heart"]].mean() < 100
    assert -20 < ct[s["GTV"]].mean() < 100
    assert (ct[s["Trachea"]] < -900).any()
    assert (ct[s["Body"]] > 600).sum() > 5000  # spine, ribs, sternum


def test_noise_is_seeded_and_anatomy_independent_of_targets():
    # Same seed: same noise whatever the targets (the CT does not depend on n_ptv).
    np.testing.assert_array_equal(hn(1, 0).ct_hu, hn(3, 0).ct_hu)
    assert 5 < hn(1, 0).ct_hu[hn(1, 0).structures["Brain"]].std() < 20


# Files --------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: hn(3, 1), lambda: lung("right", 2)])
def test_save_load_round_trip_is_exact(tmp_path, make):
    case = make()
    back = Case.load(case.save(tmp_path / "case.npz"))
    assert_cases_equal(case, back)


# Bad arguments ---------------------------------------------------------------
@pytest.mark.parametrize("n_ptv", [0, 4, -1, 2.5, "2", True, None])
def test_bad_n_ptv(n_ptv):
    with pytest.raises(AirtpError, match="n_ptv.*" + repr(n_ptv).replace(".", r"\.")):
        phantoms.head_neck(n_ptv=n_ptv)


@pytest.mark.parametrize("side", ["up", "LEFTISH", "", None, 1])
def test_bad_side(side):
    with pytest.raises(AirtpError, match="side"):
        phantoms.lung(side=side)


@pytest.mark.parametrize("spacing", [(0.0, 2.5, 2.5), (3.0, -2.5, 2.5), (3.0, 2.5, float("nan")), (3.0, 2.5), 2.5,
                                     "abc", (0.1, 0.1, 0.1)])
def test_bad_spacing(spacing):
    for build in (phantoms.head_neck, phantoms.lung):
        with pytest.raises(AirtpError, match="spacing_mm") as info:
            build(spacing_mm=spacing)
        assert repr(spacing) in str(info.value)


@pytest.mark.parametrize("seed", [-1, 1.5, "0"])
def test_bad_seed(seed):
    with pytest.raises(AirtpError, match="seed"):
        phantoms.head_neck(seed=seed)
    with pytest.raises(AirtpError, match="seed"):
        phantoms.lung(seed=seed)
