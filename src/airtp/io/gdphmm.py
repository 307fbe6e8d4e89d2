"""Plans as AI training data in the GDP-HMM challenge format (AAPM 2025; paper section 3.5).

:func:`export_dataset` turns plan folders (:func:`airtp.planning.outputs.write_plan`)
into a folder that the challenge's data loader reads:

``<PID>+<PlanID>.npz`` -- one per plan (PID the case's patient id, PlanID
its technique, ``imrt9``, ``vmat`` ..., with ``-<plan folder name>`` added
when one patient has two plans of one technique), loadable the challenge's
way, ``np.load(p, allow_pickle=True)['arr_0'].item()``, giving a dict:

==============  ===============================================================
key             value
==============  ===============================================================
``img``         CT, int16 Hounsfield units, (z, y, x)
``dose``        uint32 dose counts, (z, y, x): ``dose * dose_scale`` is the
                plan's dose in Gy (``dose.npy`` of the plan folder: the
                deliverable dose when the plan was sequenced). This is the
                convention of DICOM RT Dose (pixel data times DoseGridScaling),
                which the challenge's files keep.
``dose_scale``  float, Gy per count: :data:`DOSE_SCALE_GY` (1e-5 Gy, so the
                stored dose is within 5e-6 Gy of the plan's)
<structure>     one uint8 0/1 mask (z, y, x) per structure of the plan's case,
                helpers included (PTVHighOPT, RingPTVHigh, Parotids-PTV ...),
                by name
``all_mask``    the list of those names
``isVMAT``      bool
``isocenter``   float32 [z, y, x] in voxels (fractional) of the CT grid
``angle_list``  float32 gantry angles (degrees), unique, sorted: the static
                beams (IMRT), or the control points of the arcs (VMAT, from
                ``delivery.json``; the planning sectors without it)
``angle_plate`` float32 (y, x): :func:`airtp.io.plates.angle_plate`
``beam_plate``  float32 (z, y, x): :func:`airtp.io.plates.beam_plate` of the
                union of the prescribed targets, through the body
``origin``      (x, y, z) mm of the centre of voxel (0, 0, 0), DICOM patient
                coordinates (SimpleITK order, as the challenge's files)
``spacing``     (x, y, z) mm (SimpleITK order)
``direction``   the 3 x 3 direction cosines, row-major, 9 floats (identity:
                AIRTP grids are axis-aligned)
``size``        the array shape (z, y, x), as in the challenge's released
                (cropped) files
==============  ===============================================================

Beside them:

- ``PTV_DICT.json``: per patient, the challenge's prescription layout:
  ``PTV_High`` {``OPTName``, ``PDose``, ``RingName``}; ``PTV_Mid`` and
  ``PTV_Low`` {``OPTName``, ``PDose``, ``RingName``, ``StructName``,
  ``MinusName``}, from the case's prescription levels (High, Mid, Low as the
  recipes rank them) and the helper names present (a missing helper's name is
  the prescribed target's, or null for rings and minus structures);
- ``Pat_Obj_DICT.json``: per patient, the structures of the plan's final
  objectives;
- ``meta_data.csv`` with the challenge's columns :data:`META_COLUMNS`
  (``site`` 1 head and neck, 2 lung, 0 other; ``D05_div_D95`` and
  ``max_div_D95`` of the highest-prescription target; ``num_PTV`` the number
  of prescription levels; ``HighDose`` the highest prescription in Gy;
  ``npz_path`` relative to the folder);
- ``<PID>+<PlanID>_beams.npz`` per plan (paper Figure 10): ``fluence/<beam>``
  the optimised fluence map of each beam (``fluences.npz``), and from
  ``delivery.json`` when the plan folder has one, per delivery beam
  ``leaves/<beam>/`` ``gantry_deg``, ``cumulative_mu`` (n_cp),
  ``mlc_x1_mm``, ``mlc_x2_mm`` (n_cp, n_pairs), ``jaw_x_mm``, ``jaw_y_mm``
  (n_cp, 2), ``dose_rate_mu_min`` (n_cp, NaN where not set) and
  ``leaf_boundaries_mm``; without it the file holds the
  fluences only and ``export.json`` says so;
- ``export.json``: the plans exported, their files, and notes.

Every file is written atomically; the tables last, so they never list a plan
whose files are missing.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from airtp.case import Case, atomic_write
from airtp.errors import AirtpError
from airtp.evaluation.dvh import DoseError, check_dose, compute_dvhs
from airtp.evaluation.scorecard import case_levels

__all__ = ["META_COLUMNS", "DOSE_SCALE_GY", "PlanFolder", "read_plan_folder", "plan_record", "ptv_dict_entry",
           "export_dataset", "ExportResult"]

META_COLUMNS = ("PID", "PlanID", "isVMAT", "cohort", "site", "phase", "dev_split", "npz_path", "D05_div_D95",
                "max_div_D95", "num_PTV", "HighDose")
DOSE_SCALE_GY = 1e-5
_SITE_CODES = {"hn": 1, "lung": 2}
_MAX_COUNT = np.iinfo(np.uint32).max
_RESERVED = {"img", "dose", "dose_scale", "all_mask", "isVMAT", "isocenter", "angle_list", "angle_plate",
             "beam_plate", "origin", "spacing", "direction", "size"}


@dataclass
class PlanFolder:
    """What the export reads from one plan folder."""

    path: Path
    case: Case
    dose: np.ndarray  # Gy, case grid
    plan: dict  # plan.json
    fluences: dict  # beam name -> fluence map
    delivery: object | None  # DeliveryPlan, or None without delivery.json
    notes: list[str] = field(default_factory=list)

    @property
    def technique(self) -> str:
        return str(self.plan.get("beams", {}).get("technique", "plan"))

    @property
    def is_vmat(self) -> bool:
        if self.delivery is not None and self.delivery.beams:
            return any(b.kind == "vmat" for b in self.delivery.beams)
        return self.technique == "vmat" or bool(self.plan.get("beams", {}).get("arcs"))

    def angles(self) -> np.ndarray:
        """Unique gantry angles, sorted (see ``angle_list`` in the module doc)."""
        if self.is_vmat and self.delivery is not None:
            a = [cp.gantry_deg for b in self.delivery.beams for cp in b.control_points]
        else:
            a = [b["gantry_deg"] for b in self.plan.get("beams", {}).get("beams", [])]
        if not a:
            raise AirtpError(f"{self.path}: the plan has no beams")
        return np.unique(np.round(np.mod(np.asarray(a, np.float64), 360.0), 4)).astype(np.float32)

    @property
    def isocenter_mm(self) -> np.ndarray:
        iso = self.plan.get("beams", {}).get("isocenter_mm")
        if iso is None or len(iso) != 3:
            raise AirtpError(f"{self.path / 'plan.json'}: no isocentre (beams.isocenter_mm)")
        return np.asarray(iso, dtype=np.float64)


def read_plan_folder(path) -> PlanFolder:
    """Read a plan folder: ``case.npz``, ``dose.npy``, ``plan.json`` required; ``fluences.npz``,
    ``delivery.json`` optional (their absence is noted)."""
    from airtp.sequencing.plan import DeliveryPlan

    path = Path(path)
    if not path.is_dir():
        raise AirtpError(f"{path}: not a plan folder")
    for name in ("case.npz", "dose.npy", "plan.json"):
        if not (path / name).is_file():
            raise AirtpError(f"{path}: no {name}; is this a plan folder written by 'airtp plan'?")
    case = Case.load(path / "case.npz")
    try:
        raw = np.load(path / "dose.npy", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DoseError(f"{path / 'dose.npy'}: not a readable .npy dose ({exc})") from None
    dose = check_dose(raw, case.grid.shape, what=str(path / "dose.npy"))
    if float(dose.max()) * (1.0 + 1e-6) / DOSE_SCALE_GY > _MAX_COUNT:
        raise DoseError(f"{path / 'dose.npy'}: maximum {dose.max():.6g} Gy does not fit uint32 counts of "
                        f"{DOSE_SCALE_GY:g} Gy; is the dose in Gy?")
    try:
        plan = json.loads((path / "plan.json").read_text())
    except (OSError, ValueError) as exc:
        raise AirtpError(f"{path / 'plan.json'}: not readable JSON ({exc})") from None
    notes = []
    fluences = {}
    if (path / "fluences.npz").is_file():
        with np.load(path / "fluences.npz", allow_pickle=False) as npz:
            fluences = {k: npz[k] for k in npz.files}
    else:
        notes.append("no fluences.npz: no fluence maps")
    delivery = None
    if (path / "delivery.json").is_file():
        delivery = DeliveryPlan.load(path / "delivery.json")
    else:
        notes.append("no delivery.json: no leaf sequences (the plan was not sequenced)")
    return PlanFolder(path, case, dose, plan, fluences, delivery, notes)


# Per plan ----------------------------------------------------------------------

def _itk_triplet(zyx) -> tuple[float, float, float]:
    z, y, x = (float(v) for v in zyx)
    return (x, y, z)


def _target_union(case: Case) -> np.ndarray:
    mask = np.zeros(case.grid.shape, bool)
    for p in case.prescriptions:
        mask |= case.structures[p.structure]
    return mask


def plan_record(pf: PlanFolder) -> dict:
    """The challenge dict of one plan (the ``arr_0`` of its npz; see the module doc)."""
    from airtp.io.plates import angle_plate, beam_plate

    case = pf.case
    case.check_prescriptions()
    g = case.grid
    angles = pf.angles()
    iso_mm = pf.isocenter_mm
    body = case.structures["Body"] if "Body" in case.structures else None
    if body is None:
        pf.notes.append("no Body structure: the beam plate runs through the whole grid")
    rec: dict = {}
    clash = [n for n in case.structures if n in _RESERVED]
    if clash:
        raise AirtpError(f"{pf.path}: structure '{clash[0]}' has the name of a GDP-HMM key; rename it")
    for name, mask in case.structures.items():
        rec[name] = mask.astype(np.uint8)
    rec["all_mask"] = list(case.structures)
    rec["img"] = case.ct_hu.astype(np.int16)
    rec["dose"] = np.rint(pf.dose.astype(np.float64) / DOSE_SCALE_GY).astype(np.uint32)
    rec["dose_scale"] = float(DOSE_SCALE_GY)
    rec["isVMAT"] = bool(pf.is_vmat)
    rec["isocenter"] = g.mm_to_index(iso_mm).astype(np.float32)
    rec["angle_list"] = angles
    rec["angle_plate"] = angle_plate(g, iso_mm, angles)
    rec["beam_plate"] = beam_plate(g, _target_union(case), iso_mm, angles, body=body)
    rec["origin"] = _itk_triplet(g.origin_mm)
    rec["spacing"] = _itk_triplet(g.spacing_mm)
    rec["direction"] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    rec["size"] = tuple(int(n) for n in g.shape)
    return rec


def ptv_dict_entry(case: Case) -> dict:
    """The case's entry of ``PTV_DICT.json`` (see the module doc)."""
    ss = case.structures
    levels = case_levels(case.prescriptions)
    by_dose = {}
    for p in case.prescriptions_by_dose():
        by_dose.setdefault(p.dose_gy, p.structure)
    order = [lv for lv in ("High", "Mid", "Low") if lv in levels]
    out = {}
    for i, level in enumerate(order):
        rx = levels[level]
        target = by_dose[rx]
        entry = {"OPTName": f"PTV{level}OPT" if f"PTV{level}OPT" in ss else target, "PDose": rx,
                 "RingName": f"RingPTV{level}" if f"RingPTV{level}" in ss else None}
        if level != "High":
            entry["StructName"] = f"PTV{level}" if f"PTV{level}" in ss else target
            higher = [f"PTV{level}-PTV{h}" for h in reversed(order[:i])]  # nearest level above first
            entry["MinusName"] = next((n for n in higher if n in ss), None)
        out[f"PTV_{level}"] = entry
    return out


