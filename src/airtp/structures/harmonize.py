"""Harmonise clinical structure names to AIRTP's standard names (paper Table 1).

Clinics spell one organ in many ways (``Cord``, ``SPINAL_CORD``, ``SC``), add
PRV margins (``Cord+3``, ``Bstem.PRV``), dose levels (``PTV 70``,
``3PTV_5600``), institution suffixes (``OralCavity.JJC``) and keep
optimisation and temporary structures beside the real ones (``ptv-temp``,
``Opti.PTV60``, ``COLD PTV6996``). :func:`harmonize` reads each name and says
what it is:

- ``matched``: it is one structure with a standard name (``standard``);
- ``ambiguous``: it could be more than one (``Parotid`` without a side,
  ``PTV 66 Sup``, two inputs naming the same organ), so a person decides;
- ``unmatched``: no standard name applies (optimisation and derived
  structures, couch, unknown names): it is left as it is.

Every result carries the reason and a ``kind``: ``organ``, ``target``,
``prv``, ``helper`` (derived structures such as ``Parotid-PTV`` and rings),
``optimization`` (optimisation / temporary / do-not-use) or ``other``.

The standard names are AIRTP's (:mod:`airtp.structures.names`: ``BrainStem``,
``Parotid_L``, ``PTV70``, ...) and, for organs AIRTP's recipes and scorecards
do not use, TG-263's primary names (``Larynx_SG``, ``Kidney_L``), from the
vendored table ``data/tg263_names.csv``. The rules, in the order they apply:

1. a user mapping (:func:`load_mapping`) overrides everything;
2. AIRTP's own names, ignoring case and punctuation, match as they are;
3. organ names of AIRTP's lexicon or of TG-263 (either word order) match;
4. names with a dose-constraint sign (``<``, ``>``), a do-not-use or
   optimisation word (opt, temp, cold, hot, min, max, avoid, push, dummy,
   DNU) or a ``z`` sorting prefix are optimisation structures; ring and shell
   structures are helpers; isodose, couch and marker structures are ``other``;
5. a difference, union or part of structures (``OC-lips``, ``Eye_L+Eye_R``,
   ``OC wo``, ``Brain.partial``) is a derived helper;
6. targets (PTV, CTV, GTV, ITV, IGTV) take their dose level from the name:
   a number of 1000 or more is cGy (``3PTV_5600`` -> ``PTV56``), one from 10
   to 99.9 is Gy (``PTV 70`` -> ``PTV70``), an explicit ``Gy``/``cGy`` wins;
   a leading or single digit is a target number, not a dose; any other word
   (``Sup``, ``old``, ``eval``) makes the target ambiguous;
7. PRV and margin suffixes (``+3``, ``+5mm``, ``+0.5cm``, ``PRV05``, ``.PRV``,
   ``expd``, ``_03``) make a PRV of the organ, named organ + margin in mm with
   two digits as the recipes do (``SpinalCord_03``), or organ + ``_PRV`` when
   the margin is not stated. A PRV never takes the organ's own name. A margin
   without unit is mm from 2 up, cm below 1 and ambiguous in between;
8. organ words with laterality (``L``, ``Lt``, ``Left``, glued as in
   ``LParotid`` or ``RBP``), both sides (``Parotids``, ``Both``, ``L+R``),
   a relative side (``Ipsi``, ``Contra``: ambiguous), a copy number
   (``Brain1``) or an institution suffix of 2-4 capitals after ``.`` or ``_``;
9. a close misspelling of a known organ (similarity >= 0.85, names of six
   letters or more) matches, saying so;
10. anything else is unmatched.

When two inputs match one standard name, the one already spelt that way
keeps it and the others become ambiguous; without such a one all do.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import re
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path

from airtp.errors import AirtpError, NameMappingError
from airtp.structures.names import HEAD_NECK_OARS, HELPERS, LUNG_OARS, PRVS, TARGETS, UNIONS, name_key

__all__ = [
    "NameMatch", "harmonize", "harmonize_case", "load_mapping", "match_name", "find_standard", "format_matches",
    "MATCHED", "AMBIGUOUS", "UNMATCHED", "KINDS", "SITES",
]

MATCHED, AMBIGUOUS, UNMATCHED = "matched", "ambiguous", "unmatched"
KINDS = ("organ", "target", "prv", "helper", "optimization", "other")
SITES = ("hn", "lung", "generic")


@dataclass(frozen=True)
class NameMatch:
    """What one input name is.

    Parameters
    ----------
    input : str
        The name as given.
    standard : str or None
        The standard name when ``status`` is ``matched``, else None.
    status : str
        ``matched``, ``ambiguous`` or ``unmatched``.
    reason : str
        Why, in words a physicist can check.
    kind : str
        One of :data:`KINDS`.
    dose_gy : float or None
        Dose level read from a target name, in Gy.
    margin_mm : float or None
        Margin read from a PRV name, in mm.
    """

    input: str
    standard: str | None
    status: str
    reason: str
    kind: str = "other"
    dose_gy: float | None = None
    margin_mm: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------
# Word lists. Tokens are lower case; a "key" is tokens joined without spaces.
# ---------------------------------------------------------------------------
_LEFT = {"l", "lt", "left", "lft", "lf", "sin"}
_RIGHT = {"r", "rt", "right", "rgt", "rght", "dx"}
_BOTH = {"bilat", "bilateral", "both", "b", "lr", "rl", "bil"}
_RELATIVE = {"ipsi", "ipsil", "ipsilat", "ipsilateral", "contra", "contralat", "contralateral", "cont"}
_GLUED_SIDES = (("left", "L"), ("right", "R"), ("lt", "L"), ("rt", "R"), ("l", "L"), ("r", "R"))
_TOTAL = {"total", "whole", "all", "tot", "entire"}
_OPT = {
    "opt", "opti", "optim", "optimization", "optimisation", "optimize", "temp", "tmp", "cold", "hot",
    "hotspot", "coldspot", "min", "max", "avoid", "avd", "avoidance", "dummy", "help", "helper", "ctrl",
    "control", "push", "block", "blocker", "dnu", "donotuse", "ignore", "test",
}
_RING = {"ring", "rind", "shell"}
_OTHER = {
    "couch", "couchsurface", "couchinterior", "table", "board", "marker", "clip", "clips", "fiducial",
    "fiducials", "iso", "isocenter", "isocentre", "bb", "wire", "artifact", "artefact", "artifacts", "contrast",
    "dose", "isodose", "idl", "support", "headrest", "immobilization", "immobilisation", "mask", "implant",
}
_DERIVED = {
    "minus", "wo", "w", "with", "without", "uninvolved", "uninv", "noninvolved", "inside", "outside", "partial",
    "part", "sub", "crop", "cropped", "excl", "excluding", "except", "overlap", "ovlp",
}
_FILLER = {"gland", "glands", "glnd", "the", "of", "oar", "organ", "contour", "roi"}
_ABBREV = {"gland": "glnd", "glands": "glnds", "muscle": "musc", "muscles": "musc", "nerve": "nrv",
           "cartilage": "cartlg", "artery": "a", "vein": "v"}
_TARGET_NEUTRAL = {"gy", "cgy", "final", "total", "tot", "plan", "planning", "all"}
_LEVELS = {"high": "High", "hi": "High", "mid": "Mid", "med": "Mid", "medium": "Mid", "int": "Mid",
           "intermediate": "Mid", "low": "Low", "lo": "Low"}
_TARGET_TYPES = {"ptv": "PTV", "ctv": "CTV", "gtv": "GTV", "itv": "ITV", "igtv": "IGTV"}


@dataclass(frozen=True)
class _Organ:
    """One organ of the lexicon and its standard names by side."""

    label: str
    single: str | None = None  # the name of an unpaired organ
    left: str | None = None
    right: str | None = None
    both: str | None = None  # the name of both sides together
    bare_both: bool = False  # a paired organ named without side means both (Lung -> Lungs)
    airtp: bool = True


def _paired(label, both=None, bare_both=False):
    return _Organ(label, None, f"{label}_L", f"{label}_R", both, bare_both)


# AIRTP organs: (organ, spellings of one organ, spellings meaning both sides). TG-263
# names of the same organs join these through their keys (Glnd_Submand_L -> "glndsubmand").
_LEXICON: tuple[tuple[_Organ, tuple[str, ...], tuple[str, ...]], ...] = (
    (_Organ("Body", "Body"), ("body", "external", "ext", "outline", "body outline", "outer contour",
                              "patient outline", "body contour", "external contour"), ()),
    (_Organ("Brain", "Brain"), ("brain", "whole brain", "encephalon"), ()),
    (_Organ("BrainStem", "BrainStem"), ("brainstem", "brain stem", "bstem", "b stem", "bs", "brnstm", "stem"), ()),
    (_Organ("SpinalCord", "SpinalCord"), ("spinal cord", "cord", "sc", "spcord", "spinalcrd", "myelon",
                                          "medulla spinalis"), ()),
    (_Organ("Chiasm", "Chiasm"), ("chiasm", "optic chiasm", "chiasma", "optic chiasma", "chiasm optic"), ()),
    (_paired("OpticNerve"), ("optic nerve", "opticnrv", "optic nrv", "on", "opt nerve", "optic n", "nerve optic",
                             "nrv optic"), ("optic nerves", "ons")),
    (_paired("Eye", "Eyes"), ("eye", "globe", "eyeball", "bulbus"), ("eyes", "globes", "eyeballs")),
    (_paired("Lens"), ("lens", "eye lens", "lens eye"), ("lenses", "lens eyes")),
    (_paired("Cochlea"), ("cochlea", "cochlear"), ("cochleae", "cochleas")),
    (_paired("LacrimalGland", "LacrimalGlands"), ("lacrimal gland", "lacrimal", "lacrimal glnd", "glnd lacrimal",
                                                  "lac gland"), ("lacrimal glands", "lacrimals")),
    (_Organ("Pituitary", "Pituitary"), ("pituitary", "pituitary gland", "hypophysis"), ()),
    (_paired("Parotid", "Parotids"), ("parotid", "parotid gland", "parotis", "par", "parot"),
     ("parotids", "parotides", "parotid glands")),
    (_paired("Submandibular", "Submandibular"), ("submandibular", "submandibular gland", "submand", "smg",
                                                 "submandib", "glnd submand", "submand glnd", "submandibular glnd"),
     ("submandibulars", "submands", "glnd submands", "submandibular glands", "smgs")),
    (_Organ("OralCavity", "OralCavity"), ("oral cavity", "oc", "cavity oral", "oralcav", "oral cav", "mouth"), ()),
    (_Organ("Lips", "Lips"), ("lips", "lip"), ()),
    (_Organ("Mandible", "Mandible"), ("mandible", "mandibula", "bone mandible", "mandible bone", "mand"), ()),
    (_paired("TMJoint", "TMJoint"), ("tmj", "tm joint", "joint tm", "temporomandibular joint",
                                     "temperomandibular joint"), ("tmjs", "tm joints")),
    (_Organ("Larynx", "Larynx"), ("larynx", "larynx gsl", "laryngeal"), ()),
    (_Organ("PharynxConst", "PharynxConst"), ("pharynx const", "pharyngeal constrictors", "pharyngeal constrictor",
                                              "constrictors", "constrictor", "pcm", "phar const", "musc constrict",
                                              "constrict musc", "constrictor muscles", "pharynx constrictors"), ()),
    (_Organ("Esophagus", "Esophagus"), ("esophagus", "oesophagus", "esoph", "oesoph", "eso"), ()),
    (_Organ("Trachea", "Trachea"), ("trachea",), ()),
    (_Organ("Thyroid", "Thyroid"), ("thyroid", "thyroid gland", "glnd thyroid", "thyroid glnd"), ()),
    (_paired("BrachialPlexus", "BrachialPlexus", bare_both=True),
     ("brachial plexus", "brachialplex", "brachial plex", "brach plexus", "brach plex", "bp", "bplex", "plexus"),
     ("brachialplexs", "brachial plexuses", "bps")),
    (_Organ("Posterior_Neck", "Posterior_Neck"), ("posterior neck", "post neck", "neck posterior"), ()),
    (_Organ("Shoulders", "Shoulders"), ("shoulders",), ()),
    (_paired("Lung", "Lungs", bare_both=True), ("lung",), ("lungs", "total lung", "lung total", "both lungs",
                                                         "lungs total", "whole lung")),
    (_Organ("Heart", "Heart"), ("heart",), ()),
    (_Organ("LAD", "LAD"), ("lad", "a lad", "lad a", "left anterior descending", "left anterior descending artery",
                            "lad artery"), ()),
    (_Organ("GreatVessels", "GreatVessels"), ("great vessels", "greatves", "great ves", "great vessel", "gv"), ()),
)


def _phrase_key(phrase: str) -> str:
    return name_key(phrase.replace(" ", ""))


@dataclass
class _Tables:
    """Everything the matcher looks names up in, built once."""

    standards: dict[str, tuple[str, str]]  # key -> (standard name, kind)
    organs: dict[str, _Organ]  # label -> organ
    index: dict[str, tuple[str, str | None]]  # key -> (organ label, implied side: L, R, B or None)
    kinds: dict[str, str]  # organ label -> kind (organ / other)
    fuzzy_keys: list[str]


def _tg263_rows() -> list[dict[str, str]]:
    """The vendored TG-263 extract (see data/TG263_SOURCE.md)."""
    text = resources.files("airtp.structures").joinpath("data", "tg263_names.csv").read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def _split_side(name: str, reverse: bool) -> tuple[str, str | None]:
    """(base, side) of a TG-263 name: ``Parotid_L`` / ``L_Parotid`` -> (Parotid, L)."""
    if not reverse and name[-2:] in ("_L", "_R"):
        return name[:-2], name[-1]
    if reverse and name[:2] in ("L_", "R_"):
        return name[2:], name[0]
    return name, None


_CATEGORY = ("A_", "V_", "Glnd_", "Musc_", "Bone_", "Cavity_", "Joint_", "Nrv_", "Sinus_", "Lobe_", "Cartlg_")


def _without_category(base: str) -> str | None:
    """A TG-263 name without its category prefix (artery, vein, gland, ...), if it has one."""
    for prefix in _CATEGORY:
        if base.startswith(prefix) and len(base) > len(prefix) + 2:
            return base[len(prefix):]
    return None


@lru_cache(maxsize=1)
def _tables() -> _Tables:
    standards: dict[str, tuple[str, str]] = {}
    for names, kind in ((HEAD_NECK_OARS, "organ"), (LUNG_OARS, "organ"), (tuple(UNIONS), "organ"),
                        (TARGETS, "target"), (PRVS, "prv"), (HELPERS, "helper")):
        for n in names:
            standards.setdefault(name_key(n), (n, kind))
    organs: dict[str, _Organ] = {}
    index: dict[str, tuple[str, str | None]] = {}
    kinds: dict[str, str] = {}
    for organ, words, both_words in _LEXICON:
        organs[organ.label] = organ
        kinds[organ.label] = "organ"
        for w in words:
            index.setdefault(_phrase_key(w), (organ.label, None))
        for w in both_words:
            index.setdefault(_phrase_key(w), (organ.label, "B"))
    # TG-263: group names by base (without side); a base whose key AIRTP knows is that organ.
    groups: dict[str, dict] = {}
    for row in _tg263_rows():
        base, side = _split_side(row["primary"], reverse=False)
        g = groups.setdefault(base, {"sides": {}, "keys": set(), "type": row["type"]})
        g["sides"][side] = row["primary"]
        rbase, _ = _split_side(row["reverse"], reverse=True)
        for k, s in ((name_key(row["primary"]), side), (name_key(row["reverse"]), side)):
            g["keys"].add((k, s))
        g["keys"].add((name_key(base), None))
        g["keys"].add((name_key(rbase), None))
        bare = _without_category(base)  # A_Aorta -> Aorta, Musc_Masseter -> Masseter
        if bare and name_key(bare) not in index:  # never take a word AIRTP's lexicon uses (Lacrimal)
            g["keys"].add((name_key(bare), None))
    for base, g in groups.items():
        known = index.get(name_key(base))
        if known is not None:
            label = known[0]
        else:
            label = base
            s = g["sides"]
            organs[label] = _Organ(label, s.get(None), s.get("L"), s.get("R"), None, False, airtp=False)
            kinds[label] = "organ" if g["type"] == "Anatomic" else "other"
        for k, side in g["keys"]:
            if k not in index:
                implied = known[1] if (known is not None and side is None) else side
                index[k] = (label, implied)
    fuzzy = sorted(k for k in index if len(k) >= 6)
    return _Tables(standards, organs, index, kinds, fuzzy)


# ---------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------
_ACRONYM = re.compile(r"(PTV|CTV|GTV|ITV|PRV)|(?<![A-Za-z])(ptv|ctv|gtv|itv|prv)")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])|(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])")
_WORD = re.compile(r"\d+\.\d+|\d+|[A-Za-z]+")


def _tokens(text: str) -> list[str]:
    """Lower-case words and numbers: 'LeftParotid' -> ['left', 'parotid'], 'PTV70' -> ['ptv', '70']."""
    spaced = _ACRONYM.sub(lambda m: f" {m.group(0)} ", text)
    spaced = _CAMEL.sub(" ", spaced)
    return [w.lower() for w in _WORD.findall(spaced)]


# ---------------------------------------------------------------------------
# Organs
# ---------------------------------------------------------------------------
@dataclass
class _OrganHit:
    label: str
    side: str | None  # L, R, B, "rel" or None
    leftover: list[str]
    how: str


def _sides(tokens: list[str]) -> tuple[str | None, list[str]]:
    """The side the tokens state and the tokens without side words."""
    found, rest = set(), []
    for t in tokens:
        if t in _LEFT:
            found.add("L")
        elif t in _RIGHT:
            found.add("R")
        elif t in _BOTH:
            found.add("B")
        elif t in _RELATIVE:
            found.add("rel")
        else:
            rest.append(t)
    if "rel" in found:
        return "rel", rest
    if "B" in found or {"L", "R"} <= found:
        return "B", rest
    return (found.pop() if found else None), rest


def _lookup(tokens: list[str]) -> tuple[str, str | None] | None:
    """The organ the whole token list names, trying TG-263 abbreviations and without filler words."""
    idx = _tables().index
    variants = [tokens, [_ABBREV.get(t, t) for t in tokens], [t for t in tokens if t not in _FILLER]]
    for v in variants:
        if v and "".join(v) in idx:
            return idx["".join(v)]
    key = "".join(tokens)
    if len(key) >= 4 and key.endswith("s") and key[:-1] in idx:  # a plural: Ribs -> Rib, Kidneys -> both
        label, implied = idx[key[:-1]]
        return label, implied or "B"
    return None


def _find_organ(tokens: list[str]) -> _OrganHit | None:
    """Find an organ in `tokens`: all of them, else the longest run, else a word with a glued side."""
    if not tokens:
        return None
    hit = _lookup(tokens)  # side words may be part of a name (Left Anterior Descending)
    if hit:
        return _OrganHit(hit[0], hit[1], [], "name")
    side, rest = _sides(tokens)
    hit = _lookup(rest)
    if hit:
        return _OrganHit(hit[0], _merge_side(side, hit[1]), [], "name")
    for n in range(len(rest) - 1, 0, -1):  # longest run of words that names an organ
        for i in range(len(rest) - n + 1):
            hit = _lookup(rest[i:i + n])
            if hit:
                return _OrganHit(hit[0], _merge_side(side, hit[1]), rest[:i] + rest[i + n:], "name")
    if side is None:  # a side glued to the organ: lparotid, parotidl, rbp
        idx = _tables().index
        for i, t in enumerate(rest):
            for word, s in _GLUED_SIDES:
                prefix = t[len(word):] if t.startswith(word) else None
                suffix = t[:-len(word)] if t.endswith(word) else None
                for cand in (prefix, suffix):
                    if cand and len(cand) >= 2 and cand in idx:
                        label, implied = idx[cand]
                        return _OrganHit(label, _merge_side(s, implied), rest[:i] + rest[i + 1:],
                                         f"side '{word}' joined to the name")
    return None


def _merge_side(stated: str | None, implied: str | None) -> str | None:
    return stated if stated is not None else implied


def _resolve(hit: _OrganHit) -> tuple[str | None, str]:
    """(standard name, or None with the reason it is ambiguous) for an organ and side."""
    organ = _tables().organs[hit.label]
    if hit.side == "rel":
        return None, (f"{hit.label}: the side is given relative to the target (ipsi-/contralateral), "
                      "not as left or right")
    if hit.side in ("L", "R"):
        name = organ.left if hit.side == "L" else organ.right
        if name is None:
            return None, f"{hit.label} has no sides, but the name gives side {hit.side}"
        return name, ""
    if hit.side == "B":
        if organ.both is None:
            if organ.single is not None:
                return organ.single, ""
            return None, (f"both {hit.label} sides: there is no standard name for the pair "
                          f"({organ.left} and {organ.right})")
        return organ.both, ""
    if organ.single is not None:
        return organ.single, ""
    if organ.bare_both and organ.both is not None:
        return organ.both, ""
    return None, f"{hit.label} without a side: {organ.left} or {organ.right} (or both)"


# ---------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------
_Z_PREFIX = re.compile(r"^(z+|Z+)(?=[_\-. ]|[A-Z])")
_TARGET = re.compile(r"(?<![A-Za-z])(?P<type>(?i:igtv|gtv|ctv|itv|ptv))(?P<sub>[pn](?![a-z]))?")
_PLUS = re.compile(r"\+\s*(\d*\.?\d+)\s*(mm|cm)?(?![a-z])", re.I)
_PRV = re.compile(r"(?<![a-z])prv[\s_.-]*(\d*\.?\d+)?\s*(mm|cm)?(?![a-z])", re.I)
_EXP = re.compile(r"(?<![a-z])(?:expd|expanded|expansion|expand|exp)(?![a-z])[\s_.-]*(\d*\.?\d+)?\s*(mm|cm)?(?![a-z])",
                  re.I)
_MM = re.compile(r"(?<![a-z0-9.])(\d*\.?\d+)\s*(mm|cm)(?![a-z])", re.I)
_PADDED = re.compile(r"[._\s-]0(\d)$")
_SUFFIX = re.compile(r"(?<=[A-Za-z0-9])[._]([A-Z]{2,4})$")


def _m(text, standard, status, reason, kind, dose=None, margin=None) -> NameMatch:
    return NameMatch(text, standard, status, reason, kind, dose, margin)


def _fmt_num(v: float) -> str:
    return f"{v:g}"


def _margin_mm(value: str, unit: str | None, bare_is_mm: bool) -> tuple[float | None, str]:
    """A margin in mm, or None with the reason it is unclear."""
    v = float(value)
    if unit:
        return (v * 10.0 if unit.lower() == "cm" else v), ""
    if bare_is_mm or v >= 2.0:
        return v, ""
    if v < 1.0:
        return v * 10.0, ""
    return None, f"margin {_fmt_num(v)} has no unit ({_fmt_num(v)} mm or {_fmt_num(v)} cm?)"


def _not_a_structure(text: str, words: set[str]) -> NameMatch | None:
    """Optimisation, temporary, ring, isodose, couch and marker structures."""
    if re.search(r"[<>]", text):
        return _m(text, None, UNMATCHED, "dose-constraint structure (has < or >): optimisation helper", "optimization")
    if "%" in text or words & {"dose", "isodose", "idl"}:
        return _m(text, None, UNMATCHED, "isodose / dose structure, not anatomy", "other")
    opt = sorted(words & _OPT) + (["do not use"] if "donotuse" in name_key(text) else [])
    if opt:
        return _m(text, None, UNMATCHED, f"optimisation / temporary structure ('{opt[0]}'): left as it is",
                  "optimization")
    if _Z_PREFIX.match(text):
        return _m(text, None, UNMATCHED, "'z' prefix marks a planning helper: left as it is", "optimization")
    ring = sorted(words & _RING)
    if ring:
        return _m(text, None, UNMATCHED, f"{ring[0]} helper: AIRTP builds its own rings (paper Tables 3-4)", "helper")
    other = sorted(words & _OTHER)
    if other:
        return _m(text, None, UNMATCHED, f"not anatomy ('{other[0]}')", "other")
    return None


def _structure_like(piece: str) -> bool:
    tokens = _tokens(piece)
    return bool(_TARGET.search(piece)) or (_find_organ(tokens) is not None and not set(tokens) <= _LEFT | _RIGHT)


def _derived(text: str, words: set[str]) -> NameMatch | None:
    """Differences, unions and parts of structures."""
    pieces = [p for p in re.split(r"\s*[-+]\s*", text) if p.strip()]
    if len(pieces) >= 2 and sum(_structure_like(p) for p in pieces) >= 2:
        op = "minus" if "-" in text else "plus"
        return _m(text, None, UNMATCHED, f"derived structure ({f' {op} '.join(p.strip() for p in pieces)}): "
                  "AIRTP builds its own helpers", "helper")
    derived = sorted(words & _DERIVED)
    if derived:
        return _m(text, None, UNMATCHED, f"part or combination of structures ('{derived[0]}'): left as it is", "helper")
    return None


def _dose(value: str, unit: str | None) -> tuple[float | None, str]:
    """Dose in Gy from a number in a target name, or None with the reason."""
    v = float(value)
    if unit:
        gy = v / 100.0 if unit.lower() == "cgy" else v
    elif v >= 1000:
        gy = v / 100.0
    elif 10 <= v < 100:
        gy = v
    elif v < 10 and "." in value:
        gy = v
    else:
        return None, f"dose number {value} has no unit (Gy or cGy?)"
    if not 0 < gy <= 100:
        return None, f"dose {_fmt_num(gy)} Gy is implausible"
    return round(gy, 4), ""


def _target(text: str) -> NameMatch | None:
    """PTV / CTV / GTV / ITV / IGTV names with their dose level."""
    m = _TARGET.search(text)
    if m is None:
        return None
    ttype = _TARGET_TYPES[m.group("type").lower()]
    sub = m.group("sub") or ""
    pre, rest = text[:m.start()], text[m.end():]
    if _PLUS.search(rest) or _MM.search(rest):
        return _m(text, None, UNMATCHED, f"expanded {ttype}: a helper, left as it is", "helper")
    qualifiers = [w for w in _tokens(pre) if w not in _TARGET_NEUTRAL and not re.fullmatch(r"\d", w)]
    rest = rest.lstrip(" ._-")
    number = None
    im = re.match(r"^(\d)(?=[\s._-]+\d)", rest)  # PTV1_7000: target number 1
    if im:
        number, rest = im.group(1), rest[im.end():].lstrip(" ._-")
    dm = re.match(r"^(\d+(?:\.\d+)?)(?![\d.])\s*(?:(c?gy)(?![a-z]))?", rest, re.I)
    dose, why = None, ""
    if dm and re.fullmatch(r"\d", dm.group(1)) and not dm.group(2):
        number, rest = dm.group(1), rest[dm.end():]  # PTV 1: a numbered target, not 1 Gy
    elif dm:
        dose, why = _dose(dm.group(1), dm.group(2))
        rest = rest[dm.end():]
    level = None
    for w in _tokens(rest):
        if w in _LEVELS and level is None:
            level = _LEVELS[w]
        elif w not in _TARGET_NEUTRAL:
            qualifiers.append(w)
    found = f"{ttype}{sub}" + (f" at {_fmt_num(dose)} Gy" if dose else "")
    if why:
        return _m(text, None, AMBIGUOUS, f"{ttype}: {why}", "target")
    if qualifiers:
        return _m(text, None, AMBIGUOUS, f"{found} with qualifier(s) '{' '.join(qualifiers)}': a part or version of a "
                  "target; say which with a user mapping", "target", dose)
    if dose is not None:
        note = f" (level '{level}' ignored: the dose names it)" if level else ""
        return _m(text, f"{ttype}{sub}{_fmt_num(dose)}", MATCHED, f"{found}{note}", "target", dose)
    if level is not None and ttype == "PTV" and not sub:
        return _m(text, f"PTV{level}", MATCHED, f"PTV of the {level.lower()} dose level", "target")
    if number is not None or level is not None:
        return _m(text, None, AMBIGUOUS, f"{ttype} {number or level} without a dose level: which prescription?",
                  "target")
    return _m(text, f"{ttype}{sub}", MATCHED, f"{ttype}{sub} without a dose level in the name", "target")


def _prv(text: str) -> NameMatch | None:
    """PRV and margin names: Cord+3, Bstem.PRV, SpinalCord_PRV05, Brainstem expd, Cord_05."""
    margins, rest, why = [], text, ""
    for pattern, bare_is_mm in ((_PLUS, False), (_PRV, True), (_EXP, False), (_MM, False)):
        for mm in pattern.finditer(rest):
            if mm.group(1) is not None:
                v, w = _margin_mm(mm.group(1), mm.group(2), bare_is_mm)
                margins.append(v)
                why = why or w
            else:
                margins.append("unknown")
        rest = pattern.sub(" ", rest)
    pm = _PADDED.search(rest)
    if not margins and pm:
        margins.append(float(pm.group(1)))
        rest = rest[:pm.start()]
    if not margins:
        return None
    hit = _find_organ(_tokens(rest))
    if hit is None:
        return None
    if hit.label in ("Body", "Skin"):
        return _m(text, None, UNMATCHED, f"margin on the {hit.label.lower()} outline: a rind or expansion helper, "
                  "left as it is", "helper")
    mm = next((v for v in margins if v not in ("unknown", None)), None)
    kind_of = "PRV" if mm is None else f"{_fmt_num(mm)} mm PRV"
    if why:
        return _m(text, None, AMBIGUOUS, f"PRV of {hit.label}: {why}", "prv")
    if hit.leftover and not _ignorable(text, hit.leftover):
        return _m(text, None, AMBIGUOUS, f"{kind_of} of {hit.label} with unrecognised word(s) "
                  f"'{' '.join(hit.leftover)}'", "prv", margin=mm)
    organ, why = _resolve(hit)
    if organ is None:
        suffix = f"_{int(mm):02d}" if mm is not None and float(mm).is_integer() else "_PRV"
        return _m(text, None, AMBIGUOUS, f"{kind_of}: {why} (e.g. {hit.label}_L{suffix})", "prv", margin=mm)
    if mm is None:
        return _m(text, f"{organ}_PRV", MATCHED, f"PRV of {organ}, margin not stated", "prv")
    name = f"{organ}_{int(mm):02d}" if float(mm).is_integer() else f"{organ}_{_fmt_num(mm)}"
    return _m(text, name, MATCHED, f"{kind_of} of {organ} (not the organ itself)", "prv", margin=mm)


def _ignorable(text: str, leftover: list[str]) -> str:
    """Why the leftover words of an organ name can be ignored, or '' if they cannot."""
    if len(leftover) == 1 and re.fullmatch(r"\d", leftover[0]):
        return f"trailing '{leftover[0]}' read as a copy number"
    sm = _SUFFIX.search(text)
    if sm and leftover == [sm.group(1).lower()]:
        return f"institution suffix '{sm.group(1)}' ignored"
    return ""


def _organ(text: str, site: str | None) -> NameMatch | None:
    tokens = _tokens(text)
    hit = _find_organ(tokens)
    if hit is None:
        return None
    notes = [] if hit.how == "name" else [hit.how]
    leftover = list(hit.leftover)
    if leftover and set(leftover) <= _TOTAL:
        leftover = []
        if hit.side is None and _tables().organs[hit.label].both is not None:
            hit.side = "B"
    if leftover:
        other = _find_organ(leftover)
        if other is not None:
            return _m(text, None, AMBIGUOUS, f"names two structures ({hit.label} and {other.label})", "organ")
        why = _ignorable(text, leftover)
        if not why:
            return _m(text, None, AMBIGUOUS, f"{hit.label} with unrecognised word(s) '{' '.join(leftover)}'", "organ")
        notes.append(why)
    return _organ_result(text, hit, notes, site)


def _organ_result(text: str, hit: _OrganHit, notes: list[str], site: str | None) -> NameMatch:
    name, why = _resolve(hit)
    kind = _tables().kinds[hit.label]
    if name is None:
        return _m(text, None, AMBIGUOUS, why, kind)
    organ = _tables().organs[hit.label]
    side = {"L": ", left", "R": ", right", "B": ", both sides"}.get(hit.side, "")
    source = f"{'AIRTP' if organ.airtp else 'TG-263'} {'organ' if kind == 'organ' else 'name'} {hit.label}{side}"
    if not organ.airtp and site in ("hn", "lung"):
        source += f" (not used by AIRTP's {site} recipe or scorecard)"
    return _m(text, name, MATCHED, "; ".join([source, *notes]), kind)


def _edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance: insertions, deletions, substitutions and swaps of neighbours."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


def _fuzzy(text: str, site: str | None) -> NameMatch | None:
    """A close misspelling of a known organ name: one typing error (two from ten letters), unique."""
    side, rest = _sides(_tokens(text))
    key = "".join(rest)
    if len(key) < 6:
        return None
    limit = 1 if len(key) < 10 else 2
    index = _tables().index
    close = difflib.get_close_matches(key, _tables().fuzzy_keys, n=10, cutoff=0.7)
    scored = sorted((_edit_distance(key, k), k) for k in close)
    if not scored or scored[0][0] > limit:
        return None
    best_d, best = scored[0]
    if any(d == best_d and index[k][0] != index[best][0] for d, k in scored[1:]):
        return None  # as close to two different organs: do not guess
    label, implied = index[best]
    hit = _OrganHit(label, _merge_side(side, implied), [], "")
    return _organ_result(text, hit, [f"probable misspelling of '{best}' ({best_d} typing error)"], site)


def _check_site(site: str | None) -> None:
    if site is not None and site not in SITES:
        raise AirtpError(f"harmonize: site must be one of {', '.join(SITES)} or None, got {site!r}")


@lru_cache(maxsize=4096)
def match_name(name: str, site: str | None = None) -> NameMatch:
    """What one name is, without a user mapping or the other names of its case."""
    _check_site(site)
    text = str(name).strip()
    key = name_key(text)
    if not key:
        return _m(name, None, UNMATCHED, "no letters or digits", "other")
    t = _tables()
    if key in t.standards:
        std, kind = t.standards[key]
        return _m(name, std, MATCHED, "AIRTP standard name" + ("" if std == text else ", spelt differently"), kind)
    if key in t.index:  # an organ name as it stands (TG-263 or AIRTP's lexicon)
        label, implied = t.index[key]
        return replace(_organ_result(text, _OrganHit(label, implied, [], "name"), [], site), input=name)
    words = set(_tokens(text))
    for rule in (lambda: _not_a_structure(text, words), lambda: _derived(text, words), lambda: _target(text),
                 lambda: _prv(text), lambda: _organ(text, site), lambda: _fuzzy(text, site)):
        result = rule()
        if result is not None:
            return replace(result, input=name)
    if any(tt in key for tt in _TARGET_TYPES):
        return _m(name, None, AMBIGUOUS, "looks like a target name but the words around it are not understood",
                  "target")
    return _m(name, None, UNMATCHED, "no standard name fits", "other")


# ---------------------------------------------------------------------------
# Lists, cases and user mappings
# ---------------------------------------------------------------------------
def _from_mapping(name: str, mapping: dict[str, str | None], site: str | None) -> NameMatch | None:
    if name in mapping:
        target = mapping[name]
    else:
        hits = [k for k in mapping if name_key(k) == name_key(name)]
        if not hits:
            return None
        target = mapping[hits[0]]
    if not target:
        return NameMatch(name, None, UNMATCHED, "user mapping: leave as it is", match_name(name, site).kind)
    kind = match_name(target, site).kind
    return NameMatch(name, target, MATCHED, "user mapping", kind)


def harmonize(names, site: str | None = None, mapping: dict[str, str | None] | None = None) -> list[NameMatch]:
    """Match the structure names of one case to standard names.

    Parameters
    ----------
    names : iterable of str
        The names, in their order.
    site : "hn", "lung", "generic" or None
        Only changes the reasons (which TG-263 names the site's recipe and
        scorecard do not use).
    mapping : dict, optional
        User mapping, clinical name -> standard name (None or "" to leave it
        as it is); looked up exactly, then ignoring case and punctuation.

    Returns
    -------
    One :class:`NameMatch` per input, in order. Inputs that match the same
    standard name are resolved as the module doc says.
    """
    _check_site(site)
    names = list(names)
    mapping = mapping or {}
    out = [_from_mapping(n, mapping, site) or match_name(n, site) for n in names]
    by_standard: dict[str, list[int]] = {}
    for i, m in enumerate(out):
        if m.status == MATCHED:
            by_standard.setdefault(m.standard, []).append(i)
    for std, idx in by_standard.items():
        if len(idx) < 2:
            continue
        exact = [i for i in idx if name_key(out[i].input) == name_key(std)]
        keep = exact[0] if len(exact) == 1 else None
        for i in idx:
            if i == keep:
                continue
            others = ", ".join(f"'{out[j].input}'" for j in idx if j != i)
            out[i] = replace(out[i], standard=None, status=AMBIGUOUS,
                             reason=f"{out[i].reason}; {std} is also matched by {others}")
    return out


def find_standard(structures, standard: str, site: str | None = None) -> str | None:
    """The structure of `structures` (names, or a StructureSet) that is `standard`, or None.

    The one spelt so (ignoring case and punctuation), else the one whose name
    harmonises to `standard` (``Cord`` for ``SpinalCord``); None when there is
    none, or more than one and none is spelt so.
    """
    names = list(structures)
    exact = [n for n in names if name_key(n) == name_key(standard)]
    if exact:
        return next((n for n in exact if n == standard), exact[0])
    hits = [m.input for m in harmonize(names, site=site) if m.status == MATCHED and m.standard == standard]
    return hits[0] if len(hits) == 1 else None


def harmonize_case(case, mapping: dict[str, str | None] | None = None, site: str | None = None) -> list[NameMatch]:
    """Rename the matched structures of `case` to their standard names, in place.

    Structures are never merged or dropped: ambiguous and unmatched ones keep
    their names, and so does a matched one whose standard name another
    structure already has (it becomes ambiguous). Prescriptions follow their
    targets' new names, and ``case.meta["original_structure_names"]`` records
    new name -> old name.
    """
    from airtp.case import Prescription

    site = site if site is not None else (case.site if case.site in SITES else None)
    ss = case.structures
    old_names = list(ss)
    matches = harmonize(old_names, site=site, mapping=mapping)
    targets = {p.structure: ss.find(p.structure) for p in case.prescriptions}
    final = {}
    for i, m in enumerate(matches):
        new = m.standard if m.status == MATCHED else m.input
        if m.status == MATCHED and new != m.input and any(new == o for o in old_names if o != m.input):
            matches[i] = replace(m, standard=None, status=AMBIGUOUS,
                                 reason=f"{m.reason}; the case already has another structure named {new}")
            new = m.input
        final[m.input] = new
    masks = {name: ss[name] for name in old_names}
    for name in old_names:
        ss.remove(name)
    for name in old_names:
        ss.add(final[name], masks[name])
    renamed = {new: old for old, new in final.items() if new != old}
    if renamed:
        original = dict(case.meta.get("original_structure_names", {}))
        for new, old in renamed.items():
            original[new] = original.pop(old, old)
        case.meta["original_structure_names"] = original
        case.prescriptions = [Prescription(final[targets[p.structure]], p.dose_gy, p.fractions)
                              if targets[p.structure] in renamed.values() else p for p in case.prescriptions]
    return matches


def load_mapping(path) -> dict[str, str | None]:
    """Read a user mapping: clinical name -> standard name (empty or null: leave as it is).

    JSON: an object of strings (or null). CSV (``.csv``, ``.tsv``, ``.txt``):
    two columns, clinical name and standard name, with an optional header
    row and ``#`` comment lines. Raises :class:`NameMappingError` naming the
    file (and line) on missing or malformed content.
    """
    path = Path(path)
    if not path.is_file():
        raise NameMappingError(f"{path}: no such name-mapping file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise NameMappingError(f"{path}: cannot read the name mapping ({exc})") from None
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _mapping_from_json(path, text)
    if suffix in (".csv", ".tsv", ".txt"):
        return _mapping_from_csv(path, text, "\t" if suffix == ".tsv" else ",")
    raise NameMappingError(f"{path}: name mapping must be .json, .csv, .tsv or .txt")


def _mapping_from_json(path: Path, text: str) -> dict[str, str | None]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NameMappingError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise NameMappingError(f"{path}: a name mapping must be a JSON object of clinical name -> standard name")
    out = {}
    for k, v in data.items():
        if not k.strip():
            raise NameMappingError(f"{path}: empty clinical name")
        if v is not None and not isinstance(v, str):
            raise NameMappingError(f"{path}: the standard name for '{k}' must be a string or null, got {v!r}")
        out[k] = v.strip() if isinstance(v, str) else None
    return out


def _mapping_from_csv(path: Path, text: str, delimiter: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    rows = csv.reader(io.StringIO(text), delimiter=delimiter)
    first = True
    for row in rows:
        line = rows.line_num
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) != 2:
            raise NameMappingError(f"{path}, line {line}: expected 2 columns (clinical name, standard name), "
                                   f"got {len(row)}")
        clinical, standard = row[0].strip(), row[1].strip()
        if first and name_key(standard) in ("standard", "standardname", "airtp", "target", "to"):
            first = False
            continue  # header row
        first = False
        if not clinical:
            raise NameMappingError(f"{path}, line {line}: empty clinical name")
        if clinical in out and out[clinical] != (standard or None):
            raise NameMappingError(f"{path}, line {line}: '{clinical}' is mapped twice, to '{out[clinical]}' "
                                   f"and '{standard}'")
        out[clinical] = standard or None
    return out


def format_matches(matches: list[NameMatch]) -> str:
    """Matches as an aligned text table, then a count per status."""
    w = max([len(m.input) for m in matches] + [5])
    s = max([len(m.standard or "-") for m in matches] + [8])
    lines = [f"{'Input':<{w}}  {'Standard':<{s}}  {'Status':<9}  {'Kind':<12}  Reason"]
    for m in matches:
        lines.append(f"{m.input:<{w}}  {m.standard or '-':<{s}}  {m.status:<9}  {m.kind:<12}  {m.reason}")
    counts = {st: sum(m.status == st for m in matches) for st in (MATCHED, AMBIGUOUS, UNMATCHED)}
    lines.append(", ".join(f"{n} {st}" for st, n in counts.items()))
    return "\n".join(lines)
