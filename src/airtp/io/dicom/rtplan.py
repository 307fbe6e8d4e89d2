"""RT Plan: beams, control points and MU to and from :class:`~airtp.sequencing.plan.DeliveryPlan`.

Reading (:func:`read_rtplan`): every treatment photon beam becomes a
:class:`DeliveryBeam` whose control points carry the gantry angle, jaws, MLC
banks and cumulative MU (the control point's CumulativeMetersetWeight over
FinalCumulativeMetersetWeight, times the beam's BeamMeterset from the first
fraction group); attributes a control point leaves out keep their previous
value, as DICOM says. The kind follows the control points: the gantry moves
-> ``vmat``; leaves move only while no MU is given -> ``step_and_shoot``;
otherwise ``sliding_window``. :func:`model_beams` gives the
:class:`~airtp.beams.beam.Beam` geometry of each beam.

Patient position: AIRTP's beam model assumes a head-first supine patient.
A plan for another position is the same irradiation of the patient as an
HFS plan with other angles (the patient turned by 180 degrees about a fixed
axis): feet first supine adds 180 degrees of couch; head first prone adds
180 degrees of gantry and negates the couch; feet first prone does both.
Imported plans hold these HFS-equivalent angles; :func:`rtplan_dataset`
converts them back to the machine angles of the position it writes.
Decubitus and sitting positions are refused.

Writing (:func:`rtplan_dataset`): IMRT (step-and-shoot, sliding window) and
VMAT beams with ASYMX/ASYMY jaws and an MLCX, MU in the fraction group,
target prescriptions as dose references, references to the structure set.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from airtp.beams.beam import Beam
from airtp.errors import DicomError
from airtp.io.dicom.files import (
    RT_DOSE,
    RT_PLAN,
    RT_STRUCTURE_SET,
    ds_number,
    floats,
    new_dataset,
    new_uid,
    require,
    text,
)
from airtp.sequencing.plan import ControlPoint, DeliveryBeam, DeliveryPlan

_HAS_DOSE_RATE = "dose_rate_mu_min" in {f.name for f in dataclasses.fields(ControlPoint)}

__all__ = [
    "DEFAULT_JAW_MM",
    "PlanFile",
    "model_beams",
    "read_rtplan",
    "rtplan_dataset",
    "to_machine_angles",
    "to_model_angles",
]

#: Jaw positions assumed when a beam has no jaws (mm, BEV at the isocentre plane).
DEFAULT_JAW_MM = (-200.0, 200.0)
_SUPPORTED_POSITIONS = ("HFS", "FFS", "HFP", "FFP")


def _wrap(angle: float) -> float:
    a = float(angle) % 360.0
    return 0.0 if abs(a - 360.0) < 1e-9 else a


def _check_position(position: str, where: str) -> str:
    position = (position or "HFS").upper()
    if position not in _SUPPORTED_POSITIONS:
        raise DicomError(f"{where}: patient position {position} is not supported (only {', '.join(_SUPPORTED_POSITIONS)})")
    return position


def to_model_angles(position: str, gantry_deg: float, couch_deg: float, where: str = "plan") -> tuple[float, float]:
    """Machine (gantry, couch) for a patient in `position` -> the HFS-equivalent angles of AIRTP's beam model."""
    position = _check_position(position, where)
    if position in ("HFP", "FFP"):
        gantry_deg = gantry_deg + 180.0
    if position == "FFS":
        couch_deg = couch_deg + 180.0
    elif position == "HFP":
        couch_deg = -couch_deg
    elif position == "FFP":
        couch_deg = 180.0 - couch_deg
    return _wrap(gantry_deg), _wrap(couch_deg)


