"""The Eclipse optimizer target (plugins/airtp-eclipse) against a recording ESAPI stand-in.

Eclipse cannot run here: ``RecordingEsapi`` (plugins/airtp-eclipse/tests/
recording_esapi.py) stands in for the ``pyesapi`` module, records every call
and returns plausible values. These tests check the translation (which ESAPI
calls, in which order, with which arguments) and the read-back (dose
resampling, DVHs), not Eclipse's behaviour.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "plugins" / "airtp-eclipse"
for p in (PLUGIN / "src", PLUGIN / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from recording_esapi import Course, Image, InjectedFailure, RecordingEsapi, StructureSet  # noqa: E402

from airtp import Case, Grid, Prescription  # noqa: E402
from airtp import StructureSet as AirtpStructureSet  # noqa: E402
from airtp.beams.beam import equispaced_beams  # noqa: E402
from airtp.dose.engine import dose_influence  # noqa: E402
from airtp.errors import AirtpError  # noqa: E402
from airtp.evaluation.dvh import DVH, compute_dvhs  # noqa: E402
from airtp.objectives import GEUDObjective, MeanObjective, NormalTissueObjective, ObjectiveSet, PointObjective  # noqa: E402
from airtp.optimize import OptimizationError, OptimizationResult, PlanningProblem  # noqa: E402
from airtp.plugins import PluginError  # noqa: E402
from airtp_eclipse import EclipseError, EclipseResult, EclipseTarget  # noqa: E402
from airtp_eclipse.mapping import arc_geometry, dvh_from_curve, jaw_rect_mm  # noqa: E402

ISO_ZYX = (5.0, -10.0, 10.0)  # distinct components: catches a (z, y, x) / (x, y, z) mix-up
ISO_XYZ = (10.0, -10.0, 5.0)
GANTRIES = [0.0, 72.0, 144.0, 216.0, 288.0]


@pytest.fixture(scope="module")
def problem():
    """A water cylinder, target and cord; 5 beams; 5 mm grid (as tests/test_optimize.py)."""
    grid = Grid((16, 40, 40), (5.0, 5.0, 5.0), (-37.5, -97.5, -97.5))
    z, y, x = np.meshgrid(*grid.axes_mm(), indexing="ij")
    body = x**2 + y**2 <= 90**2
    ptv = (x - 10) ** 2 + (y + 10) ** 2 + ((z - 5) / 1.5) ** 2 <= 25**2
    oar = ((x + 30) ** 2 + y**2 <= 12**2) & (np.abs(z) < 30)
    ct = np.where(body, 0, -1000).astype(np.int16)
    case = Case(ct, AirtpStructureSet(grid, {"Body": body, "PTV": ptv, "Cord": oar}), [Prescription("PTV", 60, 30)],
                "generic", "cyl")
    beams = equispaced_beams(list(ISO_ZYX), 5)
    return PlanningProblem(dose_influence(case, beams), case.prescriptions, case.patient_id)


def objectives():
    return ObjectiveSet([
        PointObjective("PTV", "lower", 59.0, 100.0, 300),
        PointObjective("PTV", "upper", 62.0, 0.0, 300),
        PointObjective("Cord", "upper", 20.0, 0.0, 150),
        MeanObjective("Cord", 10.0, 75),
        GEUDObjective("Cord", "upper", 15.0, 8.0, 50),
        PointObjective("Parotid_L", "upper", 26.0, 50.0, 60),  # not in Eclipse: skipped
        NormalTissueObjective(priority=80, distance_from_target_mm=3.0, start_dose_pct=105.0, end_dose_pct=60.0,
                              fall_off_per_mm=0.05),
    ])


def run(problem, esapi=None, objs=None, **kw):
    esapi = esapi or RecordingEsapi()
    kw.setdefault("structure_ids", {"Cord": "SpinalCord"})
    target = EclipseTarget("P1", esapi=esapi, **kw)
    return target.optimize(problem, objs if objs is not None else objectives()), esapi


def structure(esapi, sid):
    ss = esapi.patient.StructureSets[0]
    return next(s for s in ss.Structures if s.Id == sid)


# --------------------------------------------------------------------------- construction, lazy import


def test_constructing_needs_no_pyesapi_and_optimize_raises_plugin_error(problem, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyesapi", None)  # import pyesapi -> ImportError
    target = EclipseTarget("PAT-7")
    assert target.name == "eclipse" and target.esapi is None
    with pytest.raises(PluginError, match="Eclipse workstation") as err:
        target.optimize(problem, objectives())
    assert "PAT-7" in str(err.value) and "PyESAPI" in str(err.value)
    assert isinstance(err.value, AirtpError)


@pytest.mark.parametrize("kw, what", [
    ({"technique": "3d"}, "technique"), ({"plan_id": "A_VERY_LONG_PLAN"}, "13"), ({"max_iterations": 0}, "max_iter"),
    ({"normalization_volume_pct": 0}, "normalization"), ({"dose_unit": "%"}, "unit"),
])
def test_bad_options_are_refused(kw, what):
    with pytest.raises(AirtpError, match=what):
        EclipseTarget("P1", **kw)


# --------------------------------------------------------------------------- the IMRT translation


def test_imrt_call_sequence_and_arguments(problem):
    res, e = run(problem)
    E = RecordingEsapi
    plan = e.plan
    ptv, cord = structure(e, "PTV"), structure(e, "SpinalCord")
    n = len(GANTRIES)
    expected = (
        [("CustomScriptExecutable", "CreateApplication"), ("app", "OpenPatientById"), ("patient", "BeginModifications"),
         ("patient", "AddCourse"), ("course", "Id="), ("course", "AddExternalPlanSetup"), ("plan", "Id="),
         ("plan", "SetPrescription")]
        + [("plan", "AddStaticBeam")] * n
        + [("opt", "AddPointObjective")] * 3 + [("opt", "AddMeanDoseObjective"), ("opt", "AddEUDObjective"),
                                                 ("opt", "AddNormalTissueObjective")]
        + [("opt", "AddBeamSpecificParameter")] * n
        + [("plan", "Optimize"), ("plan", "CalculateLeafMotions"), ("plan", "CalculateDose"),
           ("plan", "PlanNormalizationValue="), ("plan", "GetDoseAtVolume"), ("plan", "PlanNormalizationValue="),
           ("plan", "DoseValuePresentation=")]
        + [("plan", "GetDVHCumulativeData")] * 3
        + [("dose", "np_array_like"), ("app", "SaveModifications"), ("app", "ClosePatient"), ("app", "Dispose")]
    )
    assert e.members() == expected
    assert e.calls_to("CreateApplication") == [("airtp",)]
    assert e.calls_to("OpenPatientById") == [("P1",)]
    assert e.calls_to("Id=") == [("AIRTP",), ("AIRTP1",)]
    assert e.calls_to("AddExternalPlanSetup") == [(e.patient.StructureSets[0],)]
    # prescription: 60 Gy in 30 fractions -> 2 Gy per fraction, 100 %
    assert e.calls_to("SetPrescription") == [(30, E.DoseValue(2.0, "Gy"), 1.0)]
    # beams: machine, jaws fitted to the beamlets, collimator, gantry, couch, isocentre (x, y, z)
    mp = E.ExternalBeamMachineParameters("TrueBeam", "6X", 600, "STATIC", None)
    beams = e.calls_to("AddStaticBeam")
    for args, g, gantry in zip(beams, problem.influence.beamlet_grids, GANTRIES):
        iy, ix = np.nonzero(g.active)
        jaws = E.VRect[float](g.x0_mm + 5 * ix.min() - 2.5, g.y0_mm + 5 * iy.min() - 2.5,
                              g.x0_mm + 5 * ix.max() + 2.5, g.y0_mm + 5 * iy.max() + 2.5)
        assert args == (mp, jaws, 0.0, gantry, 0.0, E.VVector(*ISO_XYZ))
        assert args[1].element_type is float
        assert args[1].X1 < 0 < args[1].X2 and args[1].Y1 < 0 < args[1].Y2
    # objectives with enum members, dose in Gy, volume %, priority
    Op = E.OptimizationObjectiveOperator
    assert e.calls_to("AddPointObjective") == [
        (ptv, Op.Lower, E.DoseValue(59.0, "Gy"), 100.0, 300.0),
        (ptv, Op.Upper, E.DoseValue(62.0, "Gy"), 0.0, 300.0),
        (cord, Op.Upper, E.DoseValue(20.0, "Gy"), 0.0, 150.0),
    ]
    for args in e.calls_to("AddPointObjective") + e.calls_to("AddEUDObjective"):
        assert type(args[1]) is Op  # an enum member, not an int
    assert e.calls_to("AddMeanDoseObjective") == [(cord, E.DoseValue(10.0, "Gy"), 75.0)]
    assert e.calls_to("AddEUDObjective") == [(cord, Op.Upper, E.DoseValue(15.0, "Gy"), 8.0, 50.0)]
    assert e.calls_to("AddNormalTissueObjective") == [(80.0, 3.0, 105.0, 60.0, 0.05)]
    assert e.calls_to("AddBeamSpecificParameter") == [(b, 40.0, 30.0, False) for b in plan.Beams]
    assert e.calls_to("Optimize") == [(E.OptimizationOptionsIMRT(
        1000, E.OptimizationOption.RestartOptimization, E.OptimizationConvergenceOption.TerminateIfConverged, ""),)]
    assert e.calls_to("CalculateLeafMotions") == [()]
    # normalisation: 100 %, read D95 (57 Gy) of the PTV, set 100 * 57 / 60 = 95 %
    assert e.calls_to("GetDoseAtVolume") == [(ptv, 95.0, E.VolumePresentation.Relative, E.DoseValuePresentation.Absolute)]
    assert e.calls_to("PlanNormalizationValue=") == [(100.0,), (pytest.approx(95.0),)]
    assert e.calls_to("GetDVHCumulativeData") == [
        (s, E.DoseValuePresentation.Absolute, E.VolumePresentation.AbsoluteCm3, 0.01)
        for s in (structure(e, "BODY"), ptv, cord)
    ]
    # the result
    assert isinstance(res, EclipseResult) and isinstance(res, OptimizationResult)
    assert res.target == "eclipse" and res.plan_id == "AIRTP1" and res.course_id == "AIRTP"
    assert res.structure_set_id == "CT_1"
    assert res.weights.dtype == np.float32 and res.weights.size == 0
    assert res.objective_history == [0.125] and res.iterations == 87 and res.converged
    assert res.normalization_factor == pytest.approx(60.0 / 57.0)
    assert [r for _, r in res.skipped_objectives] == [
        "structure 'Parotid_L' (Eclipse Id 'Parotid_L') is not in Eclipse structure set 'CT_1' or is empty"]
    assert len(res.fluences) == n and all(f.shape == (4, 6) and f.dtype == np.float32 for f in res.fluences)
    assert [float(f[0, 0]) for f in res.fluences] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert {"setup_s", "optimize_s", "leaf_motions_s", "dose_s", "normalize_s", "readback_s", "total_s"} <= set(res.timings)
    assert "AIRTP/AIRTP1" in res.message


def test_dose_is_resampled_onto_the_problem_grid(problem):
    res, e = run(problem)
    grid = problem.influence.grid
    assert res.dose.shape == grid.shape and res.dose.dtype == np.float32
    scale = 60.0 / 57.0  # the normalisation scales Eclipse's dose
    a, bx, by, bz = e.dose_coef
    z, y, x = grid.axes_mm()
    # known points (index (k, j, i) -> patient (z, y, x)); the dose is linear, so trilinear is exact
    for k, j, i in [(0, 0, 39), (8, 20, 20), (15, 39, 10), (3, 7, 2), (12, 30, 30)]:
        want = (a + bx * x[i] + by * y[j] + bz * z[k]) * scale
        assert res.dose[k, j, i] == pytest.approx(want, rel=1e-5)
    # Eclipse's grid starts at x = -90 mm: the problem voxels at x = -97.5 and -92.5 lie outside -> 0
    assert np.all(res.dose[:, :, :2] == 0) and np.all(res.dose[:, :, 2:] > 0)


def test_dvhs_come_back_as_project_dvh_objects(problem):
    curves = {"PTV": (55.0, 62.0, 80.0), "SpinalCord": (2.0, 18.0, 12.0), "BODY": (0.0, 63.0, 4000.0)}
    res, _ = run(problem, RecordingEsapi(dvh_curves=curves))
    assert set(res.dvhs) == {"Body", "PTV", "Cord"}  # AIRTP names, Eclipse's data
    s = 60.0 / 57.0
    for name, eid in (("PTV", "PTV"), ("Cord", "SpinalCord"), ("Body", "BODY")):
        lo, hi, vol = curves[eid]
        d = res.dvhs[name]
        assert isinstance(d, DVH) and d.name == name and d.bin_width_gy == 0.01
        assert d.volume_cc == pytest.approx(vol)
        assert d.differential_cc.sum() == pytest.approx(vol, rel=1e-6)
        assert d.min_gy == pytest.approx(lo * s) and d.max_gy == pytest.approx(hi * s)
        assert d.mean_gy == pytest.approx((lo + hi) / 2 * s)
        # uniform between lo and hi: D50% is the middle, V(lo + 25 % of the range) is 75 %
        assert d.dose_at_percent(50) == pytest.approx((lo + hi) / 2 * s, abs=0.02)
        assert d.volume_percent_at((lo + 0.25 * (hi - lo)) * s) == pytest.approx(75.0, abs=0.2)
        assert d.voxels == int(np.count_nonzero(problem.structures[name]))


def test_centigray_system(problem):
    res, e = run(problem, RecordingEsapi(unit="cGy"), dose_unit="cGy")
    E = RecordingEsapi
    assert e.calls_to("SetPrescription") == [(30, E.DoseValue(200.0, "cGy"), 1.0)]
    assert e.calls_to("AddPointObjective")[0][2] == E.DoseValue(5900.0, "cGy")
    assert all(a[3] == 1.0 for a in e.calls_to("GetDVHCumulativeData"))  # 1 cGy = 0.01 Gy bins
    assert e.calls_to("PlanNormalizationValue=")[-1] == (pytest.approx(95.0),)
    ref, _ = run(problem)
    np.testing.assert_allclose(res.dose, ref.dose, rtol=1e-5)
    assert res.dvhs["PTV"].dose_at_percent(50) == pytest.approx(ref.dvhs["PTV"].dose_at_percent(50), abs=0.02)


def test_no_normalisation_and_calculation_models(problem):
    res, e = run(problem, normalization_volume_pct=None, calculation_models={"PhotonVolumeDose": "AAA_15606"})
    assert e.calls_to("GetDoseAtVolume") == [] and e.calls_to("PlanNormalizationValue=") == []
    assert res.normalization_factor == 1.0
    assert e.calls_to("SetCalculationModel") == [(RecordingEsapi.CalculationType.PhotonVolumeDose, "AAA_15606")]
    members = e.members()
    assert members.index(("plan", "SetCalculationModel")) < members.index(("plan", "SetPrescription"))


# --------------------------------------------------------------------------- VMAT


def test_vmat_arcs_and_options(problem):
    res, e = run(problem, technique="vmat")
    E = RecordingEsapi
    members = e.members()
    assert ("plan", "AddStaticBeam") not in members and ("opt", "AddBeamSpecificParameter") not in members
    assert ("plan", "CalculateLeafMotions") not in members
    i_opt, i_dose = members.index(("plan", "OptimizeVMAT")), members.index(("plan", "CalculateDose"))
    assert i_opt < i_dose < members.index(("app", "SaveModifications"))
    arcs = e.calls_to("AddArcBeam")
    mp = E.ExternalBeamMachineParameters("TrueBeam", "6X", 600, "ARC", None)
    rects = np.array([jaw_rect_mm(g) for g in problem.influence.beamlet_grids])
    jaws = E.VRect[float](rects[:, 0].min(), rects[:, 1].min(), rects[:, 2].max(), rects[:, 3].max())
    cw, ccw = E.GantryDirection.Clockwise, E.GantryDirection.CounterClockwise
    expected_geometry = [(0.0, 2.0, cw), (72.0, 70.0, ccw), (144.0, 146.0, cw), (216.0, 214.0, ccw), (288.0, 290.0, cw)]
    assert [a[3:6] for a in arcs] == expected_geometry
    assert all(a == (mp, jaws, 0.0, *g, 0.0, E.VVector(*ISO_XYZ)) for a, g in zip(arcs, expected_geometry))
    assert e.calls_to("OptimizeVMAT") == [(E.OptimizationOptionsVMAT(E.OptimizationOption.RestartOptimization, ""),)]
    assert res.iterations == 0 and res.converged
    assert all(f.shape == (0, 0) for f in res.fluences)  # arcs have no optimal fluence


def test_arc_geometry_from_beam_attributes():
    class Arc:
        def __init__(self, start, stop, direction, name):
            self.gantry_deg, self.gantry_stop_deg, self.gantry_direction, self.name = start, stop, direction, name

    arcs = [Arc(181, 179, "cw", "A1"), Arc(179, 181, "ccw", "A2")]
    assert arc_geometry(arcs) == [(181.0, 179.0, "cw"), (179.0, 181.0, "ccw")]
    with pytest.raises(OptimizationError, match="gantry_direction"):
        arc_geometry([Arc(0, 10, "sideways", "A3")])


# --------------------------------------------------------------------------- choices and reuse


def test_existing_course_is_reused_and_plan_id_kept_free(problem):
    e = RecordingEsapi()
    e.patient.Courses.append(Course(e, "AIRTP", plan_ids=["AIRTP1", "airtp1_2"]))
    e.calls.clear()
    res, e = run(problem, e)
    assert ("patient", "AddCourse") not in e.members()
    assert e.calls_to("Id=") == [("AIRTP1_3",)]
    assert res.plan_id == "AIRTP1_3"


def test_structure_set_choice(problem):
    far = Image(origin=(300.0, 300.0, 300.0))  # does not hold the isocentre
    sets = [StructureSet("CT_old", ["BODY", "SpinalCord"]),  # no PTV
            StructureSet("CT_far", ["BODY", "PTV", "SpinalCord"], image=far),
            StructureSet("CT_few", ["BODY", "PTV"]),  # fewer objective structures
            StructureSet("CT_1", ["BODY", "PTV", "SpinalCord"])]
    res, e = run(problem, RecordingEsapi(structure_sets=sets))
    assert res.structure_set_id == "CT_1" and e.calls_to("AddExternalPlanSetup") == [(sets[3],)]
    res, e = run(problem, RecordingEsapi(structure_sets=sets), structure_set_id="CT_few")
    assert res.structure_set_id == "CT_few"
    assert any("SpinalCord" in r for _, r in res.skipped_objectives)
    with pytest.raises(EclipseError, match="no structure set 'CT_9'"):
        run(problem, RecordingEsapi(structure_sets=sets), structure_set_id="CT_9")
    with pytest.raises(EclipseError, match="no structure set holds the target"):
        run(problem, RecordingEsapi(structure_sets=sets[:2]))


def test_empty_structure_counts_as_absent(problem):
    sets = [StructureSet("CT_1", ["BODY", "PTV", "SpinalCord"], empty={"SpinalCord"})]
    res, e = run(problem, RecordingEsapi(structure_sets=sets))
    assert len(e.calls_to("AddPointObjective")) == 2 and e.calls_to("AddMeanDoseObjective") == []
    assert sum("SpinalCord" in r for _, r in res.skipped_objectives) == 3
    assert "Cord" not in res.dvhs


def test_no_target_objective_left_fails_before_any_change(problem):
    objs = ObjectiveSet([PointObjective("PTV_boost", "lower", 66.0, 100.0, 300), MeanObjective("Cord", 10.0, 75)])
    e = RecordingEsapi()
    with pytest.raises(OptimizationError, match="no usable target objective.*PTV_boost"):
        run(problem, e, objs)
    assert e.members() == [("CustomScriptExecutable", "CreateApplication"), ("app", "OpenPatientById"),
                           ("app", "ClosePatient"), ("app", "Dispose")]


def test_absent_prescribed_target_fails_before_any_change(problem):
    sets = [StructureSet("CT_x", ["BODY", "CTV"])]
    e = RecordingEsapi(structure_sets=sets)
    objs = ObjectiveSet([PointObjective("CTV", "lower", 58.0, 100.0, 300)])
    with pytest.raises(EclipseError, match="cannot normalise: prescribed target 'PTV'"):
        run(problem, e, objs, structure_set_id="CT_x")
    assert ("patient", "BeginModifications") not in e.members() and e.members()[-1] == ("app", "Dispose")
    res, e = run(problem, RecordingEsapi(structure_sets=sets), objs, structure_set_id="CT_x",
                 normalization_volume_pct=None)
    assert res.normalization_factor == 1.0 and len(e.calls_to("AddPointObjective")) == 1


def test_unknown_patient_and_read_only_system(problem):
    e = RecordingEsapi(patient_id="OTHER")
    with pytest.raises(EclipseError, match="no patient 'P1'"):
        run(problem, e)
    assert e.members()[-1] == ("app", "Dispose") and ("app", "ClosePatient") not in e.members()
    e = RecordingEsapi(can_modify=False)
    with pytest.raises(EclipseError, match="does not allow this script to modify patient 'P1'"):
        run(problem, e)
    assert ("patient", "BeginModifications") not in e.members() and e.members()[-1] == ("app", "Dispose")


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize("esapi_kw, step", [
    ({"success": {"Optimize": False}}, "Optimize"),
    ({"success": {"CalculateLeafMotions": False}}, "CalculateLeafMotions"),
    ({"raise_on": {"AddStaticBeam"}}, "AddStaticBeam"),
    ({"raise_on": {"AddPointObjective"}}, "AddPointObjective"),
    ({"raise_on": {"SaveModifications"}}, "SaveModifications"),
    ({"dose_failures": 3}, "CalculateDose"),
])
def test_failed_step_raises_naming_plan_and_step_and_still_disposes(problem, esapi_kw, step):
    e = RecordingEsapi(**esapi_kw)
    with pytest.raises(EclipseError) as err:
        run(problem, e)
    msg = str(err.value)
    assert step in msg and "AIRTP/AIRTP1" in msg and "P1" in msg
    assert isinstance(err.value, AirtpError)
    if "raise_on" in esapi_kw:
        assert isinstance(err.value.__cause__, InjectedFailure)
    members = e.members()
    assert members[-2:] == [("app", "ClosePatient"), ("app", "Dispose")]
    assert ("app", "SaveModifications") not in members or step == "SaveModifications"


def test_calculate_dose_is_retried(problem):
    res, e = run(problem, RecordingEsapi(dose_failures=2))
    assert len(e.calls_to("CalculateDose")) == 3 and "3 attempt" in res.message
    e = RecordingEsapi(dose_failures=3)
    with pytest.raises(EclipseError, match="CalculateDose failed .* after 3 attempt"):
        run(problem, e)
    assert len(e.calls_to("CalculateDose")) == 3


def test_create_application_failure_mentions_one_application_per_process(problem):
    e = RecordingEsapi(raise_on={"CreateApplication"})
    with pytest.raises(EclipseError, match="one Application per process"):
        run(problem, e)
    assert e.members() == [("CustomScriptExecutable", "CreateApplication")]


# --------------------------------------------------------------------------- mapping helpers


def test_dvh_from_curve_reproduces_a_project_dvh():
    rng = np.random.default_rng(3)
    dose = rng.gamma(9.0, 5.0, size=(6, 10, 10)).astype(np.float32)
    mask = np.zeros(dose.shape, bool)
    mask[1:5, 2:8, 3:9] = True
    ref = compute_dvhs(dose, {"S": mask}, voxel_volume_cc=0.125)["S"]
    edges = ref.edges_gy()
    back = dvh_from_curve("S", edges, ref.cumulative_cc(), min_gy=ref.min_gy, max_gy=ref.max_gy,
                          mean_gy=ref.mean_gy, voxels=ref.voxels)
    assert back.volume_cc == pytest.approx(ref.volume_cc)
    n = back.differential_cc.size  # the reference has bins up to the whole array's maximum: zeros beyond
    np.testing.assert_allclose(back.differential_cc, ref.differential_cc[:n], atol=1e-9)
    assert not ref.differential_cc[n:].any()
    for p in (2, 50, 95, 98):
        assert back.dose_at_percent(p) == pytest.approx(ref.dose_at_percent(p), abs=1e-6)


def test_jaw_rect_fits_active_beamlets(problem):
    g = problem.influence.beamlet_grids[0]
    x1, y1, x2, y2 = jaw_rect_mm(g)
    cx, cy = g.centres()
    assert x1 == pytest.approx(cx.min() - 2.5) and x2 == pytest.approx(cx.max() + 2.5)
    assert y1 == pytest.approx(cy.min() - 2.5) and y2 == pytest.approx(cy.max() + 2.5)


# --------------------------------------------------------------------------- the installed distribution


def test_installed_distribution_registers_the_entry_point(tmp_path):
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed: cannot build the airtp-eclipse distribution")
    import setuptools

    version = tuple(int(p) for p in setuptools.__version__.split(".")[:2] if p.isdigit())
    if version < (70, 1) and importlib.util.find_spec("wheel") is None:
        pytest.skip(f"setuptools {setuptools.__version__} builds wheels only with the 'wheel' package, which is "
                    "not installed (install wheel or setuptools>=70.1 to run this test)")
    if importlib.util.find_spec("pyesapi") is not None:
        pytest.skip("pyesapi is installed here: the missing-PyESAPI error cannot be checked")
    src = tmp_path / "src"
    shutil.copytree(PLUGIN, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                          "--no-index", "--quiet", "--target", str(target), str(src)],
                         capture_output=True, text=True, timeout=120)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    script = textwrap.dedent(f"""
        import airtp_eclipse
        from airtp import plugins
        from airtp.optimize import get_optimizer
        from airtp.plugins import PluginError
        assert airtp_eclipse.__file__.startswith({str(target)!r}), airtp_eclipse.__file__
        assert "eclipse" in plugins.available("airtp.optimizers"), plugins.available("airtp.optimizers")
        t = get_optimizer("eclipse", patient_id="P1")
        assert t.name == "eclipse"
        try:
            t.optimize(None, [])
        except PluginError as exc:
            print("PLUGIN-ERROR:", exc)
        else:
            raise SystemExit("no PluginError")
    """)
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "PLUGIN-ERROR:" in out.stdout and "Eclipse workstation" in out.stdout and "'P1'" in out.stdout
