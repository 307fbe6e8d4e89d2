"""Contouring plugins: existing, threshold (Body and lungs from HU) and the TotalSegmentator adapter."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from airtp import Case, phantoms
from airtp.contouring import Contours, contour, get_plugin
from airtp.errors import ContouringError
from airtp.plugins import PluginError
from airtp.structures.harmonize import MATCHED, match_name

ROOT = Path(__file__).resolve().parent.parent
TS_PLUGIN = ROOT / "plugins" / "airtp-totalsegmentator"
MIN_DICE = {"Body": 0.99, "Lung_L": 0.98, "Lung_R": 0.98, "Lungs": 0.95}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _without(case: Case, *names: str) -> dict[str, np.ndarray]:
    """Remove structures from `case`; return them (the truth to compare with)."""
    truth = {n: case.structures[n].copy() for n in names}
    for n in names:
        case.structures.remove(n)
    return truth


def _add_couch(case: Case) -> np.ndarray:
    """A 1 cm plastic slab 1 cm below the patient (posterior, +y), not touching the body."""
    body_y = np.flatnonzero(case.structures["Body"].any(axis=(0, 2))).max()
    couch = np.zeros(case.grid.shape, bool)
    y0 = min(body_y + 4, case.grid.shape[1] - 4)
    couch[:, y0:y0 + 4, :] = True
    case.ct_hu[couch] = 100
    return couch


def test_builtin_plugins_are_registered():
    from airtp.contouring import available

    assert {"existing", "threshold"} <= set(available())
    with pytest.raises(PluginError, match="no plugin 'nope'"):
        contour(phantoms.lung("left", seed=0, spacing_mm=(6.0, 6.0, 6.0)), "nope")


def test_existing_keeps_the_given_contours_and_adds_nothing():
    case = phantoms.lung("left", seed=0, spacing_mm=(6.0, 6.0, 6.0))
    before = {n: m.copy() for n, m in case.structures.items()}
    report = contour(case)
    assert report.plugin == "existing" and report.added == []
    assert report.names("kept") == list(before)
    assert all(np.array_equal(case.structures[n], m) for n, m in before.items())


@pytest.mark.parametrize("side, seed", [("left", 0), ("right", 3), ("central", 1)])
def test_threshold_makes_body_and_lungs_of_the_lung_phantom(side, seed):
    case = phantoms.lung(side, seed=seed)
    couch = _add_couch(case)
    truth = _without(case, "Body", "Lung_L", "Lung_R")
    report = contour(case, "threshold")
    assert set(report.added) == {"Body", "Lung_L", "Lung_R", "Lungs"}
    scores = {n: dice(case.structures[n], truth[n]) for n in truth}
    print(f"\nthreshold contouring, lung phantom {side} seed {seed}: "
          + ", ".join(f"{n} Dice {d:.4f}" for n, d in scores.items()))
    assert all(scores[n] >= MIN_DICE[n] for n in scores), scores
    assert not (case.structures["Body"] & couch).any()  # the couch is not the patient
    assert dice(case.structures["Lung_L"], truth["Lung_R"]) < 0.05  # sides not swapped (+x is patient left)


def test_threshold_finds_the_lung_apices_of_a_head_and_neck_scan():
    case = phantoms.head_neck(n_ptv=1, seed=0)
    truth = _without(case, "Lungs")
    report = contour(case, "threshold")
    assert "Lungs" in report.added
    d = dice(case.structures["Lungs"], truth["Lungs"])
    print(f"\nthreshold contouring, head-and-neck phantom: Lungs Dice {d:.4f}")
    assert d >= MIN_DICE["Lungs"]
    # the trachea, larynx and sinus air of the head and neck are not lung
    assert not (case.structures["Lungs"] & case.structures["Trachea"]).any()


def test_threshold_leaves_a_clinicians_lungs_and_body_alone_whatever_their_spelling():
    case = phantoms.lung("left", seed=0, spacing_mm=(6.0, 6.0, 6.0))
    truth = _without(case, "Lung_R", "Lung_L", "Body")
    case.structures.add("Lt Lung", truth["Lung_L"])  # clinical spellings of Lung_L and Body
    case.structures.add("External", truth["Body"])
    report = contour(case, "threshold")
    assert not {"Lung_R", "Lung_L", "Lungs", "Body"} & set(case.structures)  # nothing beside the clinician's
    entries = {e.name: e for e in report.entries}
    assert entries["Lung_R"].status == "skipped" and "Lung_L" in entries["Lung_R"].reason
    assert entries["External"].status == "kept" and "not used" in entries["External"].reason
    assert np.array_equal(case.structures["External"], truth["Body"])


def test_replace_takes_the_plugins_contour():
    case = phantoms.lung("left", seed=0, spacing_mm=(6.0, 6.0, 6.0))
    case.structures.add("Body", np.zeros(case.grid.shape, bool) | case.structures["Heart"], replace=True)
    report = contour(case, "threshold", replace=True)
    assert {e.name: e.status for e in report.entries}["Body"] == "replaced"
    assert case.structures["Body"].sum() > 10 * case.structures["Heart"].sum()


def test_threshold_refuses_a_ct_without_a_body_and_bad_options():
    case = phantoms.lung("left", seed=0, spacing_mm=(6.0, 6.0, 6.0))
    case.ct_hu[:] = -1000
    with pytest.raises(ContouringError, match="no body"):
        contour(case, "threshold")
    with pytest.raises(ContouringError, match="unknown option"):
        contour(case, "threshold", min_lung=3)
    with pytest.raises(ContouringError, match="lung_hu"):
        get_plugin("threshold", lung_hu=0, body_hu=-350)


class _Fake:
    """A plugin returning whatever a test gives it."""

    name = "fake"

    def __init__(self, result):
        self.result = result

    def contour(self, case):
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


@pytest.mark.parametrize("result, match", [
    ({"Cord": None}, "'Cord', which is not a standard name"),
    ({"Heart": np.ones((2, 2, 2), bool)}, "fake.*Heart.*shape"),
    ({"Heart": "mask"}, "fake.*Heart"),
    (RuntimeError("kaput"), "'fake' failed on case .*RuntimeError: kaput"),
    ([1, 2], "returned list"),
])
def test_a_bad_plugin_result_is_reported_with_the_plugins_name(monkeypatch, result, match):
    import airtp.contouring as contouring

    monkeypatch.setattr(contouring.plugins, "load", lambda group, name: (lambda: _Fake(result)))
    case = phantoms.lung("left", seed=0, spacing_mm=(6.0, 6.0, 6.0))
    names = list(case.structures)
    with pytest.raises(ContouringError, match=match):
        contour(case, "fake")
    assert list(case.structures) == names  # nothing added before the check failed


def test_skipped_and_empty_contours_are_reported(monkeypatch):
    import airtp.contouring as contouring

    case = phantoms.lung("left", seed=0, spacing_mm=(6.0, 6.0, 6.0))
    result = Contours({"Liver": np.zeros(case.grid.shape, bool)}, {"Kidney_L": "not in the field of view"})
    monkeypatch.setattr(contouring.plugins, "load", lambda group, name: (lambda: _Fake(result)))
    entries = {e.name: e for e in contour(case, "fake").entries}
    assert entries["Liver"].status == entries["Kidney_L"].status == "skipped"
    assert "Liver" not in case.structures


# ---------------------------------------------------------------------------
# TotalSegmentator adapter (plugins/airtp-totalsegmentator), tested without TotalSegmentator
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ts():
    """The adapter module, imported from its source folder."""
    spec = importlib.util.spec_from_file_location(
        "airtp_totalsegmentator", TS_PLUGIN / "src" / "airtp_totalsegmentator" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_totalsegmentator_classes_map_to_standard_names(ts):
    for task, classes in ts.CLASS_MAP.items():
        assert task in ts.TASK_DATASETS
        for cls, name in classes.items():
            m = match_name(name)
            assert (m.status, m.standard) == (MATCHED, name), (task, cls, m)
            # a class of one side maps to that side
            assert not cls.endswith("_left") or name.endswith("_L"), (cls, name)
            assert not cls.endswith("_right") or name.endswith("_R"), (cls, name)
    assert ts.CLASS_MAP["head_glands_cavities"]["parotid_gland_left"] == "Parotid_L"
    assert ts.CLASS_MAP["total"]["spinal_cord"] == "SpinalCord"


def test_totalsegmentator_lobes_make_one_lung_each(ts):
    labels = np.array([[[0, 10, 11, 12], [13, 14, 79, 0]]])
    class_ids = {10: "lung_upper_lobe_left", 11: "lung_lower_lobe_left", 12: "lung_upper_lobe_right",
                 13: "lung_middle_lobe_right", 14: "lung_lower_lobe_right", 79: "spinal_cord", 5: "liver"}
    out = ts.labels_to_structures(labels, class_ids, "total")
    assert set(out) == {"Lung_L", "Lung_R", "SpinalCord"}
    assert out["Lung_L"].sum() == 2 and out["Lung_R"].sum() == 3


def test_totalsegmentator_weights_are_looked_for_not_downloaded(ts, tmp_path, monkeypatch):
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(tmp_path))
    assert ts.weights_dir() == tmp_path
    assert ts.missing_weights(["head_glands_cavities"]) == {"head_glands_cavities": [775]}
    (tmp_path / "Dataset775_head_glands_cavities_492subj").mkdir()
    assert ts.missing_weights(["head_glands_cavities"]) == {}
    assert ts.missing_weights(["total"]) == {"total": [291, 292, 293, 294, 295]}
    with pytest.raises(ContouringError, match="unknown task"):
        ts.TotalSegmentatorContouring(tasks=["liver_vessels"])


def test_totalsegmentator_plugin_installs_and_says_clearly_what_is_missing(tmp_path):
    pytest.importorskip("setuptools", minversion="70.1")
    if importlib.util.find_spec("totalsegmentator") is not None:
        pytest.skip("TotalSegmentator is installed here: the missing-package error cannot be checked")
    src = tmp_path / "src"
    shutil.copytree(TS_PLUGIN, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(site), str(src)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    case = phantoms.lung("left", seed=0, spacing_mm=(6.0, 6.0, 6.0)).save(tmp_path / "case.npz")
    script = textwrap.dedent(f"""
        import airtp_totalsegmentator
        from airtp import Case
        from airtp.contouring import available, contour
        from airtp.errors import AirtpError
        assert airtp_totalsegmentator.__file__.startswith({str(site)!r})
        assert "totalsegmentator" in available(), available()
        try:
            contour(Case.load({str(case)!r}), "totalsegmentator")
        except AirtpError as exc:
            print("ERROR:", exc)
    """)
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ERROR:" in out.stdout and "totalsegmentator" in out.stdout and "not installed" in out.stdout
    r = subprocess.run([sys.executable, "-m", "airtp", "contour", str(case), "--plugin", "totalsegmentator"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and "not installed" in r.stderr and "Traceback" not in r.stderr


def test_cli_contour_writes_the_case(tmp_path):
    case = phantoms.lung("left", seed=0, spacing_mm=(6.0, 6.0, 6.0))
    case.structures.remove("Body")
    src = case.save(tmp_path / "in.npz")
    r = subprocess.run([sys.executable, "-m", "airtp", "contour", str(src), "--plugin", "threshold", "--out",
                        str(tmp_path / "out.npz")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "Body" in r.stdout and "added" in r.stdout
    assert "Body" in Case.load(tmp_path / "out.npz").structures
