"""The output folder of a batch: plan folders, their markers, the manifest, the lock.

Layout of DIR::

    plans/<case>__<technique>/   one finished plan each (the files of
                                 airtp.planning.outputs.write_plan) plus
                                 batch.json, its marker
    plans/.staging/              plans being written (never read as plans)
    manifest.json                one record per task: status, score, timings, error
    scores.png                   score before and after refinement (paper Figure 7)
    .batch.lock                  held while a batch runs on DIR

A plan folder appears in ``plans/`` by one rename of a folder that already
holds everything, marker included, so a folder there is complete by
construction; its marker says which inputs (input hash) made it. The plan
folders are the truth: the manifest is a convenient index of them plus the
failures, written atomically after every finished task, and rebuilt from the
plan folders whenever a batch starts, so a lost or stale manifest costs
nothing.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import time
import uuid
from pathlib import Path

from airtp import __version__
from airtp.case import atomic_write
from airtp.errors import BatchError

__all__ = ["PLANS", "STAGING", "MARKER", "MANIFEST", "FIGURE", "plan_folder", "read_marker", "record_from_folder",
           "complete_record", "publish", "clean_staging", "Manifest", "OutputLock", "now_iso"]

PLANS = "plans"
STAGING = ".staging"
MARKER = "batch.json"
SUMMARY = "summary.json"
MANIFEST = "manifest.json"
FIGURE = "scores.png"
LOCK = ".batch.lock"
MANIFEST_FORMAT = "airtp-batch-manifest"
MANIFEST_VERSION = 1


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def plan_folder(out, name: str) -> Path:
    return Path(out) / PLANS / name


def staging_root(out) -> Path:
    return Path(out) / PLANS / STAGING


def _read_json(path: Path):
    """The JSON in `path`, or None when it is absent or unreadable (a plan folder can be tampered with)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_marker(folder: Path) -> dict | None:
    marker = _read_json(Path(folder) / MARKER)
    return marker if isinstance(marker, dict) else None


def _finite(x):
    """A score as JSON: NaN (no scorecard) becomes null."""
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def record_from_folder(folder: Path) -> dict | None:
    """The manifest record of a published plan folder, or None when it is not a complete plan."""
    folder = Path(folder)
    marker, summary = read_marker(folder), _read_json(folder / SUMMARY)
    if marker is None or not isinstance(summary, dict) or "input_hash" not in marker:
        return None
    return {
        "task": marker.get("task", folder.name),
        "case": marker.get("case"),
        "case_path": marker.get("case_path"),
        "technique": marker.get("technique"),
        "site": summary.get("site"),
        "status": "done",
        "input_hash": marker["input_hash"],
        "score_initial": _finite(summary.get("score_initial")),
        "score_final": _finite(summary.get("score_final")),
        "score_max": _finite(summary.get("score_max")),
        "timings_s": marker.get("timings_s", {}),
        "worker": marker.get("worker"),
        "finished_at": marker.get("finished_at"),
        "plan": f"{PLANS}/{folder.name}",
        "warnings": list(marker.get("load_warnings", [])) + list(summary.get("warnings", [])),
        "error": None,
    }


def complete_record(out, name: str, input_hash: str) -> dict | None:
    """The record of the plan folder of task `name` if it is complete for `input_hash`, else None."""
    record = record_from_folder(plan_folder(out, name))
    return record if record is not None and record["input_hash"] == input_hash else None


def publish(staged: Path, out, name: str) -> Path:
    """Move the complete folder `staged` to ``plans/<name>`` by rename; returns the plan folder.

    A folder already there (a stale plan: other inputs) is first renamed into
    the staging area, then removed. Between those two renames a crash leaves
    no plan for this task, never a partial one; the task is redone on resume.
    """
    dst = plan_folder(out, name)
    trashes = []
    try:
        for _ in range(3):  # another writer of the same task may publish in between
            try:
                os.rename(staged, dst)
                return dst
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
            trash = staging_root(out) / f"{name}.old.{uuid.uuid4().hex[:8]}"
            try:
                os.rename(dst, trash)
            except FileNotFoundError:
                continue
            trashes.append(trash)
        raise BatchError(f"{dst}: could not publish the plan (the folder keeps being replaced)")
    finally:
        for trash in trashes:
            shutil.rmtree(trash, ignore_errors=True)


def clean_staging(out) -> None:
    """Remove what interrupted runs left in the staging area (only while holding the lock)."""
    shutil.rmtree(staging_root(out), ignore_errors=True)


class Manifest:
    """The records of DIR's tasks, by task name, saved atomically as ``manifest.json``."""

    def __init__(self, out, records: dict | None = None):
        self.out = Path(out)
        self.records: dict[str, dict] = dict(records or {})

    @property
    def path(self) -> Path:
        return self.out / MANIFEST

    @classmethod
    def load(cls, out) -> "Manifest":
        """The saved manifest; an absent or unreadable one gives an empty manifest (it is rebuilt anyway)."""
        doc = _read_json(Path(out) / MANIFEST)
        records = {}
        if isinstance(doc, dict) and doc.get("format") == MANIFEST_FORMAT and isinstance(doc.get("tasks"), list):
            records = {r["task"]: r for r in doc["tasks"] if isinstance(r, dict) and "task" in r}
        return cls(out, records)

    def reconcile(self, current: set[str]) -> None:
        """Make the records of tasks outside this run agree with the plan folders.

        Tasks of earlier runs on DIR (other cases or techniques) keep their
        record, refreshed from their folder when it holds a complete plan;
        a 'done' record whose folder is gone or incomplete is dropped.
        """
        folders = self.out / PLANS
        names = {p.name for p in folders.iterdir() if p.is_dir() and not p.name.startswith(".")} if folders.is_dir() \
            else set()
        for name in sorted(names - current):
            record = record_from_folder(folders / name)
            if record is not None:
                self.records[name] = record
        for name in [n for n, r in self.records.items() if n not in current and r.get("status") == "done"]:
            if name not in names or record_from_folder(folders / name) is None:
                del self.records[name]

    def counts(self) -> dict:
        out = {"done": 0, "failed": 0, "pending": 0}
        for r in self.records.values():
            status = r.get("status", "pending")
            out[status] = out.get(status, 0) + 1
        return out

    def save(self) -> Path:
        doc = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "airtp": __version__,
               "updated_at": now_iso(), "counts": self.counts(),
               "tasks": [self.records[k] for k in sorted(self.records)]}
        data = json.dumps(doc, indent=1, allow_nan=False).encode()
        atomic_write(self.path, lambda f: f.write(data))
        return self.path


class OutputLock:
    """An exclusive lock on DIR for the life of a batch (released by the OS if the process dies)."""

    def __init__(self, out):
        self.path = Path(out) / LOCK
        self._file = None

    def __enter__(self) -> "OutputLock":
        try:
            import fcntl
        except ImportError:  # no advisory locks on this platform: run unlocked
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise BatchError(f"{self.path.parent}: another airtp batch is running on this folder ({holder}); "
                             "wait for it or use another --out") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {os.uname().nodename} since {now_iso()}")
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the flock
            self._file = None
