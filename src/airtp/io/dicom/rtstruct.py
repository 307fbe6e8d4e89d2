"""RT Structure Set: ROIs and their planar contours, read and written.

:func:`read_rtstruct` parses the ROIs (number, name, type, colour) and their
closed planar contours (patient x, y, z mm) with the CT images they name; it
refuses, naming the file and ROI, contours that are not planar (z varies by
more than :data:`PLANAR_TOLERANCE_MM`) or whose point count does not match
their data. Open contours and points (isocentre markers) are kept aside, not
rasterized. :func:`check_against_ct` refuses contours that name images
absent from the CT series or lie outside it, and a frame of reference that
differs from the CT's. Rasterizing is :func:`airtp.io.dicom.contours.rasterize`.

:func:`rtstruct_dataset` writes masks as contours, one per boundary per
slice (marching squares), each naming its CT slice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from airtp.errors import DicomError
from airtp.grid import Grid
from airtp.io.dicom.contours import mask_contours
from airtp.io.dicom.files import CT_IMAGE, RT_STRUCTURE_SET, new_dataset, require, text

__all__ = [
    "PLANAR_TOLERANCE_MM",
    "Roi",
    "StructureFile",
    "check_against_ct",
    "read_rtstruct",
    "roi_type",
    "rtstruct_dataset",
]

# A CLOSED_PLANAR contour whose z varies more than this (mm) is refused as non-planar.
PLANAR_TOLERANCE_MM = 0.05

_COLOURS = [(255, 0, 0), (0, 160, 255), (0, 200, 0), (255, 160, 0), (200, 0, 200), (0, 200, 200), (255, 255, 0),
            (128, 64, 255), (255, 100, 150), (120, 200, 60), (150, 100, 50), (60, 120, 200)]


@dataclass
class Roi:
    """One ROI of a structure set: its closed contours ((N, 3) x, y, z mm) and the image each names."""

    number: int
    name: str
    kind: str = ""
    colour: tuple[int, int, int] | None = None
    contours: list[np.ndarray] = field(default_factory=list)
    images: list[list[str]] = field(default_factory=list)  # referenced SOP Instance UIDs per contour
    frame_uid: str = ""
    skipped: int = 0  # open contours and points


@dataclass
class StructureFile:
    path: Path
    sop_uid: str
    frame_uid: str
    series_uids: list[str]
    rois: list[Roi]
    label: str = ""


def _contour_points(item: Dataset, path, roi_name: str, n: int) -> np.ndarray:
    # ContourData can hold 100 000 numbers: parse the raw text in one go when pydicom has not yet converted it
    raw = item.get_item("ContourData")
    if raw is None:
        raise DicomError(f"{path}: ROI '{roi_name}': contour {n} has no ContourData")
    try:
        if isinstance(raw, RawDataElement) and isinstance(raw.value, (bytes, bytearray)):
            values = np.array(raw.value.replace(b"\x00", b" ").split(b"\\"), dtype=np.float64)
        else:
            values = np.asarray([float(v) for v in item.ContourData], dtype=np.float64)
    except ValueError:
        raise DicomError(f"{path}: ROI '{roi_name}': contour {n} has non-numeric ContourData") from None
    if values.size % 3 or not np.all(np.isfinite(values)):
        raise DicomError(f"{path}: ROI '{roi_name}': contour {n} has {values.size} ContourData values, "
                         "not x, y, z triples (truncated or malformed file?)")
    points = values.reshape(-1, 3)
    stated = item.get("NumberOfContourPoints")
    if stated not in (None, "") and int(stated) != points.shape[0]:
        raise DicomError(f"{path}: ROI '{roi_name}': contour {n} states {int(stated)} points but holds "
                         f"{points.shape[0]}")
    return points


def read_rtstruct(path, ds: Dataset | None = None) -> StructureFile:
    """Parse an RTSTRUCT file (or its dataset `ds`, read from `path`)."""
    from airtp.io.dicom.files import read_file

    path = Path(path)
    ds = read_file(path) if ds is None else ds
    if str(ds.get("SOPClassUID", "")) != RT_STRUCTURE_SET:
        raise DicomError(f"{path}: not an RT Structure Set (SOP class {ds.get('SOPClassUID')})")
    refs = ds.get("ReferencedFrameOfReferenceSequence") or []
    frame_uid = text(refs[0], "FrameOfReferenceUID") if refs else ""
    series = [text(s, "SeriesInstanceUID") for r in refs for st in (r.get("RTReferencedStudySequence") or [])
              for s in (st.get("RTReferencedSeriesSequence") or [])]
    rois: dict[int, Roi] = {}
    for item in require(ds, "StructureSetROISequence", path):
        number = int(require(item, "ROINumber", path, "StructureSetROISequence"))
        name = text(item, "ROIName", f"ROI {number}")
        rois[number] = Roi(number, name, frame_uid=text(item, "ReferencedFrameOfReferenceUID", frame_uid))
    for obs in ds.get("RTROIObservationsSequence") or []:
        roi = rois.get(int(obs.get("ReferencedROINumber", -1) or -1))
        if roi is not None:
            roi.kind = text(obs, "RTROIInterpretedType")
    for item in ds.get("ROIContourSequence") or []:
        number = int(require(item, "ReferencedROINumber", path, "ROIContourSequence"))
        roi = rois.get(number)
        if roi is None:
            raise DicomError(f"{path}: ROIContourSequence names ROI number {number}, which the structure set "
                             "does not define")
        colour = item.get("ROIDisplayColor")
        if colour is not None and len(colour) == 3:
            roi.colour = tuple(int(c) for c in colour)
        for n, contour in enumerate(item.get("ContourSequence") or [], start=1):
            kind = text(contour, "ContourGeometricType", "CLOSED_PLANAR").upper()
            if kind != "CLOSED_PLANAR":
                roi.skipped += 1
                continue
            points = _contour_points(contour, path, roi.name, n)
            if points.shape[0] < 3:
                roi.skipped += 1  # a closed contour of one or two points encloses nothing
                continue
            spread = float(np.ptp(points[:, 2]))
            if spread > PLANAR_TOLERANCE_MM:
                raise DicomError(f"{path}: ROI '{roi.name}': contour {n} is not planar (z from "
                                 f"{points[:, 2].min():.2f} to {points[:, 2].max():.2f} mm); only axial "
                                 "planar contours are supported")
            roi.contours.append(points)
            roi.images.append([text(im, "ReferencedSOPInstanceUID") for im in contour.get("ContourImageSequence") or []])
    return StructureFile(path, text(ds, "SOPInstanceUID"), frame_uid, series, list(rois.values()),
                         label=text(ds, "StructureSetLabel"))


def check_against_ct(structures: StructureFile, frame_uid: str, sop_uids: list[str], slice_z_mm: np.ndarray,
                     dz: float) -> None:
    """Refuse a structure set whose frame of reference, images or planes do not match the CT."""
    path = structures.path
    for roi in structures.rois:
        if roi.frame_uid and frame_uid and roi.frame_uid != frame_uid:
            raise DicomError(f"{path}: ROI '{roi.name}' is in frame of reference {roi.frame_uid}, the CT in "
                             f"{frame_uid}")
    known = set(sop_uids)
    lo, hi = float(slice_z_mm[0]) - dz / 2, float(slice_z_mm[-1]) + dz / 2
    for roi in structures.rois:
        for n, (points, images) in enumerate(zip(roi.contours, roi.images), start=1):
            missing = [u for u in images if u and known and u not in known]
            if missing:
                raise DicomError(f"{path}: ROI '{roi.name}': contour {n} (z {points[0, 2]:.2f} mm) references "
                                 f"image {missing[0]}, which is not in the CT series")
            z = float(points[0, 2])
            if not lo - 1e-3 <= z <= hi + 1e-3:
                raise DicomError(f"{path}: ROI '{roi.name}': contour {n} at z {z:.2f} mm lies outside the CT "
                                 f"(slices from {slice_z_mm[0]:.2f} to {slice_z_mm[-1]:.2f} mm)")


def roi_type(name: str) -> str:
    """RTROIInterpretedType guessed from a structure name."""
    key = name.upper()
    if key in ("BODY", "EXTERNAL", "SKIN", "OUTLINE"):
        return "EXTERNAL"
    for prefix in ("PTV", "CTV", "GTV"):
        if key.startswith(prefix):
            return prefix
    return "ORGAN"


def _roi_contours(mask: np.ndarray, grid: Grid, sop_uids: list[str]) -> Sequence:
    z_axis, y_axis, x_axis = grid.axes_mm()
    seq = Sequence()
    for k in np.nonzero(mask.any(axis=(1, 2)))[0]:
        for poly in mask_contours(mask[k], x_axis, y_axis):
            item = Dataset()
            image = Dataset()
            image.ReferencedSOPClassUID = CT_IMAGE
            image.ReferencedSOPInstanceUID = sop_uids[k]
            item.ContourImageSequence = Sequence([image])
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = poly.shape[0]
            item.ContourNumber = len(seq) + 1
            xyz = np.column_stack([poly, np.full(poly.shape[0], z_axis[k])])
            item.ContourData = [f"{v:.3f}" for v in xyz.ravel()]
            seq.append(item)
    return seq


def rtstruct_dataset(masks: dict[str, np.ndarray], grid: Grid, uids: dict, patient: dict,
                     label: str = "AIRTP") -> Dataset:
    """An RTSTRUCT dataset of boolean masks on the CT `grid` (ROI numbers 1.. in order).

    `uids` holds ``study``, ``frame``, ``ct_series``, ``ct_sops``,
    ``rtstruct_series`` and ``rtstruct``.
    """
    from airtp.io.dicom.export import common_modules

    ds = new_dataset(RT_STRUCTURE_SET, uids["rtstruct"])
    common_modules(ds, patient, uids, modality="RTSTRUCT", series_uid=uids["rtstruct_series"], series_number=2)
    date, time = patient["date"], patient["time"]
    ds.StructureSetLabel = label[:16]
    ds.StructureSetName = label[:64]
    ds.StructureSetDate, ds.StructureSetTime = date, time
    ds.InstanceNumber = 1
    series = Dataset()
    series.SeriesInstanceUID = uids["ct_series"]
    series.ContourImageSequence = Sequence()
    for uid in uids["ct_sops"]:
        im = Dataset()
        im.ReferencedSOPClassUID = CT_IMAGE
        im.ReferencedSOPInstanceUID = uid
        series.ContourImageSequence.append(im)
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management, as the module asks
    study.ReferencedSOPInstanceUID = uids["study"]
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = uids["frame"]
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])

    ds.StructureSetROISequence = Sequence()
    ds.ROIContourSequence = Sequence()
    ds.RTROIObservationsSequence = Sequence()
    for number, (name, mask) in enumerate(masks.items(), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = uids["frame"]
        roi.ROIName = name[:64]
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        ds.StructureSetROISequence.append(roi)
        contour = Dataset()
        contour.ReferencedROINumber = number
        contour.ROIDisplayColor = list(_COLOURS[(number - 1) % len(_COLOURS)])
        contour.ContourSequence = _roi_contours(np.asarray(mask, bool), grid, uids["ct_sops"])
        ds.ROIContourSequence.append(contour)
        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = roi_type(name)
        obs.ROIInterpreter = ""
        ds.RTROIObservationsSequence.append(obs)
    return ds
