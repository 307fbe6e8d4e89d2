"""Treatment machine: MLC geometry, jaws and the limits a deliverable plan must respect.

A machine is data, a JSON file (the packaged default,
``airtp/sequencing/data/truebeam_m120.json``, is modelled on a TrueBeam with
a Millennium 120 MLC; a clinic supplies its own)::

    name, description
    mlc:   leaf_widths_mm [{count, width_mm}, ...] from first_boundary_mm upwards (BEV y),
           position_range_mm [lo, hi], min_leaf_gap_mm, max_leaf_speed_mm_per_s
    jaws:  x_range_mm [lo, hi], y_range_mm [lo, hi]
    gantry: max_speed_deg_per_s
    dose_rate: max_mu_per_min
    calibration: gy_per_mu, field_mm, ssd_mm, depth ("dmax")
    provenance: free text

All lengths are mm at the isocentre plane (BEV, IEC 61217 beam-limiting-device
axes: leaves move along X, pairs are stacked along Y).

MU calibration: the beam model (:class:`airtp.dose.BeamModel`) gives
``gy_per_unit_at_dmax`` Gy per unit beamlet weight for a 10 x 10 cm field at
SSD 100 cm at the depth of maximum dose (``airtp commission`` reproduces it).
A machine calibrated to ``gy_per_mu`` at the same reference condition delivers
``mu_per_weight = gy_per_unit_at_dmax / gy_per_mu`` MU per unit of weight
(1.0 for the packaged files: 1 cGy/MU, 0.01 Gy per unit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from airtp.datafiles import load_json
from airtp.errors import MachineError

__all__ = ["Machine", "DEFAULT_MACHINE"]

DEFAULT_MACHINE = "truebeam_m120.json"

# The beam model is normalised at this reference condition (see airtp.dose.beam_model).
_MODEL_REFERENCE = {"field_mm": 100.0, "ssd_mm": 1000.0, "depth": "dmax"}


@dataclass(frozen=True)
class Machine:
    """A linac with its MLC: geometry and delivery limits (see the module doc for units)."""

    name: str
    leaf_boundaries_mm: tuple[float, ...]
    leaf_range_mm: tuple[float, float] = (-200.0, 200.0)
    min_leaf_gap_mm: float = 0.5
    max_leaf_speed_mm_s: float = 25.0
    jaw_x_range_mm: tuple[float, float] = (-200.0, 200.0)
    jaw_y_range_mm: tuple[float, float] = (-200.0, 200.0)
    max_gantry_speed_deg_s: float = 6.0
    max_dose_rate_mu_min: float = 600.0
    calibration_gy_per_mu: float = 0.01
    calibration: dict = field(default_factory=lambda: dict(_MODEL_REFERENCE), compare=False)
    description: str = ""
    provenance: dict = field(default_factory=dict, compare=False)
    source: str = field(default="", compare=False)

    def __post_init__(self):
        b = np.asarray(self.leaf_boundaries_mm, float)
        where = f"machine '{self.name}'" + (f" ({self.source})" if self.source else "")
        if b.ndim != 1 or b.size < 2 or not np.all(np.isfinite(b)):
            raise MachineError(f"{where}: leaf boundaries must be at least two finite values (mm)")
        if np.any(np.diff(b) <= 0):
            raise MachineError(f"{where}: leaf boundaries must increase (every leaf width > 0 mm)")
        for what in ("leaf_range_mm", "jaw_x_range_mm", "jaw_y_range_mm"):
            lo, hi = getattr(self, what)
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise MachineError(f"{where}: {what} must be [lo, hi] with lo < hi, got [{lo}, {hi}]")
        span = self.leaf_range_mm[1] - self.leaf_range_mm[0]
        if not (np.isfinite(self.min_leaf_gap_mm) and 0 <= self.min_leaf_gap_mm < span):
            raise MachineError(f"{where}: minimum leaf gap must be >= 0 and below the leaf range, "
                               f"got {self.min_leaf_gap_mm} mm")
        for what, unit in (("max_leaf_speed_mm_s", "mm/s"), ("max_gantry_speed_deg_s", "deg/s"),
                           ("max_dose_rate_mu_min", "MU/min"), ("calibration_gy_per_mu", "Gy/MU")):
            v = getattr(self, what)
            if not (np.isfinite(v) and v > 0):
                raise MachineError(f"{where}: {what} must be positive ({unit}), got {v}")
        object.__setattr__(self, "leaf_boundaries_mm", tuple(float(v) for v in b))

    # ------------------------------------------------------------------ geometry
    @property
    def n_pairs(self) -> int:
        return len(self.leaf_boundaries_mm) - 1

    @property
    def leaf_widths_mm(self) -> np.ndarray:
        return np.diff(np.asarray(self.leaf_boundaries_mm))

    @property
    def max_dose_rate_mu_s(self) -> float:
        return self.max_dose_rate_mu_min / 60.0

    def mu_per_weight(self, model=None) -> float:
        """MU per unit of beamlet weight of the beam model `model` (None: the packaged one); see the module doc."""
        from airtp.dose.beam_model import BeamModel

        for key, ref in _MODEL_REFERENCE.items():
            have = self.calibration.get(key, ref)
            if (have != ref) if isinstance(ref, str) else not np.isclose(float(have), ref):
                raise MachineError(
                    f"machine '{self.name}': calibration {key} = {have!r}; the beam model is normalised at "
                    f"{_MODEL_REFERENCE} and only that reference condition is supported")
        return float(BeamModel.load(model).gy_per_unit_at_dmax) / self.calibration_gy_per_mu

    # ------------------------------------------------------------------ files
    @classmethod
    def load(cls, path=None) -> "Machine":
        """Read a machine file; None reads the packaged TrueBeam / Millennium 120 one; a Machine passes through."""
        if isinstance(path, Machine):
            return path
        data, where = load_json(path, "airtp.sequencing", DEFAULT_MACHINE, "machine", MachineError)
        return cls.from_dict(data, where)

    @classmethod
    def from_dict(cls, data: dict, where: str = "<dict>") -> "Machine":
        try:
            mlc = data["mlc"]
            bounds = [float(mlc.get("first_boundary_mm", 0.0))]
            for run in mlc["leaf_widths_mm"]:
                count, width = int(run["count"]), float(run["width_mm"])
                if count < 1 or not (np.isfinite(width) and width > 0):
                    raise MachineError(f"machine file '{where}': leaf run {run} needs count >= 1 and width_mm > 0")
                bounds += list(bounds[-1] + width * np.arange(1, count + 1))
            jaws, cal = data.get("jaws", {}), dict(data.get("calibration", {}))
            return cls(
                name=str(data.get("name", Path(where).stem)),
                leaf_boundaries_mm=tuple(bounds),
                leaf_range_mm=_pair(mlc.get("position_range_mm", (-200.0, 200.0))),
                min_leaf_gap_mm=float(mlc.get("min_leaf_gap_mm", 0.5)),
                max_leaf_speed_mm_s=float(mlc["max_leaf_speed_mm_per_s"]),
                jaw_x_range_mm=_pair(jaws.get("x_range_mm", (-200.0, 200.0))),
                jaw_y_range_mm=_pair(jaws.get("y_range_mm", (-200.0, 200.0))),
                max_gantry_speed_deg_s=float(data["gantry"]["max_speed_deg_per_s"]),
                max_dose_rate_mu_min=float(data["dose_rate"]["max_mu_per_min"]),
                calibration_gy_per_mu=float(cal.pop("gy_per_mu", 0.01)),
                calibration={**_MODEL_REFERENCE, **cal},
                description=str(data.get("description", "")),
                provenance=dict(data.get("provenance", {})),
                source=where,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MachineError(f"machine file '{where}': missing or malformed field ({exc!r})") from None

    def to_dict(self) -> dict:
        widths = self.leaf_widths_mm
        runs = []
        for w in widths:
            if runs and np.isclose(runs[-1]["width_mm"], w):
                runs[-1]["count"] += 1
            else:
                runs.append({"count": 1, "width_mm": float(w)})
        return {
            "name": self.name, "description": self.description,
            "mlc": {"leaf_widths_mm": runs, "first_boundary_mm": self.leaf_boundaries_mm[0],
                    "position_range_mm": list(self.leaf_range_mm), "min_leaf_gap_mm": self.min_leaf_gap_mm,
                    "max_leaf_speed_mm_per_s": self.max_leaf_speed_mm_s},
            "jaws": {"x_range_mm": list(self.jaw_x_range_mm), "y_range_mm": list(self.jaw_y_range_mm)},
            "gantry": {"max_speed_deg_per_s": self.max_gantry_speed_deg_s},
            "dose_rate": {"max_mu_per_min": self.max_dose_rate_mu_min},
            "calibration": {"gy_per_mu": self.calibration_gy_per_mu, **self.calibration},
            "provenance": self.provenance,
        }


def _pair(v) -> tuple[float, float]:
    lo, hi = v
    return float(lo), float(hi)
