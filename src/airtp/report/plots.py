"""Figures of a plan: cumulative DVHs and orthogonal dose slices, as PNG files.

Matplotlib is used through explicit :class:`~matplotlib.figure.Figure`
objects drawn by the Agg canvas: no pyplot, no global state shared between
calls, no display needed. Every PNG is written atomically
(:func:`airtp.case.atomic_write`).

Orientation of the slices (:func:`orthogonal_slices`), as radiologists view
them, with patient coordinates DICOM LPS (x to the patient's left, y
posterior, z superior):

- axial: patient left on the image right, anterior at the top;
- coronal: superior at the top, patient left on the image right;
- sagittal: superior at the top, anterior on the image left.

Colours are fixed per structure name (:func:`structure_colour`): targets red,
orange, yellow (then darker shades) from the highest prescription down;
organs from a fixed table of standard names, other names from a palette by a
stable hash of the name.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from airtp.case import atomic_write
from airtp.errors import AirtpError
from airtp.evaluation.dvh import check_dose

__all__ = [
    "ReportError", "SliceView", "orthogonal_slices", "default_point_mm", "structure_colour", "target_names",
    "default_structures", "dvh_figure", "dose_slices_figure", "ISODOSE_PERCENTS", "MAIN_ORGANS",
]

#: Isodose lines, in % of the highest prescription, and their colours.
ISODOSE_PERCENTS = (95.0, 80.0, 50.0, 20.0)
ISODOSE_COLOURS = ("#ff00ff", "#00e5ff", "#7cfc00", "#1e6fff")

#: Organs contoured on the dose slices by default, when the case has them.
MAIN_ORGANS = (
    "SpinalCord", "BrainStem", "Parotid_L", "Parotid_R", "Submandibular_L", "Submandibular_R", "OralCavity",
    "Larynx", "PharynxConst", "Esophagus", "Mandible", "Chiasm", "OpticNerve_L", "OpticNerve_R", "Eye_L", "Eye_R",
    "Lung_L", "Lung_R", "Lungs", "Heart", "Trachea", "BrachialPlexus", "GreatVessels",
)

TARGET_COLOURS = ("#e31a1c", "#ff7f00", "#f2c200", "#b10026", "#d95f02", "#bf9b00")

# Organs of the standard names (airtp.structures.names): no reds, oranges or yellows.
_ORGAN_COLOURS = {
    "body": "#9e9e9e", "external": "#9e9e9e",
    "brain": "#c7b9e6", "brainstem": "#6a3d9a", "spinalcord": "#1f78b4", "chiasm": "#00a0a0",
    "opticnervel": "#35978f", "opticnerver": "#01665e", "eyel": "#80cdc1", "eyer": "#4eb3a3",
    "lensl": "#c2e699", "lensr": "#a1d99b", "cochleal": "#8c6bb1", "cochlear": "#88419d",
    "lacrimalglandl": "#9ecae1", "lacrimalglandr": "#6baed6", "pituitary": "#dd3497",
    "parotidl": "#33a02c", "parotidr": "#1b7837", "submandibularl": "#5aae61", "submandibularr": "#276419",
    "oralcavity": "#f768a1", "lips": "#c51b7d", "mandible": "#b0b0b0", "tmjointl": "#8c8c8c",
    "tmjointr": "#6e6e6e", "larynx": "#a6cee3", "pharynxconst": "#2166ac", "esophagus": "#8e0152",
    "trachea": "#4393c3", "thyroid": "#762a83", "brachialplexusl": "#5e3c99", "brachialplexusr": "#3f007d",
    "brachialplexus": "#5e3c99", "posteriorneck": "#8c510a", "shoulders": "#a6761d", "lungs": "#74add1",
    "lungl": "#74add1", "lungr": "#4575b4", "heart": "#c2185b", "lad": "#7b3294", "greatvessels": "#9970ab",
}
# Palette of other names (no reds, oranges or yellows).
_OTHER_COLOURS = (
    "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf", "#aec7e8", "#98df8a",
    "#c5b0d5", "#c49c94", "#f7b6d2", "#9edae5", "#393b79", "#637939", "#7b4173", "#3182bd", "#31a354",
)
_TARGET_RE = re.compile(r"^(ptv|ctv|gtv|itv)", re.IGNORECASE)
# Targets contoured by default besides the prescribed ones: plain GTV/CTV/ITV/PTV names, no helpers.
_PLAIN_TARGET_RE = re.compile(r"^(gtv|ctv|itv|ptv)[ _]?\d*(\.\d+)?$", re.IGNORECASE)
_CT_WINDOW_HU = (-160.0, 240.0)  # soft tissue: W 400, L 40


class ReportError(AirtpError):
    """A report cannot be drawn: a point outside the grid, no structures to plot..."""


# Colours ---------------------------------------------------------------------

def _key(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "", name.lower())


def target_names(names, prescriptions=()) -> list[str]:
    """Target structures among `names`, from the highest dose down.

    Prescribed structures come first, by prescribed dose (Gy, highest
    first); then other names that look like targets (PTV/CTV/GTV/ITV...), by
    the number in the name (``PTV70`` before ``PTV56``), then PTV, ITV, CTV,
    GTV, then by name.
    """
    names = list(names)
    rx = [p.structure for p in sorted(prescriptions, key=lambda p: -p.dose_gy) if p.structure in names]

    def number(n):
        m = re.search(r"(\d+(?:\.\d+)?)", n)
        return -float(m.group(1)) if m else 0.0

    def kind(n):  # outer volumes first: PTV, ITV, CTV, GTV
        return ("ptv", "itv", "ctv", "gtv").index(_TARGET_RE.match(n).group(1).lower())

    others = sorted((n for n in names if _TARGET_RE.match(n) and n not in rx), key=lambda n: (number(n), kind(n), n))
    return rx + others


def structure_colour(name: str, targets=()) -> str:
    """Fixed colour (hex) of a structure.

    `targets`: target names from the highest dose down (see
    :func:`target_names`); the i-th gets red, orange, yellow, then darker
    shades. Other structures: a fixed colour per standard organ name, or one
    of a palette chosen by a stable hash (CRC-32) of the name (warm colours
    for unranked target-like names, cool ones for the rest).
    """
    targets = list(targets)
    if name in targets:
        return TARGET_COLOURS[targets.index(name) % len(TARGET_COLOURS)]
    key = _key(name)
    if key in _ORGAN_COLOURS:
        return _ORGAN_COLOURS[key]
    h = zlib.crc32(key.encode("utf-8"))
    if _TARGET_RE.match(name):  # a target (or target helper) not ranked: still a warm colour
        return TARGET_COLOURS[h % len(TARGET_COLOURS)]
    return _OTHER_COLOURS[h % len(_OTHER_COLOURS)]


# Figures: common -------------------------------------------------------------

def _plain(text) -> str:
    """Text shown literally by matplotlib (no mathtext between dollar signs)."""
    return str(text).replace("$", r"\$")


def _new_figure(width_in: float, height_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig, path, dpi: int) -> Path:
    """Write `fig` to `path` as PNG atomically and release the figure."""
    path = Path(path)
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))
    finally:
        fig.clear()
    return path


# DVH figure ------------------------------------------------------------------

def _percent_curve(dvh) -> tuple[np.ndarray, np.ndarray]:
    """(dose Gy, volume %) points of a DVH's cumulative curve."""
    x, y = dvh.curve()
    return np.asarray(x), 100.0 * np.asarray(y) / dvh.volume_cc


