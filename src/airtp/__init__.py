"""AIRTP: automated iterative radiotherapy planning at scale."""

from airtp.case import Case, Prescription
from airtp.errors import AirtpError
from airtp.grid import Grid
from airtp.structures import StructureSet

__version__ = "0.1.0"

__all__ = ["Case", "Prescription", "Grid", "StructureSet", "AirtpError", "__version__"]
