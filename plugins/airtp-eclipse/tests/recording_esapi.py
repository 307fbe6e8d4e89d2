"""RecordingEsapi: a recording stand-in for the ``pyesapi`` module (NOT Eclipse).

It provides the ESAPI types and objects the Eclipse target uses, records
every call with its arguments in order in ``esapi.calls`` as
``(object, member, args)`` tuples, and returns plausible values: a patient
with structure sets, an optimizer result, a dose on a known grid (a linear
function of the patient position, so trilinear resampling is exact) that
follows the plan normalisation, and cumulative DVH curves. Failures can be
injected per step. It checks nothing about real Eclipse behaviour: its
signatures follow the ESAPI v15 stubs summarised in shared/research/esapi.md.
"""

from __future__ import annotations

import enum

import numpy as np

# --------------------------------------------------------------------------- value types


class DoseValue:
    def __init__(self, value, unit):
        self.Dose = float(value)
        self.UnitAsString = unit if isinstance(unit, str) else str(unit)

    def __eq__(self, other):
        return (isinstance(other, DoseValue) and self.UnitAsString == other.UnitAsString
                and abs(self.Dose - other.Dose) <= 1e-9 * max(1.0, abs(self.Dose)))

    def __repr__(self):
        return f"DoseValue({self.Dose!r}, {self.UnitAsString!r})"


class VVector:
    def __init__(self, x, y, z):
        self.x, self.y, self.z = float(x), float(y), float(z)

    def __eq__(self, other):
        return isinstance(other, VVector) and (self.x, self.y, self.z) == (other.x, other.y, other.z)

    def __repr__(self):
        return f"VVector({self.x}, {self.y}, {self.z})"


class VRect:
    """``VRect[float](X1, Y1, X2, Y2)``; plain ``VRect(...)`` (no type argument) is refused, as in pythonnet."""

    element_type = None

    def __class_getitem__(cls, item):
        return type(f"VRect[{getattr(item, '__name__', item)}]", (cls,), {"element_type": item})

    def __init__(self, x1, y1, x2, y2):
        if self.element_type is None:
            raise TypeError("VRect is generic: use VRect[float](...)")
        self.X1, self.Y1, self.X2, self.Y2 = float(x1), float(y1), float(x2), float(y2)

    def __eq__(self, other):
        return isinstance(other, VRect) and (self.X1, self.Y1, self.X2, self.Y2) == (other.X1, other.Y1, other.X2, other.Y2)

    def __repr__(self):
        return f"VRect[{getattr(self.element_type, '__name__', self.element_type)}]({self.X1}, {self.Y1}, {self.X2}, {self.Y2})"


class ExternalBeamMachineParameters:
    def __init__(self, machineId, energyModeId, doseRate, techniqueId, primaryFluenceModeId):
        self.args = (machineId, energyModeId, doseRate, techniqueId, primaryFluenceModeId)

    def __eq__(self, other):
        return isinstance(other, ExternalBeamMachineParameters) and self.args == other.args

    def __repr__(self):
        return f"ExternalBeamMachineParameters{self.args!r}"


class _Options:
    def __init__(self, *args):
        self.args = args

    def __eq__(self, other):
        return type(self) is type(other) and self.args == other.args

    def __repr__(self):
        return f"{type(self).__name__}{self.args!r}"


class OptimizationOptionsIMRT(_Options):
    pass


class OptimizationOptionsVMAT(_Options):
    pass


OptimizationObjectiveOperator = enum.Enum("OptimizationObjectiveOperator", [("Upper", 0), ("Lower", 1), ("Exact", 2)])
OptimizationOption = enum.Enum("OptimizationOption", [
    ("RestartOptimization", 0), ("ContinueOptimization", 1), ("ContinueOptimizationWithPlanDoseAsIntermediateDose", 2)])
