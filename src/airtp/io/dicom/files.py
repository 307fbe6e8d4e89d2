"""DICOM files: safe reading, folder scans, geometry of image stacks, atomic writing.

Reading
-------
:func:`read_file` reads a whole file and refuses, with a :class:`DicomError`
naming it, one that pydicom cannot parse or that ends inside an element
(pydicom itself reads truncated files silently, with short values).
:func:`scan_folder` reads every DICOM file under a folder and sorts them by
kind (CT, RTSTRUCT, RTDOSE, RTPLAN); files that are not DICOM are skipped.

Geometry
--------
An image stack is (frame, row, column) with the column index moving along
the first ImageOrientationPatient vector (spacing PixelSpacing[1]), the row
index along the second (PixelSpacing[0]) and the frame index along the slice
normal. :func:`to_canonical` transposes and flips such a stack into AIRTP's
(z, y, x) order with every axis increasing along +z, +y, +x (LPS), for any
axis-aligned axial orientation (HFS, FFS, HFP, FFP and the rest).

Writing
-------
:func:`write_folder` builds the files in a temporary folder beside the
output and renames it into place: a failure never leaves a partial export.
"""

from __future__ import annotations

import datetime as _dt
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from airtp.case import atomic_folder
from airtp.errors import DicomError
from airtp.grid import Grid

__all__ = [
    "CT_IMAGE",
    "KIND_OF_SOP_CLASS",
    "RT_DOSE",
    "RT_PLAN",
    "RT_STRUCTURE_SET",
    "Scan",
    "axial_axes",
    "ds_number",
    "floats",
    "new_dataset",
    "new_uid",
    "read_file",
    "require",
    "save_dataset",
    "scan_folder",
    "text",
    "to_canonical",
    "today",
    "uniform_stack",
    "write_folder",
]

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
RT_DOSE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_STRUCTURE_SET = "1.2.840.10008.5.1.4.1.1.481.3"
RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"
KIND_OF_SOP_CLASS = {CT_IMAGE: "CT", RT_STRUCTURE_SET: "RTSTRUCT", RT_DOSE: "RTDOSE", RT_PLAN: "RTPLAN"}

# Direction cosines within this of a unit axis count as that axis (ImageOrientationPatient
# is written with a few decimals by most systems).
AXIS_TOLERANCE = 1e-3
# Slice gaps that differ by less than this (mm, or this fraction of the gap) count as even.
EVEN_GAP_MM = 0.01
EVEN_GAP_FRACTION = 1e-3


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------
def _short_element(ds: Dataset) -> str | None:
    """Keyword of the first element whose value is shorter than its stated length (a truncated file)."""
    for tag, elem in ds._dict.items():  # raw elements: the only place the stated length survives
        if isinstance(elem, RawDataElement):
            value = elem.value
            if isinstance(value, (bytes, bytearray)) and elem.length != 0xFFFFFFFF and len(value) < elem.length:
                return pydicom.datadict.keyword_for_tag(tag) or str(tag)
            # defined-length sequences stay raw bytes (checked above); undefined-length ones arrive parsed
            items = value if isinstance(value, (list, Sequence)) else []
        else:
            items = elem.value if elem.VR == "SQ" else []
        for item in items:
            if isinstance(item, Dataset):
                found = _short_element(item)
                if found:
                    return found
    return None


def _sniff(path: Path) -> str:
    """'dicom' (preamble and DICM), 'bare' (starts like a dataset without preamble) or 'other'."""
    with open(path, "rb") as f:
        head = f.read(132)
    if len(head) == 132 and head[128:] == b"DICM":
        return "dicom"
    # a file without preamble starts with a group 0002 or 0008 tag, little or big endian
    return "bare" if head[:2] in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08") else "other"


