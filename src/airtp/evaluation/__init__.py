"""Plan evaluation: DVHs, DVH metrics and Varian-format scorecards."""

from airtp.evaluation.dvh import DVH, DoseError, check_dose, compute_dvhs

__all__ = ["DVH", "DoseError", "check_dose", "compute_dvhs"]
