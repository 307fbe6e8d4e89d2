"""RT Dose: a dose grid read from and written to DICOM.

:func:`read_rtdose` applies DoseGridScaling, places the frames by
GridFrameOffsetVector (relative to ImagePositionPatient when it starts at 0,
absolute z otherwise) and returns the dose in AIRTP's (z, y, x) LPS order on
its own grid; :func:`airtp.grid.resample` puts it on the CT grid.

:func:`rtdose_dataset` writes a dose on a grid as unsigned 16-bit integers
with a DoseGridScaling chosen so that the maximum uses most of the range
(16 bits: quantisation below 1e-5 of the maximum).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from airtp.errors import DicomError
from airtp.grid import Grid
from airtp.io.dicom.files import (
    RT_DOSE,
    RT_PLAN,
    axial_axes,
    ds_number,
    floats,
    new_dataset,
    require,
    text,
    to_canonical,
    uniform_stack,
)

__all__ = ["DoseFile", "read_rtdose", "rtdose_dataset"]


@dataclass
class DoseFile:
    """A dose read from an RTDOSE file: values (in ``units``) on ``grid``, (z, y, x)."""

    path: Path
    dose: np.ndarray
    grid: Grid
    units: str
    summation: str
    frame_uid: str
    plan_uid: str
    sop_uid: str

    def gy(self) -> np.ndarray:
        """The dose in Gy; a DicomError for relative doses."""
        if self.units != "GY":
            raise DicomError(f"{self.path}: dose units are {self.units or 'not given'}, not GY; only absolute "
                             "doses can be evaluated or imported")
        return self.dose


def read_rtdose(path, ds: Dataset | None = None, uneven: str = "error") -> DoseFile:
    """Parse an RTDOSE file (or its dataset `ds`, read from `path`)."""
    from airtp.io.dicom.files import read_file

    path = Path(path)
    ds = read_file(path) if ds is None else ds
    if str(ds.get("SOPClassUID", "")) != RT_DOSE:
        raise DicomError(f"{path}: not an RT Dose (SOP class {ds.get('SOPClassUID')})")
    row, col, normal = axial_axes(ds, path)
    ipp = floats(ds, "ImagePositionPatient", path, 3)
    spacing = floats(ds, "PixelSpacing", path, 2)
    if np.any(spacing <= 0):
        raise DicomError(f"{path}: PixelSpacing must be positive, got {spacing.tolist()}")
    rows, cols = int(require(ds, "Rows", path)), int(require(ds, "Columns", path))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    scaling = float(floats(ds, "DoseGridScaling", path, 1, default=[1.0])[0])
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on bad pixel data
        raise DicomError(f"{path}: dose pixel data cannot be read ({type(exc).__name__}: {exc})") from None
    pixels = pixels.reshape(frames, rows, cols) if pixels.size == frames * rows * cols else None
    if pixels is None:
        raise DicomError(f"{path}: dose pixel data does not hold {frames} frames of {rows} x {cols}")
    if frames > 1:
        offsets = floats(ds, "GridFrameOffsetVector", path, frames)
        if offsets[0] != 0.0:
            # the other form: absolute patient z of each frame
            if abs(offsets[0] - ipp[2]) > 1e-3:
                raise DicomError(f"{path}: GridFrameOffsetVector starts at {offsets[0]}, neither 0 nor the "
                                 f"first frame's z {ipp[2]}")
            offsets = (offsets - offsets[0]) * normal[2]
    else:
        offsets = np.zeros(1)
    order = np.argsort(offsets, kind="stable")
    values = pixels[order].astype(np.float64) * scaling
    offsets = offsets[order]
    first = ipp + offsets[0] * normal
    if frames > 1:
        values, dk, _ = uniform_stack(values, offsets, uneven, f"{path}: dose frames")
    else:
        dk = float(floats(ds, "SliceThickness", path, 1, default=[1.0])[0]) or 1.0
    if not np.all(np.isfinite(values)) or values.min() < 0:
        raise DicomError(f"{path}: dose values must be finite and non-negative")
    dose, grid = to_canonical(values.astype(np.float32), first, [normal, col, row], [dk, spacing[0], spacing[1]])
    plans = ds.get("ReferencedRTPlanSequence") or []
    return DoseFile(path, dose, grid, text(ds, "DoseUnits").upper(), text(ds, "DoseSummationType").upper(),
                    text(ds, "FrameOfReferenceUID"), text(plans[0], "ReferencedSOPInstanceUID") if plans else "",
                    text(ds, "SOPInstanceUID"))


def rtdose_dataset(dose_gy: np.ndarray, grid: Grid, uids: dict, patient: dict) -> Dataset:
    """An RTDOSE dataset of a plan dose (Gy on `grid`) referencing the RTPLAN ``uids['rtplan']``."""
    from airtp.io.dicom.export import common_modules

    dose_gy = np.asarray(dose_gy, dtype=np.float64)
    ds = new_dataset(RT_DOSE, uids["rtdose"])
    common_modules(ds, patient, uids, modality="RTDOSE", series_uid=uids["rtdose_series"], series_number=4)
    z_axis, y_axis, x_axis = grid.axes_mm()
    dz, dy, dx = grid.spacing_mm
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = [ds_number(x_axis[0]), ds_number(y_axis[0]), ds_number(z_axis[0])]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing = [ds_number(dy), ds_number(dx)]
    ds.SliceThickness = ds_number(dz)
    ds.NumberOfFrames = grid.shape[0]
    ds.FrameIncrementPointer = 0x3004000C  # GridFrameOffsetVector
    ds.GridFrameOffsetVector = [ds_number(k * dz) for k in range(grid.shape[0])]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = grid.shape[1], grid.shape[2]
    # 16-bit: quantisation of at most 1/130000 of the maximum, and the form dciodvfy can check
    # (dicom3tools 2022 aborts on 32-bit pixel data)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.DoseUnits, ds.DoseType = "GY", "PHYSICAL"
    ds.DoseSummationType = "PLAN"
    dmax = float(dose_gy.max()) if dose_gy.size else 0.0
    # the scaling is written as text: scale with the value a reader will parse
    scaling = float(ds_number(dmax / 65000.0)) if dmax > 0 else 1.0
    ds.DoseGridScaling = ds_number(scaling)
    ds.PixelData = np.clip(np.rint(dose_gy / scaling), 0, 65535).astype("<u2").tobytes()
    ref = Dataset()
    ref.ReferencedSOPClassUID = RT_PLAN
    ref.ReferencedSOPInstanceUID = uids["rtplan"]
    ds.ReferencedRTPlanSequence = Sequence([ref])
    return ds
