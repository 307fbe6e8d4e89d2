"""Objective rules: how Algorithm 1 turns a plan's DVHs and scorecard into new objectives.

A rule is a plugin in the entry-point group ``airtp.objective_rules``: a class
whose instances have a ``name`` and ``objectives(ctx) -> list`` of
objectives, given a :class:`RuleContext` (the case, its scorecard, the current
plan's DVHs and score report). The two rules of the paper are built in:

- :class:`Dose2ObjRule` (paper Figure 3): for every scorecard organ and helper,
  the current DVH at volumes 1, 10, 20, 30, 40, 60 and 80 % becomes an upper
  point objective a little below the current dose (:func:`dose2obj`).
- :class:`Scorecard2DoseRule` (paper Figure 4): every scored organ item
  becomes an objective at its current output with a margin, with a priority
  that grows with the slope of the item's score curve and with how badly it
  scores (:func:`scorecard2dose`).

Targets are left to the prescription objectives (:func:`prescription_objectives`).

Priorities are the paper's. Each rule takes a ``priority_scale`` (module
defaults :data:`DOSE2OBJ_PRIORITY_SCALE`, :data:`SCORECARD_PRIORITY_SCALE`,
both 1) that multiplies its priorities without touching the figures' rules.
Measured on the synthetic head-and-neck phantom (``hn1``, seed 0, ideal
fluence): 0.25 / 4 gave +0.87 points against +1.05 with 1 / 1, so the
paper's balance is kept. What holds the refinement back there is not the
priorities but the transition zone of the organ objectives: organ items
such as oral-cavity and parotid means and the cord maximum are decided
within 10 mm of the targets, where the rules' objectives do not reach; hence
``PlanSettings.refine_transition_mm`` (5 mm) narrows that zone for the
refinement, with the quality filter guarding the plan that is kept.
Reading the rules' DVHs on only the part of each organ the objectives act
on (outside the zone) was tried and lost: mean gain +1.34 against +3.07.
Also tried and dropped (bench_pipeline, head and neck seeds 0-1, deliverable):
dividing the rules' doses by the plan normalisation factor, since the rules
read the normalised plan while the optimiser works before normalisation
(mean gain +4.51 against +5.15: the stricter objectives cost homogeneity);
and Figure 4 objectives for the target-gradient items (PTVMid-PTVHigh V66.2
Gy), which without that division never bind (the lower level's dose sits
just under the threshold before normalisation) and changed nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from airtp.case import Case
from airtp.evaluation.scorecard import case_levels
from airtp.objectives import MeanObjective, NormalTissueObjective, PointObjective

__all__ = [
    "RuleContext", "Dose2ObjRule", "Scorecard2DoseRule", "dose2obj", "scorecard2dose", "DVH_VOLUMES_PCT",
    "prescription_objectives", "is_target_name",
]

DVH_VOLUMES_PCT = (1.0, 10.0, 20.0, 30.0, 40.0, 60.0, 80.0)
DOSE2OBJ_PRIORITY_SCALE = 1.0  # multiplies the Figure 3 priorities (1: the paper's)
SCORECARD_PRIORITY_SCALE = 1.0  # multiplies the Figure 4 priorities (1: the paper's)
LOWER_LEVEL_MARGIN = 1.02  # lower levels' lower objective, x Rx (see prescription_objectives)


def is_target_name(name: str) -> bool:
    """PTV levels and their derived target regions (PTVHigh, PTVLow-PTVHigh, PTV70 ...)."""
    return name.upper().startswith(("PTV", "CTV", "GTV", "ITV"))


@dataclass
class RuleContext:
    """What a rule sees: the case, its scorecard, the current plan's DVHs and score."""

    case: Case
    scorecard: object  # airtp.evaluation.scorecard.Scorecard
    dvhs: dict  # structure name -> DVH of the current plan (case grid)
    report: object  # ScoreReport of the current plan
    iteration: int = 0
    extra: dict = field(default_factory=dict)

    def scored_structures(self) -> list[str]:
        """Case names of the structures the scorecard scores, targets excluded, in item order."""
        names: dict[str, None] = {}
        for r in self.report.results:
            if r.struct_id and not is_target_name(r.struct_id) and r.struct_id in self.dvhs:
                names.setdefault(r.struct_id, None)
        return list(names)


