"""The default contouring plugin: keep the contours the case came with."""

from __future__ import annotations

__all__ = ["ExistingContours"]


class ExistingContours:
    """Adds nothing; :func:`airtp.contouring.contour` reports the given contours as kept."""

    name = "existing"

    def contour(self, case) -> dict:
        return {}
