"""Photon dose: 6 MV pencil-beam model, HU to density, dose-influence matrices.

- :class:`BeamModel` (``beam_model.py``): the kernel (two Gaussian components
  with depth-dependent amplitude and width), read from a beam-data JSON; the
  packaged ``data/truebeam_6mv.json`` was fitted by ``tools/fit_beam_model.py``
  to published generic 6 MV water data (its ``provenance`` lists them).
- :class:`HuDensityTable`: CT number to relative electron density
  (``data/hu_to_density.json``, user-replaceable).
- :func:`dose_influence`: the float32 CSC matrix (body voxels x beamlets) for
  a list of :class:`airtp.beams.Beam`; :func:`dose_of_fluence` and
  :func:`dose_of_aperture` give doses without storing a matrix.
- ``airtp commission [--json]`` prints the model's water figures
  (:mod:`airtp.dose.commission`).

Known limits: a pencil beam scales only depth with density (no lateral
electron-transport scaling), so it overestimates dose inside and just beyond
lung for small fields; pairs beyond the lateral cut-off (50 mm at the voxel's
depth by default) are dropped, so the output stops growing with field size
beyond about 10 x 10 cm (the fit accounts for the cut-off at 5 x 5 and
10 x 10). The CUDA kernels (csrc/*.cu) are built when a CUDA toolkit is found
and chosen automatically on a GPU for large problems; they agree with the CPU
to CPU_GPU_RTOL by construction but had not yet been run on a GPU when written.
"""

from airtp.dose.beam_model import BeamModel
from airtp.dose.engine import (
    CPU_GPU_RTOL,
    DoseInfluence,
    dose_influence,
    dose_of_aperture,
    dose_of_fluence,
    make_dose_grid,
)
from airtp.dose.hu_density import HuDensityTable

__all__ = [
    "BeamModel", "HuDensityTable", "DoseInfluence", "dose_influence", "dose_of_fluence", "dose_of_aperture",
    "make_dose_grid", "CPU_GPU_RTOL",
]
