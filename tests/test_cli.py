"""The airtp command, run as a user would: as a separate process."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from airtp import Case


def airtp(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "airtp", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "airtp"
    exe = str(script) if script.exists() else shutil.which("airtp")
    assert exe, "the airtp console script is not installed"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("airtp ")


def test_phantom_then_structures_with_helpers(tmp_path):
    path = tmp_path / "hn.npz"
    r = airtp("phantom", "hn", "--seed", 1, "--n-ptv", 2, "--out", path)
    assert r.returncode == 0, r.stderr
    case = Case.load(path)
    assert [p.dose_gy for p in case.prescriptions_by_dose()] == [70.0, 56.0]
    r = airtp("structures", path, "--helpers")
    assert r.returncode == 0, r.stderr
    assert "PTVHighOPT" in r.stdout and "RingPTVLow" in r.stdout and "PTVLow-PTVHigh" in r.stdout
    row = next(line for line in r.stdout.splitlines() if line.startswith("SpinalCord ")).split()
    assert float(row[1]) == pytest.approx(case.structures.volume_cc("SpinalCord"), abs=0.01)
    assert int(row[2]) == int(case.structures["SpinalCord"].sum())


def test_lung_phantom_command(tmp_path):
    path = tmp_path / "lung.npz"
    r = airtp("phantom", "lung", "--side", "right", "--seed", 2, "--out", path)
    assert r.returncode == 0, r.stderr
    r = airtp("structures", path, "--helpers")
    assert r.returncode == 0, r.stderr
    assert "TotalLung-GTV" in r.stdout and "BodyRing" in r.stdout


def test_demo_builds_case_with_helpers(tmp_path):
    r = airtp("demo", "--out", tmp_path / "demo")
    assert r.returncode == 0, r.stderr
    assert "PTVHighOPT" in r.stdout and "RingPTVMid" in r.stdout
    case = Case.load(tmp_path / "demo" / "case.npz")
    assert {"PTVHigh", "PTVMid", "PTVLow", "PTVTotal", "RingPTVHigh"} <= set(case.structures)
    assert all(m.any() for m in case.structures.values())
    summary = json.loads((tmp_path / "demo" / "plan" / "summary.json").read_text())
    # Refinement keeps the best iteration, so the ideal fluence never loses to the initial plan's unless
    # that failed the quality filter; the deliverable plan is scored on its own (issue goal: a mean drop
    # under 2 points).
    assert summary["case"] == case.patient_id
    if summary["quality_filter_trajectory"][0]:
        assert summary["score_ideal"] >= summary["score_initial_ideal"]
    assert summary["delivery"]["deliverable"] is True and abs(summary["delivery"]["score_drop"]) < 5.0
    assert (tmp_path / "demo" / "plan" / "report.html").is_file()


def test_bare_case_with_prescription_from_command_line(tmp_path):
    path = tmp_path / "bare.npz"
    body = np.zeros((10, 20, 20), bool)
    body[:, 2:18, 2:18] = True
    target = np.zeros_like(body)
    target[4:7, 8:12, 8:12] = True
    np.savez_compressed(path, ct_hu=np.where(body, 0, -1000).astype(np.int16), spacing_mm=[3.0, 2.5, 2.5],
                        origin_mm=[0.0, 0.0, 0.0], **{"mask/Body": body, "mask/OuterTarget": target})
    r = airtp("structures", path, "--helpers", "--site", "hn", "--prescription", "OuterTarget:50:25")
    assert r.returncode == 0, r.stderr
    assert "OuterTarget 50 Gy/25 fx" in r.stdout and "PTVHighOPT" in r.stdout
    r = airtp("structures", path, "--helpers", "--site", "hn")
    assert r.returncode == 2 and "has no prescription" in r.stderr


def test_errors_are_one_line_naming_the_file(tmp_path):
    r = airtp("structures", tmp_path / "missing.npz")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("airtp: error:") and "missing.npz" in r.stderr
    assert "Traceback" not in r.stderr
