"""``airtp import``: a DICOM folder to a case (CT, structures, dose, plan).

Which files are used
--------------------
The folder is searched recursively. CT slices are grouped by series; with
several series the one the structure set names is taken, or the one given
(``series=``), otherwise the import stops and lists them. Of several RT
files of one kind, the one matching the chosen CT (structure set: series or
frame of reference; plan: the structure set; dose: the plan) is taken, or
the one given (``rtstruct=``, ``rtplan=``, ``rtdose=``); ambiguity is an
error that lists them. Every file's frame of reference must be the CT's.

What comes out
--------------
:class:`DicomImport`: the :class:`~airtp.Case` (CT in HU; one mask per ROI,
voxel-centre inclusion by the even-odd rule; the RTDOSE resampled
trilinearly to the CT grid as ``reference_dose_gy``; prescriptions from the
plan's target dose references unless given; the DICOM identity in
``meta['dicom']`` so that export references the original CT), the plan as a
:class:`~airtp.sequencing.plan.DeliveryPlan` with its beams, and the table of
structure names. Names are harmonised to the standard set by
:func:`airtp.structures.harmonize.harmonize` when that module is present
(``harmonize=False`` keeps them); an unmatched or ambiguous name is kept.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from airtp.beams.beam import Beam
from airtp.case import Case, Prescription
from airtp.errors import AirtpError, DicomError
from airtp.grid import resample
from airtp.io.dicom.contours import rasterize
from airtp.io.dicom.ct import CtSeries, describe_series, group_series, read_ct_series
from airtp.io.dicom.export import DICOM_META
from airtp.io.dicom.files import scan_folder
from airtp.io.dicom.rtdose import DoseFile, read_rtdose
from airtp.io.dicom.rtplan import model_beams, read_rtplan
from airtp.io.dicom.rtstruct import StructureFile, check_against_ct, read_rtstruct
from airtp.sequencing.plan import DeliveryPlan
from airtp.structures.structure_set import StructureSet

__all__ = ["DicomImport", "NameRow", "import_dicom", "load_name_mapping"]

REFERENCE_DOSE = "reference_dose_gy"  # the case-file key of a reference plan's dose (airtp.case)


@dataclass
class NameRow:
    """One structure name: as in the file, as in the case, and how it was decided."""

    input: str
    output: str
    status: str  # matched | ambiguous | unmatched | kept
    reason: str = ""


@dataclass
class DicomImport:
    case: Case
    dose_gy: np.ndarray | None
    plan: DeliveryPlan | None
    beams: list[Beam]
    names: list[NameRow]
    files: dict[str, str]
    notes: list[str] = field(default_factory=list)

    def name_table(self) -> str:
        """The structure-name table printed by ``airtp import``."""
        if not self.names:
            return "no structures"
        w = max(len(r.input) for r in self.names + [NameRow("Input name", "", "")])
        v = max(len(r.output) for r in self.names + [NameRow("", "Case name", "")])
        lines = [f"{'Input name':<{w}}  {'Case name':<{v}}  {'Status':<9}  Reason"]
        lines += [f"{r.input:<{w}}  {r.output:<{v}}  {r.status:<9}  {r.reason}" for r in self.names]
        return "\n".join(lines)


def load_name_mapping(path) -> dict[str, str]:
    """A user's name mapping: JSON ``{"input name": "standard name"}`` or CSV rows ``input,standard``."""
    path = Path(path)
    try:
        raw = path.read_text()
    except OSError as exc:
        raise AirtpError(f"{path}: cannot read the name mapping ({exc})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise AirtpError(f"{path}: name mapping is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise AirtpError(f"{path}: name mapping must be a JSON object of input name -> standard name")
        return dict(data)
    out = {}
    for n, row in enumerate(csv.reader(raw.splitlines()), start=1):
        if not row or row[0].startswith("#"):
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise AirtpError(f"{path}: line {n}: expected 'input name,standard name'")
        out[row[0].strip()] = row[1].strip()
    return out


def _harmonize(names: list[str], site: str | None, mapping, notes: list[str]) -> list[NameRow]:
    """One row per name; a matched name takes its standard name unless another structure already has it."""
    try:
        from airtp.structures import harmonize as module
    except ImportError as exc:
        if exc.name and "airtp.structures.harmonize".startswith(exc.name):
            if mapping is not None:
                raise AirtpError("--names needs structure-name harmonisation (airtp.structures.harmonize), "
                                 "which is not available") from None
            notes.append("structure names kept as given (airtp.structures.harmonize is not available)")
            return [NameRow(n, n, "kept", "no harmoniser") for n in names]
        raise
    if isinstance(mapping, (str, Path)):
        loader = getattr(module, "load_mapping", load_name_mapping)
        mapping = loader(mapping)
    rows = []
    for name, match in zip(names, module.harmonize(list(names), site=site, mapping=mapping)):
        status, reason = str(match.status), str(match.reason or "")
        out = match.standard if status == "matched" and match.standard else name
        if out != name and out in names:
            # the standard name belongs to another structure of the file, which keeps it
            out, status, reason = name, "ambiguous", f"{reason}; another structure is named {match.standard}"
        rows.append(NameRow(name, out, status, reason))
    seen: set[str] = set()
    for row in rows:
        if row.output in seen:  # never two structures under one name
            row.output, row.status, row.reason = row.input, "ambiguous", f"{row.reason}; name taken twice"
        seen.add(row.output)
    return rows


def _choose_ct(scan, folder: Path, series: str | None, structures: list[StructureFile]) -> list:
    items = scan.of("CT")
    if not items:
        raise DicomError(f"{folder}: no CT image series (found: {scan.summary()})")
    groups = group_series(items)
    listing = "; ".join(describe_series(uid, its) for uid, its in groups.items())
    if series:
        if series not in groups:
            raise DicomError(f"{folder}: no CT series {series} (have: {listing})")
        return groups[series]
    if len(groups) == 1:
        return next(iter(groups.values()))
    named = {uid for s in structures for uid in s.series_uids} & set(groups)
    if len(named) == 1:
        return groups[named.pop()]
    raise DicomError(f"{folder}: {len(groups)} CT series and no single one named by a structure set; choose one "
                     f"with --series UID: {listing}")


def _choose(candidates: list, matching: list, kind: str, option: str, folder: Path):
    """The one file of a kind to use: the single candidate, or the single one matching the CT/plan."""
    if not candidates:
        return None
    if len(matching) == 1:
        return matching[0]
    if len(candidates) == 1:
        return candidates[0]  # its mismatch is reported by the checks that follow, naming it
    pool = matching or candidates
    raise DicomError(f"{folder}: {len(pool)} {kind} files fit; choose one with {option} FILE: "
                     + ", ".join(str(c.path) for c in pool))


def _choose_dose(dose_files: list[DoseFile], plan, folder: Path, notes: list[str]) -> DoseFile | None:
    """The plan dose; else the sum of the plan's per-beam doses when they share one grid; else the single file."""
    ours = [d for d in dose_files if plan is None or not d.plan_uid or d.plan_uid == plan.sop_uid]
    plan_doses = [d for d in ours if d.summation in ("PLAN", "")]
    beam_doses = [d for d in ours if d.summation == "BEAM"]
    if len(plan_doses) != 1 and len(beam_doses) > 1 and len(beam_doses) == len(ours):
        first = beam_doses[0]
        if all(d.grid == first.grid and d.units == first.units for d in beam_doses):
            notes.append(f"dose: the sum of {len(beam_doses)} per-beam RTDOSE files")
            total = np.sum([d.dose for d in beam_doses], axis=0, dtype=np.float64).astype(np.float32)
            return dataclasses.replace(first, path=folder, dose=total, summation="PLAN")
    return _choose(dose_files, plan_doses, "RTDOSE", "--rtdose", folder)


def _masks(structures: StructureFile, ct: CtSeries, notes: list[str]) -> tuple[dict[str, np.ndarray], dict[int, str]]:
    """Masks by (unique) name and the name of each ROI number."""
    dz = ct.grid.spacing_mm[0]
    gaps = np.diff(ct.slice_z_mm)
    # resampled slices: each original contour plane still stands for its own (larger) gap
    tol = float(gaps.max()) / 2 if ct.resampled and gaps.size else dz / 2
    masks: dict[str, np.ndarray] = {}
    names: dict[int, str] = {}
    for roi in structures.rois:
        if not roi.contours:
            notes.append(f"ROI '{roi.name}' has no closed contours; not imported")
            continue
        name = roi.name
        n = 2
        while name in masks:
            name, n = f"{roi.name}_{n}", n + 1
        if name != roi.name:
            notes.append(f"ROI name '{roi.name}' appears twice; the second is '{name}'")
        masks[name] = rasterize(roi.contours, ct.grid, plane_tolerance_mm=tol)
        names[roi.number] = name
        if not masks[name].any():
            notes.append(f"ROI '{roi.name}' is smaller than a voxel: its mask is empty")
    return masks, names


def import_dicom(folder, *, series: str | None = None, rtstruct=None, rtplan=None, rtdose=None,
                 site: str | None = None, patient_id: str | None = None,
                 prescriptions: list[Prescription] | None = None, names=None, harmonize: bool = True,
                 uneven: str = "error") -> DicomImport:
    """Read a DICOM folder into a case (see the module doc).

    Parameters
    ----------
    folder : path
        Searched recursively for CT, RTSTRUCT, RTPLAN and RTDOSE files.
    series : str, optional
        SeriesInstanceUID of the CT to use.
    rtstruct, rtplan, rtdose : path, optional
        The file of that kind to use (it may lie outside `folder`).
    site : str, optional
        The case's site (``hn``, ``lung``, ``generic``; default generic); also given to the harmoniser.
    prescriptions : list of Prescription, optional
        Replace those read from the plan.
    names : mapping or path, optional
        A user's name mapping for the harmoniser (path: :func:`load_name_mapping`).
    harmonize : bool
        Harmonise structure names (default True).
    uneven : str
        ``error`` (default) or ``resample``: what to do with uneven CT slice gaps.
    """
    folder = Path(folder)
    notes: list[str] = []
    scan = scan_folder(folder)
    if rtstruct:
        structure_files = [read_rtstruct(rtstruct)]
    else:
        structure_files = [read_rtstruct(p, ds) for p, ds in scan.of("RTSTRUCT")]
    ct = read_ct_series(_choose_ct(scan, folder, series, structure_files), uneven=uneven)
    files = {"CT": f"{len(ct.files)} slices, series {ct.series_uid}"}
    if ct.resampled:
        notes.append(f"uneven CT slice gaps resampled onto {ct.grid.spacing_mm[0]:.3f} mm")

    structures = _choose(structure_files, [s for s in structure_files
                                            if ct.series_uid in s.series_uids or s.frame_uid == ct.frame_uid],
                         "RTSTRUCT", "--rtstruct", folder)
    masks: dict[str, np.ndarray] = {}
    roi_names: dict[int, str] = {}
    if structures is not None:
        if structures.frame_uid and structures.frame_uid != ct.frame_uid:
            raise DicomError(f"{structures.path}: frame of reference {structures.frame_uid} does not match the CT's "
                             f"{ct.frame_uid}")
        check_against_ct(structures, ct.frame_uid, ct.slice_uids, ct.slice_z_mm, ct.grid.spacing_mm[0])
        masks, roi_names = _masks(structures, ct, notes)
        files["RTSTRUCT"] = str(structures.path)
    else:
        notes.append("no structure set: the case has no structures")

    plan_files = [read_rtplan(rtplan)] if rtplan else [read_rtplan(p, ds) for p, ds in scan.of("RTPLAN")]
    plan = _choose(plan_files, [p for p in plan_files if structures and p.structure_set_uid == structures.sop_uid],
                   "RTPLAN", "--rtplan", folder)
    linked = plan is not None and (plan.frame_uid or (structures and plan.structure_set_uid == structures.sop_uid))
    if plan is not None and not linked and not rtplan:
        # neither a frame of reference nor our structure set ties it to this CT: its geometry would be a guess
        notes.append(f"{plan.path}: no frame of reference and not based on the imported structure set; "
                     "plan skipped (give it with --rtplan to use it anyway)")
        plan = None
    if plan is not None:
        if plan.frame_uid and plan.frame_uid != ct.frame_uid:
            raise DicomError(f"{plan.path}: frame of reference {plan.frame_uid} does not match the CT's {ct.frame_uid}")
        if plan.patient_position != ct.patient_position:
            notes.append(f"plan patient position {plan.patient_position}, CT {ct.patient_position}")
        notes.extend(plan.notes)
        files["RTPLAN"] = str(plan.path)

    if rtdose:
        dose_files = [read_rtdose(rtdose)]
        dose_files[0].gy()  # a dose asked for must be usable
    else:
        dose_files = []
        for p, ds in scan.of("RTDOSE"):
            d = read_rtdose(p, ds)
            if d.units == "GY":
                dose_files.append(d)
            else:  # a relative dose cannot be a reference dose; it must not block the CT and structures
                notes.append(f"{p}: dose units {d.units or 'not given'}, not GY: skipped")
    dose = _choose_dose(dose_files, plan, folder, notes)
    dose_gy = None
    if dose is not None:
        if dose.frame_uid and dose.frame_uid != ct.frame_uid:
            raise DicomError(f"{dose.path}: frame of reference {dose.frame_uid} does not match the CT's {ct.frame_uid}")
        dose_gy = resample(dose.gy(), dose.grid, ct.grid, order=1, fill=0.0)
        files["RTDOSE"] = str(dose.path)

    names_in = list(masks)
    if harmonize and names_in:
        rows = _harmonize(names_in, site, names, notes)
    else:
        rows = [NameRow(n, n, "kept", "--keep-names" if not harmonize else "") for n in names_in]
    masks = {row.output: masks[row.input] for row in rows}
    renamed = {row.input: row.output for row in rows}

    if prescriptions is None and plan is not None and structures is not None:
        prescriptions = []
        for number, dose_total in plan.prescriptions:
            name = renamed.get(roi_names.get(number, ""))
            if name is None:
                notes.append(f"{plan.path}: a target dose reference names ROI {number}, not among the structures")
            else:
                prescriptions.append(Prescription(name, dose_total, plan.plan.fractions))
    meta = {DICOM_META: {
        "study_uid": ct.study_uid, "frame_of_reference_uid": ct.frame_uid, "ct_series_uid": ct.series_uid,
        "ct_sop_uids": ct.sop_uids, "patient_name": ct.patient["name"], "patient_id": ct.patient["id"],
        "patient_birth_date": ct.patient["birth_date"], "patient_sex": ct.patient["sex"],
        "study_date": ct.patient["study_date"], "study_time": ct.patient["study_time"],
        "study_id": ct.patient["study_id"], "patient_position": ct.patient_position, "files": files,
    }}
    arrays = {REFERENCE_DOSE: dose_gy.astype(np.float32)} if dose_gy is not None else {}
    try:
        case = Case(ct.hu, StructureSet(ct.grid, masks), list(prescriptions or []), site or "generic",
                    patient_id or ct.patient["id"] or folder.name, meta, arrays)
    except AirtpError as exc:
        raise DicomError(f"{folder}: {exc}") from None
    beams = model_beams(plan.plan) if plan is not None else []
    return DicomImport(case, dose_gy, plan.plan if plan else None, beams, rows, files, notes)
