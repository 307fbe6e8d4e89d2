"""Plan scorecards in Varian's PlanScoreCard JSON format, and plan scoring.

File format (as written by Varian's MAAS PlanScoreCard; see
``scorecards/README.md``): a top-level object with ``TemplateName``, ``Site``,
``DosePerFraction``, ``NumberOfFractions`` and ``ScoreTemplates``, a list of
items, each with

- ``Structure``: ``{"StructureId": ..., "TemplateStructureId": ...}``;
- ``MetricType``: one of :data:`METRIC_TYPES`;
- ``InputValue`` / ``InputUnit`` (``Gy``, ``cGy``, ``%``, ``cc``; none for
  mean/min/max), ``OutputUnit`` (``Gy``, ``%``, ``cc``; ``CC`` is read as cc);
- ``HI_HiValue``, ``HI_LowValue``, ``HI_Target``, ``HI_TargetUnit`` for
  HomogeneityIndex (volumes % and reference dose) and ModifiedGradientIndex
  (low and high doses, in ``InputUnit``);
- ``ScorePoints``: ``[{"PointX": x, "Score": s, ...}]`` with strictly
  increasing PointX.

Scoring: linear interpolation between the points, clamped to the end scores
outside them (Varian's ``GetScore``); the plan total is the sum of the item
scores. Unknown keys are kept and written back unchanged.

Prescription scaling (an AIRTP extension that keeps the file valid Varian
JSON): a scorecard may give nominal dose levels, e.g.
``"AirtpPrescriptionLevels": {"High": 70, "Mid": 63, "Low": 56}``. An item
then belongs to a level through its ``"AirtpLevel"`` key or, failing that,
through its structure's standard name (``PTVHigh``, ``PTVHighOPT``,
``RingPTVHigh`` -> High; ``PTVMid``, ``PTVMid-PTVHigh``, ``RingPTVMid`` ->
Mid; ``PTVLow``, ``PTVLow-PTVMid``, ``PTVLow-PTVHigh``, ``RingPTVLow`` ->
Low). The case's prescriptions, from highest to lowest, are High, Mid and Low
(one: High; two: High and Low; three or more: High, the second, the lowest).
Every dose of such an item -- an InputValue in Gy, PointX when the output is
in Gy, a HomogeneityIndex reference in Gy -- is multiplied by
``case dose of the level / nominal dose``. Items of other structures keep
their absolute doses. Relative doses (unit ``%``) are percentages of the
item's level dose, or of the highest prescription for other items.

Structures are matched through :func:`airtp.evaluation.aliases.resolve`;
an item whose structure is absent or empty, or whose metric cannot be
evaluated, is reported as not scored, with the reason, and adds nothing.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from airtp.errors import AirtpError
from airtp.evaluation import metrics as M
from airtp.evaluation.aliases import resolve, standard_name
from airtp.evaluation.dvh import DEFAULT_BIN_WIDTH_GY, check_dose, compute_dvhs

__all__ = [
    "METRIC_TYPES", "ScorecardError", "ScorePoint", "ScoreItem", "Scorecard", "ItemResult", "ScoreReport",
    "load_scorecard", "get_scorecard", "builtin_hn", "builtin_lung", "builtin_names", "score_plan",
    "case_levels", "LEVEL_OF_STANDARD",
]

METRIC_TYPES = (
    "DoseAtVolume", "VolumeAtDose", "MeanDose", "MinDose", "MaxDose", "ConformityIndex", "ConformationNumber",
    "HomogeneityIndex", "ModifiedGradientIndex", "DoseAtSubVolume", "InhomogeneityIndex", "Volume",
    "VolumeOfRegret",
)
_METRIC_BY_KEY = {m.lower(): m for m in METRIC_TYPES}

DOSE_UNITS = ("Gy", "cGy", "%")
VOLUME_UNITS = ("%", "cc")

# Standard helper names whose doses follow a prescription level.
LEVEL_OF_STANDARD = {
    "PTVHigh": "High", "PTVHighOPT": "High", "RingPTVHigh": "High",
    "PTVMid": "Mid", "PTVMid-PTVHigh": "Mid", "RingPTVMid": "Mid",
    "PTVLow": "Low", "PTVLow-PTVMid": "Low", "PTVLow-PTVHigh": "Low", "RingPTVLow": "Low",
}
LEVELS = ("High", "Mid", "Low")


class ScorecardError(AirtpError):
    """A scorecard file is malformed; the message names the file and the item."""


def _unit(u) -> str | None:
    """Normalised unit: None, 'Gy', 'cGy', '%' or 'cc'; anything else is returned unchanged."""
    if u is None:
        return None
    s = str(u).strip()
    if s == "" or s.lower() in ("none", "n/a", "null"):
        return None
    low = s.lower()
    if low in ("cc", "cm3", "cm^3", "cm³", "ccm"):
        return "cc"
    if low == "gy":
        return "Gy"
    if low == "cgy":
        return "cGy"
    if s == "%":
        return "%"
    return s


def _gy(value: float, unit: str | None) -> float:
    return value / 100.0 if unit == "cGy" else value


@dataclass
class ScorePoint:
    x: float
    score: float
    raw: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        d = dict(self.raw)
        d["PointX"] = self.x
        d["Score"] = self.score
        d.setdefault("Variation", False)
        return d


@dataclass
class ScoreItem:
    """One scorecard item (a Varian ``ScoreTemplate``)."""

    structure: str
    metric: str
    input_value: float | None
    input_unit: str | None
    output_unit: str | None
    points: list[ScorePoint]
    hi_hi: float = 0.0
    hi_low: float = 0.0
    hi_target: float = 0.0
    hi_target_unit: str | None = None
    level: str | None = None
    comment: str = ""
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        return f"{self.structure} {self.metric} {self.input_text()}".strip()

    def input_text(self, value: float | None = None) -> str:
        v = self.input_value if value is None else value
        if self.metric in ("MeanDose", "MinDose", "MaxDose", "InhomogeneityIndex", "Volume"):
            return "None"
        if self.metric == "HomogeneityIndex":
            return f"D{self.hi_hi:g}%-D{self.hi_low:g}%"
        if self.metric == "ModifiedGradientIndex":
            return f"V{self.hi_low:g}/V{self.hi_hi:g} {self.input_unit or ''}".strip()
        if v is None:
            return "None"
        unit = self.input_unit or ""
        text = f"{v:.1f}" if unit in ("Gy", "%") and abs(v - round(v, 1)) < 1e-9 else f"{v:.4g}"
        return f"{text} {unit}".strip()

    @property
    def max_score(self) -> float:
        return max(p.score for p in self.points)

    def score(self, value: float, scale_x: float = 1.0) -> float:
        """Score of an output `value`: piecewise linear between the points, clamped at the ends."""
        xs = np.array([p.x for p in self.points], dtype=np.float64) * scale_x
        ss = np.array([p.score for p in self.points], dtype=np.float64)
        if xs.size == 1:
            return float(ss[0])
        return float(np.interp(float(value), xs, ss))

    def to_dict(self) -> dict:
        d = dict(self.raw)
        st = dict(d.get("Structure") or {})
        st["StructureId"] = self.structure
        st.setdefault("TemplateStructureId", self.structure)
        st.setdefault("StructureComment", "")
        st.setdefault("StructureCode", None)
        st.setdefault("AutoGenerated", False)
        d["Structure"] = st
        d["MetricType"] = self.metric
        d["InputValue"] = 0.0 if self.input_value is None else self.input_value
        d["InputUnit"] = self.input_unit
        d["OutputUnit"] = self.output_unit
        d["HI_HiValue"] = self.hi_hi
        d["HI_LowValue"] = self.hi_low
        d["HI_Target"] = self.hi_target
        d["HI_TargetUnit"] = self.hi_target_unit
        d["MetricComment"] = self.comment
        if self.level is not None:
            d["AirtpLevel"] = self.level
        d["ScorePoints"] = [p.to_dict() for p in self.points]
        return d


def _num(v, what: str, where: str, allow_none=False) -> float | None:
    if v is None and allow_none:
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise ScorecardError(f"{where}: {what} must be a number, got {v!r}") from None
    if not math.isfinite(x):
        raise ScorecardError(f"{where}: {what} must be finite, got {v!r}")
    return x


def _parse_item(t, i: int, source: str) -> ScoreItem:
    where0 = f"{source}, item {i + 1}"
    if not isinstance(t, dict):
        raise ScorecardError(f"{where0}: a ScoreTemplate must be a JSON object")
    st = t.get("Structure")
    if isinstance(st, dict):
        name = st.get("StructureId") or st.get("TemplateStructureId")
    else:
        name = st
    if not isinstance(name, str) or not name.strip():
        raise ScorecardError(f"{where0}: missing Structure.StructureId")
    metric_raw = t.get("MetricType")
    where = f"{where0} ({name} {metric_raw})"
    metric = _METRIC_BY_KEY.get(str(metric_raw).strip().lower()) if metric_raw is not None else None
    if metric is None:
        raise ScorecardError(f"{where}: unknown MetricType {metric_raw!r} (known: {', '.join(METRIC_TYPES)})")
    in_unit, out_unit = _unit(t.get("InputUnit")), _unit(t.get("OutputUnit"))
    value = _num(t.get("InputValue"), "InputValue", where, allow_none=True)
    hi_unit = _unit(t.get("HI_TargetUnit"))

    def need(cond, msg):
        if not cond:
            raise ScorecardError(f"{where}: {msg}")

    if metric == "DoseAtVolume":
        need(in_unit in VOLUME_UNITS, f"InputUnit must be one of {VOLUME_UNITS} (volume), got {t.get('InputUnit')!r}")
        need(out_unit in DOSE_UNITS, f"OutputUnit must be one of {DOSE_UNITS} (dose), got {t.get('OutputUnit')!r}")
        need(value is not None and value >= 0, "InputValue (volume) must be >= 0")
    elif metric == "VolumeAtDose":
        need(in_unit in DOSE_UNITS, f"InputUnit must be one of {DOSE_UNITS} (dose), got {t.get('InputUnit')!r}")
        need(out_unit in VOLUME_UNITS, f"OutputUnit must be one of {VOLUME_UNITS} (volume), got {t.get('OutputUnit')!r}")
        need(value is not None and value >= 0, "InputValue (dose) must be >= 0")
    elif metric in ("MeanDose", "MinDose", "MaxDose"):
        need(out_unit in DOSE_UNITS, f"OutputUnit must be one of {DOSE_UNITS}, got {t.get('OutputUnit')!r}")
    elif metric in ("ConformityIndex", "ConformationNumber", "VolumeOfRegret"):
        need(in_unit in DOSE_UNITS, f"InputUnit must be one of {DOSE_UNITS} (isodose), got {t.get('InputUnit')!r}")
        need(value is not None and value > 0, "InputValue (isodose) must be > 0")
    elif metric == "HomogeneityIndex":
        hi = _num(t.get("HI_HiValue"), "HI_HiValue", where)
        lo = _num(t.get("HI_LowValue"), "HI_LowValue", where)
        need(0 <= hi <= 100 and 0 <= lo <= 100, "HI_HiValue and HI_LowValue are volumes in % (0-100)")
        need(hi_unit in (None,) + DOSE_UNITS, f"HI_TargetUnit must be one of {DOSE_UNITS}, got {t.get('HI_TargetUnit')!r}")
    elif metric == "ModifiedGradientIndex":
        need(in_unit in DOSE_UNITS, f"InputUnit must be one of {DOSE_UNITS} (unit of HI_LowValue/HI_HiValue doses)")
        lo = _num(t.get("HI_LowValue"), "HI_LowValue", where)
        hi = _num(t.get("HI_HiValue"), "HI_HiValue", where)
        need(hi > 0 and lo >= 0, "HI_HiValue (dose) must be > 0 and HI_LowValue >= 0")
    elif metric == "DoseAtSubVolume":
        need(in_unit in (None, "cc"), f"InputUnit must be cc, got {t.get('InputUnit')!r}")
        need(out_unit in DOSE_UNITS, f"OutputUnit must be one of {DOSE_UNITS}, got {t.get('OutputUnit')!r}")
        need(value is not None and value >= 0, "InputValue (cc) must be >= 0")
        in_unit = "cc"
    elif metric == "Volume":
        need(out_unit in (None, "cc"), f"OutputUnit must be cc, got {t.get('OutputUnit')!r}")
        out_unit = "cc"
    pts = t.get("ScorePoints")
    need(isinstance(pts, list) and len(pts) >= 1, "ScorePoints must be a non-empty list")
    points = []
    for k, p in enumerate(pts):
        need(isinstance(p, dict), f"ScorePoints[{k}] must be an object")
        points.append(ScorePoint(_num(p.get("PointX"), f"ScorePoints[{k}].PointX", where),
                                 _num(p.get("Score"), f"ScorePoints[{k}].Score", where),
                                 {kk: vv for kk, vv in p.items() if kk not in ("PointX", "Score")}))
    xs = [p.x for p in points]
    for k in range(1, len(xs)):
        need(xs[k] != xs[k - 1], f"duplicated PointX {xs[k]:g} in ScorePoints")
        need(xs[k] > xs[k - 1], f"ScorePoints are not sorted by PointX ({xs[k - 1]:g} before {xs[k]:g})")
    level = t.get("AirtpLevel")
    need(level is None or level in LEVELS, f"AirtpLevel must be one of {LEVELS}, got {level!r}")
    return ScoreItem(
        structure=name.strip(), metric=metric, input_value=value, input_unit=in_unit, output_unit=out_unit,
        points=points, hi_hi=float(t.get("HI_HiValue") or 0.0), hi_low=float(t.get("HI_LowValue") or 0.0),
        hi_target=float(t.get("HI_Target") or 0.0), hi_target_unit=hi_unit, level=level,
        comment=str(t.get("MetricComment") or ""), raw=copy.deepcopy(t),
    )


@dataclass
class Scorecard:
    """A scorecard: named items with score points."""

    name: str
    items: list[ScoreItem]
    site: str = ""
    dose_per_fraction: float | None = None
    fractions: int | None = None
    levels: dict[str, float] = field(default_factory=dict)
    source: str = ""
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data, source: str = "<scorecard>") -> "Scorecard":
        if not isinstance(data, dict):
            raise ScorecardError(f"{source}: a scorecard must be a JSON object with ScoreTemplates")
        templates = data.get("ScoreTemplates")
        if not isinstance(templates, list) or not templates:
            raise ScorecardError(f"{source}: missing or empty 'ScoreTemplates' list")
        items = [_parse_item(t, i, source) for i, t in enumerate(templates)]
        levels = data.get("AirtpPrescriptionLevels") or {}
        if not isinstance(levels, dict) or any(k not in LEVELS for k in levels):
            raise ScorecardError(f"{source}: AirtpPrescriptionLevels must map {LEVELS} to doses in Gy")
        levels = {k: _num(v, f"AirtpPrescriptionLevels.{k}", source) for k, v in levels.items()}
        if any(v <= 0 for v in levels.values()):
            raise ScorecardError(f"{source}: AirtpPrescriptionLevels doses must be positive")
        raw = {k: v for k, v in data.items() if k != "ScoreTemplates"}
        nfx = data.get("NumberOfFractions")
        dpf = data.get("DosePerFraction")
        return cls(name=str(data.get("TemplateName") or Path(source).stem), items=items,
                   site=str(data.get("Site") or ""), dose_per_fraction=float(dpf) if dpf else None,
                   fractions=int(nfx) if nfx else None, levels=levels, source=source, raw=raw)

    @classmethod
    def load(cls, path) -> "Scorecard":
        path = Path(path)
        if not path.is_file():
            raise ScorecardError(f"{path}: no such scorecard file")
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ScorecardError(f"{path}: not a readable JSON scorecard ({exc})") from None
        return cls.from_dict(data, str(path))

    def to_dict(self) -> dict:
        d = dict(self.raw)
        d["TemplateName"] = self.name
        d["Site"] = self.site
        d["DosePerFraction"] = self.dose_per_fraction
        d["NumberOfFractions"] = self.fractions
        if self.levels:
            d["AirtpPrescriptionLevels"] = dict(self.levels)
        d["ScoreTemplates"] = [it.to_dict() for it in self.items]
        return d

    def save(self, path) -> Path:
        from airtp.case import atomic_write

        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        atomic_write(Path(path), lambda f: f.write(text.encode("utf-8")))
        return Path(path)

    @property
    def max_total(self) -> float:
        return float(sum(it.max_score for it in self.items))

    def item_level(self, item: ScoreItem) -> str | None:
        """The prescription level of an item (None when its doses are absolute)."""
        if not self.levels:
            return None
        level = item.level or LEVEL_OF_STANDARD.get(standard_name(item.structure) or item.structure)
        return level if level in self.levels else None

    def summary(self) -> dict:
        """JSON-friendly description of the items and their points (``scorecard show``)."""
        return {
            "name": self.name,
            "site": self.site,
            "source": self.source,
            "prescription_levels": self.levels,
            "max_total": self.max_total,
            "items": [
                {
                    "structure": it.structure, "metric_type": it.metric, "input_value": it.input_value,
                    "input_unit": it.input_unit, "output_unit": it.output_unit, "level": self.item_level(it),
                    "max_score": it.max_score, "points": [[p.x, p.score] for p in it.points],
                    "comment": it.comment,
                }
                for it in self.items
            ],
        }


# Built-ins and look-up ---------------------------------------------------------

def _data_path(name: str) -> Path:
    return Path(str(resources.files("airtp.evaluation") / "scorecards" / f"{name}.json"))


def builtin_hn() -> Scorecard:
    """Head-and-neck SIB scorecard (paper Table 6; points derived from Tables 7 and 8)."""
    return Scorecard.load(_data_path("hn"))


def builtin_lung() -> Scorecard:
    """Lung 60 Gy scorecard (paper Table 5; NRG LU-004 score points)."""
    return Scorecard.load(_data_path("lung"))


def builtin_names() -> list[str]:
    from airtp import plugins

    return plugins.available("airtp.scorecards")


def load_scorecard(path) -> Scorecard:
    return Scorecard.load(path)


def get_scorecard(name_or_path) -> Scorecard:
    """A scorecard by plugin name (``hn``, ``lung``, third-party) or by path to a JSON file."""
    if isinstance(name_or_path, Scorecard):
        return name_or_path
    text = str(name_or_path)
    p = Path(text)
    if p.suffix.lower() == ".json" or p.is_file() or "/" in text or "\\" in text:
        return Scorecard.load(p)
    from airtp import plugins

    obj = plugins.load("airtp.scorecards", text)
    try:
        if callable(obj) and not isinstance(obj, Scorecard):
            obj = obj()
        if isinstance(obj, (str, Path)):
            obj = Scorecard.load(obj)
        elif isinstance(obj, dict):
            obj = Scorecard.from_dict(obj, f"scorecard plugin '{text}'")
    except ScorecardError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken plugin must name itself
        raise plugins.PluginError(f"scorecard plugin '{text}' failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, Scorecard):
        raise plugins.PluginError(f"scorecard plugin '{text}' returned {type(obj).__name__}, not a Scorecard")
    return obj


# Scoring ---------------------------------------------------------------------

def case_levels(prescriptions) -> dict[str, float]:
    """Dose (Gy) of each prescription level of a case: High, Mid, Low (see the module doc)."""
    doses = sorted((float(p.dose_gy) for p in prescriptions), reverse=True)
    if not doses:
        return {}
    if len(doses) == 1:
        return {"High": doses[0]}
    if len(doses) == 2:
        return {"High": doses[0], "Low": doses[1]}
    return {"High": doses[0], "Mid": doses[1], "Low": doses[-1]}


@dataclass
class ItemResult:
    item: ScoreItem
    struct_id: str | None
    input_value: float | None
    output_value: float | None
    score: float | None
    reason: str | None = None

    @property
    def scored(self) -> bool:
        return self.score is not None

    def to_dict(self) -> dict:
        it = self.item
        return {
            "structure": it.structure, "struct_id": self.struct_id, "metric_type": it.metric,
            "input": it.input_text(self.input_value), "input_value": self.input_value, "input_unit": it.input_unit,
            "output_value": self.output_value, "output_unit": it.output_unit, "score": self.score,
            "max_score": it.max_score, "scored": self.scored, "reason": self.reason,
        }


@dataclass
class ScoreReport:
    """Per-item results and the total (paper Table 7 layout)."""

    scorecard: str
    case_id: str
    results: list[ItemResult]

    @property
    def total(self) -> float:
        return float(sum(r.score for r in self.results if r.scored))

    @property
    def max_total(self) -> float:
        return float(sum(r.item.max_score for r in self.results if r.scored))

    def to_dict(self) -> dict:
        return {
            "scorecard": self.scorecard, "case": self.case_id, "total": self.total,
            "max_total_scored": self.max_total,
            "n_scored": sum(r.scored for r in self.results),
            "n_not_scored": sum(not r.scored for r in self.results),
            "items": [r.to_dict() for r in self.results],
        }

    def table(self) -> str:
        rows = [("StructId", "MetricType", "Input", "Output", "Score")]
        notes = []
        for r in self.results:
            it = r.item
            if r.scored:
                unit = {"cc": "CC"}.get(it.output_unit or "", it.output_unit or "")
                out = f"{r.output_value:.2f} {unit}".strip()
                rows.append((r.struct_id or it.structure, it.metric, it.input_text(r.input_value), out, f"{r.score:.2f}"))
            else:
                rows.append((it.structure, it.metric, it.input_text(r.input_value), "-", "not scored"))
                notes.append(f"  {it.structure} {it.metric}: {r.reason}")
        rows.append(("Final Score", "-", "-", "-", f"{self.total:.2f}"))
        widths = [max(len(row[k]) for row in rows) for k in range(5)]
        lines = [f"Scorecard {self.scorecard}, case {self.case_id}"]
        for j, row in enumerate(rows):
            lines.append("  ".join(c.ljust(w) if k < 4 else c.rjust(w) for k, (c, w) in enumerate(zip(row, widths))).rstrip())
            if j == 0:
                lines.append("  ".join("-" * w for w in widths))
        if notes:
            lines.append("Not scored:")
            lines.extend(notes)
        return "\n".join(lines)


def _evaluate(item: ScoreItem, dvh, body, ref_gy, f: float):
    """(input value shown, output value) of one item; raises MetricError."""
    m = item.metric

    def dose_in(value, unit):  # an input dose in Gy
        if unit == "%":
            if not ref_gy:
                raise M.MetricError("a relative dose (%) needs a prescription")
            return value / 100.0 * ref_gy
        return _gy(value, unit) * f

    def dose_out(gy):
        if item.output_unit == "%":
            if not ref_gy:
                raise M.MetricError("a relative dose (%) needs a prescription")
            return 100.0 * gy / ref_gy
        return gy * 100.0 if item.output_unit == "cGy" else gy

    shown = item.input_value * f if (item.input_value is not None and item.input_unit in ("Gy", "cGy")) else item.input_value
    if m == "DoseAtVolume":
        return shown, dose_out(M.dose_at_volume(dvh, item.input_value, item.input_unit))
    if m == "VolumeAtDose":
        return shown, M.volume_at_dose(dvh, dose_in(item.input_value, item.input_unit), item.output_unit)
    if m == "MeanDose":
        return shown, dose_out(M.mean_dose(dvh))
    if m == "MinDose":
        return shown, dose_out(M.min_dose(dvh))
    if m == "MaxDose":
        return shown, dose_out(M.max_dose(dvh))
    if m == "DoseAtSubVolume":
        return shown, dose_out(M.dose_at_subvolume(dvh, item.input_value))
    if m == "Volume":
        M._need(dvh)
        return shown, dvh.volume_cc
    if m == "InhomogeneityIndex":
        return shown, M.inhomogeneity_index(dvh)
    if m == "HomogeneityIndex":
        if item.hi_target > 0:
            target = dose_in(item.hi_target, item.hi_target_unit or "Gy")
        else:
            target = ref_gy
        hi = M.homogeneity_index(dvh, item.hi_hi, item.hi_low, target)
        return shown, hi * 100.0 if item.output_unit == "%" else hi
    if m == "ModifiedGradientIndex":
        return shown, M.modified_gradient_index(dvh, dose_in(item.hi_low, item.input_unit),
                                                dose_in(item.hi_hi, item.input_unit))
    # isodose metrics need the body
    if body is None:
        raise M.MetricError("needs a Body (External) structure, which the case lacks")
    d = dose_in(item.input_value, item.input_unit)
    if m == "ConformityIndex":
        return shown, M.conformity_index(dvh, body, d)
    if m == "ConformationNumber":
        return shown, M.conformation_number(dvh, body, d)
    if m == "VolumeOfRegret":
        return shown, M.volume_of_regret(dvh, body, d)
    raise M.MetricError(f"metric {m} is not implemented")  # pragma: no cover


def score_plan(case, dose, scorecard, *, bin_width_gy: float = DEFAULT_BIN_WIDTH_GY,
               use_gpu: bool | None = None) -> ScoreReport:
    """Score a dose (Gy, on the case grid) with a scorecard (object, name or path).

    Raises :class:`~airtp.evaluation.dvh.DoseError` for a bad dose and
    :class:`ScorecardError` for a bad scorecard; items that cannot be
    evaluated are reported as not scored.
    """
    card = get_scorecard(scorecard)
    dose = check_dose(dose, case.grid.shape, what=f"dose for case '{case.patient_id}'")
    ss = case.structures
    levels = case_levels(case.prescriptions)
    top = levels.get("High")
    matched = {id(it): resolve(it.structure, ss) for it in card.items}
    body_name = resolve("Body", ss)
    needed = [n for n in dict.fromkeys(matched.values()) if n is not None]
    if body_name is not None and body_name not in needed and any(
        it.metric in ("ConformityIndex", "ConformationNumber", "VolumeOfRegret") for it in card.items
    ):
        needed.append(body_name)
    dvhs = compute_dvhs(dose, ss, grid=case.grid, names=needed, bin_width_gy=bin_width_gy, use_gpu=use_gpu)
    body = dvhs.get(body_name) if body_name else None
    results = []
    for it in card.items:
        name = matched[id(it)]
        level = card.item_level(it)
        f, ref = 1.0, top
        if level is not None and level in levels:
            f = levels[level] / card.levels[level]
            ref = levels[level]
        elif level is not None and level not in levels and levels:
            ref = None
        shown = it.input_value * f if (it.input_value is not None and it.input_unit in ("Gy", "cGy")) else it.input_value
        if name is None:
            results.append(ItemResult(it, None, shown, None, None, f"structure '{it.structure}' is not in the case"))
            continue
        if dvhs[name].empty:
            results.append(ItemResult(it, name, shown, None, None, f"structure '{name}' is empty"))
            continue
        try:
            shown, value = _evaluate(it, dvhs[name], body, ref, f)
        except M.MetricError as exc:
            results.append(ItemResult(it, name, shown, None, None, str(exc)))
            continue
        fx = f if it.output_unit in ("Gy", "cGy") else 1.0
        results.append(ItemResult(it, name, shown, float(value), it.score(value, fx)))
    return ScoreReport(card.name, case.patient_id, results)
