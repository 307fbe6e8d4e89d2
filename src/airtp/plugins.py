"""Registry of plugins, found as Python entry points.

Built-in and third-party plugins register the same way, in a
``pyproject.toml`` of their distribution::

    [project.entry-points."airtp.scorecards"]
    hn = "airtp.evaluation.scorecard:builtin_hn"

:func:`available` lists the names of a group without importing anything;
:func:`load` imports one, and a plugin that is missing or fails to import
raises a :class:`PluginError` naming it, without affecting the others.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from airtp.errors import AirtpError

__all__ = ["GROUPS", "PluginError", "available", "load", "entry_point"]

GROUPS = (
    "airtp.scorecards",
    "airtp.contouring",
    "airtp.beam_templates",
    "airtp.objective_rules",
    "airtp.optimizers",
    "airtp.sequencers",
)


class PluginError(AirtpError):
    """A plugin is not installed, or it failed to load."""


def _check_group(group: str) -> None:
    if group not in GROUPS:
        raise PluginError(f"unknown plugin group '{group}' (groups: {', '.join(GROUPS)})")


def _entry_points(group: str) -> list[EntryPoint]:
    return list(entry_points(group=group))


def available(group: str) -> list[str]:
    """Sorted names of the plugins installed in `group`."""
    _check_group(group)
    return sorted({ep.name for ep in _entry_points(group)})


def entry_point(group: str, name: str) -> EntryPoint:
    """The entry point of plugin `name` in `group`."""
    _check_group(group)
    matches = [ep for ep in _entry_points(group) if ep.name == name]
    if not matches:
        have = ", ".join(available(group)) or "none"
        raise PluginError(f"no plugin '{name}' in group {group} (installed: {have})")
    return matches[0]


def load(group: str, name: str):
    """Import and return the object that plugin `name` of `group` points to."""
    ep = entry_point(group, name)
    try:
        return ep.load()
    except Exception as exc:  # noqa: BLE001 - any failure of third-party code is reported, not raised raw
        raise PluginError(f"plugin '{name}' ({group}, {ep.value}) failed to load: {type(exc).__name__}: {exc}") from exc
