"""Helper-structure recipes: the optimisation structures of paper Tables 3 and 4.

A recipe reads a case's targets, prescriptions and organs and returns new
structures plus a report of what it made and what it skipped, and why. It
never adds an empty structure: a helper that comes out empty, too small to
score, or (for OAR-PTV helpers) nearly all inside the targets is reported as
skipped instead.

Choices where the paper is silent (stated here so a physicist can check them):

- Targets are ranked by prescribed dose; targets sharing a dose form one level.
  One level gives PTVHigh; two give PTVHigh and PTVLow; three give PTVHigh,
  PTVMid and PTVLow. Table 3's formulas are applied with the absent levels'
  terms dropped (e.g. with two levels PTVLowOPT = PTVLow - (PTVHigh + 6 mm),
  RingPTVLow subtracts PTVHigh + 9 mm, and the difference structure is
  PTVLow-PTVHigh, as in the paper's Table 7).
- OPT structures are also cropped to Body (no dose is computed in air).
- OAR-PTV = OAR minus PTVTotal, with no extra margin.
- The ipsilateral parotid is the one whose centroid is nearer PTVHigh's.
- PRV helpers: BrainStem_03 = BrainStem + 3 mm, SpinalCord_05 = SpinalCord + 5 mm.
- Bilateral organs are also united (Parotids, Submandibular, Eyes,
  LacrimalGlands, TMJoint, BrachialPlexus) when either side exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from airtp.case import Case
from airtp.errors import RecipeError
from airtp.structures.morphology import margin, ring, subtract, union

__all__ = ["RecipeEntry", "RecipeResult", "head_neck", "lung", "for_site", "add_helpers"]

MADE, SKIPPED, KEPT = "made", "skipped", "kept"

# Table 3 margins (mm) of (lower level, higher level) for OPT and ring helpers.
_OPT_MM = {("Mid", "High"): 3.0, ("Low", "Mid"): 3.0, ("Low", "High"): 6.0}
_RING_MM = {("Mid", "High"): 6.0, ("Low", "Mid"): 6.0, ("Low", "High"): 9.0}


@dataclass(frozen=True)
class RecipeEntry:
    """One line of a recipe report."""

    name: str
    status: str  # "made", "skipped", or "kept" (already in the case)
    reason: str
    volume_cc: float = 0.0


@dataclass
class RecipeResult:
    """Structures a recipe made and the report of every helper it considered."""

    structures: dict[str, np.ndarray] = field(default_factory=dict)
    report: list[RecipeEntry] = field(default_factory=list)

    def entry(self, name: str) -> RecipeEntry:
        for e in self.report:
            if e.name == name:
                return e
        raise KeyError(name)

    @property
    def skipped(self) -> list[RecipeEntry]:
        return [e for e in self.report if e.status == SKIPPED]

    def format(self) -> str:
        """The report as an aligned text table."""
        w = max([len(e.name) for e in self.report] + [9])
        lines = [f"{'Structure':<{w}}  {'Status':<7}  {'cc':>8}  Reason"]
        for e in self.report:
            cc = f"{e.volume_cc:8.2f}" if e.status != SKIPPED else f"{'-':>8}"
            lines.append(f"{e.name:<{w}}  {e.status:<7}  {cc}  {e.reason}")
        return "\n".join(lines)


class _Builder:
    """Collects helpers for one case, caching margins shared by several formulas."""

    def __init__(self, case: Case, min_volume_cc: float, max_inside_ptv: float):
        self.case = case
        self.spacing = case.grid.spacing_mm
        self.voxel_cc = case.grid.voxel_volume_cc
        self.min_volume_cc = min_volume_cc
        self.max_inside_ptv = max_inside_ptv
        self.result = RecipeResult()
        self._margins: dict[tuple[str, float], np.ndarray] = {}

    def get(self, name: str) -> np.ndarray | None:
        """A structure by name: made by this recipe, or in the case, or None."""
        if name in self.result.structures:
            return self.result.structures[name]
        found = self.case.structures.find(name)
        return None if found is None else self.case.structures[found]

    def grown(self, name: str, mm: float) -> np.ndarray:
        key = (name, float(mm))
        if key not in self._margins:
            self._margins[key] = margin(self.get(name), mm, self.spacing)
        return self._margins[key]

    def skip(self, name: str, reason: str) -> None:
        self.result.report.append(RecipeEntry(name, SKIPPED, reason))

    def make(self, name: str, mask: np.ndarray, how: str, check_small: bool = True) -> bool:
        """Record `mask` as helper `name` unless it is empty or too small."""
        existing = self.case.structures.find(name)
        if existing is not None:
            vol = float(np.count_nonzero(self.case.structures[existing])) * self.voxel_cc
            self.result.report.append(RecipeEntry(name, KEPT, f"already in the case as '{existing}'", vol))
            return True
        n = int(np.count_nonzero(mask))
        vol = n * self.voxel_cc
        if n == 0:
            self.skip(name, f"empty result of {how}")
            return False
        if check_small and vol < self.min_volume_cc:
            self.skip(name, f"too small to score ({vol:.3f} cc < {self.min_volume_cc} cc): {how}")
            return False
        self.result.structures[name] = mask
        self.result.report.append(RecipeEntry(name, MADE, how, vol))
        return True

    def union_of(self, name: str, parts: tuple[str, ...]) -> None:
        present = [p for p in parts if self.get(p) is not None]
        if not present:
            self.skip(name, f"missing input: none of {', '.join(parts)}")
            return
        self.make(name, union(*[self.get(p) for p in present]), " + ".join(present))

    def prv(self, name: str, organ: str, mm: float) -> None:
        if self.get(organ) is None:
            self.skip(name, f"missing input: {organ}")
            return
        self.make(name, self.grown(organ, mm), f"{organ} + {mm:g} mm")

    def oar_minus_ptv(self, name: str, organ: str, ptv_total: np.ndarray) -> None:
        oar = self.get(organ)
        if oar is None:
            self.skip(name, f"missing input: {organ}")
            return
        n_oar = int(np.count_nonzero(oar))
        rest = oar & ~ptv_total
        inside = 1.0 - np.count_nonzero(rest) / n_oar if n_oar else 1.0
        if n_oar and inside > self.max_inside_ptv:
            self.skip(name, f"{inside:.0%} of {organ} lies inside PTVTotal (limit {self.max_inside_ptv:.0%})")
            return
        self.make(name, rest, f"{organ} - PTVTotal")


def _require_body(case: Case, recipe: str) -> None:
    if case.structures.find("Body") is None:
        raise RecipeError(f"{recipe} recipe: case '{case.patient_id}' has no Body structure")


def _dose_levels(case: Case, recipe: str) -> list[tuple[float, list[str]]]:
    """Distinct prescription doses, highest first, each with its target names."""
    if not case.prescriptions:
        raise RecipeError(f"{recipe} recipe: case '{case.patient_id}' has no prescription")
    for p in case.prescriptions:
        found = case.structures.find(p.structure)
        if found is None:
            raise RecipeError(f"{recipe} recipe: prescribed target '{p.structure}' is not in case '{case.patient_id}'")
        if not case.structures[found].any():
            raise RecipeError(f"{recipe} recipe: prescribed target '{p.structure}' is empty")
    levels: dict[float, list[str]] = {}
    for p in case.prescriptions:
        levels.setdefault(p.dose_gy, []).append(p.structure)
    return sorted(levels.items(), key=lambda kv: -kv[0])


def head_neck(case: Case, min_volume_cc: float = 0.1, max_inside_ptv: float = 0.95) -> RecipeResult:
    """Head-and-neck helpers of paper Table 3.

    Parameters
    ----------
    case : Case
        Needs Body and 1 to 3 prescription dose levels.
    min_volume_cc : float
        Helpers smaller than this (cc) are skipped as too small to score
        (the scorecard's smallest volume metric is 0.03 cc).
    max_inside_ptv : float
        An OAR-PTV helper is skipped when more than this fraction of its
        organ lies inside PTVTotal.
    """
    _require_body(case, "head-and-neck")
    levels = _dose_levels(case, "head-and-neck")
    if len(levels) > 3:
        raise RecipeError(
            f"head-and-neck recipe: case '{case.patient_id}' has {len(levels)} dose levels; Table 3 handles 1 to 3"
        )
    b = _Builder(case, min_volume_cc, max_inside_ptv)
    body = b.get("Body")
    rank = {1: ["High"], 2: ["High", "Low"], 3: ["High", "Mid", "Low"]}[len(levels)]
    names = []
    for level, (dose, targets) in zip(rank, levels):
        name = f"PTV{level}"
        b.make(name, union(*[b.get(t) for t in targets]), f"{' + '.join(targets)} ({dose:g} Gy)", check_small=False)
        names.append(name)
    ptv_total = union(*[b.get(n) for n in names])
    b.make("PTVTotal", ptv_total, "union of " + ", ".join(names), check_small=False)

    b.union_of("BrachialPlexus", ("BrachialPlexus_L", "BrachialPlexus_R"))
    if b.get("BrachialPlexus") is not None:
        b.make("PTVHighOPT", subtract(b.get("PTVHigh"), b.grown("BrachialPlexus", 2)) & body,
               "PTVHigh - (BrachialPlexus + 2 mm), within Body")
    else:
        b.make("PTVHighOPT", b.get("PTVHigh") & body, "PTVHigh within Body (no BrachialPlexus contoured)")
    b.make("RingPTVHigh", ring(b.get("PTVHigh"), 2, 30, b.spacing) & body,
           "[(PTVHigh + 30 mm) - (PTVHigh + 2 mm)] AND Body")

    # Table 3's margins belong to the pair of levels, so with two levels the
    # High-Low gaps stay those of Table 3 (6 mm and 9 mm), not the Mid ones.
    for i in range(1, len(names)):
        name = names[i]
        higher = names[:i][::-1]  # nearest level first
        level = name[3:]
        opt_mm = [(h, _OPT_MM[(level, h[3:])]) for h in higher]
        ring_mm = [(h, _RING_MM[(level, h[3:])]) for h in higher]
        opt = subtract(b.get(name), *[b.grown(h, mm) for h, mm in opt_mm]) & body
        b.make(f"{name}OPT", opt, f"{name} - " + " - ".join(f"({h} + {mm:g} mm)" for h, mm in opt_mm) + ", within Body")
        b.make(f"{name}-{higher[0]}", subtract(b.get(name), b.get(higher[0])), f"{name} - {higher[0]}")
        rng = subtract(ring(b.get(name), 2, 30, b.spacing), *[b.grown(h, mm) for h, mm in ring_mm])
        b.make(f"Ring{name}", rng & body, f"[({name} + 30 mm) - ({name} + 2 mm) - " +
               " - ".join(f"({h} + {mm:g} mm)" for h, mm in ring_mm) + "] AND Body")

    b.prv("BrainStem_03", "BrainStem", 3.0)
    b.prv("SpinalCord_05", "SpinalCord", 5.0)
    for name, parts in (
        ("Parotids", ("Parotid_L", "Parotid_R")),
        ("Submandibular", ("Submandibular_L", "Submandibular_R")),
        ("Eyes", ("Eye_L", "Eye_R")),
        ("LacrimalGlands", ("LacrimalGland_L", "LacrimalGland_R")),
        ("TMJoint", ("TMJoint_L", "TMJoint_R")),
    ):
        b.union_of(name, parts)

    ipsi, contra = _parotid_sides(b, case)
    for name, organ in (
        ("Larynx-PTV", "Larynx"),
        ("Mandible-PTV", "Mandible"),
        ("OCavity-PTV", "OralCavity"),
        ("ParotdCon-PTV", contra),
        ("ParotdIps-PTV", ipsi),
        ("Parotids-PTV", "Parotids"),
        ("PharCost-PTV", "PharynxConst"),
        ("Submand-PTV", "Submandibular"),
        ("SubmandL-PTV", "Submandibular_L"),
        ("SubmandR-PTV", "Submandibular_R"),
        ("Thyroid-PTV", "Thyroid"),
    ):
        if organ is None:
            b.skip(name, "missing input: Parotid_L and Parotid_R both needed to tell the sides")
        else:
            b.oar_minus_ptv(name, organ, ptv_total)
    return b.result


def _parotid_sides(b: _Builder, case: Case) -> tuple[str | None, str | None]:
    """(ipsilateral, contralateral) parotid names: ipsilateral is nearer PTVHigh."""
    left, right = b.get("Parotid_L"), b.get("Parotid_R")
    if left is None or right is None or not left.any() or not right.any():
        return None, None
    target = np.argwhere(b.get("PTVHigh")).mean(axis=0)
    sp = np.asarray(case.grid.spacing_mm)
    d_left = np.linalg.norm((np.argwhere(left).mean(axis=0) - target) * sp)
    d_right = np.linalg.norm((np.argwhere(right).mean(axis=0) - target) * sp)
    return ("Parotid_L", "Parotid_R") if d_left <= d_right else ("Parotid_R", "Parotid_L")


def lung(case: Case, min_volume_cc: float = 0.1, max_inside_ptv: float = 0.95) -> RecipeResult:
    """Lung helpers for paper Tables 4 and 5.

    Makes PTV (a copy of the highest-dose target when it has another name),
    Lungs (Lung_L + Lung_R when no total lung is contoured), TotalLung-GTV
    (Lungs - GTV, with IGTV or ITV standing in for a missing GTV), RingPTV
    ([(PTV + 30 mm) - (PTV + 3 mm)] AND Body) and BodyRing (the 20 mm inner
    rind of Body).
    """
    _require_body(case, "lung")
    levels = _dose_levels(case, "lung")
    b = _Builder(case, min_volume_cc, max_inside_ptv)
    body = b.get("Body")
    dose, targets = levels[0]
    if targets != ["PTV"] or b.get("PTV") is None:
        b.make("PTV", union(*[b.get(t) for t in targets]), f"{' + '.join(targets)} ({dose:g} Gy)", check_small=False)
    else:
        b.make("PTV", b.get("PTV"), "prescribed target", check_small=False)
    if b.get("Lungs") is None:
        b.union_of("Lungs", ("Lung_L", "Lung_R"))
    gtv = next((g for g in ("GTV", "IGTV", "ITV") if b.get(g) is not None), None)
    if b.get("Lungs") is None:
        b.skip("TotalLung-GTV", "missing input: Lungs (or Lung_L / Lung_R)")
    elif gtv is None:
        b.skip("TotalLung-GTV", "missing input: GTV (or IGTV / ITV)")
    else:
        b.make("TotalLung-GTV", subtract(b.get("Lungs"), b.get(gtv)), f"Lungs - {gtv}")
    b.make("RingPTV", ring(b.get("PTV"), 3, 30, b.spacing) & body, "[(PTV + 30 mm) - (PTV + 3 mm)] AND Body")
    b.make("BodyRing", ring(body, -20, 0, b.spacing), "Body - (Body - 20 mm): 20 mm inner rind of Body")
    return b.result


_RECIPES = {"hn": head_neck, "lung": lung}


def for_site(site: str):
    """The recipe function of a site ('hn' or 'lung')."""
    try:
        return _RECIPES[site]
    except KeyError:
        raise RecipeError(f"no helper-structure recipe for site '{site}' (have: {', '.join(_RECIPES)})") from None


def add_helpers(case: Case, **options) -> RecipeResult:
    """Run the case's site recipe and add the helpers it made to the case."""
    result = for_site(case.site)(case, **options)
    for name, mask in result.structures.items():
        case.structures.add(name, mask)
    return result
