"""DICOM RT in and out.

- :func:`import_dicom`: a folder (CT series, RTSTRUCT, RTDOSE, RTPLAN) to a
  :class:`~airtp.Case`, the dose on the CT grid and the plan as a
  :class:`~airtp.sequencing.plan.DeliveryPlan` (``airtp import``);
- :func:`export_plan`: a plan folder (``case.npz``, ``dose.npy``,
  ``delivery.json``) to CT, RTSTRUCT, RTDOSE and RTPLAN files (``airtp export``);
- :func:`dicom_dvhs`: DVH metrics straight from an RTSTRUCT and an RTDOSE, on
  the dose grid (``airtp dvh``).

Geometry: AIRTP arrays are (z, y, x) in DICOM patient coordinates (LPS), the
axes increasing along +z, +y, +x; any axis-aligned axial series is flipped
and transposed into that order on import (:mod:`airtp.io.dicom.files`).
Beam angles in a :class:`DeliveryPlan` follow the project's HFS convention
(:mod:`airtp.beams.beam`); for other patient positions they are converted on
import and back on export (:mod:`airtp.io.dicom.rtplan`).

Every failure on bad input is a :class:`~airtp.errors.DicomError` naming the
file; nothing is written unless everything could be read.
"""

from airtp.errors import DicomError

__all__ = ["DicomError", "DicomImport", "dicom_dvhs", "export_plan", "import_dicom"]

_LAZY = {"dicom_dvhs": "airtp.io.dicom.dvh", "export_plan": "airtp.io.dicom.export",
         "DicomImport": "airtp.io.dicom.importer", "import_dicom": "airtp.io.dicom.importer"}


def __getattr__(name):
    # pydicom is imported on first use, not when the CLI builds its parser
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