def to_machine_angles(position: str, gantry_deg: float, couch_deg: float, where: str = "plan") -> tuple[float, float]:
    """The inverse of :func:`to_model_angles`."""
    position = _check_position(position, where)
    if position in ("HFP", "FFP"):
        gantry_deg = gantry_deg - 180.0
    if position == "FFS":
        couch_deg = couch_deg - 180.0
    elif position == "HFP":
        couch_deg = -couch_deg
    elif position == "FFP":
        couch_deg = 180.0 - couch_deg
    return _wrap(gantry_deg), _wrap(couch_deg)


@dataclass
class PlanFile:
    """An RTPLAN read into the project's model."""

    path: Path
    plan: DeliveryPlan
    sop_uid: str
    frame_uid: str
    structure_set_uid: str
    patient_position: str
    prescriptions: list[tuple[int, float]]  # (ROI number, total dose Gy) of target dose references
    label: str = ""
    notes: list[str] = field(default_factory=list)


def _devices(beam: Dataset, path, name: str) -> dict:
    out = {}
    for dev in beam.get("BeamLimitingDeviceSequence") or []:
        kind = text(dev, "RTBeamLimitingDeviceType").upper()
        pairs = int(require(dev, "NumberOfLeafJawPairs", path, f"beam '{name}'"))
        if kind == "MLCY":
            raise DicomError(f"{path}: beam '{name}': an MLCY (leaves along y) is not supported")
        if kind == "MLCX":
            bounds = floats(dev, "LeafPositionBoundaries", path, pairs + 1, f"beam '{name}' MLCX")
            out["MLCX"] = (pairs, bounds.tolist())
        elif kind in ("X", "ASYMX", "Y", "ASYMY"):
            out[kind[-1]] = (pairs, None)
    return out


def _control_points(beam: Dataset, path, name: str, devices: dict, position: str) -> tuple[list, dict]:
    cps = require(beam, "ControlPointSequence", path, f"beam '{name}'")
    stated = beam.get("NumberOfControlPoints")
    if stated not in (None, "") and int(stated) != len(cps):
        raise DicomError(f"{path}: beam '{name}': NumberOfControlPoints is {int(stated)} but the sequence holds "
                         f"{len(cps)} (truncated file?)")
    if len(cps) < 2:
        raise DicomError(f"{path}: beam '{name}': needs at least 2 control points, has {len(cps)}")
    n_leaves = devices.get("MLCX", (0, None))[0]
    state: dict = {"jaw_x": DEFAULT_JAW_MM, "jaw_y": DEFAULT_JAW_MM, "x1": [], "x2": []}
    out = []
    for i, cp in enumerate(cps):
        what = f"beam '{name}' control point {i}"
        for key, keyword in (("gantry", "GantryAngle"), ("collimator", "BeamLimitingDeviceAngle"),
                             ("couch", "PatientSupportAngle")):
            if cp.get(keyword) not in (None, ""):
                state[key] = float(floats(cp, keyword, path, 1, what)[0])
            elif i == 0:
                raise DicomError(f"{path}: {what}: missing {keyword}")
        if cp.get("IsocenterPosition") not in (None, ""):
            state["iso"] = floats(cp, "IsocenterPosition", path, 3, what)
        elif i == 0:
            raise DicomError(f"{path}: {what}: missing IsocenterPosition")
        if i == 0:
            state["direction"] = text(cp, "GantryRotationDirection", "NONE").upper()
            state["collimator0"], state["couch0"] = state["collimator"], state["couch"]
        elif abs(state["collimator"] - state["collimator0"]) > 1e-6 or abs(state["couch"] - state["couch0"]) > 1e-6:
            raise DicomError(f"{path}: {what}: collimator or couch rotates during the beam; not supported")
        for pos in cp.get("BeamLimitingDevicePositionSequence") or []:
            kind = text(pos, "RTBeamLimitingDeviceType").upper()
            if kind == "MLCX":
                leaves = floats(pos, "LeafJawPositions", path, 2 * n_leaves, f"{what} MLCX")
                state["x1"], state["x2"] = leaves[:n_leaves].tolist(), leaves[n_leaves:].tolist()
            elif kind in ("X", "ASYMX", "Y", "ASYMY"):
                jaws = floats(pos, "LeafJawPositions", path, 2, f"{what} {kind}")
                state["jaw_" + kind[-1].lower()] = (float(jaws[0]), float(jaws[1]))
        if cp.get("CumulativeMetersetWeight") in (None, ""):
            raise DicomError(f"{path}: {what}: missing CumulativeMetersetWeight")
        weight = float(floats(cp, "CumulativeMetersetWeight", path, 1, what)[0])
        if n_leaves and not state["x1"]:
            raise DicomError(f"{path}: {what}: the beam has an MLCX but no leaf positions")
        if cp.get("DoseRateSet") not in (None, ""):
            state["rate"] = float(floats(cp, "DoseRateSet", path, 1, what)[0])
        gantry, _ = to_model_angles(position, state["gantry"], state["couch"], str(path))
        fields = {"gantry_deg": gantry, "cumulative_mu": weight, "jaw_x_mm": state["jaw_x"], "jaw_y_mm": state["jaw_y"],
                  "mlc_x1_mm": list(state["x1"]), "mlc_x2_mm": list(state["x2"])}
        if _HAS_DOSE_RATE:
            # the rate of the interval that starts here: none after the last control point
            stated = cp.get("DoseRateSet") not in (None, "")
            fields["dose_rate_mu_min"] = state.get("rate") if (i < len(cps) - 1 or stated) else None
        out.append((weight, ControlPoint(**fields)))
    return out, state