def dose2obj(name: str, value: float, volume: float | None, score: float | None = None) -> tuple[float, float]:
    """Paper Figure 3: (objective dose Gy, priority) from a DVH point (dose `value` at `volume` %)."""
    if "-PTV" in name and value > 20:
        res, weight = max(value * 0.95, value - 3), 120
    elif value > 63 and "-PTV" not in name:
        res, weight = value - 1, 80
    elif value < 20 and (volume is not None and volume < 50):
        res, weight = max(value * 0.95, value - 2), 80
    elif value < 10:
        res, weight = max(value * 0.95, value - 2), 80
    else:
        res, weight = max(value * 0.95, value - 2), 120
    return round(res, 2), weight


def scorecard2dose(x: float, points) -> tuple[float, float]:
    """Paper Figure 4: (objective value, priority) from an item's output `x` and its score points.

    `points` are (PointX, Score) pairs. The value is ``max(0.85 x, x - 7)``; the
    priority ``60 + min(|m|, 7) * 20 / (1 + exp(score / 3))`` grows with the
    slope m of the score curve at x and as the score falls.
    """
    pts = sorted((float(px), float(s)) for px, s in points)
    x = min(max(float(x), pts[0][0]), pts[-1][0])
    if len(pts) == 1:
        return max(x * 0.85, x - 7), 60.0
    for (x1, y1), (x2, y2) in zip(pts[:-1], pts[1:]):
        if x1 <= x <= x2:
            m = (y2 - y1) / (x2 - x1 + 1e-5)
            score = y1 + m * (x - x1)
            value = max(x * 0.85, x - 7)
            priority = 60 + min(abs(m), 7) * 20 / (1 + np.exp(score / 3))
            return value, float(priority)
    raise AssertionError("unreachable: x is clamped into the points")


def _volume_pct(value: float, unit: str | None, volume_cc: float) -> float | None:
    """A volume in % of a structure of `volume_cc` from a value in `unit` (% or cc)."""
    if unit == "%":
        return float(min(max(value, 0.0), 100.0))
    if unit == "cc" and volume_cc > 0:
        return float(min(max(100.0 * value / volume_cc, 0.0), 100.0))
    return None


class Dose2ObjRule:
    """Figure 3 on DVH points of every scored organ and helper."""

    name = "dose2obj"

    def __init__(self, volumes_pct=DVH_VOLUMES_PCT, priority_scale: float | None = None):
        self.volumes_pct = tuple(volumes_pct)
        self.priority_scale = DOSE2OBJ_PRIORITY_SCALE if priority_scale is None else float(priority_scale)

    def objectives(self, ctx: RuleContext) -> list:
        out = []
        scores = {}
        for r in ctx.report.results:
            if r.scored and r.struct_id:
                scores[r.struct_id] = scores.get(r.struct_id, 0.0) + r.score
        for name in ctx.scored_structures():
            dvh = ctx.dvhs[name]
            for v in self.volumes_pct:
                d = float(dvh.dose_at_percent(v))
                if not np.isfinite(d):
                    continue
                dose, weight = dose2obj(name, d, v, scores.get(name))
                out.append(PointObjective(name, "upper", max(dose, 0.0), v, float(weight) * self.priority_scale))
        return out


class Scorecard2DoseRule:
    """Figure 4 on every scored organ item of the scorecard.

    DoseAtVolume, MaxDose and MeanDose items (outputs in Gy) give an upper
    point objective at the item's volume (max dose: 0 %) or a mean objective,
    at ``max(0.85 x, x - 7)`` Gy. VolumeAtDose items (outputs in % or cc) give
    an upper point objective at the item's dose with the volume lowered the
    same way. Other metrics are skipped.
    """

    name = "scorecard2dose"

    def __init__(self, priority_scale: float | None = None):
        self.priority_scale = SCORECARD_PRIORITY_SCALE if priority_scale is None else float(priority_scale)

    def objectives(self, ctx: RuleContext) -> list:
        out = []
        for r in ctx.report.results:
            if not r.scored or not r.struct_id or is_target_name(r.struct_id) or r.struct_id not in ctx.dvhs:
                continue
            obj = item_objective(r.item, r.struct_id, r.output_value, r.input_value, ctx.dvhs[r.struct_id].volume_cc, ctx)
            if obj is not None:
                out.append(_scaled(obj, self.priority_scale))
        return out


