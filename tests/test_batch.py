"""Cohort batch runs on Dask (airtp.batch): real local clusters of worker processes, on loopback only.

A worker killed in the middle of a task, a corrupt case file, an interrupted
run then resumed: nothing lost, nothing duplicated, every failure explained.
Phantoms are coarse (8 mm) and plans short (one refinement iteration, few
optimiser iterations) so that the module runs in about a minute on 2 cores.
"""

import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airtp import Prescription
from airtp.batch import (
    BatchOptions,
    Manifest,
    expand_cohort,
    make_tasks,
    run_batch,
    write_phantom_cohort,
)
from airtp.batch.cohort import load_entry
from airtp.batch.figures import score_figure, summary_table
from airtp.batch.manifest import MANIFEST, MARKER, PLANS, STAGING, OutputLock
from airtp.batch.runner import FAULTS_ENV, _open_client
from airtp.cli import main
from airtp.errors import AirtpError, BatchError
from airtp.planning import PlanSettings

SPACING = (8.0, 8.0, 8.0)  # mm: coarse phantoms keep each plan around a second
SETTINGS = PlanSettings(iterations=1, dose_grid_mm=8.0, optimizer_options={"max_iterations": 15})
PLAN_ARGS = ["--iterations", "1", "--dose-grid", "8", "--optimizer-iterations", "15"]
DEADLINE_S = 300  # only so that a broken run cannot hang the suite; never a timing assertion


def plan_folders(out: Path) -> set[str]:
    return {p.name for p in (out / PLANS).iterdir() if not p.name.startswith(".")}


def staged_plans(out: Path) -> list[Path]:
    """Anything left in the staging area except the (empty) attempts folder."""
    staging = out / PLANS / STAGING
    if not staging.exists():
        return []
    return [p for p in staging.rglob("*") if p.is_file() or (p.is_dir() and p.name != "attempts")]


def records(out: Path) -> dict:
    return {r["task"]: r for r in json.loads((out / MANIFEST).read_text())["tasks"]}