def _kind(cps: list[ControlPoint], direction: str) -> str:
    gantries = np.array([cp.gantry_deg for cp in cps])
    if direction in ("CW", "CC") or np.ptp(gantries) > 1e-6:
        return "vmat"
    for a, b in itertools.pairwise(cps):
        moved = a.mlc_x1_mm != b.mlc_x1_mm or a.mlc_x2_mm != b.mlc_x2_mm
        if moved and b.cumulative_mu > a.cumulative_mu + 1e-9:
            return "sliding_window"
    return "step_and_shoot"


def read_rtplan(path, ds: Dataset | None = None) -> PlanFile:
    """Parse an RTPLAN file (or its dataset `ds`, read from `path`) into a :class:`PlanFile`."""
    from airtp.io.dicom.files import read_file

    path = Path(path)
    ds = read_file(path) if ds is None else ds
    if str(ds.get("SOPClassUID", "")) != RT_PLAN:
        raise DicomError(f"{path}: not an RT Plan (SOP class {ds.get('SOPClassUID')})")
    notes: list[str] = []
    setups = {int(s.get("PatientSetupNumber", 0) or 0): text(s, "PatientPosition", "HFS").upper()
              for s in ds.get("PatientSetupSequence") or []}
    groups = ds.get("FractionGroupSequence") or []
    meterset: dict[int, float] = {}
    fractions = 1
    if groups:
        fractions = int(groups[0].get("NumberOfFractionsPlanned", 1) or 1)
        for ref in groups[0].get("ReferencedBeamSequence") or []:
            if ref.get("BeamMeterset") not in (None, ""):
                meterset[int(ref.ReferencedBeamNumber)] = float(ref.BeamMeterset)
        if len(groups) > 1:
            notes.append(f"{path}: {len(groups)} fraction groups; the first is read")
    beams, positions, machine = [], set(), ""
    for b in require(ds, "BeamSequence", path, "the plan (no beams)"):
        number = int(require(b, "BeamNumber", path, "BeamSequence"))
        name = text(b, "BeamName", f"Beam {number}")
        if text(b, "TreatmentDeliveryType", "TREATMENT").upper() != "TREATMENT":
            notes.append(f"beam '{name}': {text(b, 'TreatmentDeliveryType')} beam skipped")
            continue
        radiation = text(b, "RadiationType", "PHOTON").upper()
        if radiation != "PHOTON":
            raise DicomError(f"{path}: beam '{name}': radiation type {radiation}; only photon beams are supported")
        position = setups.get(int(b.get("ReferencedPatientSetupNumber", 0) or 0),
                              next(iter(setups.values()), "HFS"))
        positions.add(position)
        machine = machine or text(b, "TreatmentMachineName")
        devices = _devices(b, path, name)
        weighted, state = _control_points(b, path, name, devices, position)
        final = float(floats(b, "FinalCumulativeMetersetWeight", path, 1, f"beam '{name}'",
                             default=[weighted[-1][0]])[0])
        mu = meterset.get(number)
        if mu is None:
            notes.append(f"beam '{name}': no BeamMeterset; MU are the meterset weights")
            scale = 1.0
        else:
            scale = mu / final if final > 0 else 0.0
        cps = []
        for weight, cp in weighted:
            cp.cumulative_mu = weight * scale
            cps.append(cp)
        _, couch = to_model_angles(position, state["gantry"], state["couch0"], str(path))
        iso = state["iso"]
        bounds = devices.get("MLCX", (0, []))[1]
        direction = state["direction"] if state["direction"] in ("CW", "CC") else "NONE"
        sad = float(floats(b, "SourceAxisDistance", path, 1, f"beam '{name}'", default=[1000.0])[0])
        beams.append(DeliveryBeam(name=name, kind=_kind(cps, direction), collimator_deg=_wrap(state["collimator0"]),
                                  couch_deg=couch, isocenter_mm=(float(iso[2]), float(iso[1]), float(iso[0])),
                                  leaf_boundaries_mm=list(bounds), control_points=cps, gantry_direction=direction,
                                  sad_mm=sad))
    if not beams:
        raise DicomError(f"{path}: no treatment beams")
    if len(positions) > 1:
        raise DicomError(f"{path}: beams set up in different patient positions ({', '.join(sorted(positions))})")
    prescriptions = []
    for ref in ds.get("DoseReferenceSequence") or []:
        if (text(ref, "DoseReferenceType").upper() == "TARGET" and ref.get("ReferencedROINumber") not in (None, "")
                and ref.get("TargetPrescriptionDose") not in (None, "")):
            prescriptions.append((int(ref.ReferencedROINumber), float(ref.TargetPrescriptionDose)))
    refs = ds.get("ReferencedStructureSetSequence") or []
    plan = DeliveryPlan(machine=machine, sequencer="dicom", beams=beams, fractions=fractions)
    return PlanFile(path, plan, text(ds, "SOPInstanceUID"), text(ds, "FrameOfReferenceUID"),
                    text(refs[0], "ReferencedSOPInstanceUID") if refs else "", positions.pop(), prescriptions,
                    label=text(ds, "RTPlanLabel"), notes=notes)