def _objective_structures(plan: dict) -> list[str]:
    its = plan.get("iterations") or []
    if not its:
        return []
    best = plan.get("best_iteration", len(its) - 1)
    objs = its[best if 0 <= best < len(its) else -1].get("objectives", [])
    return list(dict.fromkeys(o.get("structure") for o in objs if o.get("structure")))


def _meta_row(pf: PlanFolder, pid: str, plan_id: str, npz_name: str, cohort, phase: str, dev_split: str) -> dict:
    case = pf.case
    rx = case.prescriptions_by_dose()[0]
    dvh = compute_dvhs(pf.dose, {rx.structure: case.structures[rx.structure]}, grid=case.grid)[rx.structure]
    d95, d5, dmax = float(dvh.dose_at_percent(95)), float(dvh.dose_at_percent(5)), float(dvh.max_gy)
    return {
        "PID": pid, "PlanID": plan_id, "isVMAT": str(bool(pf.is_vmat)), "cohort": cohort,
        "site": _SITE_CODES.get(case.site, 0), "phase": phase, "dev_split": dev_split, "npz_path": npz_name,
        "D05_div_D95": round(d5 / d95, 3) if d95 > 0 else "", "max_div_D95": round(dmax / d95, 3) if d95 > 0 else "",
        "num_PTV": len(case_levels(case.prescriptions)), "HighDose": rx.dose_gy,
    }


