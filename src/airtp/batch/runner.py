"""Running a cohort on Dask: one task per (case, technique), resumable and fault-isolating.

The client (:func:`run_batch`) expands the cohort, skips every task whose
plan folder is already complete for the same input hash, hands the rest to a
Dask cluster (by default a :class:`distributed.LocalCluster` of worker
processes on loopback; or any scheduler address) one task per worker thread
at a time, and records each finished task in the manifest as it arrives.

A worker (:func:`plan_task`) loads the case, plans it, writes the plan
folder into the staging area, adds its marker and publishes it by one rename
(see :mod:`airtp.batch.manifest`). Any exception of a case is caught there
and returned as a 'failed' record, so one bad case never stops the others. A
worker process that dies is restarted by its nanny and the scheduler hands
its task out again; the task counts its own attempts (in DIR's staging area)
and after ``max_retries`` deaths returns a 'failed' record with the reason
instead of planning once more. Workers and client must see DIR and the
cohort at the same paths (one machine, or a shared file system).

Fault injection, for tests only: when :attr:`BatchOptions.fault_file` (or
the environment variable ``AIRTP_BATCH_FAULTS`` of the client) names a JSON
file ``{task name: kind}``, the named tasks, at their first progress stage,
``exit_once`` (the worker process exits on the first attempt),
``exit_always`` (on every attempt) or ``hold`` (wait until a file
``<task>.release`` appears beside the fault file). Every attempt of a named
task appends a line to ``<task>.attempts`` there. Without a fault file none
of this runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import traceback
import uuid
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from airtp import __version__
from airtp.batch.cohort import (
    Task,
    expand_cohort,
    load_entry,
    make_tasks,
    settings_fingerprint,
)
from airtp.batch.manifest import (
    FIGURE,
    MARKER,
    Manifest,
    OutputLock,
    clean_staging,
    complete_record,
    now_iso,
    publish,
    record_from_folder,
    staging_root,
)
from airtp.case import SITES, atomic_write
from airtp.errors import AirtpError, BatchError

__all__ = ["BatchOptions", "BatchResult", "TaskSpec", "run_batch", "plan_task", "FAULTS_ENV"]

FAULTS_ENV = "AIRTP_BATCH_FAULTS"
_POLL_S = 0.1  # how often a held task looks for its release file


@dataclass
class BatchOptions:
    """Where and how a batch runs.

    Attributes
    ----------
    workers : int or None
        Worker processes of the local cluster (default: CPU cores / native_threads).
    scheduler : str or None
        Address of a running Dask scheduler (``tcp://HOST:PORT``) instead of a local cluster.
    native_threads : int
        OpenMP threads of each local worker, so that workers x threads fit the cores.
    max_retries : int
        Times a task is run again after its worker process died while planning
        it; then it is recorded as failed. (On a remote scheduler, its own
        ``distributed.scheduler.allowed-failures`` must be at least this.)
    quiet : bool
        No progress lines.
    progress_interval_s : float
        Seconds between progress lines while no task finishes.
    connect_timeout_s : float
        How long to try to reach ``scheduler`` before giving up.
    fault_file : str or None
        Test-only fault injection (see the module doc).
    """

    workers: int | None = None
    scheduler: str | None = None
    native_threads: int = 1
    max_retries: int = 2
    quiet: bool = False
    progress_interval_s: float = 30.0
    connect_timeout_s: float = 30.0
    fault_file: str | None = field(default_factory=lambda: os.environ.get(FAULTS_ENV) or None)
    stream: object = None  # progress stream (default: stderr)


@dataclass(frozen=True)
class TaskSpec:
    """What a worker needs for one task: the task, DIR (absolute), the plan settings, the retry bound,
    the fault file."""

    task: Task
    out: str
    settings: object  # PlanSettings
    max_retries: int = 2
    fault_file: str | None = None


@dataclass
class BatchResult:
    """The records of this run's tasks (cohort order) and what the run did."""

    out: Path
    records: list[dict]
    ran: int
    reused: int
    seconds: float
    figure: Path | None

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.records if r["status"] != "done"]

    @property
    def ok(self) -> bool:
        return not self.failed


