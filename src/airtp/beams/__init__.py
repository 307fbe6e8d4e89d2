"""Treatment beams: IEC 61217 geometry and beamlet grids."""

from airtp.beams.beam import Beam, BeamletGrid, equispaced_beams

__all__ = ["Beam", "BeamletGrid", "equispaced_beams"]