def dvh_figure(dvhs: dict, path, *, reference: dict | None = None, title: str = "", targets=None,
               labels: tuple[str, str] = ("plan", "reference"), dpi: int = 100) -> Path:
    """Write a PNG of cumulative DVHs: dose (Gy) against volume (% of the structure).

    Parameters
    ----------
    dvhs : dict name -> :class:`~airtp.evaluation.dvh.DVH`
        Solid lines, one colour per structure; empty structures are skipped.
    path : path of the PNG (written atomically).
    reference : dict name -> DVH, optional
        A second plan (e.g. the initial plan), drawn dashed in the same
        colours (as the paper's Figures 8 and 9).
    title : str
    targets : list of str, optional
        Target names from the highest dose down (colours red, orange,
        yellow); by default the names that look like targets.
    labels : (str, str)
        Legend names of the solid and dashed line styles.
    """
    from matplotlib.lines import Line2D

    reference = reference or {}
    names = [n for n, d in dvhs.items() if not d.empty]
    ref_only = [n for n, d in reference.items() if not d.empty and n not in names]
    if not names and not ref_only:
        raise ReportError(f"DVH figure {path}: no non-empty structure to plot")
    all_names = names + ref_only
    targets = target_names(all_names) if targets is None else list(targets)
    n_legend = len(all_names) + (2 if reference else 0)
    ncol = max(1, int(np.ceil(n_legend / 24)))
    fig = _new_figure(7.0 + 1.9 * ncol, 5.5)
    ax = fig.add_subplot()
    dmax = 0.0
    handles = []
    for name in all_names:
        colour = structure_colour(name, targets)
        lw = 2.0 if name in targets else 1.4
        if name in dvhs and not dvhs[name].empty:
            x, y = _percent_curve(dvhs[name])
            ax.plot(x, y, color=colour, lw=lw, ls="-")
            dmax = max(dmax, float(x[-1]))
        if name in reference and not reference[name].empty:
            x, y = _percent_curve(reference[name])
            ax.plot(x, y, color=colour, lw=lw, ls="--")
            dmax = max(dmax, float(x[-1]))
        handles.append(Line2D([], [], color=colour, lw=lw, label=_plain(name)))
    if reference:
        handles.append(Line2D([], [], color="black", lw=1.4, ls="-", label=_plain(labels[0])))
        handles.append(Line2D([], [], color="black", lw=1.4, ls="--", label=_plain(labels[1])))
    ax.set_xlim(0.0, max(dmax * 1.05, 1.0))
    ax.set_ylim(0.0, 102.0)
    ax.set_xlabel("Dose (Gy)")
    ax.set_ylabel("Volume (%)")
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(_plain(title))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=7,
              ncol=ncol, frameon=False)
    return _save_png(fig, path, dpi)


