"""A case entering the pipeline: standard structure names, and what is missing said aloud.

Real cases arrive with their own names (OpenKBP: ``LeftParotid``,
``Brainstem``; clinics: anything). The helper recipe, the objective rules and
the scorecard read the standard names, so :func:`prepare_case` first renames
the case's structures through the project's name harmonisation
(:func:`airtp.structures.harmonize.harmonize_case`), then reports, as plan
warnings, what the plan will do without:

- structures the harmonisation could not name (kept as they are, used by
  nothing that looks for a standard name);
- structures reaching outside ``Body``: the dose engine computes no dose
  there, so their dose reads 0 Gy in every plan and metric (OpenKBP's Body
  is its possible-dose mask, which ends a few slices beyond the targets and
  often leaves a larynx or most of a brainstem outside);
- a case with no organ at risk at all (only Body and targets): it is planned
  for its targets alone, and every organ item of the scorecard is reported as
  not scored. This is a choice: refusing such a case would stop a batch for
  something a physicist may well intend (a target-only study), while planning
  it silently would hide a likely conversion mistake, so it is planned and
  the warning says so.
"""

from __future__ import annotations

import numpy as np

from airtp.case import Case
from airtp.planning.rules import is_target_name
from airtp.structures.harmonize import AMBIGUOUS, MATCHED, harmonize_case

__all__ = ["prepare_case", "harmonize_names", "organs_at_risk", "outside_body"]


def organs_at_risk(case: Case) -> list[str]:
    """Structures that are neither Body nor a target (prescribed, or named PTV/CTV/GTV/ITV)."""
    body = case.structures.find("Body")
    prescribed = {case.structures.find(p.structure) for p in case.prescriptions}
    return [n for n in case.structures if n != body and n not in prescribed and not is_target_name(n)]


def outside_body(case: Case, min_fraction: float = 0.01) -> dict[str, float]:
    """Fraction (0-1) of each structure lying outside Body, where at least `min_fraction` does."""
    body_name = case.structures.find("Body")
    if body_name is None:
        return {}
    body = case.structures[body_name]
    out = {}
    for name in case.structures:
        mask = case.structures[name]
        n = np.count_nonzero(mask)
        if name != body_name and n:
            f = np.count_nonzero(mask & ~body) / n
            if f >= min_fraction:
                out[name] = f
    return out


def harmonize_names(case: Case) -> tuple[list[tuple[str, str]], list[str]]:
    """Rename `case`'s structures to standard names in place (:func:`harmonize_case`).

    Returns ``(renamed, unnamed)``: (given name, standard name) pairs, and a
    description of each name that kept its own spelling because it is
    ambiguous, or unmatched without being a helper or optimisation structure
    (those are expected to have no standard name).
    """
    renamed, unnamed = [], []
    for m in harmonize_case(case):
        if m.status == MATCHED:
            if m.standard != m.input:
                renamed.append((m.input, m.standard))
        elif m.status == AMBIGUOUS or m.kind not in ("helper", "optimization"):
            unnamed.append(f"'{m.input}' ({m.status}: {m.reason})")
    return renamed, unnamed


def prepare_case(case: Case) -> list[str]:
    """Harmonise `case`'s structure names in place; return the warnings for the plan (see the module doc)."""
    warnings = []
    _, unnamed = harmonize_names(case)
    if unnamed:
        warnings.append(f"case '{case.patient_id}': no standard name for {', '.join(unnamed)}: kept as given")
    outside = outside_body(case)
    if outside:
        parts = ", ".join(f"{n} {f:.0%}" for n, f in outside.items())
        warnings.append(f"case '{case.patient_id}': part of {parts} lies outside Body, where no dose is computed "
                        "(it reads 0 Gy there)")
    if not organs_at_risk(case):
        warnings.append(f"case '{case.patient_id}' has no organ at risk (only Body and targets): planned for its "
                        "targets alone; the scorecard's organ items are not scored")
    return warnings