def model_beams(plan: DeliveryPlan) -> list[Beam]:
    """The :class:`Beam` geometry (first control point's gantry) of each beam of a plan."""
    return [Beam(gantry_deg=b.control_points[0].gantry_deg, isocenter_mm=b.isocenter_mm,
                 collimator_deg=b.collimator_deg, couch_deg=b.couch_deg, sad_mm=b.sad_mm, name=b.name)
            for b in plan.beams]


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------
def _device(kind: str, pairs: int, bounds=None) -> Dataset:
    d = Dataset()
    d.RTBeamLimitingDeviceType = kind
    d.NumberOfLeafJawPairs = pairs
    if bounds is not None:
        d.LeafPositionBoundaries = [ds_number(v) for v in bounds]
    return d


def _position(kind: str, values) -> Dataset:
    d = Dataset()
    d.RTBeamLimitingDeviceType = kind
    d.LeafJawPositions = [ds_number(v) for v in values]
    return d


def _static(beam: DeliveryBeam) -> bool:
    first = beam.control_points[0]
    return all(cp.gantry_deg == first.gantry_deg and cp.mlc_x1_mm == first.mlc_x1_mm and cp.mlc_x2_mm == first.mlc_x2_mm
               and tuple(cp.jaw_x_mm) == tuple(first.jaw_x_mm) and tuple(cp.jaw_y_mm) == tuple(first.jaw_y_mm)
               for cp in beam.control_points)