# ---------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------
def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _faults(spec: TaskSpec) -> tuple[str | None, Path | None]:
    """The fault kind of this task and the folder of the fault markers (test-only, see the module doc)."""
    if not spec.fault_file:
        return None, None
    path = Path(spec.fault_file)
    try:
        kind = json.loads(path.read_text()).get(spec.task.name)
    except (OSError, ValueError, AttributeError):
        raise BatchError(f"{path}: fault file is not a readable JSON object") from None
    return kind, path.parent


def _attempts_file(spec: TaskSpec) -> Path:
    return staging_root(spec.out) / "attempts" / spec.task.name


def _start_attempt(spec: TaskSpec) -> int:
    """Count this attempt of the task (1 for the first) in DIR's staging area.

    Only attempts that started are counted: a task that was merely queued on
    a worker that died has lost nothing and is not charged for it (Dask's own
    count, ``allowed-failures``, charges it).
    """
    marker = _attempts_file(spec)
    marker.parent.mkdir(parents=True, exist_ok=True)
    with open(marker, "a") as f:
        f.write(f"{_worker_id()} {now_iso()}\n")
    return len(marker.read_text().splitlines())


def _log_fault_attempt(spec: TaskSpec) -> None:
    """Test-only: log an attempt that plans, beside the fault file (kept after the task)."""
    kind, folder = _faults(spec)
    if kind is not None:
        with open(folder / f"{spec.task.name}.attempts", "a") as f:
            f.write(f"{_worker_id()} {now_iso()}\n")


class _TaskProgress:
    """The pipeline's progress callback in a worker: remembers the stage; injects a test fault at the first."""

    def __init__(self, spec: TaskSpec, attempt: int):
        self.spec, self.attempt, self.stage = spec, attempt, None

    def __call__(self, message: str) -> None:
        first = self.stage is None
        self.stage = message
        if first:
            self._inject()

    def _inject(self) -> None:
        kind, folder = _faults(self.spec)
        name = self.spec.task.name
        if kind == "exit_always" or (kind == "exit_once" and self.attempt == 1):
            os._exit(1)  # a worker process dying in the middle of a task, as a crash or the OOM killer would
        if kind == "hold":
            (folder / f"{name}.held").touch()
            while not (folder / f"{name}.release").exists():
                time.sleep(_POLL_S)


def _error_text(task: Task, exc: BaseException) -> str:
    """One line naming the case file and what went wrong."""
    msg = f"{exc}" if isinstance(exc, AirtpError) else f"unexpected {type(exc).__name__}: {exc} (traceback in the manifest)"
    path = str(task.entry.path)
    return msg if path in msg else f"{path}: {msg}"


def failure_record(task: Task, error: str, *, error_type: str, seconds: float | None = None, site=None,
                   tb: str | None = None, worker: str | None = None) -> dict:
    """The manifest record of a task that did not give a plan."""
    return {
        "task": task.name, "case": task.entry.name, "case_path": str(task.entry.path), "technique": task.technique,
        "site": site, "status": "failed", "input_hash": task.input_hash,
        "score_initial": None, "score_final": None, "score_max": None,
        "timings_s": {} if seconds is None else {"total_s": seconds},
        "worker": worker, "finished_at": now_iso(), "plan": None, "warnings": [],
        "error": error, "error_type": error_type, "traceback": tb, "reused": False,
    }


def pending_record(task: Task) -> dict:
    rec = failure_record(task, None, error_type=None)
    rec.update(status="pending", finished_at=None)
    return rec


