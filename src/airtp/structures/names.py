"""Standard structure names of AIRTP and the loose key used to match them.

The standard names are those of the paper's helper recipes and scorecards
(Tables 3-6), with laterality as a ``_L``/``_R`` suffix. Clinical names are
matched to them by :mod:`airtp.structures.harmonize` (TG-263, PRV and margin
suffixes, dose levels, institution suffixes).
"""

from __future__ import annotations

import re

__all__ = ["name_key", "HEAD_NECK_OARS", "LUNG_OARS", "UNIONS", "TARGETS", "PRVS", "HELPERS"]

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

# Unions of both sides made by the helper recipes (union name -> sides).
UNIONS = {
    "Parotids": ("Parotid_L", "Parotid_R"), "Submandibular": ("Submandibular_L", "Submandibular_R"),
    "Eyes": ("Eye_L", "Eye_R"), "LacrimalGlands": ("LacrimalGland_L", "LacrimalGland_R"),
    "TMJoint": ("TMJoint_L", "TMJoint_R"), "BrachialPlexus": ("BrachialPlexus_L", "BrachialPlexus_R"),
    "Lungs": ("Lung_L", "Lung_R"),
}

# Target names the recipes read or make (dose-level PTVs such as PTV70 are named by
# their dose: PTV + dose in Gy).
TARGETS = ("PTV", "CTV", "GTV", "ITV", "IGTV", "PTVHigh", "PTVMid", "PTVLow", "PTVTotal")

# Planning organ-at-risk volumes the recipes make: organ + margin in mm, two digits.
PRVS = ("BrainStem_03", "SpinalCord_05")

# Optimisation helpers of paper Tables 3 and 4 (recipes.head_neck, recipes.lung).
HELPERS = (
    "PTVHighOPT", "PTVMidOPT", "PTVLowOPT", "RingPTVHigh", "RingPTVMid", "RingPTVLow",
    "PTVMid-PTVHigh", "PTVLow-PTVMid", "PTVLow-PTVHigh", "Larynx-PTV", "Mandible-PTV", "OCavity-PTV",
    "ParotdCon-PTV", "ParotdIps-PTV", "Parotids-PTV", "PharCost-PTV", "Submand-PTV", "SubmandL-PTV",
    "SubmandR-PTV", "Thyroid-PTV", "TotalLung-GTV", "RingPTV", "BodyRing",
)

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def name_key(name: str) -> str:
    """Case- and punctuation-free key: 'SpinalCord.05' and 'spinalcord_05' share one."""
    return _NON_ALNUM.sub("", name.lower())