# Slices ----------------------------------------------------------------------

@dataclass(frozen=True)
class SliceView:
    """One 2D slice of a volume, oriented for display.

    Attributes
    ----------
    plane : "axial", "coronal" or "sagittal"
    image : 2D array
        Row 0 is the top of the image, column 0 its left.
    extent : (left, right, bottom, top)
        Patient coordinates (mm) of the outer pixel edges, for
        ``imshow(image, origin="upper", extent=extent)`` (and ``contour``
        with the same arguments): axial (x, x, y, y), coronal (x, x, z, z),
        sagittal (y, y, z, z).
    index : int
        Voxel index of the slice along the axis it cuts (z, y or x).
    position_mm : float
        Patient coordinate of the slice along that axis (mm).
    xlabel, ylabel : str
    sides : (left, right, bottom, top)
        Patient directions at the image edges (R/L, A/P, S/I).
    """

    plane: str
    image: np.ndarray
    extent: tuple[float, float, float, float]
    index: int
    position_mm: float
    xlabel: str
    ylabel: str
    sides: tuple[str, str, str, str]


def _edges(grid, axis: int) -> tuple[float, float]:
    """Patient coordinates (mm) of the outer voxel edges along an axis (z=0, y=1, x=2)."""
    o, s, n = grid.origin_mm[axis], grid.spacing_mm[axis], grid.shape[axis]
    return o - s / 2.0, o + (n - 1) * s + s / 2.0


