"""A patient case: CT, structures, prescriptions and site, stored as one .npz.

File format (one compressed ``.npz``):

- ``ct_hu``: int16 (z, y, x), Hounsfield units;
- ``spacing_mm``: (z, y, x) voxel spacing in mm; ``origin_mm``: (z, y, x)
  patient coordinates of the centre of voxel (0, 0, 0);
- ``mask/<name>``: one bool (z, y, x) array per structure;
- ``meta`` (optional): a JSON string with ``site``, ``patient_id``,
  ``prescriptions`` (list of {structure, dose_gy, fractions}) and anything else;
- any other array is kept in :attr:`Case.arrays` and saved back unchanged.
  Those AIRTP knows (:data:`KNOWN_ARRAYS`: ``reference_dose_gy``, the dose of
  a reference plan in Gy on the CT grid) are checked; the others are named in
  a :class:`CaseFileWarning` when the file is loaded, so that a misspelt key
  is never silently ignored.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from airtp.errors import AirtpError, CaseFileError, PrescriptionError
from airtp.grid import Grid
from airtp.structures.structure_set import StructureSet

__all__ = ["Case", "Prescription", "SITES", "atomic_write", "KNOWN_ARRAYS", "REFERENCE_DOSE", "CaseFileWarning"]

SITES = ("hn", "lung", "generic")
MASK_PREFIX = "mask/"
_REQUIRED = ("ct_hu", "spacing_mm", "origin_mm")

REFERENCE_DOSE = "reference_dose_gy"
#: Extra arrays AIRTP understands, with what they hold; each lies on the CT grid.
KNOWN_ARRAYS = {REFERENCE_DOSE: "dose of a reference plan (Gy, on the CT grid)"}


class CaseFileWarning(UserWarning):
    """A case file holds arrays AIRTP keeps (and saves back) but does not understand."""


@dataclass(frozen=True)
class Prescription:
    """Prescribed dose to a target structure.

    Parameters
    ----------
    structure : str
        Name of the target structure (e.g. "PTV70").
    dose_gy : float
        Total prescribed dose in Gy.
    fractions : int
        Number of fractions.
    """

    structure: str
    dose_gy: float
    fractions: int

    def __post_init__(self):
        if not self.structure:
            raise PrescriptionError("a prescription needs a target structure name")
        if not (np.isfinite(self.dose_gy) and self.dose_gy > 0):
            raise PrescriptionError(f"prescription for '{self.structure}': dose must be positive, got {self.dose_gy} Gy")
        if int(self.fractions) != self.fractions or self.fractions < 1:
            raise PrescriptionError(f"prescription for '{self.structure}': fractions must be a positive integer, got {self.fractions}")
        object.__setattr__(self, "dose_gy", float(self.dose_gy))
        object.__setattr__(self, "fractions", int(self.fractions))

    @property
    def dose_per_fraction_gy(self) -> float:
        return self.dose_gy / self.fractions

    @classmethod
    def parse(cls, text: str) -> "Prescription":
        """Parse ``NAME:GY[:FRACTIONS]``; fractions default to 2 Gy per fraction."""
        parts = text.rsplit(":", 2) if text.count(":") >= 2 else text.rsplit(":", 1)
        try:
            dose = float(parts[1])
            fractions = int(parts[2]) if len(parts) > 2 else max(1, round(dose / 2.0))
        except (IndexError, ValueError):
            raise PrescriptionError(f"prescription '{text}': expected NAME:GY[:FRACTIONS], e.g. PTV70:70:35") from None
        return cls(parts[0], dose, fractions)

    def to_dict(self) -> dict:
        return {"structure": self.structure, "dose_gy": self.dose_gy, "fractions": self.fractions}


def atomic_write(path: Path, write) -> None:
    """Call ``write(file_object)`` on a temporary file beside `path`, then rename.

    A crash leaves either the old file or none, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        # mkstemp creates 0600; give the file the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_folder(path: Path, build) -> Path:
    """Call ``build(folder)`` on a temporary folder beside `path`, then rename it to `path`.

    An existing `path` is replaced whole, and only once the new folder is
    complete: a crash leaves the old folder or the new one, never a mix.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        build(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp creates 0700
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


@dataclass
class Case:
    """One patient: CT, structure set, prescriptions and treatment site."""

    ct_hu: np.ndarray
    structures: StructureSet
    prescriptions: list[Prescription] = field(default_factory=list)
    site: str = "generic"
    patient_id: str = ""
    meta: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        if self.site not in SITES:
            raise AirtpError(f"case '{self.patient_id}': site must be one of {SITES}, got '{self.site}'")
        self.grid.check_array(self.ct_hu, f"case '{self.patient_id}' CT")
        self.ct_hu = np.ascontiguousarray(self.ct_hu, dtype=np.int16)
        if REFERENCE_DOSE in self.arrays:
            self._check_reference_dose(self.arrays[REFERENCE_DOSE])

    def _check_reference_dose(self, dose) -> None:
        """A reference dose must be a finite, non-negative dose (Gy) on the CT grid."""
        dose = np.asarray(dose)
        what = f"case '{self.patient_id}': {REFERENCE_DOSE}"
        if dose.shape != self.grid.shape:
            raise CaseFileError(f"{what} has shape {dose.shape}, but the CT has shape {self.grid.shape}")
        if not (np.issubdtype(dose.dtype, np.floating) or np.issubdtype(dose.dtype, np.integer)):
            raise CaseFileError(f"{what} must hold numbers (Gy), got dtype {dose.dtype}")
        if not np.all(np.isfinite(dose)) or dose.min(initial=0) < 0:
            raise CaseFileError(f"{what} must be finite and non-negative (Gy)")

    @property
    def reference_dose(self) -> np.ndarray | None:
        """The dose of a reference plan (Gy, CT grid), when the case file has one."""
        return self.arrays.get(REFERENCE_DOSE)

    @property
    def unknown_arrays(self) -> list[str]:
        """Extra arrays kept and saved back, but not understood by AIRTP (not in :data:`KNOWN_ARRAYS`)."""
        return [k for k in self.arrays if k not in KNOWN_ARRAYS]

    @property
    def grid(self) -> Grid:
        return self.structures.grid

    # Prescriptions -------------------------------------------------------
    def check_prescriptions(self) -> None:
        """Raise :class:`PrescriptionError` if none, or one names an absent or empty structure."""
        if not self.prescriptions:
            raise PrescriptionError(f"case '{self.patient_id}' has no prescription (give e.g. --prescription PTV70:70:35)")
        for p in self.prescriptions:
            if p.structure not in self.structures:
                raise PrescriptionError(
                    f"case '{self.patient_id}': prescription names structure '{p.structure}', which is not in the case"
                )
            if not self.structures[p.structure].any():
                raise PrescriptionError(f"case '{self.patient_id}': prescribed target '{p.structure}' is empty")

    def prescriptions_by_dose(self) -> list[Prescription]:
        """Prescriptions from the highest dose to the lowest."""
        return sorted(self.prescriptions, key=lambda p: -p.dose_gy)

    # File I/O --------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the case file atomically; returns its path."""
        path = Path(path)
        meta = dict(self.meta)
        meta.update(site=self.site, patient_id=self.patient_id, prescriptions=[p.to_dict() for p in self.prescriptions])
        arrays = {
            "ct_hu": self.ct_hu,
            "spacing_mm": np.asarray(self.grid.spacing_mm, dtype=np.float64),
            "origin_mm": np.asarray(self.grid.origin_mm, dtype=np.float64),
            "meta": np.asarray(json.dumps(meta)),
        }
        for name, mask in self.structures.items():
            arrays[MASK_PREFIX + name] = mask
        for name, array in self.arrays.items():
            if name in arrays or name.startswith(MASK_PREFIX):
                raise CaseFileError(f"{path}: extra array '{name}' clashes with a reserved key")
            arrays[name] = array
        atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
        return path

    @classmethod
    def load(cls, path, prescriptions: list[Prescription] | None = None, site: str | None = None) -> "Case":
        """Read a case file.

        `prescriptions` and `site`, when given, replace those in the file's
        meta (a file with no meta gets its prescriptions this way).
        """
        path = Path(path)
        if not path.is_file():
            raise CaseFileError(f"{path}: no such case file")
        try:
            with np.load(path, allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise CaseFileError(f"{path}: not a readable case file ({exc})") from None
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise CaseFileError(f"{path}: missing array(s) {', '.join(missing)}")
        try:
            meta = json.loads(str(data.pop("meta"))) if "meta" in data else {}
        except json.JSONDecodeError as exc:
            raise CaseFileError(f"{path}: 'meta' is not valid JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise CaseFileError(f"{path}: 'meta' must be a JSON object")
        ct = data.pop("ct_hu")
        if ct.ndim != 3:
            raise CaseFileError(f"{path}: ct_hu must be 3D (z, y, x), got shape {ct.shape}")
        try:
            grid = Grid(ct.shape, data.pop("spacing_mm"), data.pop("origin_mm"))
        except AirtpError as exc:
            raise CaseFileError(f"{path}: {exc}") from None
        masks = {k[len(MASK_PREFIX):]: data.pop(k) for k in list(data) if k.startswith(MASK_PREFIX)}
        try:
            structures = StructureSet(grid, masks)
        except AirtpError as exc:
            raise CaseFileError(f"{path}: {exc}") from None
        if prescriptions is None:
            try:
                prescriptions = [Prescription(**p) for p in meta.get("prescriptions", [])]
            except (TypeError, AirtpError) as exc:
                raise CaseFileError(f"{path}: bad prescription in meta ({exc})") from None
        patient_id = str(meta.pop("patient_id", "") or path.stem)
        site = site or meta.pop("site", "generic")
        meta.pop("site", None)
        meta.pop("prescriptions", None)
        try:
            case = cls(ct, structures, list(prescriptions), site, patient_id, meta, data)
        except AirtpError as exc:
            raise CaseFileError(f"{path}: {exc}") from None
        if case.unknown_arrays:
            # kept and saved back, but named: a misspelt 'reference_dose_gy' must not pass unnoticed
            warnings.warn(CaseFileWarning(
                f"{path}: array(s) {', '.join(case.unknown_arrays)} not understood by AIRTP "
                f"(known extras: {', '.join(KNOWN_ARRAYS)}); kept and saved back unchanged"), stacklevel=2)
        return case