def _beams_arrays(pf: PlanFolder) -> dict:
    out = {f"fluence/{name}": np.asarray(f, dtype=np.float32) for name, f in pf.fluences.items()}
    if pf.delivery is None:
        return out
    for b in pf.delivery.beams:
        cps = b.control_points
        key = f"leaves/{b.name}/"
        out[key + "gantry_deg"] = np.array([cp.gantry_deg for cp in cps], np.float32)
        out[key + "cumulative_mu"] = np.array([cp.cumulative_mu for cp in cps], np.float32)
        out[key + "mlc_x1_mm"] = np.array([cp.mlc_x1_mm for cp in cps], np.float32)
        out[key + "mlc_x2_mm"] = np.array([cp.mlc_x2_mm for cp in cps], np.float32)
        out[key + "jaw_x_mm"] = np.array([cp.jaw_x_mm for cp in cps], np.float32)
        out[key + "jaw_y_mm"] = np.array([cp.jaw_y_mm for cp in cps], np.float32)
        out[key + "leaf_boundaries_mm"] = np.asarray(b.leaf_boundaries_mm, np.float32)
        rates = [getattr(cp, "dose_rate_mu_min", None) for cp in cps]
        out[key + "dose_rate_mu_min"] = np.array([np.nan if r is None else r for r in rates], np.float32)
    return out