OptimizationConvergenceOption = enum.Enum("OptimizationConvergenceOption", [("NoEarlyTermination", 0), ("TerminateIfConverged", 1)])
DoseValuePresentation = enum.Enum("DoseValuePresentation", [("Relative", 0), ("Absolute", 1)])
VolumePresentation = enum.Enum("VolumePresentation", [("Relative", 0), ("AbsoluteCm3", 1)])
GantryDirection = enum.Enum("GantryDirection", [("None", 0), ("Clockwise", 1), ("CounterClockwise", 2)])
CalculationType = enum.Enum("CalculationType", [
    ("PhotonVolumeDose", 0), ("PhotonSRSDose", 1), ("PhotonIMRTOptimization", 2), ("PhotonVMATOptimization", 3),
    ("PhotonLeafMotions", 4), ("ProtonVolumeDose", 5), ("DVHEstimation", 6)])


class InjectedFailure(Exception):
    """Raised by the stand-in where a test asked a step to throw."""


class _Result:
    def __init__(self, success, **kw):
        self.Success = success
        self.__dict__.update(kw)


class DVHPoint:
    def __init__(self, dose, volume, unit="cm³"):
        self.DoseValue, self.Volume, self.VolumeUnit = dose, float(volume), unit


class DVHData:
    def __init__(self, points, volume, dmin, dmax, dmean):
        self.CurveData = points
        self.Volume, self.MinDose, self.MaxDose, self.MeanDose = volume, dmin, dmax, dmean


# --------------------------------------------------------------------------- objects


class _Recorded:
    _label = "?"

    def __init__(self, esapi):
        object.__setattr__(self, "_esapi", esapi)

    def _rec(self, member, *args):
        self._esapi._record(self._label, member, args)
        self._esapi._maybe_fail(member)


class Structure:
    def __init__(self, sid, empty=False, dicom_type="ORGAN"):
        self.Id, self.IsEmpty, self.DicomType = sid, empty, dicom_type

    def __repr__(self):
        return f"Structure({self.Id!r})"


class Image:
    def __init__(self, origin=(-120.0, -120.0, -60.0), res=(2.5, 2.5, 2.5), size=(97, 97, 49)):
        self.Origin = VVector(*origin)
        self.XRes, self.YRes, self.ZRes = res
        self.XSize, self.YSize, self.ZSize = size
        self.XDirection, self.YDirection, self.ZDirection = VVector(1, 0, 0), VVector(0, 1, 0), VVector(0, 0, 1)


class StructureSet:
    def __init__(self, sid, structure_ids, image=None, empty=()):
        self.Id = sid
        self.Structures = [Structure(s, s in empty) for s in structure_ids]
        self.Image = image or Image()

    def __repr__(self):
        return f"StructureSet({self.Id!r})"


class Fluence:
    def __init__(self, pixels):
        self._pixels = pixels

    def GetPixels(self):
        return self._pixels


class Beam(_Recorded):
    _label = "beam"

    def __init__(self, esapi, bid, fluence):
        super().__init__(esapi)
        self.Id = bid
        self._fluence = fluence

    def GetOptimalFluence(self):
        return None if self._fluence is None else Fluence(self._fluence)

    def __repr__(self):
        return f"Beam({self.Id!r})"


class OptimizationSetup(_Recorded):
    _label = "opt"

    def AddPointObjective(self, structure, objectiveOperator, dose, volume, priority):
        self._rec("AddPointObjective", structure, objectiveOperator, dose, volume, priority)
        return object()

    def AddMeanDoseObjective(self, structure, dose, priority):
        self._rec("AddMeanDoseObjective", structure, dose, priority)
        return object()

    def AddEUDObjective(self, structure, objectiveOperator, dose, parameterA, priority):
        self._rec("AddEUDObjective", structure, objectiveOperator, dose, parameterA, priority)
        return object()

    def AddNormalTissueObjective(self, priority, distanceFromTargetBorderInMM, startDosePercentage,
                                 endDosePercentage, fallOff):
        self._rec("AddNormalTissueObjective", priority, distanceFromTargetBorderInMM, startDosePercentage,
                  endDosePercentage, fallOff)
        return object()

    def AddBeamSpecificParameter(self, beam, smoothX, smoothY, fixedJaws):
        self._rec("AddBeamSpecificParameter", beam, smoothX, smoothY, fixedJaws)
        return object()


