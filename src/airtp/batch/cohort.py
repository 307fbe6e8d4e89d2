"""A cohort: the cases of a batch, the tasks made of them, and their content hashes.

A cohort is given as paths: case files (``.npz``), folders of case files, and
DICOM folders (a folder holding ``*.dcm`` files, or files with the DICOM
preamble: one patient, read by :mod:`airtp.io.dicom` where it is installed,
with the site and prescriptions given for DICOM cases). A folder of case files may also hold
one DICOM folder per patient.

Each case gets a *name* (the file stem or the DICOM folder name, with
characters outside ``[A-Za-z0-9._-]`` replaced by ``_``); one task is made
per (case, technique) and named ``<case>__<technique>``, which is also the
name of its plan folder. Two different cases with the same name are refused:
their plans would overwrite each other.

The *input hash* of a task (SHA-256, hex) covers the case bytes (and the
site and prescriptions given to a DICOM case), the technique, every field of the plan settings
and the AIRTP version: a plan
folder whose marker holds the same hash was made from the same inputs and is
not made again on resume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from airtp import __version__
from airtp.case import Case
from airtp.errors import BatchError, CaseFileError

__all__ = ["CohortEntry", "Task", "expand_cohort", "make_tasks", "load_entry", "settings_fingerprint",
           "write_phantom_cohort", "CASE_SUFFIX"]

CASE_SUFFIX = ".npz"
DICOM_SUFFIX = ".dcm"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_CHUNK = 1 << 20  # bytes read at a time when hashing
_SNIFF_FILES = 8  # files of a folder looked at for the DICOM preamble


@dataclass(frozen=True)
class CohortEntry:
    """One case of the cohort: its name, its absolute path, ``kind`` ("npz" or "dicom") and, for DICOM, the
    site and the prescriptions to give it (None and () leave them to the importer)."""

    name: str
    path: Path
    kind: str
    site: str | None = None
    prescriptions: tuple = ()


@dataclass(frozen=True)
class Task:
    """One (case, technique) to plan; ``input_hash`` identifies its inputs (see the module doc)."""

    name: str
    entry: CohortEntry
    technique: str
    input_hash: str


def _safe_name(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("._") or "case"


def _has_preamble(path: Path) -> bool:
    """Whether `path` starts like a DICOM file: 128 bytes, then 'DICM'."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _is_dicom_folder(folder: Path) -> bool:
    files = [p for p in _visible(folder) if p.is_file()]
    if any(p.suffix.lower() == DICOM_SUFFIX for p in files):
        return True
    # DICOM files often have no suffix at all; case files are never DICOM
    return any(_has_preamble(p) for p in files[:_SNIFF_FILES] if p.suffix.lower() != CASE_SUFFIX)


def _visible(folder: Path) -> list[Path]:
    """The entries of `folder`, sorted, without hidden ones (temporary files of atomic writes start with '.')."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _folder_entries(folder: Path, dicom: dict) -> list[CohortEntry]:
    if _is_dicom_folder(folder):
        return [CohortEntry(_safe_name(folder.name), folder, "dicom", **dicom)]
    found = []
    for p in _visible(folder):
        if p.is_file() and p.suffix.lower() == CASE_SUFFIX:
            found.append(CohortEntry(_safe_name(p.stem), p, "npz"))
        elif p.is_dir() and _is_dicom_folder(p):
            found.append(CohortEntry(_safe_name(p.name), p, "dicom", **dicom))
    if not found:
        raise BatchError(f"{folder}: no case files (*{CASE_SUFFIX}) or DICOM folders (*{DICOM_SUFFIX}) in this folder")
    return found


def expand_cohort(paths, dicom_site: str | None = None, dicom_prescriptions=()) -> list[CohortEntry]:
    """The cases named by `paths` (files and folders, see the module doc), in the order given.

    `dicom_site` ("hn", "lung", "generic") is the site of the DICOM cases
    (DICOM does not say it; None: the importer's default, generic);
    `dicom_prescriptions` (:class:`~airtp.Prescription`) replace those the
    importer reads from an RTPLAN (empty: keep them).

    A file named twice is kept once. Raises :class:`BatchError` for a path
    that does not exist, a folder with no cases, or two cases with one name.
    """
    if not paths:
        raise BatchError("the cohort is empty: give case files or folders")
    dicom = {"site": dicom_site, "prescriptions": tuple(dicom_prescriptions)}
    entries: list[CohortEntry] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise BatchError(f"{p}: no such case file or folder")
        p = p.resolve()
        # An explicitly named file is a case whatever its suffix: loading it says what is wrong.
        entries.extend([CohortEntry(_safe_name(p.stem), p, "npz")] if p.is_file() else _folder_entries(p, dicom))
    unique: dict[Path, CohortEntry] = {}
    by_name: dict[str, CohortEntry] = {}
    for e in entries:
        if e.path in unique:
            continue
        if e.name in by_name:
            raise BatchError(f"two cases share the name '{e.name}': {by_name[e.name].path} and {e.path} "
                             "(their plan folders would clash; rename one)")
        unique[e.path] = by_name[e.name] = e
    return list(unique.values())


def load_entry(entry: CohortEntry) -> Case:
    """Read the case of `entry`; errors are :class:`AirtpError` naming the file or folder."""
    if entry.kind == "npz":
        return Case.load(entry.path)
    try:
        import airtp.io.dicom as dicom

        read_case = getattr(dicom, "read_case", None)
        import_dicom = None if read_case else dicom.import_dicom  # (imports the reader and pydicom)
    except ImportError as exc:
        if exc.name and not ("airtp.io.dicom".startswith(exc.name) or exc.name.startswith("pydicom")):
            raise  # the module exists but is broken: that is a bug to see, not a missing feature
        raise CaseFileError(f"{entry.path}: a DICOM folder, but DICOM import (airtp.io.dicom) "
                            "is not available in this installation") from None
    if read_case is not None:
        return read_case(entry.path)
    return import_dicom(entry.path, site=entry.site, prescriptions=list(entry.prescriptions) or None).case


# ---------------------------------------------------------------------------
# Content hashes
# ---------------------------------------------------------------------------
def _hash_file(h, path: Path) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)


def entry_digest(entry: CohortEntry) -> str:
    """SHA-256 (hex) of the case bytes: the file, or every file of a DICOM folder with its relative path."""
    h = hashlib.sha256()
    try:
        if entry.path.is_file():
            _hash_file(h, entry.path)
        else:
            for p in sorted(entry.path.rglob("*")):
                if p.is_file() and not p.name.startswith("."):
                    h.update(str(p.relative_to(entry.path)).encode() + b"\0")
                    _hash_file(h, p)
    except OSError as exc:
        raise BatchError(f"{entry.path}: cannot read the case to hash it ({exc})") from None
    return h.hexdigest()


def _plain(value):
    """`value` as JSON-able data, the same for equal settings (so that their hash is the same)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "to_json"):
        return json.loads(value.to_json())
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "to_dict"):
        return _plain(value.to_dict())
    return repr(value)


