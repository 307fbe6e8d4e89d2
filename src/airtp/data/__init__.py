"""Data shipped inside the package: one real head-and-neck patient (OpenKBP pt_48).

The patient is a case file with a reference dose (see ``openkbp/README.md``
for its content, licence and attribution); it is what ``airtp demo --real``
plans. It travels in the wheel with the code, so a pip-installed AIRTP needs
no download and no repository checkout to show real anatomy.
"""

from __future__ import annotations

from importlib import resources

from airtp.case import Case
from airtp.errors import CaseFileError

__all__ = ["REAL_PATIENTS", "real_case"]

#: Shipped patients, by OpenKBP id.
REAL_PATIENTS = ("pt_48",)


def real_case(patient: str = "pt_48") -> Case:
    """The shipped OpenKBP patient `patient` as a Case (its reference dose in ``case.reference_dose``)."""
    if patient not in REAL_PATIENTS:
        raise CaseFileError(f"no shipped real patient '{patient}' (have: {', '.join(REAL_PATIENTS)})")
    ref = resources.files("airtp.data").joinpath("openkbp", f"{patient}.npz")
    # as_file: the package may be imported from a zip, where the file has no path of its own
    with resources.as_file(ref) as path:
        return Case.load(path)