def _scaled(obj, factor: float):
    """`obj` with its priority multiplied by `factor`."""
    return obj if factor == 1.0 else replace(obj, priority=float(obj.priority) * factor)


def item_objective(item, struct_id: str, x: float, input_value, volume_cc: float, ctx: RuleContext):
    """The Figure 4 objective of one scorecard item at output `x` (None when the metric has none)."""
    scale = 1.0
    level = ctx.scorecard.item_level(item)
    if level is not None and item.output_unit in ("Gy", "cGy"):
        levels = case_levels(ctx.case.prescriptions)
        if level in levels:
            scale = levels[level] / ctx.scorecard.levels[level]
    points = [(p.x * scale, p.score) for p in item.points]
    value, priority = scorecard2dose(x, points)
    value = max(value, 0.0)
    if item.metric == "MeanDose":
        return MeanObjective(struct_id, value, priority)
    if item.metric == "MaxDose":
        return PointObjective(struct_id, "upper", value, 0.0, priority)
    if item.metric == "DoseAtVolume" and input_value is not None:
        v = _volume_pct(input_value, item.input_unit, volume_cc)
        return None if v is None else PointObjective(struct_id, "upper", value, v, priority)
    if item.metric == "VolumeAtDose" and input_value is not None and item.input_unit in ("Gy", "cGy"):
        dose = input_value / 100.0 if item.input_unit == "cGy" else input_value
        v = _volume_pct(value, item.output_unit, volume_cc)
        return None if v is None else PointObjective(struct_id, "upper", dose, v, priority)
    return None


def prescription_objectives(case: Case, priorities=None) -> list:
    """PTV and ring objectives from the prescriptions (Algorithm 1, lines 4-7), plus the NTO.

    For each prescription level (High, Mid, Low as in the recipes), on the
    level's OPT structure (the PTV itself when there is none): Lower (Rx,
    100 %; 1.02 Rx for the Mid and Low levels, which plan normalisation does
    not reach) and Upper (1.05 Rx, 0 %); on its ring: Upper (Rx, 0 %). A normal
    tissue objective (Eclipse-like defaults) keeps the dose fall-off steep.

    Why 1.02: the lower levels need some margin to keep their coverage items
    (V Rx >= 95 %), but every per cent above Rx is dose that spills into the
    gradient items (``PTVLow-PTVHigh V58.8 Gy``, i.e. 1.05 Rx) and the organs
    around the elective volumes. Measured with ``benchmarks/bench_pipeline.py``
    on the synthetic head and neck with 2 and 3 levels (seeds 0-1,
    deliverable): final scores 115.55, 129.11, 120.81, 137.60 with 1.02
    against 112.18, 127.68, 116.31, 134.82 with 1.03; 1.00 lost coverage
    (hn3 seed 0: 121.39).
    """
    p = {"target_lower": 200.0, "target_upper": 200.0, "ring": 120.0, "nto": 100.0}
    p.update(priorities or {})
    out = []
    ss = case.structures
    levels = case_levels(case.prescriptions)
    by_dose = {pr.dose_gy: pr.structure for pr in case.prescriptions}
    for level, rx in levels.items():
        target = next((n for n in (f"PTV{level}OPT", f"PTV{level}", by_dose.get(rx)) if n and n in ss), None)
        if target is None:
            continue
        # lower levels are not normalised: aim a little above their prescription
        lower = rx if level == "High" else round(LOWER_LEVEL_MARGIN * rx, 2)
        out.append(PointObjective(ss.find(target), "lower", lower, 100.0, p["target_lower"]))
        out.append(PointObjective(ss.find(target), "upper", round(1.05 * rx, 2), 0.0, p["target_upper"]))
        ring = ss.find(f"RingPTV{level}")
        if ring is not None:
            out.append(PointObjective(ring, "upper", rx, 0.0, p["ring"]))
    if "Body" in ss:
        out.append(NormalTissueObjective(priority=p["nto"], structure=ss.find("Body")))
    return out