def wait_for(condition, what: str) -> None:
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > DEADLINE_S:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Two head-and-neck patients, one lung patient and a corrupt case file."""
    folder = tmp_path_factory.mktemp("cohort")
    write_phantom_cohort("hn", 2, folder, spacing_mm=SPACING)
    write_phantom_cohort("lung", 1, folder, spacing_mm=SPACING)
    (folder / "corrupt.npz").write_bytes(b"PK\x03\x04 this is not a case file")
    return folder


@pytest.fixture(scope="module")
def client():
    """A local cluster of 2 worker processes set up as `airtp batch` sets it up (one retry after a death)."""
    with _open_client(BatchOptions(workers=2, max_retries=1)) as c:
        yield c


@pytest.fixture(scope="module")
def first_run(cohort, client, tmp_path_factory):
    """The cohort with imrt9; one task's worker dies once mid-plan, another's on every attempt."""
    faults = tmp_path_factory.mktemp("faults")
    fault_file = faults / "faults.json"
    fault_file.write_text(json.dumps({"hn1-seed0__imrt9": "exit_once", "lung-left-seed0__imrt9": "exit_always"}))
    out = tmp_path_factory.mktemp("batch") / "out"
    stream = io.StringIO()
    options = BatchOptions(max_retries=1, fault_file=str(fault_file), stream=stream)
    result = run_batch([cohort], ["imrt9"], out, SETTINGS, options, client=client)
    return out, result, faults, stream.getvalue()


# ---------------------------------------------------------------------------
# Cohorts and hashes (no cluster)
# ---------------------------------------------------------------------------
def test_cohort_from_files_and_folders(cohort, tmp_path):
    entries = expand_cohort([cohort, cohort / "hn1-seed0.npz"])  # the file named twice is one case
    assert [e.name for e in entries] == ["corrupt", "hn1-seed0", "hn2-seed1", "lung-left-seed0"]
    assert all(e.kind == "npz" and e.path.is_absolute() for e in entries)

    dicom = tmp_path / "patient 7"
    dicom.mkdir()
    (dicom / "ct1.dcm").write_bytes(b"not really DICOM")
    (entry,) = expand_cohort([dicom])
    assert (entry.name, entry.kind) == ("patient_7", "dicom")

    with pytest.raises(BatchError, match="nope.npz: no such case file or folder"):
        expand_cohort([tmp_path / "nope.npz"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BatchError, match="empty: no case files"):
        expand_cohort([empty])
    other = tmp_path / "other"
    other.mkdir()
    (other / "hn1-seed0.npz").write_bytes((cohort / "hn1-seed0.npz").read_bytes())
    with pytest.raises(BatchError, match="two cases share the name 'hn1-seed0'"):
        expand_cohort([cohort, other])


def test_dicom_folder_without_importer_is_a_named_error(tmp_path, monkeypatch):
    folder = tmp_path / "pat"
    folder.mkdir()
    (folder / "a.dcm").write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "airtp.io.dicom", None)  # as if DICOM import were not installed
    (entry,) = expand_cohort([folder])
    with pytest.raises(AirtpError, match=f"{folder}: a DICOM folder, but DICOM import"):
        load_entry(entry)


def test_input_hash_covers_case_settings_and_technique(cohort, tmp_path):
    entries = expand_cohort([cohort / "hn1-seed0.npz"])
    (a9, avmat) = make_tasks(entries, ["imrt9", "vmat"], SETTINGS)
    assert a9.name == "hn1-seed0__imrt9" and a9.input_hash != avmat.input_hash
    same = PlanSettings(iterations=1, dose_grid_mm=8.0, optimizer_options={"max_iterations": 15})
    assert make_tasks(entries, ["imrt9"], same)[0].input_hash == a9.input_hash
    other = PlanSettings(iterations=2, dose_grid_mm=8.0, optimizer_options={"max_iterations": 15})
    assert make_tasks(entries, ["imrt9"], other)[0].input_hash != a9.input_hash
    copy = tmp_path / "hn1-seed0.npz"
    data = bytearray((cohort / "hn1-seed0.npz").read_bytes())
    copy.write_bytes(data)
    assert make_tasks(expand_cohort([copy]), ["imrt9"], SETTINGS)[0].input_hash == a9.input_hash
    data[-1] ^= 1
    copy.write_bytes(data)
    assert make_tasks(expand_cohort([copy]), ["imrt9"], SETTINGS)[0].input_hash != a9.input_hash


def test_phantoms_command_writes_a_diverse_cohort(tmp_path, capsys):
    assert main(["phantoms", "--site", "lung", "--n", "3", "--out", str(tmp_path), "--spacing", "8,8,8",
                 "--seed", "5"]) == 0
    names = sorted(p.name for p in tmp_path.glob("*.npz"))
    assert names == ["lung-central-seed7.npz", "lung-left-seed5.npz", "lung-right-seed6.npz"]
    assert capsys.readouterr().out.count("wrote ") == 3
    assert main(["phantoms", "--site", "hn", "--n", "1", "--out", str(tmp_path), "--spacing", "8,8"]) == 2


def test_bad_batch_input_is_refused_before_any_work(cohort, tmp_path, capsys):
    with pytest.raises(BatchError, match="unknown technique.*imrt10"):
        run_batch([cohort], ["imrt9", "imrt10"], tmp_path / "o")
    with pytest.raises(BatchError, match="no techniques"):
        run_batch([cohort], " , ", tmp_path / "o")
    assert main(["batch", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "missing: no such case file or folder" in capsys.readouterr().err
    with OutputLock(tmp_path / "busy"), pytest.raises(BatchError, match="another airtp batch is running"):
        run_batch([cohort], ["imrt9"], tmp_path / "busy", SETTINGS)


def test_summary_and_figure_from_records(tmp_path):
    def rec(task, site, tech, status, before=None, after=None, error=None):
        return {"task": task, "site": site, "technique": tech, "status": status, "score_initial": before,
                "score_final": after, "error": error}

    rs = [rec("a__imrt9", "hn", "imrt9", "done", 100.0, 110.0), rec("b__imrt9", "hn", "imrt9", "done", 90.0, 85.0),
          rec("c__vmat", "lung", "vmat", "done", 50.0, 60.0), rec("d__vmat", None, "vmat", "failed", error="boom")]
    table = summary_table(rs)
    row = next(line for line in table.splitlines() if line.startswith("hn "))
    assert row.split() == ["hn", "imrt9", "2", "0", "95.00", "97.50", "+2.50", "1/2"]
    assert "d__vmat: failed: boom" in table
    png = score_figure(rs, tmp_path / "f.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert score_figure(rs[-1:], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


# ---------------------------------------------------------------------------
# On a local cluster
# ---------------------------------------------------------------------------
def test_batch_isolates_failures_and_survives_worker_deaths(first_run, cohort):
    out, result, faults, progress = first_run
    by = {r["task"]: r for r in result.records}
    assert set(by) == {"corrupt__imrt9", "hn1-seed0__imrt9", "hn2-seed1__imrt9", "lung-left-seed0__imrt9"}
    assert result.ran == 4 and result.reused == 0

    # the worker died in the middle of this plan once: the task ran again on a fresh worker and finished
    assert len((faults / "hn1-seed0__imrt9.attempts").read_text().splitlines()) == 2
    assert by["hn1-seed0__imrt9"]["status"] == by["hn2-seed1__imrt9"]["status"] == "done"
    # dying on every attempt: tried 1 + max_retries times, then failed with the reason
    assert len((faults / "lung-left-seed0__imrt9.attempts").read_text().splitlines()) == 2
    dead = by["lung-left-seed0__imrt9"]
    assert dead["status"] == "failed" and "worker process died while planning this task, 2 times" in dead["error"]
    assert str(cohort / "lung-left-seed0.npz") in dead["error"]
    bad = by["corrupt__imrt9"]
    assert bad["status"] == "failed" and bad["error_type"] == "CaseFileError"
    assert bad["error"].startswith(f"{cohort / 'corrupt.npz'}: not a readable case file")

    # exactly the finished plans, each complete, made from these inputs; nothing left half-written
    assert plan_folders(out) == {"hn1-seed0__imrt9", "hn2-seed1__imrt9"}
    tasks = {t.name: t for t in make_tasks(expand_cohort([cohort]), ["imrt9"], SETTINGS)}
    for name in plan_folders(out):
        marker = json.loads((out / PLANS / name / MARKER).read_text())
        summary = json.loads((out / PLANS / name / "summary.json").read_text())
        assert marker["input_hash"] == tasks[name].input_hash
        assert by[name]["score_final"] == summary["score_final"] and by[name]["score_initial"] == summary["score_initial"]
        assert math.isfinite(summary["score_initial"]) and math.isfinite(summary["score_final"])
    assert staged_plans(out) == []

    # the manifest on disk is what the run returned
    assert records(out) == by
    assert json.loads((out / MANIFEST).read_text())["counts"] == {"done": 2, "failed": 2, "pending": 0}
    assert "ETA" in progress and "FAILED" in progress and "hn2-seed1__imrt9: done" in progress
    assert (out / "scores.png").read_bytes()[:4] == b"\x89PNG"
    assert "lung-left-seed0__imrt9: failed: " in summary_table(result.records)


def test_rerun_skips_complete_plans_and_redoes_the_rest(first_run, cohort, client):
    out, _, _, _ = first_run
    before = {n: (out / PLANS / n / "summary.json").stat().st_ino for n in plan_folders(out)}
    options = BatchOptions(max_retries=1, fault_file=None, quiet=True)

    # no fault now: the died task is redone and done; the corrupt file fails again; the plans are kept
    result = run_batch([cohort], ["imrt9"], out, SETTINGS, options, client=client)
    by = {r["task"]: r for r in result.records}
    assert result.ran == 2 and result.reused == 2
    assert by["lung-left-seed0__imrt9"]["status"] == "done" and by["corrupt__imrt9"]["status"] == "failed"
    assert by["hn1-seed0__imrt9"]["reused"] and by["hn2-seed1__imrt9"]["reused"]
    assert {n: (out / PLANS / n / "summary.json").stat().st_ino for n in before} == before  # not rewritten
    assert plan_folders(out) == {"hn1-seed0__imrt9", "hn2-seed1__imrt9", "lung-left-seed0__imrt9"}

    # a plan made from other inputs (its marker's hash differs) is made again, in the same folder
    marker_path = out / PLANS / "hn2-seed1__imrt9" / MARKER
    marker = json.loads(marker_path.read_text())
    good = marker["input_hash"]
    marker_path.write_text(json.dumps({**marker, "input_hash": "0" * 64}))
    # a lost manifest is rebuilt from the plan folders
    (out / MANIFEST).unlink()
    result = run_batch([cohort], ["imrt9"], out, SETTINGS, options, client=client)
    assert result.ran == 2  # the stale plan and the corrupt file
    assert json.loads(marker_path.read_text())["input_hash"] == good
    assert plan_folders(out) == {"hn1-seed0__imrt9", "hn2-seed1__imrt9", "lung-left-seed0__imrt9"}
    assert {n: r["status"] for n, r in records(out).items()} == {
        "corrupt__imrt9": "failed", "hn1-seed0__imrt9": "done", "hn2-seed1__imrt9": "done",
        "lung-left-seed0__imrt9": "done"}
    assert staged_plans(out) == []

    # a garbled manifest is no obstacle either; a run with nothing new to plan starts no work
    (out / MANIFEST).write_text("{ not json")
    result = run_batch([cohort / f"hn{n}-seed{n - 1}.npz" for n in (1, 2)], ["imrt9"], out, SETTINGS, options)
    assert result.ran == 0 and result.reused == 2
    assert set(records(out)) == {"hn1-seed0__imrt9", "hn2-seed1__imrt9", "lung-left-seed0__imrt9"}
    assert Manifest.load(out).counts() == {"done": 3, "failed": 0, "pending": 0}


def test_interrupted_run_loses_nothing_and_resume_completes_it(tmp_path):
    cohort = tmp_path / "cohort"
    write_phantom_cohort("lung", 3, cohort, spacing_mm=SPACING)
    expected = {"lung-central-seed2__imrt9", "lung-left-seed0__imrt9", "lung-right-seed1__imrt9"}
    held = "lung-right-seed1__imrt9"
    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / "faults.json").write_text(json.dumps({held: "hold"}))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "airtp", "batch", str(cohort), "--techniques", "imrt9", "--out", str(out),
           "--workers", "1", *PLAN_ARGS]

    env = {**os.environ, FAULTS_ENV: str(faults / "faults.json")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        # interrupt once one plan is finished and another is in the middle of planning
        wait_for(lambda: (faults / f"{held}.held").exists() and (out / PLANS).is_dir() and plan_folders(out),
                 "a finished plan and a held task")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the client, its scheduler and its workers, as a power cut would
        proc.communicate()
        (faults / f"{held}.release").touch()  # should a worker have outlived its group
    done_before = plan_folders(out)
    assert done_before and done_before < expected and held not in done_before
    inodes = {n: (out / PLANS / n / "summary.json").stat().st_ino for n in done_before}
    for n in done_before:  # whatever is in plans/ is complete
        assert (out / PLANS / n / MARKER).is_file() and (out / PLANS / n / "summary.json").is_file()
    if (out / MANIFEST).exists():
        assert records(out)[held]["status"] == "pending"

    r = subprocess.run(cmd, capture_output=True, text=True, env={k: v for k, v in env.items() if k != FAULTS_ENV})
    assert r.returncode == 0, r.stderr
    assert plan_folders(out) == expected  # nothing lost, nothing twice
    assert {n: (out / PLANS / n / "summary.json").stat().st_ino for n in done_before} == inodes
    recs = records(out)
    assert {n: r["status"] for n, r in recs.items()} == dict.fromkeys(expected, "done")
    assert {n for n, r in recs.items() if r["reused"]} == done_before
    assert staged_plans(out) == []
    assert f"{len(expected) - len(done_before)} planned, {len(done_before)} already complete, 0 failed" in r.stdout
    assert "lung   imrt9" in r.stdout and (out / "scores.png").is_file()


def test_a_scheduler_address_is_used_as_given(cohort, client, tmp_path):
    options = BatchOptions(scheduler=client.scheduler.address, quiet=True)
    result = run_batch([cohort / "corrupt.npz"], ["imrt9"], tmp_path / "out", SETTINGS, options)
    (rec,) = result.records
    assert rec["status"] == "failed" and rec["worker"] in client.run(lambda: __import__("airtp.batch.runner").batch
                                                                      .runner._worker_id()).values()
    with pytest.raises(BatchError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        run_batch([cohort / "corrupt.npz"], ["imrt9"], tmp_path / "o2", SETTINGS,
                  BatchOptions(scheduler="tcp://127.0.0.1:9", connect_timeout_s=1, quiet=True))


def test_a_dicom_folder_in_the_cohort(first_run, client, tmp_path):
    """A plan folder exported to DICOM (CT + RTSTRUCT), batched back with the site and prescription given."""
    dicom = pytest.importorskip("airtp.io.dicom")
    out, _, _, _ = first_run
    dicom.export_plan(out / PLANS / "hn2-seed1__imrt9", tmp_path / "cohort" / "patient-1", with_ct=True)
    rx = [Prescription("PTV70", 70.0, 35), Prescription("PTV56", 56.0, 35)]
    result = run_batch([tmp_path / "cohort"], ["imrt9"], tmp_path / "out", SETTINGS, BatchOptions(quiet=True),
                       client=client, dicom_site="hn", dicom_prescriptions=rx)
    (rec,) = result.records
    assert (rec["task"], rec["status"], rec["site"]) == ("patient-1__imrt9", "done", "hn"), rec["error"]
    assert rec["score_final"] is not None
    (task,) = make_tasks(expand_cohort([tmp_path / "cohort"], "hn", rx), ["imrt9"], SETTINGS)
    assert task.input_hash == rec["input_hash"]
    assert make_tasks(expand_cohort([tmp_path / "cohort"], "lung", rx), ["imrt9"], SETTINGS)[0].input_hash \
        != task.input_hash  # the site given is an input
