"""``airtp export``: a plan folder to DICOM RT files.

The plan folder holds ``case.npz`` (required), ``dose.npy`` (Gy on the case
grid; gives ``RTDOSE.dcm``) and ``delivery.json`` (a
:class:`~airtp.sequencing.plan.DeliveryPlan`; gives ``RTPLAN.dcm``); a case
file alone exports its CT and structures. The output folder gets:

- ``CT_0001.dcm`` ... one file per slice, when the case came from a phantom
  (or ``with_ct=True``). A case imported from DICOM keeps the UIDs of its
  original CT (``meta['dicom']``): the other files reference those images
  and the CT is not written again;
- ``RTSTRUCT.dcm``: every structure as planar contours (marching squares);
- ``RTPLAN.dcm``: beams, control points, MU, fraction group, prescriptions
  as target dose references, a reference to the structure set;
- ``RTDOSE.dcm``: the dose on the CT grid, referencing the plan (only with
  ``delivery.json``: DICOM wants a plan dose to name its plan).

All files share the study, the frame of reference and the patient. The
folder is built beside the output and renamed into place at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from airtp.case import Case
from airtp.errors import AirtpError, DicomError
from airtp.io.dicom.files import new_uid, save_dataset, today, write_folder

__all__ = ["DICOM_META", "ExportResult", "common_modules", "export_plan"]

#: Key of :attr:`Case.meta` where import keeps the DICOM identity of a case.
DICOM_META = "dicom"


def common_modules(ds: Dataset, patient: dict, uids: dict, modality: str, series_uid: str, series_number: int,
                   frame: bool = True) -> None:
    """Patient, general study, series, frame of reference and equipment attributes shared by every file."""
    ds.PatientName = patient["name"]
    ds.PatientID = patient["id"]
    ds.PatientBirthDate = patient.get("birth_date", "")
    ds.PatientSex = patient.get("sex", "")
    ds.StudyInstanceUID = uids["study"]
    ds.StudyDate, ds.StudyTime = patient["study_date"], patient["study_time"]
    ds.ReferringPhysicianName = ""
    ds.StudyID = patient.get("study_id", "")
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.InstanceCreationDate, ds.InstanceCreationTime = patient["date"], patient["time"]
    if modality != "CT":
        ds.OperatorsName = ""
    if frame:
        ds.FrameOfReferenceUID = uids["frame"]
        ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "AIRTP"
    ds.ManufacturerModelName = "AIRTP"
    from airtp import __version__

    ds.SoftwareVersions = __version__


@dataclass
class ExportResult:
    folder: Path
    files: list[str]
    uids: dict
    notes: list[str] = field(default_factory=list)


def _load_inputs(plan_dir: Path):
    if plan_dir.is_file():
        return Case.load(plan_dir), None, None, plan_dir
    if not plan_dir.is_dir():
        raise DicomError(f"{plan_dir}: no such plan folder or case file")
    case_path = plan_dir / "case.npz"
    if not case_path.is_file():
        raise DicomError(f"{plan_dir}: no case.npz in the plan folder")
    case = Case.load(case_path)
    dose = None
    if (plan_dir / "dose.npy").is_file():
        from airtp.evaluation.dvh import check_dose

        try:
            dose = np.load(plan_dir / "dose.npy", allow_pickle=False)
            dose = check_dose(dose, case.grid.shape, str(plan_dir / "dose.npy"))
        except (OSError, ValueError, EOFError) as exc:
            raise DicomError(f"{plan_dir / 'dose.npy'}: not a readable dose ({exc})") from None
    plan = None
    if (plan_dir / "delivery.json").is_file():
        from airtp.sequencing.plan import DeliveryPlan

        plan = DeliveryPlan.load(plan_dir / "delivery.json")
    return case, dose, plan, case_path


def _identity(case: Case) -> tuple[dict, dict, bool]:
    """Patient attributes, UIDs and whether the original CT can be referenced instead of written."""
    meta = case.meta.get(DICOM_META) or {}
    date, time = today()
    # a person name in the family^given form; a case name has no given name
    patient = {"name": meta.get("patient_name") or f"{case.patient_id or 'AIRTP'}^",
               "id": meta.get("patient_id") or case.patient_id or "AIRTP",
               "birth_date": meta.get("patient_birth_date", ""), "sex": meta.get("patient_sex", ""),
               "study_id": (meta.get("study_id") or "1")[:16], "study_date": meta.get("study_date") or date,
               "study_time": meta.get("study_time") or time, "date": date, "time": time}
    ct_sops = meta.get("ct_sop_uids") or []
    original_ct = bool(meta.get("frame_of_reference_uid") and meta.get("ct_series_uid")
                       and len(ct_sops) == case.grid.shape[0])
    uids = {"study": meta.get("study_uid") or new_uid(),
            "frame": meta.get("frame_of_reference_uid") if original_ct else new_uid(),
            "ct_series": meta.get("ct_series_uid") if original_ct else new_uid(),
            "ct_sops": list(ct_sops) if original_ct else [new_uid() for _ in range(case.grid.shape[0])]}
    for kind in ("rtstruct", "rtplan", "rtdose"):
        uids[kind] = new_uid()
        uids[kind + "_series"] = new_uid()
    return patient, uids, original_ct


def export_plan(plan_dir, out_dir, with_ct: bool | None = None, overwrite: bool = False) -> ExportResult:
    """Write the DICOM RT files of a plan folder (or a case file) into `out_dir` (see the module doc).

    ``with_ct``: None writes the CT unless the case references an original
    DICOM CT; True always writes it (new UIDs); False never does.
    """
    from airtp.io.dicom.ct import ct_datasets
    from airtp.io.dicom.rtdose import rtdose_dataset
    from airtp.io.dicom.rtplan import rtplan_dataset
    from airtp.io.dicom.rtstruct import rtstruct_dataset

    plan_dir = Path(plan_dir)
    case, dose, plan, _ = _load_inputs(plan_dir)
    patient, uids, original_ct = _identity(case)
    notes = []
    if with_ct and original_ct:
        # a new CT needs its own UIDs: the structures then reference it, not the original
        uids.update(frame=new_uid(), ct_series=new_uid(), ct_sops=[new_uid() for _ in range(case.grid.shape[0])])
        original_ct = False
    write_ct = (not original_ct) if with_ct is None else bool(with_ct)
    if not write_ct:
        notes.append("CT not written: " + ("the files reference the original CT series "
                                            f"{uids['ct_series']}" if original_ct else "--no-ct"))
    position = (case.meta.get(DICOM_META) or {}).get("patient_position", "HFS")
    masks = {name: case.structures[name] for name in case.structures}
    if not masks:
        uids["rtstruct"] = ""
    if dose is None or plan is None:
        uids["rtdose"] = ""
    roi_numbers = {name: i for i, name in enumerate(masks, start=1)}
    prescriptions = [(roi_numbers[case.structures.find(p.structure)], p.structure, p.dose_gy)
                     for p in case.prescriptions if case.structures.find(p.structure) in roi_numbers]
    if plan is not None and case.prescriptions and plan.fractions != case.prescriptions[0].fractions:
        notes.append(f"delivery plan has {plan.fractions} fractions, the prescription "
                     f"{case.prescriptions[0].fractions}; the plan's are written")
    try:
        datasets: dict[str, Dataset] = {}
        if write_ct:
            for k, ds in enumerate(ct_datasets(case.ct_hu, case.grid, uids, patient, position, case.site), start=1):
                datasets[f"CT_{k:04d}.dcm"] = ds
        if masks:
            datasets["RTSTRUCT.dcm"] = rtstruct_dataset(masks, case.grid, uids, patient)
        if plan is not None:
            datasets["RTPLAN.dcm"] = rtplan_dataset(plan, uids, patient, position, prescriptions)
        if dose is not None and plan is not None:
            datasets["RTDOSE.dcm"] = rtdose_dataset(dose, case.grid, uids, patient)
        elif dose is not None:
            # a plan dose must reference its RTPLAN (DICOM RT Dose module); without delivery.json there is none
            notes.append("dose.npy not written: RTDOSE needs the deliverable plan (delivery.json) it belongs to")
    except AirtpError as exc:
        raise DicomError(f"{plan_dir}: {exc}") from None
    if not datasets:
        raise DicomError(f"{plan_dir}: nothing to export")

    def build(folder: Path) -> None:
        for name, ds in datasets.items():
            save_dataset(ds, folder / name)

    out = write_folder(out_dir, build, overwrite=overwrite)
    return ExportResult(out, sorted(datasets), uids, notes)