def _write(result, spec: TaskSpec, timings: dict, load_warnings: list[str]) -> Path:
    """Write the plan into the staging area, add its marker, publish it; returns the plan folder."""
    from airtp.planning.outputs import write_plan

    task = spec.task
    root = staging_root(spec.out)
    root.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f"{task.name}.", dir=root))
    try:
        t = time.perf_counter()
        folder = write_plan(result, stage / "plan")
        timings["write_s"] = time.perf_counter() - t
        timings["total_s"] = sum(timings.values())
        marker = {"task": task.name, "case": task.entry.name, "case_path": str(task.entry.path),
                  "technique": task.technique, "input_hash": task.input_hash, "airtp": __version__,
                  "settings": settings_fingerprint(spec.settings), "timings_s": timings, "worker": _worker_id(),
                  "finished_at": now_iso(), "load_warnings": load_warnings}
        data = json.dumps(marker, indent=1).encode()
        atomic_write(folder / MARKER, lambda f: f.write(data))
        return publish(folder, spec.out, task.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _died_record(task: Task, deaths: int) -> dict:
    error = (f"{task.entry.path}: the worker process died while planning this task, {deaths} times "
             "(a crash in native code or memory exhaustion are the usual causes); not tried again")
    return failure_record(task, error, error_type="WorkerDied", worker=_worker_id())


def plan_task(spec: TaskSpec) -> dict:
    """Plan one task on a worker and publish its folder; returns its manifest record (never raises for a case)."""
    from airtp.planning import plan_case

    task = spec.task
    done = complete_record(spec.out, task.name, task.input_hash)
    if done is not None:  # a retry whose first attempt had published before its worker died
        return {**done, "reused": True}
    attempt = _start_attempt(spec)
    if attempt > spec.max_retries + 1:  # every earlier attempt started and never returned: its worker died
        _attempts_file(spec).unlink(missing_ok=True)
        return _died_record(task, attempt - 1)
    _log_fault_attempt(spec)
    t0 = time.perf_counter()
    case = None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            case = load_entry(task.entry)
        timings = {"load_s": time.perf_counter() - t0}
        t = time.perf_counter()
        settings = dataclasses.replace(spec.settings, technique=task.technique)
        result = plan_case(case, settings, _TaskProgress(spec, attempt))
        timings["plan_s"] = time.perf_counter() - t
        folder = _write(result, spec, timings, [str(w.message) for w in caught])
        return {**record_from_folder(folder), "reused": False}
    except Exception as exc:  # noqa: BLE001 - one bad case is recorded and the cohort goes on
        tb = None if isinstance(exc, AirtpError) else traceback.format_exc()
        return failure_record(task, _error_text(task, exc), error_type=type(exc).__name__,
                              seconds=time.perf_counter() - t0, site=getattr(case, "site", None), tb=tb,
                              worker=_worker_id())
    finally:
        _attempts_file(spec).unlink(missing_ok=True)


# ---------------------------------------------------------------------------
# Client side
# ---------------------------------------------------------------------------
def _check_techniques(techniques) -> list[str]:
    from airtp.beams.templates import TECHNIQUES

    if isinstance(techniques, str):
        techniques = techniques.split(",")
    out = list(dict.fromkeys(t.strip() for t in techniques if t.strip()))
    if not out:
        raise BatchError("no techniques given (e.g. --techniques imrt9,vmat)")
    bad = [t for t in out if t not in TECHNIQUES]
    if bad:
        raise BatchError(f"unknown technique(s) {', '.join(bad)} (known: {', '.join(TECHNIQUES)})")
    return out


def _check_options(options: BatchOptions) -> None:
    for name in ("workers", "native_threads"):
        v = getattr(options, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise BatchError(f"{name} must be a positive integer, got {v!r}")
    if isinstance(options.max_retries, bool) or not isinstance(options.max_retries, int) or options.max_retries < 0:
        raise BatchError(f"max_retries must be a non-negative integer, got {options.max_retries!r}")
    if options.scheduler and options.workers:
        raise BatchError("give either a scheduler address or a number of local workers, not both")


def _n_workers(options: BatchOptions) -> int:
    return options.workers or max(1, (os.cpu_count() or 1) // options.native_threads)


@contextlib.contextmanager
def _open_client(options: BatchOptions, client=None):
    """A Dask client: the one given, one of a remote scheduler, or one of a new local cluster."""
    if client is not None:
        yield client
        return
    import dask
    from distributed import Client, LocalCluster

    if options.scheduler:
        try:
            c = Client(options.scheduler, timeout=f"{options.connect_timeout_s}s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise BatchError(f"cannot reach the Dask scheduler at {options.scheduler}: {exc}") from None
        with c:
            yield c
        return
    # The task counts its attempts that started and stops after max_retries deaths. Dask's own count
    # is only a backstop, set well above: it also charges a task that was merely waiting on a worker
    # killed by another task (it happens while a dead worker's task is handed to a busy one).
    config = {"distributed.scheduler.allowed-failures": 2 * (options.max_retries + 1)}
    try:
        with dask.config.set(config):
            cluster = LocalCluster(n_workers=_n_workers(options), threads_per_worker=1, processes=True,
                                   host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR,
                                   env={"OMP_NUM_THREADS": str(options.native_threads)})
    except (OSError, RuntimeError) as exc:
        # e.g. a script without `if __name__ == "__main__":`, which worker processes re-run on start
        raise BatchError(f"could not start a local Dask cluster: {exc}") from exc
    with cluster, Client(cluster) as c:
        yield c


def _format_s(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class ProgressDisplay:
    """Lines on stderr: done, failed, running, queued, ETA, and the task that just finished."""

    def __init__(self, total: int, stream=None, quiet: bool = False):
        self.total, self.stream, self.quiet = total, stream or sys.stderr, quiet
        self.t0 = time.perf_counter()
        self.done = self.failed = self.reused = self.finished_now = self.to_run = 0

    def _print(self, text: str) -> None:
        if not self.quiet:
            print(f"[batch {time.perf_counter() - self.t0:7.1f} s] {text}", file=self.stream, flush=True)

    def start(self, reused: int, to_run: int, where: str) -> None:
        self.reused = self.done = reused
        self.to_run = to_run
        self._print(f"{self.total} tasks: {reused} already complete, {to_run} to plan{where}")

    def _status(self, running: int, queued: int) -> str:
        left = self.to_run - self.finished_now
        eta = "--"
        if self.finished_now and left:
            eta = _format_s((time.perf_counter() - self.t0) / self.finished_now * left)
        elif not left:
            eta = "0 s"
        return f"{self.done}/{self.total} done, {self.failed} failed, {running} running, {queued} queued; ETA {eta}"

    def finished(self, record: dict, running: int, queued: int) -> None:
        self.finished_now += 1
        if record["status"] == "done":
            self.done += 1
            what = f"done, score {_score(record['score_initial'])} -> {_score(record['score_final'])}"
            secs = record.get("timings_s", {}).get("total_s")
            what += f" ({secs:.1f} s)" if secs is not None else ""
        else:
            self.failed += 1
            what = f"FAILED: {record['error']}"
        self._print(f"{self._status(running, queued)} | {record['task']}: {what}")

    def heartbeat(self, running: int, queued: int) -> None:
        self._print(self._status(running, queued))


def _score(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _threads(client) -> int | None:
    try:
        return sum(client.nthreads().values())
    except Exception:  # noqa: BLE001 - the count is for display only
        return None


def _future_record(future, task: Task) -> dict:
    """The record of a finished future: the task's own, or a failure (worker deaths, lost scheduler)."""
    if future.status == "finished":
        return future.result()
    try:
        exc = future.exception()
    except BaseException as e:  # noqa: BLE001 - cancelled futures raise here
        exc = e
    from distributed import KilledWorker

    if isinstance(exc, KilledWorker):
        error = (f"{task.entry.path}: worker processes kept dying while this task was on them (Dask KilledWorker: "
                 f"{exc}); a crash in native code or memory exhaustion are the usual causes")
    else:
        error = f"{task.entry.path}: the task did not run: {type(exc).__name__}: {exc}"
    return failure_record(task, error, error_type=type(exc).__name__)


def _run_tasks(client, specs: list[TaskSpec], manifest: Manifest, display: ProgressDisplay,
               interval_s: float) -> None:
    """Run the tasks of `specs`, at most one per worker thread at a time; record each as it finishes.

    Handing out tasks only as threads free up (rather than all at once) keeps
    tasks from waiting on a worker, where a death of that worker would count
    against them too; it also makes 'running' and 'queued' exact.
    """
    from distributed import wait

    run = uuid.uuid4().hex[:8]  # fresh keys: a task is never answered from an earlier run's results
    queue = deque(enumerate(specs))
    in_flight: dict = {}

    def fill() -> None:
        slots = max(1, _threads(client) or 1)
        while queue and len(in_flight) < slots:
            i, spec = queue.popleft()
            in_flight[client.submit(plan_task, spec, key=f"airtp-plan-{run}-{i}")] = spec.task

    try:
        while queue or in_flight:
            fill()
            try:
                finished, _ = wait(list(in_flight), timeout=interval_s, return_when="FIRST_COMPLETED")
            except TimeoutError:
                display.heartbeat(len(in_flight), len(queue))
                continue
            for f in finished:
                task = in_flight.pop(f)
                manifest.records[task.name] = _future_record(f, task)
                manifest.save()
                fill()  # before the line, so that it counts the task just handed out
                display.finished(manifest.records[task.name], len(in_flight), len(queue))
    finally:
        if in_flight:  # interrupted: what is unfinished stays 'pending' and is redone on resume
            client.cancel(list(in_flight))


def run_batch(cohort, techniques, out, settings=None, options: BatchOptions | None = None,
              client=None, dicom_site: str | None = None, dicom_prescriptions=()) -> BatchResult:
    """Plan every (case, technique) of `cohort` into DIR `out` (see the module doc).

    Parameters
    ----------
    cohort : list of paths
        Case files, folders of them, DICOM folders (:func:`airtp.batch.cohort.expand_cohort`).
    techniques : list of str or "a,b,c"
        Techniques of the beam templates (``imrt9``, ``imrt15``, ``vmat``, ...).
    out : path
        DIR; created if absent.
    settings : PlanSettings
        Plan settings of every task (the technique is set per task).
    options : BatchOptions
    client : distributed.Client or None
        An existing client to use (then ``options.workers/scheduler`` are ignored).
    dicom_site : str or None
        Site of the cohort's DICOM cases ("hn", "lung", "generic"); case files carry their own.
    dicom_prescriptions : list of Prescription
        Prescriptions of the DICOM cases, replacing any read from their RTPLAN.

    Returns the :class:`BatchResult`; raises :class:`BatchError` before any
    planning for a bad cohort, technique or option.
    """
    from airtp.batch.figures import score_figure
    from airtp.planning import PlanSettings

    t0 = time.perf_counter()
    settings = settings or PlanSettings()
    options = options or BatchOptions()
    _check_options(options)
    techniques = _check_techniques(techniques)
    if dicom_site is not None and dicom_site not in SITES:
        raise BatchError(f"DICOM site must be one of {', '.join(SITES)}, got {dicom_site!r}")
    tasks = make_tasks(expand_cohort(cohort, dicom_site, dicom_prescriptions), techniques, settings)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    display = ProgressDisplay(len(tasks), options.stream, options.quiet)
    with OutputLock(out):
        clean_staging(out)
        manifest = Manifest.load(out)
        manifest.reconcile({t.name for t in tasks})
        todo = []
        for t in tasks:
            record = complete_record(out, t.name, t.input_hash)
            manifest.records[t.name] = {**record, "reused": True} if record else pending_record(t)
            if record is None:
                todo.append(t)
        manifest.save()
        where = "" if client is not None else (f" on {options.scheduler}" if options.scheduler else
                                               f" on a local cluster of {_n_workers(options)} workers")
        display.start(len(tasks) - len(todo), len(todo), where if todo else "")
        if todo:
            specs = [TaskSpec(t, str(out), settings, options.max_retries, options.fault_file) for t in todo]
            with _open_client(options, client) as c:
                _run_tasks(c, specs, manifest, display, options.progress_interval_s)
        manifest.save()
    records = [manifest.records[t.name] for t in tasks]
    figure = score_figure(records, out / FIGURE)
    return BatchResult(out, records, len(todo), len(tasks) - len(todo), time.perf_counter() - t0, figure)
