"""A named set of boolean structure masks on one grid."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from airtp.errors import StructureError
from airtp.grid import Grid
from airtp.structures.names import name_key

__all__ = ["StructureSet"]


def as_mask(array, name: str, grid: Grid) -> np.ndarray:
    """Check that `array` is a boolean mask on `grid` and return it (C order).

    Raises :class:`StructureError` naming the structure otherwise; integer
    0/1 arrays are refused too, since a label map passed by mistake would
    silently become a mask.
    """
    array = np.asarray(array)
    if array.dtype != np.bool_:
        raise StructureError(f"structure '{name}': mask must be boolean, got dtype {array.dtype}")
    if array.shape != grid.shape:
        raise StructureError(f"structure '{name}': mask shape {array.shape} does not match the grid shape {grid.shape}")
    return np.ascontiguousarray(array)


class StructureSet(Mapping):
    """Ordered mapping of structure name to a boolean (z, y, x) mask on `grid`.

    Look-up is by exact name first, then by the name with case and
    punctuation ignored ("SpinalCord.05" finds "SpinalCord_05").
    """

    def __init__(self, grid: Grid, masks: Mapping[str, np.ndarray] | None = None):
        self.grid = grid
        self._masks: dict[str, np.ndarray] = {}
        for name, mask in (masks or {}).items():
            self.add(name, mask)

    # Mapping protocol ---------------------------------------------------
    def __getitem__(self, name: str) -> np.ndarray:
        found = self.find(name)
        if found is None:
            raise StructureError(f"structure '{name}' is not in the structure set (have: {', '.join(self._masks) or 'none'})")
        return self._masks[found]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and self.find(name) is not None

    def __repr__(self) -> str:
        return f"StructureSet({len(self)} structures on {self.grid.shape})"

    # ---------------------------------------------------------------------
    def find(self, name: str) -> str | None:
        """The stored name that `name` refers to, or None."""
        if name in self._masks:
            return name
        key = name_key(name)
        matches = [n for n in self._masks if name_key(n) == key]
        return matches[0] if len(matches) == 1 else None

    def add(self, name: str, mask: np.ndarray, replace: bool = False) -> None:
        """Add a structure; refuses to overwrite one unless `replace`."""
        if not isinstance(name, str) or not name.strip():
            raise StructureError(f"structure name must be a non-empty string, got {name!r}")
        if name in self._masks and not replace:
            raise StructureError(f"structure '{name}' already exists")
        self._masks[name] = as_mask(mask, name, self.grid)

    def remove(self, name: str) -> None:
        """Remove a structure by name."""
        del self._masks[self.find(name) or name]

    def volume_cc(self, name: str) -> float:
        """Volume of a structure in cm^3 (voxel count times voxel volume)."""
        return float(np.count_nonzero(self[name])) * self.grid.voxel_volume_cc

    def table(self) -> list[tuple[str, float, int]]:
        """(name, volume cc, voxel count) for every structure, in order."""
        rows = []
        for name, mask in self._masks.items():
            n = int(np.count_nonzero(mask))
            rows.append((name, n * self.grid.voxel_volume_cc, n))
        return rows
