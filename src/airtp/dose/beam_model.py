"""The 6 MV photon pencil-beam model and its beam-data files.

The dose of a beamlet of size sx x sy (at the isocentre plane) to a point at
radiological depth d, distance z from the source along the beam axis and
offset (x, y) from the beamlet's central ray (projected to the isocentre
plane) is

    D = (SAD / z)^2 * sum_i A_i(d) * Fx_i * Fy_i,
    Fx_i = 1/2 [erf((x + sx/2) / (sqrt2 s_i)) - erf((x - sx/2) / (sqrt2 s_i))],

with s_i = sigma_i(d) * SAD / z. Each component i is a Gaussian pencil kernel
whose broad-beam depth dose and width are

    A_i(d)     = a_i * exp(-mu_i d) * (1 - (1 - f_i) exp(-beta_i d)),
    sigma_i(d) = sqrt(sigma0_i^2 + (k_i d)^2),

so a narrow "primary" component carries the build-up (f = surface fraction)
and the field edge, and a broad "scatter" component, integrated over the
field, gives the field-size dependence of the output. Pairs farther than
``cutoff_mm`` (at the point's depth) from a beamlet's central ray are
dropped; the fit accounts for it.

Dose is in Gy per unit beamlet weight, normalised so that a 10 x 10 cm field
(isocentre at the surface, SSD = SAD = 100 cm, all weights 1) gives
``gy_per_unit_at_dmax`` (0.01 Gy, i.e. a weight is an MU at 1 cGy/MU) at the
depth of maximum on the central axis.

A beam-data file is JSON: ``name``, ``energy``, ``sad_mm``, ``cutoff_mm``,
``gy_per_unit_at_dmax``, ``components`` (list of {name, a, mu_per_mm,
beta_per_mm, surface_fraction, sigma0_mm, k}), ``normalisation`` (the factor
applied to every a_i, found when the file was made), ``depth_table`` ({step_mm,
max_mm}) and ``provenance`` (free text and the fitted data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import erf

from airtp.datafiles import load_json
from airtp.errors import DoseError

__all__ = ["BeamModel", "Component", "DEFAULT_BEAM_DATA"]

DEFAULT_BEAM_DATA = "truebeam_6mv.json"


@dataclass(frozen=True)
class Component:
    """One Gaussian component of the pencil kernel (see the module docstring)."""

    name: str
    a: float
    mu_per_mm: float
    beta_per_mm: float
    surface_fraction: float
    sigma0_mm: float
    k: float

    def amplitude(self, depth_mm) -> np.ndarray:
        d = np.maximum(np.asarray(depth_mm, dtype=float), 0.0)
        return self.a * np.exp(-self.mu_per_mm * d) * (1.0 - (1.0 - self.surface_fraction) * np.exp(-self.beta_per_mm * d))

    def sigma(self, depth_mm) -> np.ndarray:
        d = np.maximum(np.asarray(depth_mm, dtype=float), 0.0)
        return np.sqrt(self.sigma0_mm**2 + (self.k * d) ** 2)


@dataclass(frozen=True)
class BeamModel:
    """A pencil-beam model: kernel components, SAD, cut-off and normalisation."""

    name: str
    components: tuple[Component, ...]
    sad_mm: float = 1000.0
    cutoff_mm: float = 50.0
    normalisation: float = 1.0
    gy_per_unit_at_dmax: float = 0.01
    depth_step_mm: float = 0.25
    depth_max_mm: float = 600.0
    energy: str = "6MV"
    provenance: dict = field(default_factory=dict, compare=False)
    source: str = ""

    def __post_init__(self):
        if not 1 <= len(self.components) <= 4:
            raise DoseError(f"beam model '{self.name}': needs 1 to 4 kernel components, got {len(self.components)}")
        for c in self.components:
            vals = (c.a, c.mu_per_mm, c.beta_per_mm, c.surface_fraction, c.sigma0_mm, c.k)
            if not all(np.isfinite(vals)) or c.sigma0_mm <= 0 or c.a < 0 or c.k < 0:
                raise DoseError(f"beam model '{self.name}': component '{c.name}' has invalid parameters {vals}")
        if not (self.sad_mm > 0 and self.cutoff_mm > 0 and self.depth_step_mm > 0 and self.depth_max_mm > self.depth_step_mm):
            raise DoseError(f"beam model '{self.name}': SAD, cut-off and depth table must be positive")

    # ------------------------------------------------------------------
    @classmethod
    def load(cls, path=None) -> "BeamModel":
        """Read a beam-data file; None reads the default (TrueBeam-like 6 MV)."""
        if isinstance(path, BeamModel):
            return path
        data, where = load_json(path, "airtp.dose", DEFAULT_BEAM_DATA, "beam-data", DoseError)
        return cls.from_dict(data, where)

    @classmethod
    def from_dict(cls, data: dict, where: str = "<dict>") -> "BeamModel":
        try:
            comps = tuple(
                Component(
                    str(c["name"]), float(c["a"]), float(c["mu_per_mm"]), float(c["beta_per_mm"]),
                    float(c["surface_fraction"]), float(c["sigma0_mm"]), float(c["k"]),
                )
                for c in data["components"]
            )
            table = data.get("depth_table", {})
            return cls(
                name=str(data.get("name", Path(where).stem)),
                components=comps,
                sad_mm=float(data.get("sad_mm", 1000.0)),
                cutoff_mm=float(data.get("cutoff_mm", 50.0)),
                normalisation=float(data.get("normalisation", 1.0)),
                gy_per_unit_at_dmax=float(data.get("gy_per_unit_at_dmax", 0.01)),
                depth_step_mm=float(table.get("step_mm", 0.25)),
                depth_max_mm=float(table.get("max_mm", 600.0)),
                energy=str(data.get("energy", "6MV")),
                provenance=dict(data.get("provenance", {})),
                source=where,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DoseError(f"beam-data file '{where}': missing or malformed field ({exc!r})") from None
        except DoseError as exc:
            raise DoseError(f"beam-data file '{where}': {exc}") from None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "energy": self.energy,
            "sad_mm": self.sad_mm,
            "cutoff_mm": self.cutoff_mm,
            "gy_per_unit_at_dmax": self.gy_per_unit_at_dmax,
            "normalisation": self.normalisation,
            "depth_table": {"step_mm": self.depth_step_mm, "max_mm": self.depth_max_mm},
            "components": [c.__dict__.copy() for c in self.components],
            "provenance": self.provenance,
        }

    # ------------------------------------------------------------------
    def amplitudes(self, depth_mm) -> np.ndarray:
        """Normalised broad-beam amplitudes A_i(d), shape (..., n_comp), Gy per unit weight."""
        return self.normalisation * np.stack([c.amplitude(depth_mm) for c in self.components], axis=-1)

    def sigmas(self, depth_mm) -> np.ndarray:
        """Widths sigma_i(d) in mm at depth, shape (..., n_comp)."""
        return np.stack([c.sigma(depth_mm) for c in self.components], axis=-1)

    def tables(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(amp, sigma, step): float32 (n_depth, n_comp) tables for the native core."""
        d = np.arange(0.0, self.depth_max_mm + 0.5 * self.depth_step_mm, self.depth_step_mm)
        return (np.ascontiguousarray(self.amplitudes(d), np.float32),
                np.ascontiguousarray(self.sigmas(d), np.float32), self.depth_step_mm)

    def beamlet_dose(self, dx_iso, dy_iso, depth_mm, z_mm, size_mm=(5.0, 5.0), cutoff_mm=None) -> np.ndarray:
        """Dose of one beamlet (readable reference of the native kernel, exact model, no tables).

        dx_iso, dy_iso: offset of the point from the beamlet centre, projected to the
        isocentre plane (mm); depth_mm: radiological depth; z_mm: distance from the
        source along the beam axis.
        """
        cutoff = self.cutoff_mm if cutoff_mm is None else cutoff_mm
        dx, dy, d, z = np.broadcast_arrays(*(np.asarray(v, float) for v in (dx_iso, dy_iso, depth_mm, z_mm)))
        scale = z / self.sad_mm
        amp = self.amplitudes(d) / scale[..., None] ** 2
        s = self.sigmas(d) / scale[..., None] * np.sqrt(2.0)
        hx, hy = size_mm[0] / 2.0, size_mm[1] / 2.0
        fx = 0.5 * (erf((dx[..., None] + hx) / s) - erf((dx[..., None] - hx) / s))
        fy = 0.5 * (erf((dy[..., None] + hy) / s) - erf((dy[..., None] - hy) / s))
        dose = np.sum(amp * fx * fy, axis=-1)
        inside = (dx**2 + dy**2) <= (cutoff / scale) ** 2
        return np.where(inside, dose, 0.0)

    def water_field_dose(self, depth_mm, x_mm=0.0, field_mm=(100.0, 100.0), beamlet_mm=5.0, ssd_mm=None) -> np.ndarray:
        """Dose in water of a square/rectangular field tiled by beamlets (weights 1), isocentre at the surface.

        ``x_mm`` is the off-axis position along BEV x at the isocentre plane
        (projected), so a profile at depth d in physical mm is x_mm * (SAD + d) / SAD.
        This is the semi-analytic commissioning calculation (water: radiological
        depth = depth) used to fit the model; the engine tests check that the
        engine reproduces it.
        """
        d = np.atleast_1d(np.asarray(depth_mm, float))
        x = np.atleast_1d(np.asarray(x_mm, float))
        fx, fy = field_mm
        nx, ny = int(round(fx / beamlet_mm)), int(round(fy / beamlet_mm))
        cx = (np.arange(nx) - (nx - 1) / 2.0) * beamlet_mm
        cy = (np.arange(ny) - (ny - 1) / 2.0) * beamlet_mm
        out = np.zeros((d.size, x.size))
        for j, y in enumerate(cy):
            dxs = x[None, :, None] - cx[None, None, :]
            val = self.beamlet_dose(dxs, -y, d[:, None, None], self.sad_mm + d[:, None, None], (beamlet_mm, beamlet_mm))
            out += val.sum(axis=-1)
        return out
