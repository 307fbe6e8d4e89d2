"""Other spellings of the standard structure names, for scorecard matching.

Scorecards (the paper's Tables 5-8, Varian's templates) spell structures in
their own ways: ``PTV56``, ``SpinalCord05``, ``RingPTV70``, ``TOTAL LUNG - GTV``.
A scorecard item's structure is matched in a case in this order:

1. the item's name as written, through :meth:`StructureSet.find` (exact,
   then ignoring case and punctuation, so ``OpticNerve.L``, ``OpticNerveL``
   and ``OpticNerve_L`` are one name already);
2. the standard name the spelling stands for (:func:`standard_name`);
3. the other spellings of that standard name, in the order listed in
   :data:`ALIASES` (e.g. ``PTVLow-PTVMid`` falls back to ``PTVLow-PTVHigh``
   in a case with two PTVs).
"""

from __future__ import annotations

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
    # head and neck OARs and PRVs
    "SpinalCord_05": ("SpinalCord05", "SpinalCord_PRV05", "SpinalCord_PRV5", "Cord_PRV05"),
    "BrainStem_03": ("BrainStem03", "BrainStem_PRV03", "BrainStem_PRV3", "Brainstem_PRV"),
    "BrachialPlexus_L": ("BrachPlexusL", "BrachialPlex_L", "BrachialPlexusL"),
    "BrachialPlexus_R": ("BrachPlexusR", "BrachialPlex_R", "BrachialPlexusR"),
    "OCavity-PTV": ("OralCavity-PTV", "OCavity_PTV"),
    "Posterior_Neck": ("PosteriorNeck", "Post_Neck"),
    "LacrimalGlands": ("LacrimalGland", "Lacrimal_Glands"),
    "Parotids-PTV": ("Parotid-PTV", "Parotids_PTV"),
    "Submand-PTV": ("Submandibular-PTV", "Submands-PTV"),
    "SubmandL-PTV": ("Submandibular_L-PTV", "SubmandibularL-PTV"),
    "SubmandR-PTV": ("Submandibular_R-PTV", "SubmandibularR-PTV"),
    "Lungs": ("Lung", "Lungs_Total", "Lung_Total"),
    "Body": ("External", "BODY", "Skin"),
    # lung
    "TotalLung-GTV": ("TOTAL LUNG - GTV", "Total Lung-GTV", "Lungs-GTV", "Lung_Total-GTV", "Lungs_GTV"),
    "SpinalCord": ("SPINAL_CORD", "Cord", "Spinal_Cord"),
    "BrachialPlexus": ("BRACHIALPLEXUS", "BrachPlexus", "BrachialPlex"),
    "GreatVessels": ("GREATVESSELS", "GreatVes", "Great_Vessels"),
}

_KEY_TO_STANDARD: dict[str, str] = {}
for _std, _alts in ALIASES.items():
    _KEY_TO_STANDARD.setdefault(name_key(_std), _std)
for _std, _alts in ALIASES.items():
    for _alt in _alts:
        _KEY_TO_STANDARD.setdefault(name_key(_alt), _std)


def standard_name(name: str) -> str | None:
    """The standard name that `name` spells, if the alias table knows it."""
    return _KEY_TO_STANDARD.get(name_key(name))


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
    for cand in candidates(name):
        if find is not None:
            hit = find(cand)
        else:
            hit = cand if cand in structures else next((k for k in structures if name_key(k) == name_key(cand)), None)
        if hit is not None:
            return hit
    return None