class Dose(_Recorded):
    """Dose on a known grid: value(x, y, z) = a + bx x + by y + bz z (Gy before normalisation)."""

    _label = "dose"

    def __init__(self, esapi, plan, origin, res, size, coef, unit):
        super().__init__(esapi)
        self._plan = plan
        self.Origin = VVector(*origin)
        self.XRes, self.YRes, self.ZRes = res
        self.XSize, self.YSize, self.ZSize = size
        self.XDirection, self.YDirection, self.ZDirection = VVector(1, 0, 0), VVector(0, 1, 0), VVector(0, 0, 1)
        self._coef = coef
        self._unit = unit
        self.DoseMax3D = DoseValue(0.0, unit)

    def gy_at(self, x, y, z):
        a, bx, by, bz = self._coef
        return (a + bx * x + by * y + bz * z) * self._plan.scale

    def np_array_like(self, image=None):
        self._rec("np_array_like")
        ax = [o + r * np.arange(n) for o, r, n in zip((self.Origin.x, self.Origin.y, self.Origin.z),
                                                     (self.XRes, self.YRes, self.ZRes),
                                                     (self.XSize, self.YSize, self.ZSize))]
        x, y, z = np.meshgrid(*ax, indexing="ij")
        factor = 100.0 if self._unit == "cGy" else 1.0
        return self.gy_at(x, y, z) * factor


class ExternalPlanSetup(_Recorded):
    _label = "plan"

    def __init__(self, esapi, structure_set):
        super().__init__(esapi)
        object.__setattr__(self, "StructureSet", structure_set)
        object.__setattr__(self, "OptimizationSetup", OptimizationSetup(esapi))
        object.__setattr__(self, "Beams", [])
        object.__setattr__(self, "PlanNormalizationValue", float("nan"))
        object.__setattr__(self, "_dose", None)
        object.__setattr__(self, "Id", "Plan1")

    def __setattr__(self, name, value):
        self._rec(f"{name}=", value)
        object.__setattr__(self, name, value)

    @property
    def scale(self):
        v = self.PlanNormalizationValue
        return 1.0 if not np.isfinite(v) else 100.0 / v

    @property
    def Dose(self):
        return self._dose

    def SetCalculationModel(self, calculationType, model):
        self._rec("SetCalculationModel", calculationType, model)

    def SetPrescription(self, numberOfFractions, dosePerFraction, treatmentPercentage):
        self._rec("SetPrescription", numberOfFractions, dosePerFraction, treatmentPercentage)

    def _beam(self, arc):
        e = self._esapi
        b = Beam(e, f"Field {len(self.Beams) + 1}", None if arc else np.full((4, 6), len(self.Beams) + 1.0, np.float32))
        self.Beams.append(b)
        return b

    def AddStaticBeam(self, machineParameters, jawPositions, collimatorAngle, gantryAngle, patientSupportAngle, isocenter):
        self._rec("AddStaticBeam", machineParameters, jawPositions, collimatorAngle, gantryAngle, patientSupportAngle,
                  isocenter)
        return self._beam(False)

    def AddArcBeam(self, machineParameters, jawPositions, collimatorAngle, gantryAngle, gantryStop, gantryDirection,
                   patientSupportAngle, isocenter):
        self._rec("AddArcBeam", machineParameters, jawPositions, collimatorAngle, gantryAngle, gantryStop,
                  gantryDirection, patientSupportAngle, isocenter)
        return self._beam(True)

    def Optimize(self, options):
        self._rec("Optimize", options)
        e = self._esapi
        return _Result(e.success.get("Optimize", True), TotalObjectiveFunctionValue=e.objective_value,
                       NumberOfIMRTOptimizerIterations=e.iterations)

    def OptimizeVMAT(self, options):
        self._rec("OptimizeVMAT", options)
        e = self._esapi
        return _Result(e.success.get("OptimizeVMAT", True), TotalObjectiveFunctionValue=e.objective_value,
                       NumberOfIMRTOptimizerIterations=0)

    def CalculateLeafMotions(self, *options):
        self._rec("CalculateLeafMotions", *options)
        return _Result(self._esapi.success.get("CalculateLeafMotions", True))

    def CalculateDose(self):
        self._rec("CalculateDose")
        e = self._esapi
        if e.dose_failures > 0:
            e.dose_failures -= 1
            return _Result(False)
        e_dose = Dose(e, self, e.dose_origin, e.dose_res, e.dose_size, e.dose_coef, e.unit)
        object.__setattr__(self, "_dose", e_dose)
        return _Result(True)

    def GetDoseAtVolume(self, structure, volume, volumePresentation, requestedDosePresentation):
        self._rec("GetDoseAtVolume", structure, volume, volumePresentation, requestedDosePresentation)
        e = self._esapi
        factor = 100.0 if e.unit == "cGy" else 1.0
        return DoseValue(e.dose_at_volume_gy * self.scale * factor, e.unit)

    def GetDVHCumulativeData(self, structure, dosePresentation, volumePresentation, binWidth):
        self._rec("GetDVHCumulativeData", structure, dosePresentation, volumePresentation, binWidth)
        e = self._esapi
        lo, hi, vol = e.dvh_curves.get(structure.Id, (50.0, 60.0, 100.0))
        s = self.scale
        lo, hi = lo * s, hi * s
        factor = 100.0 if e.unit == "cGy" else 1.0
        step = binWidth / factor  # Gy
        d = np.arange(0.0, hi + 2 * step, step)
        v = np.clip((hi - d) / (hi - lo), 0.0, 1.0) * vol
        pts = [DVHPoint(DoseValue(di * factor, e.unit), vi) for di, vi in zip(d, v)]
        return DVHData(pts, vol, DoseValue(lo * factor, e.unit), DoseValue(hi * factor, e.unit),
                       DoseValue((lo + hi) / 2 * factor, e.unit))


