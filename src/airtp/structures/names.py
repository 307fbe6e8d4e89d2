"""Standard structure names of AIRTP and the loose key used to match them.

The standard names are those of the paper's helper recipes and scorecards
(Tables 3-6), with laterality as a ``_L``/``_R`` suffix. Full harmonisation of
clinical names (TG-263, PRV suffixes, institution suffixes) builds on these.
"""

from __future__ import annotations

import re

__all__ = ["name_key", "HEAD_NECK_OARS", "LUNG_OARS"]

# Organs at risk of head-and-neck planning (paper Tables 3 and 6).
HEAD_NECK_OARS = (
    "Body", "Brain", "BrainStem", "SpinalCord", "Chiasm", "OpticNerve_L", "OpticNerve_R",
    "Eye_L", "Eye_R", "Lens_L", "Lens_R", "Cochlea_L", "Cochlea_R", "LacrimalGland_L",
    "LacrimalGland_R", "Pituitary", "Parotid_L", "Parotid_R", "Submandibular_L",
    "Submandibular_R", "OralCavity", "Lips", "Mandible", "TMJoint_L", "TMJoint_R", "Larynx",
    "PharynxConst", "Esophagus", "Trachea", "Thyroid", "BrachialPlexus_L", "BrachialPlexus_R",
    "Posterior_Neck", "Shoulders", "Lungs",
)

# Organs at risk of lung planning (paper Tables 4 and 5).
LUNG_OARS = (
    "Body", "Lung_L", "Lung_R", "Heart", "LAD", "Esophagus", "SpinalCord", "BrachialPlexus",
    "GreatVessels", "Trachea",
)

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def name_key(name: str) -> str:
    """Case- and punctuation-free key: 'SpinalCord.05' and 'spinalcord_05' share one."""
    return _NON_ALNUM.sub("", name.lower())