def settings_fingerprint(settings) -> dict:
    """Every field of a :class:`~airtp.planning.PlanSettings` as JSON-able data.

    Fields are read generically, so settings added later are covered too. A
    scorecard given as a file path also contributes the file's SHA-256: an
    edited scorecard is a different input.
    """
    fp = _plain(settings)
    card = getattr(settings, "scorecard", None)
    if card and Path(card).is_file():
        h = hashlib.sha256()
        _hash_file(h, Path(card))
        fp["scorecard_sha256"] = h.hexdigest()
    return fp


def task_hash(case_digest: str, technique: str, settings, entry: CohortEntry | None = None) -> str:
    """The input hash of one task (see the module doc)."""
    given = {} if entry is None or entry.kind != "dicom" else \
        {"site": entry.site, "prescriptions": [p.to_dict() for p in entry.prescriptions]}
    doc = {"airtp": __version__, "case": case_digest, "given": given, "technique": technique,
           "settings": settings_fingerprint(dataclasses.replace(settings, technique=technique))}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _unique(items) -> list:
    return list(dict.fromkeys(items))


def make_tasks(entries: list[CohortEntry], techniques, settings) -> list[Task]:
    """One task per (case, technique), cases outermost, each with its input hash."""
    techniques = _unique(techniques)
    tasks = []
    for e in entries:
        digest = entry_digest(e)
        tasks += [Task(f"{e.name}__{t}", e, t, task_hash(digest, t, settings, e)) for t in techniques]
    return tasks


# ---------------------------------------------------------------------------
# Synthetic cohorts
# ---------------------------------------------------------------------------
def write_phantom_cohort(site: str, n: int, out, seed: int = 0, spacing_mm=None) -> list[Path]:
    """Write `n` synthetic patients of `site` ("hn" or "lung") into the folder `out`.

    Case i has seed ``seed + i``; head and neck cycles through 1, 2 and 3 PTVs,
    lung through left, right and central tumours, so that even a small cohort
    has each kind. `spacing_mm` (z, y, x) coarsens the grid (default: the
    phantoms'). Files are named by patient id (``hn2-seed1.npz``) and written
    atomically; returns their paths.
    """
    from airtp import phantoms

    if site not in ("hn", "lung"):
        raise BatchError(f"phantom cohort: site must be 'hn' or 'lung', got {site!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise BatchError(f"phantom cohort: n must be a positive integer, got {n!r}")
    extra = {} if spacing_mm is None else {"spacing_mm": spacing_mm}
    out = Path(out)
    paths = []
    for i in range(n):
        if site == "hn":
            case = phantoms.head_neck(n_ptv=1 + i % 3, seed=seed + i, **extra)
        else:
            case = phantoms.lung(phantoms.LUNG_SIDES[i % 3], seed=seed + i, **extra)
        paths.append(case.save(out / f"{case.patient_id}{CASE_SUFFIX}"))
    return paths
