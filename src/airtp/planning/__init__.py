"""The planning pipeline: templates, initial objectives, Algorithm 1, outputs."""

from airtp.planning.pipeline import PlanResult, PlanSettings, Progress, plan_case

__all__ = ["PlanSettings", "PlanResult", "Progress", "plan_case"]