def _safe(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", text) or "plan"


# Export ------------------------------------------------------------------------

@dataclass
class ExportResult:
    """What :func:`export_dataset` wrote."""

    out: Path
    plans: list[dict]  # per plan: folder, PID, PlanID, files, notes
    files: list[Path]


def export_dataset(plan_dirs, out_dir, *, cohort=0, phase: str = "train", dev_split: str = "train",
                   progress=None) -> ExportResult:
    """Export plan folders to `out_dir` in the GDP-HMM format (see the module doc).

    `cohort`, `phase` and `dev_split` fill the columns of the same names.
    Plans of one patient share its ``PTV_DICT`` entry; two plans of one
    patient with the same technique get the plan folder's name in their
    PlanID. Raises :class:`~airtp.errors.AirtpError` naming the folder or
    file at fault before anything is written when two plans of one patient
    have different prescriptions.
    """
    say = progress or (lambda msg: None)
    dirs = [Path(p) for p in plan_dirs]
    if not dirs:
        raise AirtpError("dataset: no plan folders given")
    # First pass: every folder is read and checked before anything is written,
    # keeping only what the tables need (a batch may export thousands of plans).
    ptv_dict: dict = {}
    obj_dict: dict = {}
    techniques = []
    for d in dirs:
        pf = read_plan_folder(d)
        pid = pf.case.patient_id
        entry = ptv_dict_entry(pf.case)
        if pid in ptv_dict and ptv_dict[pid] != entry:
            raise AirtpError(f"{pf.path}: patient '{pid}' has other prescriptions than in an earlier plan folder")
        ptv_dict[pid] = entry
        obj_dict[pid] = list(dict.fromkeys(obj_dict.get(pid, []) + _objective_structures(pf.plan)))
        techniques.append((pid, pf.technique))
    counts = Counter(techniques)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, plans, files = [], [], []
    for d, (pid, technique) in zip(dirs, techniques):
        pf = read_plan_folder(d)
        plan_id = technique if counts[(pid, technique)] == 1 else f"{technique}-{pf.path.name}"
        stem = f"{_safe(pid)}+{_safe(plan_id)}"
        say(f"{pf.path}: {stem}")
        npz_path = out / f"{stem}.npz"
        rec = plan_record(pf)
        atomic_write(npz_path, lambda f, rec=rec: np.savez_compressed(f, rec))
        beams_path = out / f"{stem}_beams.npz"
        arrays = _beams_arrays(pf)
        atomic_write(beams_path, lambda f, arrays=arrays: np.savez_compressed(f, **arrays))
        files += [npz_path, beams_path]
        rows.append(_meta_row(pf, pid, plan_id, npz_path.name, cohort, phase, dev_split))
        plans.append({"folder": str(pf.path), "PID": pid, "PlanID": plan_id, "npz": npz_path.name,
                      "beams": beams_path.name, "isVMAT": bool(pf.is_vmat), "n_angles": int(len(rec["angle_list"])),
                      "notes": pf.notes})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=META_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    tables = {
        "PTV_DICT.json": json.dumps(ptv_dict, indent=4, sort_keys=True),
        "Pat_Obj_DICT.json": json.dumps(obj_dict, indent=4, sort_keys=True),
        "meta_data.csv": buf.getvalue(),
        "export.json": json.dumps({"format": "GDP-HMM (AAPM 2025)", "dose_scale_gy": DOSE_SCALE_GY,
                                   "plans": plans}, indent=2),
    }
    for name, text in tables.items():
        atomic_write(out / name, lambda f, text=text: f.write(text.encode()))
        files.append(out / name)
    return ExportResult(out, plans, files)