def _beam_dataset(beam: DeliveryBeam, number: int, machine: str, position: str, energy_mv: float) -> Dataset:
    where = f"beam '{beam.name}'"
    if len(beam.control_points) < 2:
        raise DicomError(f"{where}: needs at least 2 control points, has {len(beam.control_points)}")
    n_leaves = len(beam.leaf_boundaries_mm) - 1 if beam.leaf_boundaries_mm else 0
    b = Dataset()
    b.BeamNumber = number
    b.BeamName = beam.name[:64]
    b.BeamType = "STATIC" if _static(beam) else "DYNAMIC"
    b.RadiationType = "PHOTON"
    b.TreatmentMachineName = (machine or "AIRTP")[:16]
    b.PrimaryDosimeterUnit = "MU"
    b.SourceAxisDistance = ds_number(beam.sad_mm)
    devices = [_device("ASYMX", 1), _device("ASYMY", 1)]
    if n_leaves:
        devices.append(_device("MLCX", n_leaves, beam.leaf_boundaries_mm))
    b.BeamLimitingDeviceSequence = Sequence(devices)
    b.ReferencedPatientSetupNumber = 1
    b.TreatmentDeliveryType = "TREATMENT"
    b.NumberOfWedges = b.NumberOfCompensators = b.NumberOfBoli = b.NumberOfBlocks = 0
    mu = beam.mu
    n = len(beam.control_points)
    weights = [cp.cumulative_mu / mu for cp in beam.control_points] if mu > 0 else [i / (n - 1) for i in range(n)]
    weights[-1] = 1.0
    b.FinalCumulativeMetersetWeight = "1"
    b.NumberOfControlPoints = n
    b.ControlPointSequence = Sequence()
    iso = beam.isocenter_mm
    vmat = beam.kind == "vmat"
    direction = beam.gantry_direction if beam.gantry_direction in ("CW", "CC") else "NONE"
    for i, (cp, w) in enumerate(zip(beam.control_points, weights)):
        if n_leaves and (len(cp.mlc_x1_mm) != n_leaves or len(cp.mlc_x2_mm) != n_leaves):
            raise DicomError(f"{where} control point {i}: {len(cp.mlc_x1_mm)}/{len(cp.mlc_x2_mm)} leaves, "
                             f"the MLC has {n_leaves} pairs")
        gantry, couch = to_machine_angles(position, cp.gantry_deg, beam.couch_deg, where)
        c = Dataset()
        c.ControlPointIndex = i
        if i == 0:
            c.NominalBeamEnergy = ds_number(energy_mv)
        rate = getattr(cp, "dose_rate_mu_min", None)
        if rate is not None:
            c.DoseRateSet = ds_number(rate)
        positions = [_position("ASYMX", cp.jaw_x_mm), _position("ASYMY", cp.jaw_y_mm)]
        if n_leaves:
            positions.append(_position("MLCX", list(cp.mlc_x1_mm) + list(cp.mlc_x2_mm)))
        c.BeamLimitingDevicePositionSequence = Sequence(positions)
        if i == 0 or vmat:
            c.GantryAngle = ds_number(round(gantry, 6))
            c.GantryRotationDirection = direction if (vmat and i < n - 1) else "NONE"
        if i == 0:
            c.BeamLimitingDeviceAngle = ds_number(round(_wrap(beam.collimator_deg), 6))
            c.BeamLimitingDeviceRotationDirection = "NONE"
            c.PatientSupportAngle = ds_number(round(couch, 6))
            c.PatientSupportRotationDirection = "NONE"
            c.TableTopEccentricAngle = "0"
            c.TableTopEccentricRotationDirection = "NONE"
            c.TableTopVerticalPosition = c.TableTopLongitudinalPosition = c.TableTopLateralPosition = ""
            c.IsocenterPosition = [ds_number(iso[2]), ds_number(iso[1]), ds_number(iso[0])]
        c.CumulativeMetersetWeight = ds_number(round(w, 10))
        b.ControlPointSequence.append(c)
    return b


