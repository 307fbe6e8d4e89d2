"""Errors raised on bad input.

Every error AIRTP raises because of what a user gave it is an
:class:`AirtpError`; its message names the file, structure or beam at fault.
"""


class AirtpError(Exception):
    """Base class of all input errors of AIRTP."""


class CaseFileError(AirtpError):
    """A case file is missing, unreadable or lacks required arrays."""


class GridError(AirtpError):
    """A grid is malformed (non-positive spacing, wrong rank) or two grids differ."""


class StructureError(AirtpError):
    """A structure is absent, not a boolean mask, or not on the case grid."""


class PrescriptionError(AirtpError):
    """A prescription is malformed or names an absent target."""


class RecipeError(AirtpError):
    """A helper-structure recipe cannot run on the case it was given."""


class BeamError(AirtpError):
    """A beam is malformed, its isocentre lies outside the CT, or it misses the body."""


class DoseError(AirtpError):
    """Dose cannot be computed: empty target, unreadable beam data or calibration file."""


class BatchError(AirtpError):
    """A batch cannot start: a cohort path is missing, two cases share a name, a technique is
    unknown, the Dask scheduler cannot be reached, or another batch holds the output folder."""


class DicomError(AirtpError):
    """A DICOM file or folder cannot be read or written; the message names the file (and ROI or beam)."""


class MachineError(AirtpError):
    """A treatment-machine description is missing, malformed or states impossible limits."""


class SequencingError(AirtpError):
    """Fluence cannot be sequenced, or a delivery plan breaks the machine's limits (names the beam and control point)."""


class NameMappingError(AirtpError):
    """A user structure-name mapping file is missing or malformed."""


class ContouringError(AirtpError):
    """A contouring plugin cannot run on a case, or returned unusable contours."""