def _point_index(grid, point_mm) -> tuple[int, int, int]:
    p = np.asarray(point_mm, dtype=float).ravel()
    if p.size != 3 or not np.all(np.isfinite(p)):
        raise ReportError(f"slice point must be three finite coordinates (z, y, x) in mm, got {point_mm!r}")
    idx = grid.mm_to_index(p)
    if np.any(idx < -0.5) or np.any(idx > np.asarray(grid.shape) - 0.5):
        raise ReportError(f"slice point {tuple(float(v) for v in p)} mm (z, y, x) lies outside the grid {grid}")
    return tuple(int(np.clip(np.rint(i), 0, n - 1)) for i, n in zip(idx, grid.shape))


def orthogonal_slices(volume, grid, point_mm) -> dict[str, SliceView]:
    """Axial, coronal and sagittal slices of a (z, y, x) volume through `point_mm`.

    `point_mm` is a patient point (z, y, x) in mm inside the grid; each slice
    is the voxel plane nearest to it. The images are views (no copy) of
    `volume`, oriented as radiologists view them (see the module doc).
    Raises :class:`ReportError` for a point outside the grid.
    """
    volume = np.asarray(volume)
    grid.check_array(volume, "volume to slice")
    k, j, i = _point_index(grid, point_mm)
    (z0, z1), (y0, y1), (x0, x1) = (_edges(grid, a) for a in range(3))
    zc, yc, xc = grid.index_to_mm((k, j, i))
    return {
        # rows: y from anterior (top) to posterior; columns: x from patient right to left.
        "axial": SliceView("axial", volume[k], (x0, x1, y1, y0), k, float(zc),
                           "x (mm, patient left +)", "y (mm, posterior +)", ("R", "L", "P", "A")),
        # rows: z from superior (top) down; columns: x from patient right to left.
        "coronal": SliceView("coronal", volume[::-1, j, :], (x0, x1, z0, z1), j, float(yc),
                             "x (mm, patient left +)", "z (mm, superior +)", ("R", "L", "I", "S")),
        # rows: z from superior (top) down; columns: y from anterior to posterior.
        "sagittal": SliceView("sagittal", volume[::-1, :, i], (y0, y1, z0, z1), i, float(xc),
                              "y (mm, posterior +)", "z (mm, superior +)", ("A", "P", "I", "S")),
    }


def default_point_mm(case, dose=None) -> tuple[float, float, float]:
    """Centre (z, y, x) mm of the highest-dose prescribed target.

    The centroid of its mask, moved to the nearest voxel of the target when
    it falls outside it (a concave target), so the slices cut the target.
    Without a usable prescription: the point of maximum dose, else the grid
    centre.
    """
    grid = case.grid
    for p in case.prescriptions_by_dose():
        if p.structure in case.structures:
            mask = case.structures[p.structure]
            idx = np.argwhere(mask)
            if idx.size:
                centre = idx.mean(axis=0)
                near = np.rint(centre).astype(int)
                if not mask[tuple(near)]:
                    w = idx * np.asarray(grid.spacing_mm)
                    near = idx[np.argmin(((w - centre * np.asarray(grid.spacing_mm)) ** 2).sum(axis=1))]
                    return tuple(float(v) for v in grid.index_to_mm(near))
                return tuple(float(v) for v in grid.index_to_mm(centre))
    if dose is not None and np.max(dose) > 0:
        return tuple(float(v) for v in grid.index_to_mm(np.unravel_index(int(np.argmax(dose)), grid.shape)))
    return tuple(float(v) for v in grid.index_to_mm((np.asarray(grid.shape) - 1) / 2.0))


def default_structures(case) -> list[str]:
    """Structures contoured by default: the targets, then the main organs the case has.

    Targets: the prescribed structures (highest dose first), then plain
    target names (``GTV``, ``CTV``, ``PTV2``...; not helpers such as
    ``PTVHighOPT`` or rings); organs: :data:`MAIN_ORGANS`, matched ignoring
    case and punctuation.
    """
    names = list(case.structures)
    rx = [p.structure for p in case.prescriptions_by_dose() if p.structure in case.structures]
    plain = [n for n in target_names(names) if _PLAIN_TARGET_RE.match(n) and n not in rx]
    found = {_key(n): n for n in names}
    organs = [found[_key(o)] for o in MAIN_ORGANS if _key(o) in found]
    targets = rx + plain
    return targets + [o for o in organs if o not in targets]