class Course(_Recorded):
    _label = "course"

    def __init__(self, esapi, cid="Course1", plan_ids=()):
        super().__init__(esapi)
        object.__setattr__(self, "Id", cid)
        object.__setattr__(self, "PlanSetups", [type("P", (), {"Id": p})() for p in plan_ids])

    def __setattr__(self, name, value):
        self._rec(f"{name}=", value)
        object.__setattr__(self, name, value)

    def CanAddPlanSetup(self, structureSet):
        return True

    def AddExternalPlanSetup(self, structureSet):
        self._rec("AddExternalPlanSetup", structureSet)
        plan = ExternalPlanSetup(self._esapi, structureSet)
        self._esapi.plan = plan
        self.PlanSetups.append(plan)
        return plan


class Patient(_Recorded):
    _label = "patient"

    def __init__(self, esapi, pid, structure_sets, courses, can_modify=True):
        super().__init__(esapi)
        self.Id = pid
        self.StructureSets = structure_sets
        self.Courses = courses
        self._can_modify = can_modify

    def CanModifyData(self):
        return self._can_modify

    def BeginModifications(self):
        self._rec("BeginModifications")

    def CanAddCourse(self):
        return True

    def AddCourse(self):
        self._rec("AddCourse")
        c = Course(self._esapi)
        self.Courses.append(c)
        return c


class Application(_Recorded):
    _label = "app"

    def OpenPatientById(self, pid):
        self._rec("OpenPatientById", pid)
        e = self._esapi
        return e.patient if pid == e.patient.Id else None

    def SaveModifications(self):
        self._rec("SaveModifications")

    def ClosePatient(self):
        self._rec("ClosePatient")

    def Dispose(self):
        self._rec("Dispose")


