"""CT number (HU) to relative electron density through a calibration table.

A table file is JSON with equal-length increasing ``hu`` and
``relative_electron_density`` lists (piecewise linear, clamped at the ends);
the default is ``airtp/dose/data/hu_to_density.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from airtp.datafiles import load_json
from airtp.errors import DoseError

__all__ = ["HuDensityTable"]


@dataclass(frozen=True)
class HuDensityTable:
    hu: tuple[float, ...]
    density: tuple[float, ...]
    name: str = ""
    source: str = ""

    def __post_init__(self):
        hu, rho = np.asarray(self.hu, float), np.asarray(self.density, float)
        where = self.source or self.name or "HU table"
        if hu.ndim != 1 or hu.shape != rho.shape or hu.size < 2:
            raise DoseError(f"{where}: 'hu' and 'relative_electron_density' must be equal lists of at least 2 numbers")
        if not (np.all(np.isfinite(hu)) and np.all(np.isfinite(rho))) or np.any(np.diff(hu) <= 0) or np.any(rho < 0):
            raise DoseError(f"{where}: HU must increase and densities be non-negative")

    @classmethod
    def load(cls, path=None) -> "HuDensityTable":
        if isinstance(path, HuDensityTable):
            return path
        data, where = load_json(path, "airtp.dose", "hu_to_density.json", "HU-to-density", DoseError)
        try:
            return cls(tuple(data["hu"]), tuple(data["relative_electron_density"]), str(data.get("name", "")), where)
        except (KeyError, TypeError) as exc:
            raise DoseError(f"HU-to-density file '{where}': malformed ({exc!r})") from None

    def __call__(self, hu) -> np.ndarray:
        """Relative electron density (float32) of an array of HU."""
        return np.interp(np.asarray(hu, dtype=np.float32), np.asarray(self.hu, np.float32),
                         np.asarray(self.density, np.float32)).astype(np.float32)
