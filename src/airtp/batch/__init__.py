"""Planning at scale: cohort batch runs on Dask, resumable and fault-isolating.

:func:`run_batch` plans one task per (case, technique) on a Dask cluster and
writes each finished plan atomically into ``DIR/plans/<case>__<technique>``;
``DIR/manifest.json`` records every task's status, score, timings and error.
See :mod:`airtp.batch.runner` (running), :mod:`airtp.batch.manifest` (the
output folder), :mod:`airtp.batch.cohort` (cases, tasks, hashes) and
:mod:`airtp.batch.figures` (summary table, Figure 7).
"""

from airtp.batch.cohort import (
           CohortEntry,
           Task,
           expand_cohort,
           make_tasks,
           write_phantom_cohort,
)
from airtp.batch.manifest import Manifest
from airtp.batch.runner import BatchOptions, BatchResult, run_batch

__all__ = ["run_batch", "BatchOptions", "BatchResult", "Manifest", "CohortEntry", "Task", "expand_cohort",
           "make_tasks", "write_phantom_cohort"]