def read_file(path, required: bool = True) -> Dataset | None:
    """Read a whole DICOM file.

    Files without the 128-byte preamble are read too (older RT files often
    lack it) when they carry a SOP Class UID. Returns None for a file that is
    not DICOM when `required` is false; otherwise, and for any DICOM file
    that is unreadable or truncated, raises :class:`DicomError` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise DicomError(f"{path}: no such file")
    try:
        kind = _sniff(path)
    except OSError as exc:
        raise DicomError(f"{path}: cannot be read ({exc})") from None
    dicm = kind == "dicom"
    if kind == "other":
        if not required:
            return None
        raise DicomError(f"{path}: not a DICOM file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns on what we then report as an error
            ds = pydicom.dcmread(path, force=not dicm)
            short = _short_element(ds)
            sop_class = ds.get("SOPClassUID")
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, IndexError,
            NotImplementedError, AttributeError) as exc:
        if not dicm and not required:
            return None
        raise DicomError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})") from None
    if not dicm and not sop_class:
        if not required:
            return None
        raise DicomError(f"{path}: not a DICOM file (no DICM prefix and no SOP Class UID)")
    if short:
        raise DicomError(f"{path}: truncated DICOM file (element {short} is cut short)")
    if not sop_class:
        raise DicomError(f"{path}: no SOP Class UID; cannot tell what this DICOM file holds")
    return ds


@dataclass
class Scan:
    """The DICOM files of a folder by kind: lists of (path, dataset)."""

    folder: Path
    by_kind: dict[str, list[tuple[Path, Dataset]]] = field(default_factory=dict)
    other: list[tuple[Path, str]] = field(default_factory=list)  # DICOM files of other kinds (path, SOP class)
    not_dicom: list[Path] = field(default_factory=list)

    def of(self, kind: str) -> list[tuple[Path, Dataset]]:
        return self.by_kind.get(kind, [])

    def summary(self) -> str:
        parts = [f"{kind} x{len(v)}" for kind, v in self.by_kind.items() if v]
        if self.other:
            parts.append(f"other DICOM x{len(self.other)}")
        if self.not_dicom:
            parts.append(f"non-DICOM x{len(self.not_dicom)}")
        return ", ".join(parts) or "nothing"


def scan_folder(folder) -> Scan:
    """Read every DICOM file under `folder` (recursively) and sort them by kind."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DicomError(f"{folder}: no such folder")
    scan = Scan(folder)
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        ds = read_file(path, required=False)
        if ds is None:
            scan.not_dicom.append(path)
            continue
        kind = KIND_OF_SOP_CLASS.get(str(ds.SOPClassUID))
        if kind is None:
            scan.other.append((path, str(ds.SOPClassUID)))
        else:
            scan.by_kind.setdefault(kind, []).append((path, ds))
    return scan


def require(ds: Dataset, keyword: str, path, what: str = ""):
    """The value of `keyword`, or a DicomError naming the file (and `what`) when absent or empty."""
    value = ds.get(keyword)
    if value is None or (isinstance(value, (str, bytes, list, MultiValue, Sequence)) and len(value) == 0):
        where = f" in {what}" if what else ""
        raise DicomError(f"{path}: missing {keyword}{where}")
    return value


def floats(ds: Dataset, keyword: str, path, n: int | None = None, what: str = "", default=None) -> np.ndarray:
    """Numeric value(s) of `keyword` as float64, checked for count (`n`) and finiteness."""
    if default is not None and ds.get(keyword) in (None, ""):
        return np.asarray(default, dtype=float)
    value = require(ds, keyword, path, what)
    where = f" in {what}" if what else ""
    values = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    try:
        arr = np.asarray([float(v) for v in values], dtype=float)
    except (TypeError, ValueError):
        raise DicomError(f"{path}: {keyword}{where} is not numeric ({value!r})") from None
    if n is not None and arr.size != n:
        raise DicomError(f"{path}: {keyword}{where} needs {n} value(s), has {arr.size} (truncated or malformed file?)")
    if not np.all(np.isfinite(arr)):
        raise DicomError(f"{path}: {keyword}{where} holds non-finite values")
    return arr


def text(ds: Dataset, keyword: str, default: str = "") -> str:
    """A string attribute stripped, or `default` when absent or empty."""
    value = ds.get(keyword)
    return str(value).strip() if value not in (None, "") else default


# ---------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------
def _unit_axis(v: np.ndarray, path, what: str) -> np.ndarray:
    j = int(np.argmax(np.abs(v)))
    axis = np.zeros(3)
    axis[j] = np.sign(v[j])
    if np.max(np.abs(v - axis)) > AXIS_TOLERANCE:
        raise DicomError(f"{path}: {what} {np.round(v, 4).tolist()} is oblique; only images whose rows and "
                         f"columns run along the patient axes are supported")
    return axis


