"""Contouring plugins: fill in the organs a case lacks (entry-point group ``airtp.contouring``).

A contouring plugin is any object with a ``name`` and a method
``contour(case)`` that returns new structures by standard name, either as a
mapping ``{name: bool mask}`` or as a :class:`Contours` (masks plus the names
it could not make and why). It is registered like any plugin::

    [project.entry-points."airtp.contouring"]
    threshold = "airtp.contouring.threshold:ThresholdContouring"

The entry point names a class (or factory); :func:`contour` calls it with the
caller's options and adds what the plugin returns to the case. The given
contours always win: a structure the case already has, under its standard
name or another spelling of it (``Cord`` for ``SpinalCord``, found by
:func:`airtp.structures.harmonize.find_standard`), is kept unless
``replace=True``. Built-ins:

- ``existing`` (the default): keep the given contours, add nothing;
- ``threshold``: Body and lungs from Hounsfield units
  (:mod:`airtp.contouring.threshold`), for CTs that lack them.

The separate distribution ``plugins/airtp-totalsegmentator`` adds
``totalsegmentator``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from airtp import plugins
from airtp.errors import AirtpError, ContouringError, StructureError
from airtp.structures.harmonize import MATCHED, find_standard, match_name
from airtp.structures.structure_set import as_mask

__all__ = ["ContouringPlugin", "Contours", "ContourEntry", "ContourReport", "get_plugin", "contour", "available"]

GROUP = "airtp.contouring"
ADDED, REPLACED, KEPT, SKIPPED = "added", "replaced", "kept", "skipped"


@runtime_checkable
class ContouringPlugin(Protocol):
    """What :func:`contour` needs of a plugin."""

    name: str

    def contour(self, case) -> "Mapping[str, np.ndarray] | Contours":
        """New structures of `case` by standard name: boolean (z, y, x) masks on the case grid."""


@dataclass
class Contours:
    """What a plugin made (``masks``) and what it did not make, with the reason (``skipped``)."""

    masks: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContourEntry:
    """One line of a contouring report."""

    name: str
    status: str  # added, replaced, kept or skipped
    reason: str
    volume_cc: float = 0.0


@dataclass
class ContourReport:
    """Every structure of the case after contouring, and what happened to it."""

    plugin: str
    entries: list[ContourEntry] = field(default_factory=list)

    def names(self, status: str) -> list[str]:
        return [e.name for e in self.entries if e.status == status]

    @property
    def added(self) -> list[str]:
        return self.names(ADDED) + self.names(REPLACED)

    def format(self) -> str:
        """The report as an aligned text table."""
        w = max([len(e.name) for e in self.entries] + [9])
        lines = [f"Contouring plugin: {self.plugin}", f"{'Structure':<{w}}  {'Status':<8}  {'cc':>9}  Reason"]
        for e in self.entries:
            cc = f"{e.volume_cc:9.2f}" if e.status != SKIPPED else f"{'-':>9}"
            lines.append(f"{e.name:<{w}}  {e.status:<8}  {cc}  {e.reason}")
        return "\n".join(lines)


def available() -> list[str]:
    """Names of the installed contouring plugins."""
    return plugins.available(GROUP)


def get_plugin(name: str = "existing", **options) -> ContouringPlugin:
    """Load contouring plugin `name` and make it with `options`.

    Raises :class:`~airtp.plugins.PluginError` if it is not installed or fails
    to load, :class:`ContouringError` if the options do not fit it or it is not
    a contouring plugin.
    """
    factory = plugins.load(GROUP, name)
    if isinstance(factory, type) or (callable(factory) and not hasattr(factory, "contour")):
        try:
            plugin = factory(**options)
        except TypeError as exc:
            raise ContouringError(f"contouring plugin '{name}': bad options {sorted(options)} ({exc})") from None
    elif options:
        raise ContouringError(f"contouring plugin '{name}' takes no options, got {sorted(options)}")
    else:
        plugin = factory
    if not callable(getattr(plugin, "contour", None)):
        raise ContouringError(f"contouring plugin '{name}' has no contour(case) method")
    return plugin


def _run(plugin, name: str, case) -> Contours:
    try:
        out = plugin.contour(case)
    except AirtpError:
        raise
    except Exception as exc:  # noqa: BLE001 - third-party code: report it with the plugin's name
        raise ContouringError(f"contouring plugin '{name}' failed on case '{case.patient_id}': "
                              f"{type(exc).__name__}: {exc}") from exc
    if isinstance(out, Contours):
        return out
    if isinstance(out, Mapping):
        return Contours(dict(out))
    raise ContouringError(f"contouring plugin '{name}' returned {type(out).__name__}, not a mapping of masks")


def _check_name(plugin: str, structure: str) -> None:
    m = match_name(structure)
    if m.status != MATCHED or m.standard != structure:
        raise ContouringError(f"contouring plugin '{plugin}' returned structure '{structure}', which is not a "
                              f"standard name ({m.reason})")


def contour(case, plugin: str = "existing", *, replace: bool = False, **options) -> ContourReport:
    """Run contouring plugin `plugin` on `case` and add the structures it made, in place.

    Parameters
    ----------
    case : Case
        Changed in place: new structures are added.
    plugin : str
        Name of an ``airtp.contouring`` plugin (default ``existing``).
    replace : bool
        Replace given structures with the plugin's (default: keep them).
    **options
        Passed to the plugin's constructor.

    Returns
    -------
    ContourReport listing the given structures (kept or replaced), then the
    ones added, then the ones the plugin skipped, with reasons.
    """
    p = get_plugin(plugin, **options)
    made = _run(p, plugin, case)
    ss = case.structures
    voxel_cc = case.grid.voxel_volume_cc
    masks: dict[str, np.ndarray] = {}
    for structure, mask in made.masks.items():
        _check_name(plugin, structure)
        try:
            masks[structure] = as_mask(mask, structure, case.grid)
        except StructureError as exc:
            raise ContouringError(f"contouring plugin '{plugin}': {exc}") from None
    report = ContourReport(plugin)
    given = list(ss)
    given_as = {s: find_standard(given, s) for s in masks}  # a given 'Cord' is the plugin's SpinalCord
    for name in given:
        new = next((s for s, g in given_as.items() if g == name), None)
        if new is not None and replace and masks[new].any():
            ss.add(name, masks.pop(new), replace=True)
            report.entries.append(ContourEntry(name, REPLACED, f"replaced by the {plugin} contour",
                                               ss.volume_cc(name)))
            continue
        why = "given contour" + (f"; the {plugin} contour was not used" if new is not None else "")
        masks.pop(new, None)
        report.entries.append(ContourEntry(name, KEPT, why, ss.volume_cc(name)))
    for structure, mask in masks.items():
        n = int(np.count_nonzero(mask))
        if n == 0:
            report.entries.append(ContourEntry(structure, SKIPPED, f"the {plugin} contour is empty"))
            continue
        ss.add(structure, mask)
        report.entries.append(ContourEntry(structure, ADDED, f"made by {plugin}", n * voxel_cc))
    for structure, why in made.skipped.items():
        report.entries.append(ContourEntry(structure, SKIPPED, why))
    return report
