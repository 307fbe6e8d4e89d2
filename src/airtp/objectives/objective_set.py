"""An ordered set of objectives: JSON round trip and an Eclipse-like table."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from airtp.case import atomic_write
from airtp.errors import AirtpError
from airtp.objectives.objectives import (
    GEUDObjective,
    MeanObjective,
    NormalTissueObjective,
    ObjectiveError,
    PointObjective,
)

__all__ = ["ObjectiveSet", "objective_from_dict"]

_TYPES = {cls.kind: cls for cls in (PointObjective, MeanObjective, GEUDObjective, NormalTissueObjective)}


def objective_from_dict(d: dict):
    """Build one objective from its JSON form (``{"type": "point", ...}``)."""
    if not isinstance(d, dict) or "type" not in d:
        raise ObjectiveError(f"objective {d!r}: needs a 'type' ({', '.join(_TYPES)})")
    kind = d["type"]
    if kind not in _TYPES:
        raise ObjectiveError(f"objective {d!r}: unknown type '{kind}' (known: {', '.join(_TYPES)})")
    fields = {k: v for k, v in d.items() if k != "type"}
    try:
        return _TYPES[kind](**fields)
    except TypeError as exc:
        raise ObjectiveError(f"objective {d!r}: {exc}") from None


@dataclass
class ObjectiveSet:
    """Objectives of one optimisation, in order."""

    objectives: list = field(default_factory=list)

    def __iter__(self):
        return iter(self.objectives)

    def __len__(self):
        return len(self.objectives)

    def add(self, objective) -> None:
        self.objectives.append(objective)

    def structures(self) -> list[str]:
        """Structures named by the objectives, in first-use order."""
        seen: dict[str, None] = {}
        for o in self.objectives:
            seen.setdefault(o.structure, None)
        return list(seen)

    def to_json(self) -> str:
        return json.dumps({"objectives": [o.to_dict() for o in self.objectives]}, indent=2)

    @classmethod
    def from_json(cls, text: str, source: str = "objectives") -> "ObjectiveSet":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ObjectiveError(f"{source}: not valid JSON ({exc})") from None
        items = data.get("objectives") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ObjectiveError(f"{source}: expected a list under 'objectives'")
        try:
            return cls([objective_from_dict(d) for d in items])
        except AirtpError as exc:
            raise ObjectiveError(f"{source}: {exc}") from None

    def save(self, path) -> Path:
        path = Path(path)
        atomic_write(path, lambda f: f.write(self.to_json().encode()))
        return path

    @classmethod
    def load(cls, path) -> "ObjectiveSet":
        path = Path(path)
        if not path.is_file():
            raise ObjectiveError(f"{path}: no such objectives file")
        return cls.from_json(path.read_text(), source=str(path))

    def format(self) -> str:
        """Eclipse-style table: Structure, Type, Operator, Dose, Volume, gEUD a, Priority."""
        rows = [("Structure", "Type", "Operator", "Dose (Gy)", "Volume (%)", "gEUD a", "Priority")]
        for o in self.objectives:
            if isinstance(o, NormalTissueObjective):
                rows.append((o.structure, "NTO", "-",
                             f"{o.start_dose_pct:g}%->{o.end_dose_pct:g}%",
                             f"from {o.distance_from_target_mm:g} mm", f"k={o.fall_off_per_mm:g}/mm", f"{o.priority:g}"))
                continue
            vol = f"{o.volume_pct:g}" if isinstance(o, PointObjective) else "-"
            a = f"{o.a:g}" if isinstance(o, GEUDObjective) else "-"
            rows.append((o.structure, {"point": "Point", "mean": "Mean", "geud": "gEUD"}[o.kind],
                         o.operator.capitalize(), f"{o.dose_gy:.2f}", vol, a, f"{o.priority:g}"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