def axial_axes(ds: Dataset, path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row direction, column direction and slice normal (unit patient x, y, z vectors) of an axial image."""
    iop = floats(ds, "ImageOrientationPatient", path, 6)
    row = _unit_axis(iop[:3], path, "ImageOrientationPatient row direction")
    col = _unit_axis(iop[3:], path, "ImageOrientationPatient column direction")
    normal = np.cross(row, col)
    if abs(normal[2]) != 1.0:
        raise DicomError(f"{path}: the image is not axial (ImageOrientationPatient {iop.tolist()}); "
                         "only axial series are supported")
    return row, col, normal


def to_canonical(volume: np.ndarray, first_xyz, directions, spacings) -> tuple[np.ndarray, Grid]:
    """A (frame, row, column) stack as a (z, y, x) LPS array and its :class:`Grid`.

    `first_xyz` is the patient position (x, y, z mm) of the first voxel,
    `directions` the unit patient vectors along which the frame, row and
    column indices move, `spacings` the steps (mm) along them.
    """
    first_xyz = np.asarray(first_xyz, dtype=float)
    target = [2 - int(np.argmax(np.abs(d))) for d in directions]  # patient x -> array axis 2, y -> 1, z -> 0
    if sorted(target) != [0, 1, 2]:
        raise DicomError("image axes are not independent")  # cannot happen for a valid orientation
    order = [target.index(t) for t in range(3)]
    out = np.transpose(volume, order)
    spacing, origin = [0.0] * 3, [0.0] * 3
    for a, t in enumerate(target):
        d = directions[a]
        j = int(np.argmax(np.abs(d)))
        sign = np.sign(d[j])
        n = volume.shape[a]
        spacing[t] = float(spacings[a])
        origin[t] = float(first_xyz[j] + min(0.0, sign * (n - 1) * spacings[a]))
        if sign < 0:
            out = np.flip(out, axis=t)
    return np.ascontiguousarray(out), Grid(out.shape, spacing, origin)


def uniform_stack(volume: np.ndarray, positions, uneven: str, what: str, files=None) -> tuple[np.ndarray, float, bool]:
    """Frames at increasing `positions` (mm) on an even spacing.

    Returns (volume, spacing, resampled). Even gaps pass unchanged; uneven ones
    raise a DicomError (``uneven='error'``, naming the largest gap and, when
    given, the files beside it) or are interpolated linearly onto the median
    gap (``uneven='resample'``).
    """
    positions = np.asarray(positions, dtype=float)
    gaps = np.diff(positions)
    if gaps.size == 0:
        raise DicomError(f"{what}: one slice only and no slice thickness")
    if gaps.min() <= EVEN_GAP_MM:
        i = int(np.argmin(gaps))
        beside = f" ({files[i]} and {files[i + 1]})" if files is not None else ""
        raise DicomError(f"{what}: two slices at the same position {positions[i]:.3f} mm{beside}")
    median = float(np.median(gaps))
    if gaps.max() - gaps.min() <= max(EVEN_GAP_MM, EVEN_GAP_FRACTION * median):
        return volume, float((positions[-1] - positions[0]) / gaps.size), False
    if uneven != "resample":
        i = int(np.argmax(np.abs(gaps - median)))
        beside = f" between {files[i]} and {files[i + 1]}" if files is not None else ""
        raise DicomError(f"{what}: uneven slice spacing: gaps from {gaps.min():.3f} to {gaps.max():.3f} mm "
                         f"(median {median:.3f}); the gap of {gaps[i]:.3f} mm at {positions[i]:.3f} mm{beside}. "
                         "Resample onto the median gap with --uneven-slices resample")
    n = int(np.floor((positions[-1] - positions[0]) / median + 1e-6)) + 1
    new = positions[0] + median * np.arange(n)
    k = np.clip(np.searchsorted(positions, new, side="right") - 1, 0, positions.size - 2)
    t = ((new - positions[k]) / (positions[k + 1] - positions[k])).reshape(-1, 1, 1)
    out = (1 - t) * volume[k].astype(np.float64) + t * volume[k + 1].astype(np.float64)
    return out, median, True


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------
def new_uid() -> str:
    return generate_uid()


def today() -> tuple[str, str]:
    """DICOM date (YYYYMMDD) and time (HHMMSS) now."""
    now = _dt.datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S")


def ds_number(value: float) -> str:
    """A DS string (at most 16 characters) with as many significant digits as fit."""
    value = float(value)
    if value == 0:
        return "0"
    for digits in range(12, 3, -1):
        s = f"{value:.{digits}g}"
        if len(s) <= 16:
            return s
    raise DicomError(f"value {value} does not fit a DICOM decimal string")


def new_dataset(sop_class: str, sop_instance: str) -> Dataset:
    """An empty dataset with its file meta (explicit VR little endian) and SOP common attributes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    return ds


def save_dataset(ds: Dataset, path: Path) -> None:
    """Write `ds` as a DICOM file (preamble, file meta)."""
    ds.save_as(path, enforce_file_format=True)


def write_folder(out, build, overwrite: bool = False, hint: str = "use --overwrite to replace it") -> Path:
    """Call ``build(folder)`` on a temporary folder beside `out`, then rename it to `out`.

    An existing non-empty `out` is refused unless `overwrite` (then replaced
    whole, only once the new folder is complete).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DicomError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DicomError(f"{out}: folder exists and is not empty ({hint})")
    return atomic_folder(out, build)
