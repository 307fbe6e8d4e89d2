"""CT image series: one volume from many slice files, and back.

Reading (:func:`read_ct_series`): the slices of one series are sorted along
the slice normal (ImagePositionPatient projected on it, never by file name or
InstanceNumber), must share size, pixel spacing, orientation and in-plane
position (no gantry tilt), and are rescaled to HU (RescaleSlope/Intercept).
The stack is turned into AIRTP's (z, y, x) LPS order whatever the patient
position (:func:`~airtp.io.dicom.files.to_canonical`). Uneven slice gaps are
an error unless ``uneven='resample'``.

Writing (:func:`ct_datasets`): one CT Image Storage file per z slice, int16
HU, axial HFS orientation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from airtp.errors import DicomError
from airtp.grid import Grid
from airtp.io.dicom.files import (
    CT_IMAGE,
    axial_axes,
    ds_number,
    floats,
    new_dataset,
    require,
    text,
    to_canonical,
    uniform_stack,
)

__all__ = ["PATIENT_POSITIONS", "CtSeries", "ct_datasets", "group_series", "read_ct_series"]

PATIENT_POSITIONS = ("HFS", "FFS", "HFP", "FFP", "HFDR", "HFDL", "FFDR", "FFDL", "SITTING")


@dataclass
class CtSeries:
    """A CT volume read from DICOM.

    ``sop_uids[k]`` is the SOP Instance UID of the slice at ``grid`` z index k
    (empty when the slices were resampled); ``slice_uids`` and ``slice_z_mm``
    the SOP Instance UIDs and z of the original slices, ascending in z.
    """

    hu: np.ndarray
    grid: Grid
    series_uid: str
    study_uid: str
    frame_uid: str
    patient_position: str
    sop_uids: list[str]
    slice_z_mm: np.ndarray
    files: list[Path]
    slice_uids: list[str] = field(default_factory=list)
    patient: dict = field(default_factory=dict)
    description: str = ""
    resampled: bool = False


def group_series(items: list[tuple[Path, Dataset]]) -> dict[str, list[tuple[Path, Dataset]]]:
    """CT files by SeriesInstanceUID."""
    out: dict[str, list[tuple[Path, Dataset]]] = {}
    for path, ds in items:
        out.setdefault(str(require(ds, "SeriesInstanceUID", path)), []).append((path, ds))
    return out


def describe_series(uid: str, items) -> str:
    ds = items[0][1]
    desc = text(ds, "SeriesDescription")
    return f"{uid} ({len(items)} slices{', ' + repr(desc) if desc else ''})"


def _same(values, what: str, items) -> None:
    first = values[0]
    for (path, _), v in zip(items, values):
        if not np.allclose(v, first, atol=1e-4):
            raise DicomError(f"{path}: {what} {np.round(v, 4).tolist()} differs from the series' "
                             f"{np.round(first, 4).tolist()} ({items[0][0]})")


def _patient(ds: Dataset) -> dict:
    return {"name": str(ds.get("PatientName", "") or ""), "id": text(ds, "PatientID"),
            "birth_date": text(ds, "PatientBirthDate"), "sex": text(ds, "PatientSex"),
            "study_date": text(ds, "StudyDate"), "study_time": text(ds, "StudyTime"), "study_id": text(ds, "StudyID")}


def read_ct_series(items: list[tuple[Path, Dataset]], uneven: str = "error") -> CtSeries:
    """The CT volume (HU, LPS (z, y, x)) of the slice files of one series."""
    if not items:
        raise DicomError("no CT slices")
    path0, ds0 = items[0]
    row, col, normal = axial_axes(ds0, path0)
    rows, cols = int(require(ds0, "Rows", path0)), int(require(ds0, "Columns", path0))
    spacing = floats(ds0, "PixelSpacing", path0, 2)  # (between rows, between columns)
    if np.any(spacing <= 0):
        raise DicomError(f"{path0}: PixelSpacing must be positive, got {spacing.tolist()}")
    frame_uid = str(require(ds0, "FrameOfReferenceUID", path0))
    ipps, iops = [], []
    for path, ds in items:
        ipps.append(floats(ds, "ImagePositionPatient", path, 3))
        iops.append(floats(ds, "ImageOrientationPatient", path, 6))
        if (int(require(ds, "Rows", path)), int(require(ds, "Columns", path))) != (rows, cols):
            raise DicomError(f"{path}: {ds.Rows} x {ds.Columns} pixels, the series has {rows} x {cols} ({path0})")
        if str(require(ds, "FrameOfReferenceUID", path)) != frame_uid:
            raise DicomError(f"{path}: frame of reference {ds.FrameOfReferenceUID} differs from the series' "
                             f"{frame_uid} ({path0})")
    _same(iops, "ImageOrientationPatient", items)
    _same([floats(ds, "PixelSpacing", p, 2) for p, ds in items], "PixelSpacing", items)
    ipps = np.asarray(ipps)
    # in-plane positions must agree: a shifted slice or gantry tilt would skew the volume
    in_plane = ipps @ np.column_stack([row, col])
    bad = np.nonzero(np.abs(in_plane - in_plane[0]).max(axis=1) > 0.05)[0]
    if bad.size:
        raise DicomError(f"{items[bad[0]][0]}: ImagePositionPatient {ipps[bad[0]].tolist()} is shifted in plane "
                         f"from the series' first slice ({path0}); tilted or shifted series are not supported")
    along = ipps @ normal
    order = np.argsort(along, kind="stable")
    items = [items[i] for i in order]
    along, ipps = along[order], ipps[order]
    files = [p for p, _ in items]

    slices = [_hu_slice(path, ds, rows, cols) for path, ds in items]
    volume = np.stack(slices)
    if len(items) == 1:
        thickness = float(floats(ds0, "SliceThickness", path0, 1, what="a one-slice series")[0])
        if thickness <= 0:
            raise DicomError(f"{path0}: one slice with SliceThickness {thickness}; cannot make a volume")
        dk, resampled = thickness, False
    else:
        volume, dk, resampled = uniform_stack(volume, along, uneven, f"CT series {ds0.get('SeriesInstanceUID')}",
                                              files)
    hu = np.clip(np.rint(volume), -32768, 32767).astype(np.int16)
    hu, grid = to_canonical(hu, ipps[0], [normal, col, row], [dk, spacing[0], spacing[1]])
    # slices in ascending z: the normal points along +z or -z
    slice_uids = [str(require(ds, "SOPInstanceUID", p)) for p, ds in items]
    slice_z = ipps[:, 2]
    if normal[2] < 0:
        slice_uids, slice_z = slice_uids[::-1], slice_z[::-1]
    position = text(ds0, "PatientPosition", "HFS").upper()
    return CtSeries(hu=hu, grid=grid, series_uid=str(ds0.SeriesInstanceUID), study_uid=text(ds0, "StudyInstanceUID"),
                    frame_uid=frame_uid, patient_position=position, sop_uids=[] if resampled else slice_uids,
                    slice_z_mm=np.asarray(slice_z, dtype=float), files=files, slice_uids=slice_uids,
                    patient=_patient(ds0), description=text(ds0, "SeriesDescription"), resampled=resampled)


def _hu_slice(path: Path, ds: Dataset, rows: int, cols: int) -> np.ndarray:
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on bad pixel data
        raise DicomError(f"{path}: pixel data cannot be read ({type(exc).__name__}: {exc})") from None
    if pixels.shape != (rows, cols):
        raise DicomError(f"{path}: pixel data of shape {pixels.shape}, expected ({rows}, {cols})")
    slope = float(floats(ds, "RescaleSlope", path, 1, default=[1.0])[0])
    intercept = float(floats(ds, "RescaleIntercept", path, 1, default=[0.0])[0])
    return pixels.astype(np.float64) * slope + intercept


#: BodyPartExamined by case site (DICOM defined terms).
BODY_PART = {"hn": "HEADNECK", "lung": "CHEST"}


def ct_datasets(hu: np.ndarray, grid: Grid, uids: dict, patient: dict, position: str = "HFS",
                site: str = "generic") -> list[Dataset]:
    """One CT Image Storage dataset per z slice of `hu` (int16 HU on `grid`).

    `uids` holds ``study``, ``frame``, ``ct_series`` and ``ct_sops`` (one SOP
    Instance UID per slice); `patient` the common patient/study attributes
    (see :func:`airtp.io.dicom.export.patient_module`).
    """
    from airtp.io.dicom.export import common_modules

    z_axis, y_axis, x_axis = grid.axes_mm()
    dz, dy, dx = grid.spacing_mm
    out = []
    for k in range(grid.shape[0]):
        ds = new_dataset(CT_IMAGE, uids["ct_sops"][k])
        common_modules(ds, patient, uids, modality="CT", series_uid=uids["ct_series"], series_number=1)
        ds.PatientPosition = position
        if site in BODY_PART:
            ds.BodyPartExamined = BODY_PART[site]  # unpaired parts: no Laterality needed
        else:
            ds.Laterality = ""  # type 2C when the body part is unknown: empty, the CT covers both sides
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [ds_number(x_axis[0]), ds_number(y_axis[0]), ds_number(z_axis[k])]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceThickness = ds_number(dz)
        ds.SliceLocation = ds_number(z_axis[k])
        ds.PixelSpacing = [ds_number(dy), ds_number(dx)]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = grid.shape[1], grid.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
        ds.KVP = ""
        ds.AcquisitionNumber = 1
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.PixelData = np.ascontiguousarray(hu[k], dtype="<i2").tobytes()
        out.append(ds)
    return out
