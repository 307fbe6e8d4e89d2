"""Beam-model figures in a voxelised water phantom, computed by the engine.

Geometry: SSD = SAD = 100 cm with the isocentre at the water surface, gantry 0
(beam along +y), fields defined at the surface and tiled by 5 mm beamlets of
weight 1. The phantom is a 1 mm (depth) x 1 mm (lateral) slab, three 2 mm
slices thick around the central axis, with one row of air above the surface.
"""

from __future__ import annotations

import numpy as np

from airtp.beams.beam import Beam, BeamletGrid
from airtp.case import Case
from airtp.dose.beam_model import BeamModel
from airtp.dose.engine import dose_of_fluence
from airtp.grid import Grid
from airtp.structures.structure_set import StructureSet

__all__ = ["water_phantom", "commission", "format_report", "PDD_DEPTHS_MM"]

PDD_DEPTHS_MM = (0.5, 5.0, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 250.0, 300.0)


def water_phantom(depth_mm: float = 310.0, half_width_mm: float = 100.0, dy: float = 1.0, dx: float = 1.0,
                  dz: float = 2.0, n_slices: int = 3) -> Case:
    """Water slab, surface at y = 0 (one air row above), x centred on 0, central slice at z = 0."""
    ny = int(round(depth_mm / dy)) + 1
    nx = 2 * int(round(half_width_mm / dx)) + 1
    grid = Grid((n_slices, ny, nx), (dz, dy, dx), (-(n_slices // 2) * dz, -dy / 2.0, -half_width_mm))
    ct = np.zeros(grid.shape, np.int16)
    ct[:, 0, :] = -1000
    body = ct > -500
    return Case(ct, StructureSet(grid, {"Body": body}), patient_id="water")


def _field_dose(case: Case, model: BeamModel, side_mm: float, cutoff_mm=None, backend=None) -> np.ndarray:
    beam = Beam(0.0, (0.0, 0.0, 0.0), name=f"{side_mm / 10:g}x{side_mm / 10:g}")
    f = BeamletGrid.field(-side_mm / 2, side_mm / 2, -side_mm / 2, side_mm / 2, 5.0)
    return dose_of_fluence(case, [beam], [f], model=model, cutoff_mm=cutoff_mm, backend=backend)


def commission(model=None, fields_cm=(3, 4, 5, 6, 10, 15, 20), backend=None) -> dict:
    """PDD (10 x 10), dmax, 80-20 % penumbra at 10 cm and output factors at 10 cm depth."""
    model = BeamModel.load(model)
    case = water_phantom()
    g = case.grid
    zc, xc = g.shape[0] // 2, g.shape[2] // 2
    depth = g.axes_mm()[1]  # voxel-centre depths (row 0 is air at -0.5)
    d10 = _field_dose(case, model, 100.0, backend=backend)
    cax = d10[zc, :, xc].astype(float)
    i = int(np.argmax(cax))
    y0, y1, y2 = cax[i - 1], cax[i], cax[i + 1]
    den = y0 - 2 * y1 + y2
    shift = 0.5 * (y0 - y2) / den if den != 0 else 0.0
    dmax = float(depth[i] + shift * g.spacing_mm[1])
    dmax_dose = float(y1 - 0.25 * (y0 - y2) * shift)
    pdd = {float(d): 100.0 * float(np.interp(d, depth[1:], cax[1:])) / dmax_dose for d in PDD_DEPTHS_MM}
    # profile at 10 cm depth
    prof = np.array([np.interp(100.0, depth[1:], d10[zc, 1:, k]) for k in range(g.shape[2])])
    x = g.axes_mm()[2]
    rel = prof / prof[xc]
    pens = []
    for side in (1, -1):
        xs, r = (x[xc:], rel[xc:]) if side == 1 else (-x[: xc + 1][::-1], rel[: xc + 1][::-1])
        x80, x20 = np.interp(-0.8, -r, xs), np.interp(-0.2, -r, xs)
        pens.append(float(x20 - x80))
    ref = float(prof[xc])
    outputs = {}
    for f in fields_cm:
        if float(f) == 10.0:
            outputs[f"{f:g}x{f:g}"] = 1.0
            continue
        d = _field_dose(case, model, 10.0 * f, backend=backend)
        outputs[f"{f:g}x{f:g}"] = float(np.interp(100.0, depth[1:], d[zc, 1:, xc])) / ref
    return {
        "beam_model": model.name,
        "beam_data_file": model.source,
        "geometry": "water, SSD 100 cm, isocentre at the surface, gantry 0, fields at the surface, 5 mm beamlets",
        "voxel_mm": {"depth": g.spacing_mm[1], "lateral": g.spacing_mm[2]},
        "lateral_cutoff_mm": model.cutoff_mm,
        "dmax_mm": dmax,
        "dose_at_dmax_gy_per_unit": dmax_dose,
        "pdd_10x10_percent": {f"{k:g}": v for k, v in pdd.items()},
        "penumbra_80_20_mm_at_100mm": {"x+": pens[0], "x-": pens[1], "mean": 0.5 * (pens[0] + pens[1])},
        "output_factors_at_100mm_rel_10x10": outputs,
        "published_anchors": {
            "dmax_mm": "12-18 (1.5 cm typical)",
            "pdd_percent": {"50": 86.0, "100": 66.5, "200": 38.5},
            "penumbra_80_20_mm_at_100mm": "3-8 (about 5 typical for 10x10)",
            "output_5x5_rel_10x10": "0.87-0.95",
        },
    }


def format_report(fig: dict) -> str:
    lines = [f"Beam model: {fig['beam_model']} ({fig['beam_data_file']})", f"Geometry: {fig['geometry']}", ""]
    lines.append(f"dmax: {fig['dmax_mm']:.1f} mm   (published 6 MV: about 15 mm)")
    lines.append(f"dose at dmax, 10x10, unit weights: {fig['dose_at_dmax_gy_per_unit']:.5f} Gy")
    lines.append("")
    lines.append("PDD 10x10 cm, SSD 100 cm")
    lines.append(f"{'depth (mm)':>10}  {'PDD (%)':>8}  {'published':>9}")
    anchors = {"50": 86.0, "100": 66.5, "200": 38.5}
    for d, v in fig["pdd_10x10_percent"].items():
        lines.append(f"{d:>10}  {v:8.1f}  {anchors.get(d, ''):>9}")
    p = fig["penumbra_80_20_mm_at_100mm"]
    lines.append("")
    lines.append(f"80-20 % penumbra at 100 mm depth (10x10): {p['mean']:.2f} mm (x+ {p['x+']:.2f}, x- {p['x-']:.2f})")
    lines.append("")
    lines.append("Output at 100 mm depth relative to 10x10 (SSD 100 cm)")
    for k, v in fig["output_factors_at_100mm_rel_10x10"].items():
        lines.append(f"{k:>8}  {v:.3f}")
    cut = fig.get("lateral_cutoff_mm")
    if cut:
        lines.append(f"(beamlets farther than the lateral cut-off, {cut:g} mm, add nothing: the output stops "
                     f"growing beyond a {2 * cut / 10:g} x {2 * cut / 10:g} cm field)")
    return "\n".join(lines)
