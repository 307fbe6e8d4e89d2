"""``airtp dvh RTSTRUCT RTDOSE``: DVH metrics straight from DICOM, on the dose grid.

Each ROI is rasterized on the RTDOSE's own grid (no CT needed, no
resampling of the dose): voxel-centre inclusion, or, for structures under
``small_cc`` cm^3, ``supersample`` ^ 3 samples per voxel giving fractional
volumes. A contour plane stands for the slab of the structure set's plane
spacing, so a dose grid finer or coarser in z than the CT still sees the
structure whole. Metrics per structure: volume (cc, within the dose grid),
min / mean / max, D95 %, D2 % and D0.03cc (Gy), read with the semantics of
:mod:`airtp.evaluation.dvh`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from airtp.errors import DicomError
from airtp.evaluation.dvh import compute_dvhs
from airtp.io.dicom.contours import contour_planes, rasterize
from airtp.io.dicom.rtdose import read_rtdose
from airtp.io.dicom.rtstruct import read_rtstruct

__all__ = ["METRICS", "DicomDvhs", "dicom_dvhs"]

#: Output columns: key, header, format.
METRICS = (("volume_cc", "Volume cc", "{:10.2f}"), ("min_gy", "Min Gy", "{:8.2f}"), ("mean_gy", "Mean Gy", "{:8.2f}"),
           ("max_gy", "Max Gy", "{:8.2f}"), ("D95_gy", "D95 Gy", "{:8.2f}"), ("D2_gy", "D2 Gy", "{:8.2f}"),
           ("D0.03cc_gy", "D0.03cc Gy", "{:10.2f}"))


@dataclass
class DicomDvhs:
    rtstruct: str
    rtdose: str
    rows: list[dict]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"rtstruct": self.rtstruct, "rtdose": self.rtdose, "structures": self.rows, "notes": self.notes}

    def table(self) -> str:
        w = max([len(r["structure"]) for r in self.rows] + [9])
        head = f"{'Structure':<{w}}" + "".join(f"  {h:>{len(fmt.format(0.0))}}" for _, h, fmt in METRICS)
        lines = [head]
        for r in self.rows:
            cells = ["  " + (fmt.format(r[k]) if r[k] is not None else f"{'-':>{len(fmt.format(0.0))}}")
                     for k, _, fmt in METRICS]
            lines.append(f"{r['structure']:<{w}}" + "".join(cells) + ("  *" if r["supersample"] > 1 else ""))
        if any(r["supersample"] > 1 for r in self.rows):
            lines.append("* supersampled (partial volumes)")
        return "\n".join(lines)


def _outside(contours: list[np.ndarray], grid) -> bool:
    """Whether any contour point lies beyond the dose grid's voxel extent."""
    pts = np.concatenate(contours)
    zyx = pts[:, ::-1]
    lo = np.asarray(grid.origin_mm) - np.asarray(grid.spacing_mm) / 2
    hi = lo + np.asarray(grid.shape) * np.asarray(grid.spacing_mm)
    return bool(np.any(zyx < lo - 1e-6) or np.any(zyx > hi + 1e-6))


def dicom_dvhs(rtstruct, rtdose, structures: list[str] | None = None, supersample: int = 4,
               small_cc: float = 5.0, bin_width_gy: float = 0.01) -> DicomDvhs:
    """DVH metrics of the ROIs of `rtstruct` in the dose of `rtdose` (paths); see the module doc."""
    if int(supersample) < 1:
        raise DicomError(f"supersample must be >= 1, got {supersample}")
    sf = read_rtstruct(rtstruct)
    df = read_rtdose(rtdose)
    frames = {roi.frame_uid for roi in sf.rois if roi.frame_uid} | ({sf.frame_uid} if sf.frame_uid else set())
    if df.frame_uid and frames and df.frame_uid not in frames:
        raise DicomError(f"{df.path}: frame of reference {df.frame_uid} does not match the structure set's "
                         f"{', '.join(sorted(frames))} ({sf.path})")
    dose = df.gy()
    grid = df.grid
    rois = sf.rois
    if structures:
        by_name = {roi.name: roi for roi in rois}
        missing = [n for n in structures if n not in by_name]
        if missing:
            raise DicomError(f"{sf.path}: no ROI '{missing[0]}' (have: {', '.join(by_name)})")
        rois = [by_name[n] for n in structures]
    planes, _ = contour_planes([c for roi in sf.rois for c in roi.contours])
    gaps = np.diff(planes)
    tol = float(np.median(gaps[gaps > 0.1])) / 2 if np.any(gaps > 0.1) else grid.spacing_mm[0] / 2
    notes, weights, used = [], {}, {}
    for roi in rois:
        if not roi.contours:
            notes.append(f"ROI '{roi.name}' has no closed contours")
            continue
        key = roi.name if roi.name not in weights else f"{roi.name} (ROI {roi.number})"
        mask = rasterize(roi.contours, grid, plane_tolerance_mm=tol)
        s = 1
        if supersample > 1 and mask.sum() * grid.voxel_volume_cc < small_cc:
            mask, s = rasterize(roi.contours, grid, plane_tolerance_mm=tol, supersample=supersample), int(supersample)
        if _outside(roi.contours, grid):
            notes.append(f"ROI '{roi.name}' extends beyond the dose grid; its volume counts the part inside only")
        weights[key], used[key] = mask, s
    dvhs = compute_dvhs(dose, weights, voxel_volume_cc=grid.voxel_volume_cc, bin_width_gy=bin_width_gy) if weights \
        else {}
    rows = []
    for key, dvh in dvhs.items():
        if dvh.empty:
            notes.append(f"ROI '{key}' covers no voxel of the dose grid")
            rows.append({"structure": key, "volume_cc": float(dvh.volume_cc), **dict.fromkeys(
                ("min_gy", "mean_gy", "max_gy", "D95_gy", "D2_gy", "D0.03cc_gy")), "supersample": used[key]})
            continue
        rows.append({"structure": key, "volume_cc": float(dvh.volume_cc), "min_gy": float(dvh.min_gy),
                     "mean_gy": float(dvh.mean_gy), "max_gy": float(dvh.max_gy),
                     "D95_gy": float(dvh.dose_at_percent(95)), "D2_gy": float(dvh.dose_at_percent(2)),
                     "D0.03cc_gy": float(dvh.dose_at(0.03)), "supersample": used[key]})
    return DicomDvhs(str(sf.path), str(df.path), rows, notes)
