"""AIRTP optimizer target that plans in Varian Eclipse through the Eclipse Scripting API (PyESAPI).

Registered as ``eclipse`` in the entry-point group ``airtp.optimizers``::

    from airtp.optimize import get_optimizer
    target = get_optimizer("eclipse", patient_id="RESEARCH-01")
    result = target.optimize(problem, objectives)

Importing this package does not need PyESAPI; :meth:`EclipseTarget.optimize`
imports it and raises :class:`airtp.plugins.PluginError` without it.
"""

from airtp_eclipse.mapping import EclipseError
from airtp_eclipse.target import EclipseResult, EclipseTarget

__all__ = ["EclipseTarget", "EclipseResult", "EclipseError"]
__version__ = "0.1.0"
