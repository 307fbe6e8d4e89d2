"""Objectives of the initial plan (Algorithm 1, line 1).

- Lung: paper Table 4, row by row. Target, ring and body-ring doses are
  written for 60 Gy and scale with the case's prescription; organ doses are
  absolute. Three rows of Table 4 are printed as "Mean" with a volume of 0 %
  (GreatVessels 55 Gy, Trachea 55 Gy, RingPTV 67 Gy); a mean objective has no
  volume and a 67 Gy mean could never bind on a ring around a 60 Gy target,
  so these are read as what the volume says: upper point objectives at 0 %
  (maximum doses). Structures the case lacks are skipped by the optimizer,
  which reports them.
- Head and neck: RapidPlan, which the paper uses, is proprietary. Instead,
  every scorecard organ item goes through the Figure 4 rule at its goal (the
  output where the item has lost 20 % of its score range), plus the
  prescription objectives of :func:`airtp.planning.rules.prescription_objectives`.
- Other sites: the prescription objectives alone.
"""

from __future__ import annotations

from airtp.case import Case
from airtp.evaluation.aliases import resolve
from airtp.objectives import MeanObjective, ObjectiveSet, PointObjective
from airtp.planning.rules import RuleContext, is_target_name, item_objective, prescription_objectives

__all__ = ["LUNG_TABLE_4", "lung_initial", "head_neck_initial", "initial_objectives"]

# (structure, type, dose Gy, volume %, operator, priority, scales with Rx)
LUNG_TABLE_4 = (
    ("PTV", "point", 60.0, 100.0, "lower", 300.0, True),
    ("PTV", "point", 63.0, 0.0, "upper", 300.0, True),
    ("BodyRing", "point", 63.0, 0.0, "upper", 250.0, True),
    ("TotalLung-GTV", "point", 20.0, 18.5, "upper", 100.0, False),
    ("TotalLung-GTV", "point", 5.0, 32.5, "upper", 100.0, False),
    ("TotalLung-GTV", "mean", 5.0, None, "upper", 100.0, False),
    ("SpinalCord", "point", 22.0, 0.0, "upper", 80.0, False),
    ("Heart", "point", 55.0, 0.0, "upper", 60.0, False),
    ("Heart", "mean", 5.0, None, "upper", 60.0, False),
    ("LAD", "point", 55.0, 0.0, "upper", 60.0, False),
    ("Esophagus", "mean", 15.0, None, "upper", 60.0, False),
    ("BrachialPlexus", "mean", 15.0, None, "upper", 60.0, False),
    ("GreatVessels", "point", 55.0, 0.0, "upper", 60.0, False),  # printed "Mean ... 0 %"
    ("Trachea", "point", 55.0, 0.0, "upper", 60.0, False),  # printed "Mean ... 0 %"
    ("RingPTV", "point", 67.0, 0.0, "upper", 60.0, True),  # printed "Mean ... 0 %"
)


def lung_initial(case: Case) -> ObjectiveSet:
    """Paper Table 4, scaled to the case's highest prescription where marked."""
    rx = max(p.dose_gy for p in case.prescriptions)
    out = ObjectiveSet()
    for name, kind, dose, volume, op, priority, scales in LUNG_TABLE_4:
        d = round(dose * rx / 60.0, 2) if scales else dose
        target = case.structures.find(name) or name
        if kind == "mean":
            out.add(MeanObjective(target, d, priority))
        else:
            out.add(PointObjective(target, op, d, volume, priority))
    return out


GOAL_FRACTION = 0.8


def _goal(item) -> float:
    """The output at which an organ item (lower is better) has lost 20 % of its score range.

    The first output, walking up the score curve, where the score falls to
    ``min + 0.8 (max - min)``: an ambitious but reachable goal. (The highest
    output with the full score is often 0 Gy, which no plan reaches.)
    """
    pts = sorted((p.x, p.score) for p in item.points)
    scores = [s for _, s in pts]
    level = min(scores) + GOAL_FRACTION * (max(scores) - min(scores))
    for (x1, s1), (x2, s2) in zip(pts[:-1], pts[1:]):
        if s1 >= level > s2:
            return x1 + (s1 - level) / (s1 - s2) * (x2 - x1)
    return pts[-1][0] if scores[-1] >= level else pts[0][0]


def head_neck_initial(case: Case, scorecard) -> ObjectiveSet:
    """Figure 4 objectives at each organ item's goal, plus the prescription objectives."""
    out = ObjectiveSet(prescription_objectives(case))
    ctx = RuleContext(case, scorecard, {}, None)
    for item in scorecard.items:
        name = resolve(item.structure, case.structures)
        if name is None or is_target_name(name) or not case.structures[name].any():
            continue
        # scaled inputs of level items are the rule's business; organ items keep their absolute input
        obj = item_objective(item, name, _goal(item), item.input_value, case.structures.volume_cc(name), ctx)
        if obj is not None:
            out.add(obj)
    return out


def initial_objectives(case: Case, scorecard) -> ObjectiveSet:
    """The initial objectives of a case's site (see the module doc)."""
    if case.site == "lung":
        return lung_initial(case)
    if case.site == "hn":
        return head_neck_initial(case, scorecard)
    return ObjectiveSet(prescription_objectives(case))