def rtplan_dataset(plan: DeliveryPlan, uids: dict, patient: dict, position: str = "HFS",
                   prescriptions: list[tuple[int, str, float]] = (), label: str = "AIRTP",
                   energy_mv: float = 6.0) -> Dataset:
    """An RTPLAN dataset of a deliverable plan.

    `prescriptions` are (ROI number, name, total dose Gy) of the targets;
    `uids` holds ``study``, ``frame``, ``rtplan_series``, ``rtplan``,
    ``rtstruct`` and ``rtdose`` (empty when that file is not written: no
    reference to it). MU are per fraction.
    """
    from airtp.io.dicom.export import common_modules

    if not plan.beams:
        raise DicomError("the delivery plan has no beams")
    ds = new_dataset(RT_PLAN, uids["rtplan"])
    common_modules(ds, patient, uids, modality="RTPLAN", series_uid=uids["rtplan_series"], series_number=3)
    ds.InstanceNumber = 1
    ds.RTPlanLabel = label[:16]
    ds.RTPlanName = label[:64]
    ds.RTPlanDate, ds.RTPlanTime = patient["date"], patient["time"]
    ds.PlanIntent = "CURATIVE"
    if uids.get("rtstruct"):
        ds.RTPlanGeometry = "PATIENT"
        ref = Dataset()
        ref.ReferencedSOPClassUID = RT_STRUCTURE_SET
        ref.ReferencedSOPInstanceUID = uids["rtstruct"]
        ds.ReferencedStructureSetSequence = Sequence([ref])
    else:
        ds.RTPlanGeometry = "TREATMENT_DEVICE"
    if prescriptions:
        ds.DoseReferenceSequence = Sequence()
        for i, (roi, name, dose) in enumerate(prescriptions, start=1):
            d = Dataset()
            d.DoseReferenceNumber = i
            d.DoseReferenceUID = new_uid()
            d.DoseReferenceStructureType = "VOLUME"
            d.DoseReferenceDescription = name[:64]
            d.ReferencedROINumber = roi
            d.DoseReferenceType = "TARGET"
            d.TargetPrescriptionDose = ds_number(dose)
            ds.DoseReferenceSequence.append(d)
    setup = Dataset()
    setup.PatientPosition = position
    setup.PatientSetupNumber = 1
    ds.PatientSetupSequence = Sequence([setup])
    group = Dataset()
    group.FractionGroupNumber = 1
    group.NumberOfFractionsPlanned = int(plan.fractions)
    group.NumberOfBeams = len(plan.beams)
    group.NumberOfBrachyApplicationSetups = 0
    if uids.get("rtdose"):
        dose = Dataset()
        dose.ReferencedSOPClassUID = RT_DOSE
        dose.ReferencedSOPInstanceUID = uids["rtdose"]
        group.ReferencedDoseSequence = Sequence([dose])
    group.ReferencedBeamSequence = Sequence()
    ds.BeamSequence = Sequence()
    for number, beam in enumerate(plan.beams, start=1):
        ref = Dataset()
        ref.ReferencedBeamNumber = number
        ref.BeamMeterset = ds_number(round(beam.mu, 6))
        group.ReferencedBeamSequence.append(ref)
        ds.BeamSequence.append(_beam_dataset(beam, number, plan.machine, position, energy_mv))
    ds.FractionGroupSequence = Sequence([group])
    ds.ApprovalStatus = "UNAPPROVED"
    return ds