def _reference_dose_gy(case, dose) -> float:
    """The highest prescription (Gy), or the maximum dose without one."""
    if case.prescriptions:
        return float(max(p.dose_gy for p in case.prescriptions))
    return float(np.max(dose)) if dose.size else 0.0


def _wash_range(dose_range, ref_gy: float, dmax_gy: float) -> tuple[float, float]:
    """(low, high) Gy of the colour wash: given, or 10 % of `ref_gy` to max(dmax, 110 % of it)."""
    if dose_range is None:
        low, high = 0.1 * ref_gy, max(dmax_gy, 1.1 * ref_gy)
        return low, (high if high > low else low + 1.0)  # no prescription and no dose
    try:
        low, high = (float(v) for v in dose_range)
    except (TypeError, ValueError):
        raise ReportError(f"dose_range must be (low, high) in Gy, got {dose_range!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and 0 <= low < high):
        raise ReportError(f"dose_range must be (low, high) Gy with 0 <= low < high, got {dose_range!r}")
    return low, high


def _isodoses(ref_gy: float) -> list[tuple[float, float, str]]:
    """(percent, dose Gy, colour) of the isodose lines, lowest dose first."""
    if ref_gy <= 0:
        return []
    return sorted(((p, p / 100.0 * ref_gy, c) for p, c in zip(ISODOSE_PERCENTS, ISODOSE_COLOURS)),
                  key=lambda t: t[1])


def _draw_panel(ax, ct: SliceView, dose: SliceView, contours: list[tuple[np.ndarray, str, float]], isodoses,
                wash_range) -> object:
    """CT, dose wash, isodose lines and contours (mask, colour, width) of one plane; returns the wash image."""
    from matplotlib import patheffects

    kw = dict(extent=ct.extent, origin="upper")
    ax.imshow(ct.image, cmap="gray", vmin=_CT_WINDOW_HU[0], vmax=_CT_WINDOW_HU[1], interpolation="nearest",
              aspect="equal", **kw)
    low, high = wash_range
    d = dose.image
    washed = np.ma.masked_where((d < low) | (d <= 0), d)
    wash = ax.imshow(washed, cmap="jet", vmin=low, vmax=high, alpha=0.35, interpolation="nearest", aspect="equal",
                     **kw)
    lines = [(lv, c) for _, lv, c in isodoses if d.min() < lv < d.max()]
    if lines:
        ax.contour(d, levels=[lv for lv, _ in lines], colors=[c for _, c in lines], linewidths=1.0,
                   linestyles="--", **kw)
    for mask, colour, lw in contours:
        if mask.any() and not mask.all():
            cs = ax.contour(mask.astype(np.float32), levels=[0.5], colors=[colour], linewidths=lw, **kw)
            cs.set_path_effects([patheffects.Stroke(linewidth=lw + 1.0, foreground="black"), patheffects.Normal()])
    axis = {"axial": "z", "coronal": "y", "sagittal": "x"}[ct.plane]
    ax.set_title(f"{ct.plane.capitalize()}  {axis} = {ct.position_mm:.1f} mm (index {ct.index})", fontsize=9)
    ax.set_xlabel(ct.xlabel, fontsize=8)
    ax.set_ylabel(ct.ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    _orientation_letters(ax, ct.sides)
    return wash


def dose_slices_figure(case, dose, path, *, structures=None, point_mm=None, dose_range=None,
                       dpi: int = 100) -> Path:
    """Write one PNG with axial, coronal and sagittal slices of a dose through a point.

    Parameters
    ----------
    case : :class:`~airtp.Case` (CT, structures, prescriptions, grid).
    dose : (z, y, x) array, Gy, on the case grid.
    path : path of the PNG (written atomically).
    structures : list of str, optional
        Structures to contour; default :func:`default_structures` (targets
        and main organs). Names absent from the case raise ReportError.
    point_mm : (z, y, x) mm, optional
        Where the three planes cross; default :func:`default_point_mm`
        (centre of the highest-dose target).
    dose_range : (low, high) Gy, optional
        Range of the colour wash; doses below `low` are not washed. Default
        10 % of the highest prescription to the larger of the maximum dose
        and 110 % of it.

    The CT is shown in grey (soft-tissue window), the dose as a colour
    wash, isodose lines (dashed) at :data:`ISODOSE_PERCENTS` of the highest
    prescription, contours solid, the highest-dose target on top; pixels
    have their physical aspect.
    """
    from matplotlib.lines import Line2D

    grid = case.grid
    dose = check_dose(dose, grid.shape, what=f"dose for case '{case.patient_id}'")
    names = default_structures(case) if structures is None else list(structures)
    missing = [n for n in names if n not in case.structures]
    if missing:
        raise ReportError(f"case '{case.patient_id}': structure '{missing[0]}' to contour is not in the case")
    point = default_point_mm(case, dose) if point_mm is None else point_mm
    ref, dmax = _reference_dose_gy(case, dose), float(dose.max())
    wash_range = _wash_range(dose_range, ref, dmax)
    isodoses = _isodoses(ref)
    targets = target_names(list(case.structures), case.prescriptions)
    style = {n: (structure_colour(n, targets), 1.6 if n in targets else 1.1) for n in names}

    ct = orthogonal_slices(case.ct_hu, grid, point)
    ds = orthogonal_slices(dose, grid, point)
    masks = {n: orthogonal_slices(case.structures[n], grid, point) for n in names}
    planes = ("axial", "coronal", "sagittal")
    widths = [ct[p].extent[1] - ct[p].extent[0] for p in planes]
    heights = [abs(ct[p].extent[3] - ct[p].extent[2]) for p in planes]
    panel_h = 4.2  # inches
    fig = _new_figure(panel_h * sum(widths) / max(heights) + 2.0, panel_h + 1.5)
    axes = fig.subplots(1, 3, width_ratios=widths)
    for ax, plane in zip(axes, planes):
        contours = [(masks[n][plane].image, *style[n]) for n in reversed(names)]  # first name drawn last, on top
        wash = _draw_panel(ax, ct[plane], ds[plane], contours, isodoses, wash_range)

    handles = [Line2D([], [], color=c, lw=1.2, ls="--", label=f"{p:g} % ({lv:.1f} Gy)")
               for p, lv, c in reversed(isodoses)]
    handles += [Line2D([], [], color=style[n][0], lw=1.6, label=_plain(n)) for n in names]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 8) or 1, fontsize=7,
               frameon=False)
    cb = fig.colorbar(wash, ax=list(axes), shrink=0.8, pad=0.01)
    cb.set_label("Dose (Gy)", fontsize=8)
    cb.ax.tick_params(labelsize=7)
    pz, py, px = (float(v) for v in np.asarray(point, float).ravel())
    fig.suptitle(f"{_plain(case.patient_id)}: dose through (z, y, x) = ({pz:.1f}, {py:.1f}, {px:.1f}) mm, "
                 f"max {dmax:.1f} Gy", fontsize=10)
    return _save_png(fig, path, dpi)


def _orientation_letters(ax, sides) -> None:
    """Patient directions at the middle of the image edges (left, right, bottom, top)."""
    box = dict(color="white", fontsize=9, fontweight="bold", transform=ax.transAxes)
    left, right, bottom, top = sides
    ax.text(0.02, 0.5, left, ha="left", va="center", **box)
    ax.text(0.98, 0.5, right, ha="right", va="center", **box)
    ax.text(0.5, 0.02, bottom, ha="center", va="bottom", **box)
    ax.text(0.5, 0.98, top, ha="center", va="top", **box)
