"""AIRTP contouring plugin ``totalsegmentator``: TotalSegmentator organs under AIRTP's names.

The plugin never downloads anything: TotalSegmentator must be installed and
the weights of every task it runs must already be in its weights folder (see
:func:`weights_dir`); otherwise :class:`~airtp.errors.ContouringError` says
what is missing before any work starts.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from airtp.errors import ContouringError

__all__ = ["CLASS_MAP", "TASK_DATASETS", "DEFAULT_TASKS", "TotalSegmentatorContouring", "weights_dir",
           "missing_weights", "check_available", "labels_to_structures"]

# TotalSegmentator task -> {class name: AIRTP standard name}. Several classes may make one structure.
CLASS_MAP: dict[str, dict[str, str]] = {
    "total": {
        "spinal_cord": "SpinalCord", "brain": "Brain", "esophagus": "Esophagus", "trachea": "Trachea",
        "thyroid_gland": "Thyroid", "heart": "Heart",
        "lung_upper_lobe_left": "Lung_L", "lung_lower_lobe_left": "Lung_L",
        "lung_upper_lobe_right": "Lung_R", "lung_middle_lobe_right": "Lung_R", "lung_lower_lobe_right": "Lung_R",
    },
    "head_glands_cavities": {
        "eye_left": "Eye_L", "eye_right": "Eye_R", "eye_lens_left": "Lens_L", "eye_lens_right": "Lens_R",
        "optic_nerve_left": "OpticNerve_L", "optic_nerve_right": "OpticNerve_R",
        "parotid_gland_left": "Parotid_L", "parotid_gland_right": "Parotid_R",
        "submandibular_gland_left": "Submandibular_L", "submandibular_gland_right": "Submandibular_R",
    },
    "headneck_muscles": {
        "superior_pharyngeal_constrictor": "PharynxConst", "middle_pharyngeal_constrictor": "PharynxConst",
        "inferior_pharyngeal_constrictor": "PharynxConst",
    },
    "craniofacial_structures": {"mandible": "Mandible"},
    "brain_structures": {"brainstem": "BrainStem"},  # a licensed TotalSegmentator task
}

# nnU-Net dataset ids whose weights each task needs (TotalSegmentator's python_api, v2).
TASK_DATASETS: dict[str, tuple[int, ...]] = {
    "total": (291, 292, 293, 294, 295),
    "head_glands_cavities": (775,),
    "headneck_muscles": (778, 779),
    "craniofacial_structures": (115,),
    "brain_structures": (409,),
}

DEFAULT_TASKS = ("total", "head_glands_cavities", "headneck_muscles", "craniofacial_structures")


def weights_dir() -> Path:
    """TotalSegmentator's weights folder, found as TotalSegmentator finds it."""
    if os.environ.get("TOTALSEG_WEIGHTS_PATH"):
        return Path(os.environ["TOTALSEG_WEIGHTS_PATH"])
    home = Path(os.environ["TOTALSEG_HOME_DIR"]) if os.environ.get("TOTALSEG_HOME_DIR") else (
        (Path("/tmp") if str(Path.home()) == "/" else Path.home()) / ".totalsegmentator")
    return home / "nnunet" / "results"


def missing_weights(tasks, folder: Path | None = None) -> dict[str, list[int]]:
    """task -> dataset ids whose ``Dataset<id>_*`` folder is not in the weights folder."""
    folder = weights_dir() if folder is None else Path(folder)
    out = {}
    for task in tasks:
        ids = [i for i in TASK_DATASETS[task] if not any(folder.glob(f"Dataset{i:03d}_*"))]
        if ids:
            out[task] = ids
    return out


def _check_tasks(tasks) -> tuple[str, ...]:
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in CLASS_MAP]
    if unknown or not tasks:
        raise ContouringError(f"totalsegmentator contouring: unknown task(s) {', '.join(unknown) or '(none given)'}"
                              f" (mapped tasks: {', '.join(CLASS_MAP)})")
    return tasks


def check_available(tasks=DEFAULT_TASKS) -> None:
    """Raise :class:`ContouringError` unless TotalSegmentator, nibabel and the tasks' weights are here."""
    tasks = _check_tasks(tasks)
    absent = [m for m in ("totalsegmentator", "nibabel") if importlib.util.find_spec(m) is None]
    if absent:
        raise ContouringError(
            f"totalsegmentator contouring: the Python package(s) {', '.join(absent)} are not installed; "
            "install them with: pip install \"airtp-totalsegmentator[run]\" (TotalSegmentator needs PyTorch), "
            "then put the model weights on this machine (AIRTP never downloads them)")
    folder = weights_dir()
    missing = missing_weights(tasks, folder)
    if missing:
        what = "; ".join(f"{t}: dataset(s) {', '.join(map(str, ids))}" for t, ids in missing.items())
        raise ContouringError(
            f"totalsegmentator contouring: model weights missing in {folder} ({what}). AIRTP does not download "
            "them: run `totalseg_download_weights -t <task>` on a machine with internet access and copy the "
            "folder here, or set TOTALSEG_WEIGHTS_PATH to where they are")


def labels_to_structures(labels: np.ndarray, class_ids: dict[int, str], task: str) -> dict[str, np.ndarray]:
    """AIRTP masks from a TotalSegmentator label map of `task` (id -> class name as TotalSegmentator gives)."""
    out: dict[str, np.ndarray] = {}
    for label_id, cls in class_ids.items():
        name = CLASS_MAP[task].get(cls)
        if name is None:
            continue
        mask = labels == label_id
        out[name] = out[name] | mask if name in out else mask
    return out


def _nifti(ct_hu: np.ndarray, grid):
    """The CT as a NIfTI image: array (x, y, z), affine from DICOM LPS to NIfTI RAS."""
    import nibabel as nib

    sz, sy, sx = grid.spacing_mm
    oz, oy, ox = grid.origin_mm
    affine = np.array([[-sx, 0, 0, -ox], [0, -sy, 0, -oy], [0, 0, sz, oz], [0, 0, 0, 1]], dtype=float)
    return nib.Nifti1Image(np.ascontiguousarray(ct_hu.transpose(2, 1, 0)).astype(np.int16), affine)


class TotalSegmentatorContouring:
    """Contouring plugin ``totalsegmentator``.

    Parameters
    ----------
    tasks : sequence of str
        TotalSegmentator tasks to run (keys of :data:`CLASS_MAP`).
    device : str
        ``gpu``, ``cpu`` or ``mps``, as TotalSegmentator takes it.
    """

    name = "totalsegmentator"

    def __init__(self, tasks=DEFAULT_TASKS, device: str = "gpu"):
        self.tasks = _check_tasks(tasks)
        self.device = device

    def contour(self, case) -> dict[str, np.ndarray]:
        check_available(self.tasks)
        from totalsegmentator.map_to_binary import class_map
        from totalsegmentator.python_api import totalsegmentator

        image = _nifti(case.ct_hu, case.grid)
        out: dict[str, np.ndarray] = {}
        for task in self.tasks:
            result = totalsegmentator(image, None, ml=True, task=task, device=self.device, quiet=True)
            labels = np.asarray(result.dataobj).astype(np.int32).transpose(2, 1, 0)
            for name, mask in labels_to_structures(labels, class_map[task], task).items():
                out[name] = out[name] | mask if name in out else mask
        if "Lung_L" in out and "Lung_R" in out:
            out["Lungs"] = out["Lung_L"] | out["Lung_R"]
        return out
