"""The Eclipse optimizer target: AIRTP's planning problem optimised by Eclipse's Photon Optimizer.

:class:`EclipseTarget` drives the Eclipse Scripting API (ESAPI) through
PyESAPI. For one call of :meth:`EclipseTarget.optimize` it:

1. creates the ESAPI application (``CustomScriptExecutable.CreateApplication``)
   and opens the patient (``OpenPatientById``);
2. picks the structure set: the one with Id ``structure_set_id`` if given,
   else among the structure sets whose image holds every beam isocentre and
   that contain every prescribed target, the one with the most objective
   structures (the first on ties); resolves every objective's structure
   (``structure_ids`` maps AIRTP names to Eclipse Ids; otherwise the same
   Id, then a unique case-insensitive match; empty structures count as
   absent). Objectives on absent structures are skipped and reported; with
   no objective left on a target the call fails before anything is changed;
3. ``BeginModifications``; finds the course ``course_id`` or adds it; adds an
   external plan (``plan_id``; when the course already has a plan with that
   Id a free Id ``<plan_id[:10]>_<n>`` is used, nothing is removed), sets the
   calculation models given in ``calculation_models`` and the prescription
   ``SetPrescription(fractions, DoseValue(dose per fraction), 1.0)`` of the
   highest prescription;
4. adds the beams of ``problem.influence.beams``: IMRT, one static field per
   beam with jaws fitted to its active beamlets; VMAT, one arc per beam (see
   :func:`airtp_eclipse.mapping.arc_geometry`) with jaws fitted to the union
   of all beams' beamlets. Isocentres go to ``VVector(x, y, z)``;
5. adds the objectives (esapi.md section 8.3): point -> AddPointObjective,
   mean -> AddMeanDoseObjective, gEUD -> AddEUDObjective, normal tissue ->
   AddNormalTissueObjective (one only; Eclipse applies it to the whole body),
   and for IMRT the smoothing -> AddBeamSpecificParameter per beam;
6. optimises (IMRT: ``Optimize(OptimizationOptionsIMRT(max_iterations,
   RestartOptimization, TerminateIfConverged, mlc_id))`` then
   ``CalculateLeafMotions()``; VMAT: ``OptimizeVMAT(OptimizationOptionsVMAT(
   RestartOptimization, mlc_id))``), then ``CalculateDose()`` (up to
   ``dose_attempts`` tries, as public scripts do);
7. normalises: with ``PlanNormalizationValue = 100`` (no scaling) it reads
   ``d = GetDoseAtVolume(target, normalization_volume_pct, Relative,
   Absolute)`` of the highest-dose target and sets ``PlanNormalizationValue =
   100 * d / Rx``; Eclipse then scales the dose by ``100 / value = Rx / d``,
   so the target receives Rx at that volume (``normalization_factor`` in the
   result is ``Rx / d``);
8. reads back the DVHs (``GetDVHCumulativeData``, absolute dose, cm^3,
   0.01 Gy bins) of every AIRTP structure found in Eclipse, the dose
   (``plan.Dose.np_array_like()``, resampled trilinearly onto
   ``problem.influence.grid``) and, where Eclipse has one, each beam's
   optimal fluence (``GetOptimalFluence().GetPixels()``, Eclipse's 2.5 mm
   pixel grid in the order Eclipse returns it; an empty (0, 0) array for a
   beam without one, e.g. VMAT arcs);
9. ``SaveModifications``, ``ClosePatient``; ``Dispose`` always (``finally``).
   On any failure nothing is saved; the patient is closed and the
   application disposed.

Every ESAPI call that returns a result has its ``.Success`` checked; a
failure or an exception raises :class:`~airtp_eclipse.mapping.EclipseError`
(an :class:`~airtp.optimize.OptimizationError`) naming the plan and step.

Requirements: a Windows Eclipse workstation or TBOX with PyESAPI; writes need
a non-clinical (research) Eclipse or an approved script. ESAPI allows one
Application per process and single-threaded (STA) access: call
:meth:`optimize` once per process, from the main thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from airtp.evaluation.dvh import DVH
from airtp.objectives import GEUDObjective, MeanObjective, NormalTissueObjective, PointObjective
from airtp.optimize.problem import OptimizationError, PlanningProblem
from airtp.optimize.target import OptimizationResult
from airtp.plugins import PluginError

from airtp_eclipse.mapping import (
    EclipseError,
    arc_geometry,
    dose_value_gy,
    dvh_from_curve,
    eclipse_dose_to_grid,
    isocenter_xyz,
    jaw_rect_mm,
    to_numpy_2d,
    unit_to_gy,
    union_rect_mm,
)

__all__ = ["EclipseTarget", "EclipseResult", "EclipseError", "TECHNIQUES"]

TECHNIQUES = ("imrt", "vmat")
#: Longest plan Id Eclipse accepts in the versions public scripts target (esapi.md section 2.4).
MAX_PLAN_ID = 13
DVH_BIN_GY = 0.01


@dataclass
class EclipseResult(OptimizationResult):
    """An :class:`~airtp.optimize.OptimizationResult` plus what Eclipse reports back.

    ``weights`` is empty (Eclipse's beamlets are not AIRTP's); ``dose`` is
    Eclipse's dose on the problem grid; ``dvhs`` are Eclipse's DVHs by AIRTP
    structure name; ``plan_id``, ``course_id`` and ``structure_set_id`` name
    the plan written.
    """

    dvhs: dict = field(default_factory=dict)
    plan_id: str = ""
    course_id: str = ""
    structure_set_id: str = ""


def _load_pyesapi(patient_id: str):
    try:
        import pyesapi  # noqa: PLC0415 - lazy: only on an Eclipse workstation
    except Exception as exc:  # noqa: BLE001 - pyesapi raises plain Exception when the Eclipse DLLs are missing
        raise PluginError(
            f"the Eclipse optimizer target needs an Eclipse workstation (Windows Eclipse client or TBOX) with "
            f"PyESAPI installed (pip install pyesapi); cannot optimise patient '{patient_id}' here "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    return pyesapi


def _find(items, key: str, attr: str = "Id"):
    """The item of `items` whose `attr` is `key`, else the unique case-insensitive match, else None."""
    items = list(items or [])
    for it in items:
        if getattr(it, attr) == key:
            return it
    low = [it for it in items if str(getattr(it, attr)).lower() == key.lower()]
    return low[0] if len(low) == 1 else None


class EclipseTarget:
    """Optimizer target that plans in Eclipse (Photon Optimizer + Eclipse dose) through PyESAPI.

    Parameters
    ----------
    patient_id : str
        Patient Id in Eclipse (ARIA).
    course_id, plan_id : str
        Course (reused when it exists) and plan Id (at most 13 characters).
    machine_id, energy, dose_rate :
        ``ExternalBeamMachineParameters`` of every beam.
    technique : 'imrt' or 'vmat'
        Static fields + IMRT optimisation + leaf motions, or arcs + VMAT optimisation.
    mlc_id : str
        MLC Id for the optimizer; "" lets Eclipse choose (one MLC only).
    max_iterations : int
        IMRT optimizer iterations (the VMAT optimizer runs its own multi-resolution levels).
    smoothing : (float, float)
        IMRT X and Y smoothing per beam (Eclipse's defaults 40, 30).
    normalization_volume_pct : float or None
        The highest-dose target gets its prescription to this % of its volume; None: no normalisation.
    structure_ids : dict, optional
        AIRTP structure name -> Eclipse structure Id, for names that differ.
    structure_set_id : str, optional
        Eclipse structure set to plan on (default: chosen as the module doc says).
    dose_unit : 'Gy' or 'cGy'
        Unit of the DoseValues written (must be Eclipse's configured unit).
    calculation_models : dict, optional
        ``CalculationType`` member name -> model name (e.g.
        ``{"PhotonVolumeDose": "AAA_15606"}``), set on the new plan; default:
        Eclipse's defaults.
    dose_attempts : int
        Tries of ``CalculateDose`` (default 3).
    esapi : module, optional
        The ESAPI namespace (default: ``import pyesapi`` inside :meth:`optimize`).
    """

    name = "eclipse"

    def __init__(self, patient_id: str, course_id: str = "AIRTP", plan_id: str = "AIRTP1",
                 machine_id: str = "TrueBeam", energy: str = "6X", dose_rate: int = 600, technique: str = "imrt",
                 mlc_id: str = "", max_iterations: int = 1000, smoothing=(40.0, 30.0),
                 normalization_volume_pct: float | None = 95.0, structure_ids: dict | None = None,
                 structure_set_id: str | None = None, dose_unit: str = "Gy", calculation_models: dict | None = None,
                 dose_attempts: int = 3, esapi=None):
        if not isinstance(patient_id, str) or not patient_id.strip():
            raise PluginError("the Eclipse optimizer target needs a patient_id")
        technique = str(technique).lower()
        if technique not in TECHNIQUES:
            raise PluginError(f"Eclipse target: technique must be one of {TECHNIQUES}, got {technique!r}")
        if not course_id or not plan_id:
            raise PluginError("Eclipse target: course_id and plan_id must not be empty")
        if len(plan_id) > MAX_PLAN_ID:
            raise PluginError(f"Eclipse target: plan Id '{plan_id}' is longer than {MAX_PLAN_ID} characters")
        if int(max_iterations) < 1:
            raise PluginError(f"Eclipse target: max_iterations must be >= 1, got {max_iterations}")
        if int(dose_attempts) < 1:
            raise PluginError(f"Eclipse target: dose_attempts must be >= 1, got {dose_attempts}")
        if normalization_volume_pct is not None and not (0.0 < float(normalization_volume_pct) <= 100.0):
            raise PluginError(f"Eclipse target: normalization_volume_pct must be in (0, 100], got {normalization_volume_pct}")
        unit_to_gy(dose_unit)  # validates
        self.patient_id = patient_id
        self.course_id = course_id
        self.plan_id = plan_id
        self.machine_id = machine_id
        self.energy = energy
        self.dose_rate = int(dose_rate)
        self.technique = technique
        self.mlc_id = mlc_id
        self.max_iterations = int(max_iterations)
        self.smoothing = tuple(float(s) for s in smoothing)
        self.normalization_volume_pct = None if normalization_volume_pct is None else float(normalization_volume_pct)
        self.structure_ids = dict(structure_ids or {})
        self.structure_set_id = structure_set_id
        self.dose_unit = "cGy" if dose_unit.strip().lower() == "cgy" else "Gy"
        self.calculation_models = dict(calculation_models or {})
        self.dose_attempts = int(dose_attempts)
        self.esapi = esapi

    # ------------------------------------------------------------------ helpers
    def _dv(self, gy: float):
        """A DoseValue of `gy` Gy in the configured unit."""
        factor = 1.0 / unit_to_gy(self.dose_unit)
        return self._api.DoseValue(float(gy) * factor, self.dose_unit)

    def _where(self) -> str:
        return f"patient '{self.patient_id}', plan '{self._course_id}/{self._plan_id}'"

    def _call(self, step: str, fn, *args, check: bool = False):
        """Run one ESAPI call; exceptions and (with `check`) ``.Success == False`` raise EclipseError."""
        try:
            out = fn(*args)
        except EclipseError:
            raise
        except Exception as exc:  # noqa: BLE001 - .NET exceptions arrive as arbitrary Python types
            raise EclipseError(f"Eclipse {step} failed for {self._where()}: {type(exc).__name__}: {exc}") from exc
        if check and (out is None or not bool(getattr(out, "Success", False))):
            raise EclipseError(f"Eclipse {step} failed for {self._where()} (Success is false){_logs(out)}")
        return out

    def _eclipse_id(self, problem: PlanningProblem, name: str) -> str:
        if name in self.structure_ids:
            return self.structure_ids[name]
        found = problem.structures.find(name)
        if found is not None and found in self.structure_ids:
            return self.structure_ids[found]
        return found or name

    @staticmethod
    def _structure(ss, eclipse_id: str):
        s = _find(getattr(ss, "Structures", []), eclipse_id)
        if s is None or bool(getattr(s, "IsEmpty", False)):
            return None
        return s

    # ------------------------------------------------------------------ selection
    def _pick_structure_set(self, patient, problem: PlanningProblem, objectives):
        sets = list(getattr(patient, "StructureSets", []) or [])
        if self.structure_set_id is not None:
            ss = _find(sets, self.structure_set_id)
            if ss is None:
                have = ", ".join(str(s.Id) for s in sets) or "none"
                raise EclipseError(f"patient '{self.patient_id}' has no structure set '{self.structure_set_id}' "
                                   f"(has: {have})")
            return ss
        targets = [self._eclipse_id(problem, p.structure) for p in problem.prescriptions]
        wanted = {self._eclipse_id(problem, o.structure) for o in objectives if not isinstance(o, NormalTissueObjective)}
        isos = [isocenter_xyz(b) for b in problem.influence.beams]
        best, best_n = None, -1
        for ss in sets:
            if not all(self._structure(ss, t) is not None for t in targets):
                continue
            if not _image_holds(getattr(ss, "Image", None), isos):
                continue
            n = sum(self._structure(ss, w) is not None for w in wanted)
            if n > best_n:
                best, best_n = ss, n
        if best is None:
            raise EclipseError(
                f"patient '{self.patient_id}': no structure set holds the target(s) {', '.join(targets)} with an "
                f"image containing the isocentre(s) (structure sets: {', '.join(str(s.Id) for s in sets) or 'none'}); "
                "give structure_set_id= or structure_ids="
            )
        return best

    def _bind_objectives(self, ss, problem: PlanningProblem, objectives):
        bound, skipped, nto = [], [], None
        for obj in objectives:
            if isinstance(obj, NormalTissueObjective):
                if nto is not None:
                    skipped.append((repr(obj), "Eclipse allows one normal-tissue objective; the first one is used"))
                else:
                    nto = obj
                continue
            if not isinstance(obj, (PointObjective, MeanObjective, GEUDObjective)):
                skipped.append((repr(obj), f"objective type {type(obj).__name__} has no Eclipse equivalent"))
                continue
            eid = self._eclipse_id(problem, obj.structure)
            s = self._structure(ss, eid)
            if s is None:
                skipped.append((repr(obj), f"structure '{obj.structure}' (Eclipse Id '{eid}') is not in Eclipse "
                                           f"structure set '{ss.Id}' or is empty"))
                continue
            bound.append((obj, s))
        if not any(problem.is_target(o.structure) for o, _ in bound):
            reasons = "; ".join(r for _, r in skipped) or "no objective names a target"
            raise OptimizationError(f"case '{problem.case_id}' (Eclipse patient '{self.patient_id}'): "
                                    f"no usable target objective ({reasons})")
        if nto is not None:
            bound.append((nto, None))
        return bound, skipped

    # ------------------------------------------------------------------ steps
    def _course(self, patient):
        course = _find(getattr(patient, "Courses", []), self.course_id)
        if course is not None:
            return course
        if hasattr(patient, "CanAddCourse") and not patient.CanAddCourse():
            raise EclipseError(f"patient '{self.patient_id}': Eclipse does not allow adding a course")
        course = self._call("AddCourse", patient.AddCourse)
        try:
            course.Id = self.course_id
        except Exception as exc:  # noqa: BLE001
            raise EclipseError(f"patient '{self.patient_id}': cannot set course Id '{self.course_id}': {exc}") from exc
        return course

    def _free_plan_id(self, course) -> str:
        taken = {str(p.Id).lower() for p in (getattr(course, "PlanSetups", []) or [])}
        if self.plan_id.lower() not in taken:
            return self.plan_id
        for n in range(2, 1000):
            suffix = f"_{n}"
            pid = self.plan_id[: MAX_PLAN_ID - len(suffix)] + suffix
            if pid.lower() not in taken:
                return pid
        raise EclipseError(f"patient '{self.patient_id}': no free plan Id like '{self.plan_id}' in course '{course.Id}'")

    def _add_beams(self, plan, problem: PlanningProblem):
        E = self._api
        inf = problem.influence
        rects = [jaw_rect_mm(g) for g in inf.beamlet_grids]
        out = []
        if self.technique == "imrt":
            mp = E.ExternalBeamMachineParameters(self.machine_id, self.energy, self.dose_rate, "STATIC", None)
            for b, r in zip(inf.beams, rects):
                beam = self._call(f"AddStaticBeam ({b.name})", plan.AddStaticBeam, mp, E.VRect[float](*r),
                                  float(b.collimator_deg) % 360.0, float(b.gantry_deg) % 360.0,
                                  float(b.couch_deg) % 360.0, E.VVector(*isocenter_xyz(b)))
                out.append(beam)
        else:
            mp = E.ExternalBeamMachineParameters(self.machine_id, self.energy, self.dose_rate, "ARC", None)
            jaws = union_rect_mm(rects)
            directions = {"cw": E.GantryDirection.Clockwise, "ccw": E.GantryDirection.CounterClockwise}
            for b, (start, stop, d) in zip(inf.beams, arc_geometry(inf.beams)):
                beam = self._call(f"AddArcBeam ({b.name})", plan.AddArcBeam, mp, E.VRect[float](*jaws),
                                  float(b.collimator_deg) % 360.0, start, stop, directions[d],
                                  float(b.couch_deg) % 360.0, E.VVector(*isocenter_xyz(b)))
                out.append(beam)
        return out

    def _add_objectives(self, plan, bound, beams):
        E = self._api
        ops = {"upper": E.OptimizationObjectiveOperator.Upper, "lower": E.OptimizationObjectiveOperator.Lower}
        opt = plan.OptimizationSetup
        for obj, s in bound:
            if isinstance(obj, PointObjective):
                self._call(f"AddPointObjective ({obj.structure})", opt.AddPointObjective, s, ops[obj.operator],
                           self._dv(obj.dose_gy), float(obj.volume_pct), float(obj.priority))
            elif isinstance(obj, MeanObjective):
                self._call(f"AddMeanDoseObjective ({obj.structure})", opt.AddMeanDoseObjective, s,
                           self._dv(obj.dose_gy), float(obj.priority))
            elif isinstance(obj, GEUDObjective):
                self._call(f"AddEUDObjective ({obj.structure})", opt.AddEUDObjective, s, ops[obj.operator],
                           self._dv(obj.dose_gy), float(obj.a), float(obj.priority))
            elif isinstance(obj, NormalTissueObjective):
                self._call("AddNormalTissueObjective", opt.AddNormalTissueObjective, float(obj.priority),
                           float(obj.distance_from_target_mm), float(obj.start_dose_pct), float(obj.end_dose_pct),
                           float(obj.fall_off_per_mm))
        if self.technique == "imrt":
            sx, sy = self.smoothing
            for beam in beams:
                self._call(f"AddBeamSpecificParameter ({beam.Id})", opt.AddBeamSpecificParameter, beam, sx, sy, False)

    def _calculate_dose(self, plan) -> int:
        last = None
        for attempt in range(1, self.dose_attempts + 1):
            try:
                res = plan.CalculateDose()
            except Exception as exc:  # noqa: BLE001
                last = f"{type(exc).__name__}: {exc}"
                continue
            if res is not None and bool(getattr(res, "Success", False)):
                return attempt
            last = f"Success is false{_logs(res)}"
        raise EclipseError(f"Eclipse CalculateDose failed for {self._where()} after {self.dose_attempts} attempt(s) "
                           f"({last})")

    def _normalize(self, plan, target, rx_gy: float) -> float:
        """Set PlanNormalizationValue so `target` gets `rx_gy` at the volume; returns the dose factor Rx / d."""
        E = self._api
        self._call("PlanNormalizationValue = 100", setattr, plan, "PlanNormalizationValue", 100.0)
        dv = self._call("GetDoseAtVolume", plan.GetDoseAtVolume, target, float(self.normalization_volume_pct),
                        E.VolumePresentation.Relative, E.DoseValuePresentation.Absolute)
        d = dose_value_gy(dv)
        if not np.isfinite(d) or d <= 0:
            raise EclipseError(f"cannot normalise {self._where()}: the target gets {d} Gy at "
                               f"{self.normalization_volume_pct} % of its volume")
        value = 100.0 * d / rx_gy
        if not (0.01 <= value <= 10000.0):
            raise EclipseError(f"cannot normalise {self._where()}: normalisation value {value:.4g} % is outside "
                               "0.01-10000 %")
        self._call("PlanNormalizationValue", setattr, plan, "PlanNormalizationValue", value)
        return rx_gy / d

    def _read_dvhs(self, plan, ss, problem: PlanningProblem) -> dict[str, DVH]:
        E = self._api
        to_gy = unit_to_gy(self.dose_unit)
        out = {}
        for name in list(problem.structures):
            s = self._structure(ss, self._eclipse_id(problem, name))
            if s is None:
                continue
            data = self._call(f"GetDVHCumulativeData ({name})", plan.GetDVHCumulativeData, s,
                              E.DoseValuePresentation.Absolute, E.VolumePresentation.AbsoluteCm3, DVH_BIN_GY / to_gy)
            if data is None:
                continue  # "null if DVH calculation was not possible"
            pts = list(data.CurveData)
            doses = [dose_value_gy(p.DoseValue) for p in pts]
            vols = [float(p.Volume) for p in pts]
            mask = problem.structures[name]
            out[name] = dvh_from_curve(
                name, doses, vols, volume_cc=float(data.Volume), min_gy=dose_value_gy(data.MinDose),
                max_gy=dose_value_gy(data.MaxDose), mean_gy=dose_value_gy(data.MeanDose),
                voxels=int(np.count_nonzero(mask)), bin_width_gy=DVH_BIN_GY,
            )
        return out

    def _read_dose(self, plan, problem: PlanningProblem) -> np.ndarray:
        dose = plan.Dose
        if dose is None:
            raise EclipseError(f"Eclipse returned no dose for {self._where()}")
        arr = self._call("Dose.np_array_like", dose.np_array_like)
        unit = None
        probe = getattr(dose, "DoseMax3D", None)
        if probe is not None:
            unit = getattr(probe, "UnitAsString", None)
        to_gy = unit_to_gy(unit) if unit else unit_to_gy(self.dose_unit)
        return eclipse_dose_to_grid(arr, dose, problem.influence.grid, to_gy)

    @staticmethod
    def _read_fluences(beams) -> list[np.ndarray]:
        out = []
        for beam in beams:
            try:
                f = beam.GetOptimalFluence() if hasattr(beam, "GetOptimalFluence") else None
                out.append(to_numpy_2d(f.GetPixels()) if f is not None else np.zeros((0, 0), np.float32))
            except Exception:  # noqa: BLE001 - no optimal fluence (e.g. VMAT arcs): reported as empty
                out.append(np.zeros((0, 0), np.float32))
        return out

    # ------------------------------------------------------------------ API
    def optimize(self, problem: PlanningProblem, objectives, start=None) -> EclipseResult:
        """Plan `problem` in Eclipse with `objectives`; `start` is ignored (Eclipse's beamlets are not ours)."""
        E = self.esapi if self.esapi is not None else _load_pyesapi(self.patient_id)
        self._api = E
        self._course_id, self._plan_id = self.course_id, self.plan_id
        objectives = list(objectives)
        t0 = time.perf_counter()
        timings: dict = {}
        app = patient = None
        try:
            app = self._call("CreateApplication (ESAPI allows one Application per process)",
                             E.CustomScriptExecutable.CreateApplication, "airtp")
            patient = self._call("OpenPatientById", app.OpenPatientById, self.patient_id)
            if patient is None:
                raise EclipseError(f"Eclipse has no patient '{self.patient_id}'")
            ss = self._pick_structure_set(patient, problem, objectives)
            bound, skipped = self._bind_objectives(ss, problem, objectives)
            rx = problem.highest_target()
            rx_structure = self._structure(ss, self._eclipse_id(problem, rx.structure))
            if rx_structure is None and self.normalization_volume_pct is not None:
                raise EclipseError(f"cannot normalise: prescribed target '{rx.structure}' is not in (or empty in) "
                                   f"Eclipse structure set '{ss.Id}' of patient '{self.patient_id}'")
            if hasattr(patient, "CanModifyData") and not patient.CanModifyData():
                raise EclipseError(f"Eclipse does not allow this script to modify patient '{self.patient_id}' "
                                   "(scripts write only on a non-clinical/research system or when approved)")
            self._call("BeginModifications", patient.BeginModifications)
            course = self._course(patient)
            self._plan_id = self._free_plan_id(course)
            if hasattr(course, "CanAddPlanSetup") and not course.CanAddPlanSetup(ss):
                raise EclipseError(f"Eclipse does not allow adding a plan on structure set '{ss.Id}' "
                                   f"for {self._where()}")
            plan = self._call("AddExternalPlanSetup", course.AddExternalPlanSetup, ss)
            self._call("plan Id", setattr, plan, "Id", self._plan_id)
            for ctype, model in self.calculation_models.items():
                self._call(f"SetCalculationModel ({ctype})", plan.SetCalculationModel,
                           getattr(E.CalculationType, ctype), model)
            self._call("SetPrescription", plan.SetPrescription, int(rx.fractions), self._dv(rx.dose_per_fraction_gy),
                       1.0)
            beams = self._add_beams(plan, problem)
            self._add_objectives(plan, bound, beams)
            t1 = time.perf_counter()
            timings["setup_s"] = t1 - t0

            if self.technique == "imrt":
                options = E.OptimizationOptionsIMRT(self.max_iterations, E.OptimizationOption.RestartOptimization,
                                                    E.OptimizationConvergenceOption.TerminateIfConverged, self.mlc_id)
                opt = self._call("Optimize", plan.Optimize, options, check=True)
            else:
                options = E.OptimizationOptionsVMAT(E.OptimizationOption.RestartOptimization, self.mlc_id)
                opt = self._call("OptimizeVMAT", plan.OptimizeVMAT, options, check=True)
            t2 = time.perf_counter()
            timings["optimize_s"] = t2 - t1
            iterations = int(getattr(opt, "NumberOfIMRTOptimizerIterations", 0) or 0)
            objective_value = float(getattr(opt, "TotalObjectiveFunctionValue", float("nan")))
            if self.technique == "imrt":
                self._call("CalculateLeafMotions", plan.CalculateLeafMotions, check=True)
                timings["leaf_motions_s"] = time.perf_counter() - t2
            t3 = time.perf_counter()
            attempts = self._calculate_dose(plan)
            t4 = time.perf_counter()
            timings["dose_s"] = t4 - t3
            factor = 1.0
            if self.normalization_volume_pct is not None:
                factor = self._normalize(plan, rx_structure, rx.dose_gy)
            t5 = time.perf_counter()
            timings["normalize_s"] = t5 - t4
            try:
                plan.DoseValuePresentation = E.DoseValuePresentation.Absolute
            except Exception:  # noqa: BLE001 - read-only in some versions; units are checked on read anyway
                pass
            dvhs = self._read_dvhs(plan, ss, problem)
            dose = self._read_dose(plan, problem)
            fluences = self._read_fluences(beams)
            t6 = time.perf_counter()
            timings["readback_s"] = t6 - t5
            self._call("SaveModifications", app.SaveModifications)
            t7 = time.perf_counter()
            timings["save_s"] = t7 - t6
            timings["total_s"] = t7 - t0
            timings["history_s"] = [t2 - t0]
            converged = self.technique == "vmat" or iterations < self.max_iterations
            message = (
                f"Eclipse {self.technique.upper()} plan '{self.course_id}/{self._plan_id}' on structure set "
                f"'{ss.Id}' of patient '{self.patient_id}': {iterations} optimizer iterations, objective "
                f"{objective_value:.6g}; dose in {attempts} attempt(s)"
                + (f"; normalised (PlanNormalizationValue {100.0 / factor:.4g} %)" if factor != 1.0 else "")
                + ("; start weights ignored" if start is not None else "")
                + "; saved"
            )
            return EclipseResult(
                weights=np.zeros(0, np.float32),
                dose=dose,
                fluences=fluences,
                objective_history=[objective_value],
                iterations=iterations,
                converged=bool(converged),
                message=message,
                normalization_factor=float(factor),
                timings=timings,
                skipped_objectives=skipped,
                target=self.name,
                dvhs=dvhs,
                plan_id=self._plan_id,
                course_id=self.course_id,
                structure_set_id=str(ss.Id),
            )
        finally:
            if app is not None:
                if patient is not None:
                    try:
                        app.ClosePatient()  # unsaved modifications are discarded
                    except Exception:  # noqa: BLE001 - closing must not hide the original error
                        pass
                try:
                    app.Dispose()
                except Exception:  # noqa: BLE001
                    pass


def _logs(result) -> str:
    """Text of an ESAPI CalculationResult's logs, if any, for error messages."""
    if result is None:
        return ""
    logs = getattr(result, "Logs", None) or getattr(result, "CalculationLogs", None)
    if not logs:
        return ""
    try:
        text = "; ".join(str(x) for x in logs)
    except TypeError:
        text = str(logs)
    return f": {text[:500]}"


def _image_holds(image, points_xyz) -> bool:
    """Whether an ESAPI Image's box holds every point (x, y, z); True when the image lacks the geometry."""
    if image is None:
        return True
    try:
        origin = np.array([image.Origin.x, image.Origin.y, image.Origin.z], float)
        ext = np.array([(image.XSize - 1) * image.XRes, (image.YSize - 1) * image.YRes, (image.ZSize - 1) * image.ZRes])
        dirs = np.column_stack([
            [getattr(image, a).x, getattr(image, a).y, getattr(image, a).z] if hasattr(image, a) else e
            for a, e in (("XDirection", (1, 0, 0)), ("YDirection", (0, 1, 0)), ("ZDirection", (0, 0, 1)))
        ]).astype(float)
    except (AttributeError, TypeError):
        return True
    for p in points_xyz:
        t = np.linalg.solve(dirs, np.asarray(p, float) - origin)
        if np.any(t < -1e-6) or np.any(t > ext + 1e-6):
            return False
    return True