class _CustomScriptExecutable:
    def __init__(self, esapi):
        self._esapi = esapi

    def CreateApplication(self, scriptName):
        self._esapi._record("CustomScriptExecutable", "CreateApplication", (scriptName,))
        self._esapi._maybe_fail("CreateApplication")
        return Application(self._esapi)


# --------------------------------------------------------------------------- the module


class RecordingEsapi:
    """Stand-in for ``import pyesapi``: types as attributes, calls recorded in ``calls``.

    Parameters
    ----------
    patient_id : str
    structure_sets : list of StructureSet
        Default: one set 'CT_1' with BODY, PTV and SpinalCord.
    courses : list of Course
    unit : 'Gy' or 'cGy'
        Unit in which doses come back (dose grid, DVHs, GetDoseAtVolume).
    dose_origin, dose_res, dose_size, dose_coef :
        Eclipse dose grid ((x, y, z) of voxel [0, 0, 0], mm, voxel counts) and
        the coefficients (a, bx, by, bz) of the linear dose a + bx x + by y + bz z (Gy).
    dose_at_volume_gy : float
        What GetDoseAtVolume returns with no normalisation.
    dvh_curves : dict
        Structure Id -> (lowest, highest dose Gy, volume cm^3) of a DVH uniform between the two doses.
    success : dict
        Step name -> Success value ('Optimize', 'OptimizeVMAT', 'CalculateLeafMotions').
    dose_failures : int
        CalculateDose returns Success False this many times first.
    raise_on : set of str
        Members that raise :class:`InjectedFailure` (e.g. {'AddStaticBeam'}).
    """

    DoseValue = DoseValue
    VVector = VVector
    VRect = VRect
    ExternalBeamMachineParameters = ExternalBeamMachineParameters
    OptimizationOptionsIMRT = OptimizationOptionsIMRT
    OptimizationOptionsVMAT = OptimizationOptionsVMAT
    OptimizationObjectiveOperator = OptimizationObjectiveOperator
    OptimizationOption = OptimizationOption
    OptimizationConvergenceOption = OptimizationConvergenceOption
    DoseValuePresentation = DoseValuePresentation
    VolumePresentation = VolumePresentation
    GantryDirection = GantryDirection
    CalculationType = CalculationType

    def __init__(self, patient_id="P1", structure_sets=None, courses=None, unit="Gy",
                 dose_origin=(-90.0, -100.0, -40.0), dose_res=(2.5, 2.5, 2.5), dose_size=(77, 81, 33),
                 dose_coef=(30.0, 0.1, 0.05, 0.2), dose_at_volume_gy=57.0, dvh_curves=None, success=None,
                 dose_failures=0, raise_on=(), objective_value=0.125, iterations=87, can_modify=True):
        self.calls = []
        self.unit = unit
        self.dose_origin, self.dose_res, self.dose_size, self.dose_coef = dose_origin, dose_res, dose_size, dose_coef
        self.dose_at_volume_gy = dose_at_volume_gy
        self.dvh_curves = dict(dvh_curves or {})
        self.success = dict(success or {})
        self.dose_failures = dose_failures
        self.raise_on = set(raise_on)
        self.objective_value, self.iterations = objective_value, iterations
        self.plan = None
        if structure_sets is None:
            structure_sets = [StructureSet("CT_1", ["BODY", "PTV", "SpinalCord"])]
        self.patient = Patient(self, patient_id, structure_sets, list(courses or []), can_modify)
        self.CustomScriptExecutable = _CustomScriptExecutable(self)

    def _record(self, obj, member, args):
        self.calls.append((obj, member, tuple(args)))

    def _maybe_fail(self, member):
        if member in self.raise_on:
            raise InjectedFailure(f"injected failure in {member}")

    # helpers for tests
    def members(self):
        """The recorded (object, member) pairs in order."""
        return [(o, m) for o, m, _ in self.calls]

    def calls_to(self, member):
        """Arguments of every recorded call of `member`, in order."""
        return [a for _, m, a in self.calls if m == member]
