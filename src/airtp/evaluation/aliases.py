"""Other spellings of the standard structure names, for scorecard matching.

Scorecards (the paper's Tables 5-8, Varian's templates) spell structures in
their own ways: ``PTV56``, ``SpinalCord05``, ``RingPTV70``, ``TOTAL LUNG - GTV``.
Organ, PRV and target spellings are read by the one name matcher,
:func:`airtp.structures.harmonize.match_name` (``Cord``, ``External``,
``BrachPlexusL``, ``Cord_PRV05``); :data:`ALIASES` holds only what is
particular to scorecards: the nominal dose levels of the head-and-neck card
(70 / 63 / 56 Gy = High / Mid / Low), helper spellings, and stand-ins a
scorecard accepts for a missing structure.

A scorecard item's structure is matched in a case in this order:

1. the item's name as written, through :meth:`StructureSet.find` (exact,
   then ignoring case and punctuation, so ``OpticNerve.L``, ``OpticNerveL``
   and ``OpticNerve_L`` are one name already);
2. the standard name the spelling stands for (:func:`standard_name`);
3. the other spellings of that standard name, in the order listed in
   :data:`ALIASES` (e.g. ``PTVLow-PTVMid`` falls back to ``PTVLow-PTVHigh``
   in a case with two PTVs);
4. the case structure whose own name harmonises to one of those names
   (``Cord`` for ``SpinalCord``, ``Lt BP`` for ``BrachialPlexus_L``), if
   exactly one does.
"""

from __future__ import annotations

from airtp.structures.harmonize import MATCHED, find_standard, match_name
from airtp.structures.names import name_key

__all__ = ["ALIASES", "standard_name", "candidates", "resolve"]

# standard name -> other spellings (looked up case- and punctuation-free)
ALIASES: dict[str, tuple[str, ...]] = {
    # head and neck, PTV levels (nominal 70 / 63 / 56 Gy) and their helpers
    "PTVHigh": ("PTV70",),
    "PTVHighOPT": ("PTV70OPT", "PTV70_OPT", "PTVHigh_OPT"),
    "PTVMid": ("PTV63",),
    "PTVLow": ("PTV56",),
    "PTVMid-PTVHigh": ("PTV63-PTV70",),
    "PTVLow-PTVMid": ("PTV56-PTV63", "PTVLow-PTVHigh", "PTV56-PTV70"),
    "PTVLow-PTVHigh": ("PTV56-PTV70",),
    "RingPTVHigh": ("RingPTV70", "Ring_PTV70", "PTV70_Ring"),
    "RingPTVMid": ("RingPTV63", "Ring_PTV63", "PTV63_Ring"),
    "RingPTVLow": ("RingPTV56", "Ring_PTV56", "PTV56_Ring"),
    # head-and-neck helpers
    "OCavity-PTV": ("OralCavity-PTV", "OCavity_PTV"),
    "Parotids-PTV": ("Parotid-PTV", "Parotids_PTV"),
    "Submand-PTV": ("Submandibular-PTV", "Submands-PTV"),
    "SubmandL-PTV": ("Submandibular_L-PTV", "SubmandibularL-PTV"),
    "SubmandR-PTV": ("Submandibular_R-PTV", "SubmandibularR-PTV"),
    # stand-ins a scorecard accepts: a brainstem PRV of unstated margin for the 3 mm one,
    # one lacrimal-gland structure for both, a Skin outline for Body
    "BrainStem_03": ("Brainstem_PRV",),
    "LacrimalGlands": ("LacrimalGland",),
    "Body": ("Skin",),
    # lung
    "TotalLung-GTV": ("TOTAL LUNG - GTV", "Total Lung-GTV", "Lungs-GTV", "Lung_Total-GTV", "Lungs_GTV"),
}

_KEY_TO_STANDARD: dict[str, str] = {}
for _std, _alts in ALIASES.items():
    _KEY_TO_STANDARD.setdefault(name_key(_std), _std)
for _std, _alts in ALIASES.items():
    for _alt in _alts:
        _KEY_TO_STANDARD.setdefault(name_key(_alt), _std)


def standard_name(name: str) -> str | None:
    """The standard name that `name` spells: the scorecard table first, then the name matcher."""
    std = _KEY_TO_STANDARD.get(name_key(name))
    if std is None:
        m = match_name(name)
        std = m.standard if m.status == MATCHED else None
    return std


def candidates(name: str) -> list[str]:
    """Names to try for a scorecard structure, in order (see the module doc)."""
    out = [name]
    std = standard_name(name)
    if std is not None:
        out.append(std)
        out.extend(ALIASES.get(std, ()))
    seen, unique = set(), []
    for n in out:
        if n not in seen:
            seen.add(n)
            unique.append(n)
    return unique


def resolve(name: str, structures) -> str | None:
    """The structure of `structures` (a StructureSet or mapping) that `name` refers to, or None."""
    find = getattr(structures, "find", None)
    cands = candidates(name)
    for cand in cands:
        if find is not None:
            hit = find(cand)
        else:
            hit = cand if cand in structures else next((k for k in structures if name_key(k) == name_key(cand)), None)
        if hit is not None:
            return hit
    # step 4: the case's own spellings, read by the name matcher
    names = list(structures)
    for cand in cands:
        m = match_name(cand)  # the matcher's reading, not the scorecard table's (Brainstem_PRV stays a PRV)
        hit = find_standard(names, m.standard if m.status == MATCHED else cand)
        if hit is not None:
            return hit
    return None
