"""JSON data files that ship with AIRTP and that a user may replace (beam data, HU tables, machines)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

__all__ = ["load_json"]


def load_json(path, package: str, default: str, what: str, error: type[Exception]) -> tuple[dict, str]:
    """The parsed JSON of `path`, or of the packaged ``<package>/data/<default>`` when `path` is None.

    Returns ``(data, where)``, `where` naming the file for messages; a missing,
    unreadable or malformed file raises `error` naming it as "`what` file".
    """
    if path is None:
        text = resources.files(package).joinpath("data", default).read_text()
        where = f"{package.replace('.', '/')}/data/{default}"
    else:
        p = Path(path)
        if not p.is_file():
            raise error(f"{what} file '{p}': no such file")
        try:
            text = p.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise error(f"{what} file '{p}': cannot be read ({exc})") from None
        where = str(p)
    try:
        return json.loads(text), where
    except json.JSONDecodeError as exc:
        raise error(f"{what} file '{where}': not valid JSON ({exc})") from None
