"""Plan report (airtp.report): slice orientation, PNG figures, the HTML page."""

import dataclasses
import html
import sys

import numpy as np
import pytest

from airtp import Grid, phantoms
from airtp.evaluation.dvh import compute_dvhs
from airtp.evaluation.scorecard import score_plan
from airtp.report import (
    ReportError, default_point_mm, dose_slices_figure, dvh_figure, orthogonal_slices, structure_colour, write_report,
)
from airtp.report.html import render_html
from airtp.report.plots import TARGET_COLOURS, default_structures, target_names

mpimg = pytest.importorskip("matplotlib.image")

PATIENT_ID = "hn<2>&\"seed0' $\\frac{$"


# Slice orientation -------------------------------------------------------------

GRID = Grid((10, 12, 14), (3.0, 2.0, 1.5), (-13.5, -11.0, -9.75))


def pixel_mm(view, row, col):
    """Patient coordinates (horizontal, vertical) mm of a pixel centre, from the view's extent."""
    left, right, bottom, top = view.extent
    nr, nc = view.image.shape
    return left + (col + 0.5) * (right - left) / nc, top + (row + 0.5) * (bottom - top) / nr


def where(image):
    r, c = np.argwhere(image)[0]
    return int(r), int(c)


def test_slices_shapes_and_coordinates():
    z, y, x = np.meshgrid(*GRID.axes_mm(), indexing="ij")
    point = GRID.index_to_mm((4, 5, 6))
    sx, sy, sz = (orthogonal_slices(a, GRID, point) for a in (x, y, z))
    assert sx["axial"].image.shape == (12, 14)
    assert sx["coronal"].image.shape == (10, 14)
    assert sx["sagittal"].image.shape == (10, 12)
    assert (sx["axial"].index, sx["coronal"].index, sx["sagittal"].index) == (4, 5, 6)
    # Axial: x grows to the image right (patient left on the right), y grows downwards (anterior at the top).
    assert np.all(np.diff(sx["axial"].image, axis=1) > 0)
    assert np.all(np.diff(sy["axial"].image, axis=0) > 0)
    # Coronal: x to the right, z decreasing downwards (superior at the top).
    assert np.all(np.diff(sx["coronal"].image, axis=1) > 0)
    assert np.all(np.diff(sz["coronal"].image, axis=0) < 0)
    # Sagittal: y grows to the right (anterior on the left), superior at the top.
    assert np.all(np.diff(sy["sagittal"].image, axis=1) > 0)
    assert np.all(np.diff(sz["sagittal"].image, axis=0) < 0)
    # The extents map every pixel to its patient coordinates (physical aspect).
    for plane, (h, v) in {"axial": (sx, sy), "coronal": (sx, sz), "sagittal": (sy, sz)}.items():
        view = h[plane]
        for row, col in ((0, 0), (3, 7), (view.image.shape[0] - 1, view.image.shape[1] - 1)):
            ph, pv = pixel_mm(view, row, col)
            assert ph == pytest.approx(h[plane].image[row, col])
            assert pv == pytest.approx(v[plane].image[row, col])


def test_markers_left_anterior_superior():
    k, j, i = 4, 5, 6
    point = GRID.index_to_mm((k, j, i))
    vol = np.zeros(GRID.shape, dtype=np.uint8)
    vol[k, j, 12] = 1  # patient left (x large)
    vol[k, 1, i] = 2  # anterior (y small)
    vol[8, j, i] = 3  # superior (z large)
    s = orthogonal_slices(vol, GRID, point)
    ax, co, sa = s["axial"].image, s["coronal"].image, s["sagittal"].image
    # Patient left: right half of the axial and coronal images.
    assert where(ax == 1)[1] > ax.shape[1] / 2 and where(co == 1)[1] > co.shape[1] / 2
    # Anterior: top half of the axial image, left half of the sagittal image.
    assert where(ax == 2)[0] < ax.shape[0] / 2 and where(sa == 2)[1] < sa.shape[1] / 2
    # Superior: top half of the coronal and sagittal images.
    assert where(co == 3)[0] < co.shape[0] / 2 and where(sa == 3)[0] < sa.shape[0] / 2
    assert s["axial"].sides == ("R", "L", "P", "A")
    assert s["coronal"].sides == ("R", "L", "I", "S")
    assert s["sagittal"].sides == ("A", "P", "I", "S")
    # Where the marker is drawn is where it is in the patient.
    z, y, x = GRID.index_to_mm((k, j, 12))
    assert pixel_mm(s["axial"], *where(ax == 1)) == pytest.approx((x, y))
    z, y, x = GRID.index_to_mm((8, j, i))
    assert pixel_mm(s["sagittal"], *where(sa == 3)) == pytest.approx((y, z))


def test_slice_point_outside_grid():
    with pytest.raises(ReportError, match="outside the grid"):
        orthogonal_slices(np.zeros(GRID.shape), GRID, (0.0, 0.0, 500.0))
    with pytest.raises(ReportError, match="three finite"):
        orthogonal_slices(np.zeros(GRID.shape), GRID, (0.0, np.nan, 0.0))


def test_colours_fixed_and_targets_warm():
    targets = target_names(["Parotid_L", "PTV56", "PTV70", "CTV"])
    assert targets == ["PTV70", "PTV56", "CTV"]
    assert target_names(["GTV", "CTV", "PTV"]) == ["PTV", "CTV", "GTV"]
    assert [structure_colour(t, targets) for t in targets] == list(TARGET_COLOURS[:3])
    assert structure_colour("SomethingElse") == structure_colour("SomethingElse")
    assert structure_colour("Parotid_L") not in TARGET_COLOURS
    assert structure_colour("SomethingElse") not in TARGET_COLOURS
    assert structure_colour("PTVHighOPT") in TARGET_COLOURS


# Phantom report ------------------------------------------------------------------

@pytest.fixture(scope="module")
def plan():
    case = phantoms.head_neck(n_ptv=2, seed=0)
    case = dataclasses.replace(case, patient_id=PATIENT_ID)
    g = case.grid
    z, y, x = np.meshgrid(*g.axes_mm(), indexing="ij")
    centre = g.index_to_mm(np.argwhere(case.structures["PTV70"]).mean(axis=0))
    r2 = (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2
    final = (70.0 * np.exp(-r2 / (2 * 40.0**2))).astype(np.float32)
    initial = (0.9 * final + 3.0 * np.exp(-r2 / (2 * 80.0**2))).astype(np.float32)
    names = [n for n in case.structures if n != "Body"]
    dvhs = compute_dvhs(final, case.structures, grid=g, names=names)
    dvhs_initial = compute_dvhs(initial, case.structures, grid=g, names=names)
    score_initial = score_plan(case, initial, "hn")
    score_final = score_plan(case, final, "hn")
    return dict(case=case, dose=final, dvhs=dvhs, dvhs_initial=dvhs_initial, score_initial=score_initial,
                score_final=score_final)


@pytest.fixture(scope="module")
def report(plan, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "nested"
    summary = {"site": "hn", "technique": "IMRT <9 fields>",
               "score": {"initial": plan["score_initial"].total, "final": plan["score_final"].total},
               "timings_s": {"dose": 1.5, "optimize": 12.25}}
    path = write_report(out, case=plan["case"], dose=plan["dose"], dvhs=plan["dvhs"],
                        score_initial=plan["score_initial"], score_final=plan["score_final"], summary=summary,
                        reference_dvhs=plan["dvhs_initial"])
    return path


def check_png(path, min_h, min_w):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert img.shape[0] >= min_h and img.shape[1] >= min_w
    assert float(img[..., :3].var()) > 0
    return img


def test_report_files(report):
    out = report.parent
    assert report.name == "report.html"
    assert sorted(p.name for p in out.iterdir()) == ["dose_slices.png", "dvh.png", "report.html"]  # no temp files
    dvh = check_png(out / "dvh.png", 400, 700)
    slices = check_png(out / "dose_slices.png", 400, 1200)
    assert slices.shape[1] > 2 * slices.shape[0]  # three panels side by side
    assert dvh.shape[1] > dvh.shape[0]


def test_report_html(report, plan):
    text = report.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert html.escape(PATIENT_ID) in text and PATIENT_ID not in text
    assert "IMRT &lt;9 fields&gt;" in text
    assert 'src="dvh.png"' in text and 'src="dose_slices.png"' in text
    assert "<link" not in text and "<script" not in text and "http" not in text  # self-contained
    for word in ("StructId", "MetricType", "Input", "Output initial", "Score initial", "Output final", "Score final",
                 "Final Score", "D95 (Gy)", "D2 (Gy)", "Volume (cc)"):
        assert word in text, word
    init, final = plan["score_initial"], plan["score_final"]
    assert f"<td class=\"num\">{init.total:.2f}</td>" in text
    assert f"<td class=\"num\">{final.total:.2f}</td>" in text
    section = text[text.index("<h2>Scorecard</h2>"):text.index("<h2>DVH</h2>")]
    rows = [line for line in section.splitlines() if line.startswith("<tr><td>")]  # items, not totals
    totals = [line for line in section.splitlines() if line.startswith('<tr class="total"><td>Final Score</td>')]
    assert len(totals) == 1
    assert f"{init.total:.2f}</td>" in totals[0] and totals[0].endswith(f"{final.total:.2f}</td></tr>")
    assert len(rows) == len(final.results)
    for ri, rf, row in zip(init.results, final.results, rows):
        assert f"<td>{html.escape(rf.struct_id or rf.item.structure)}</td><td>{rf.item.metric}</td>" in row
        if rf.scored:
            assert f"{ri.score:.2f}</td>" in row and f"{rf.score:.2f}</td>" in row
        else:
            assert "not scored" in row
            assert html.escape(rf.reason) in text
    for name, d in plan["dvhs"].items():
        assert f"</span>{html.escape(name)}</td><td class=\"num\">{d.volume_cc:.2f}</td>" in text
    d70 = plan["dvhs"]["PTV70"]
    assert f"{d70.dose_at_percent(95.0):.2f}" in text and f"{d70.max_gy:.2f}" in text


def test_single_score_column(plan):
    text = render_html(case=plan["case"], dvhs=plan["dvhs"], score_final=plan["score_final"])
    assert "Score final" in text and "Score initial" not in text
    assert f"{plan['score_final'].total:.2f}" in text
    text = render_html(case=plan["case"], dvhs=plan["dvhs"])
    assert "Scorecard" not in text and "DVH metrics" in text


def test_figures_direct(plan, tmp_path):
    case, dose = plan["case"], plan["dose"]
    point = default_point_mm(case)
    assert case.structures["PTV70"][tuple(np.rint(case.grid.mm_to_index(point)).astype(int))]
    names = default_structures(case)
    assert names[:2] == ["PTV70", "PTV56"] and "SpinalCord" in names and "Body" not in names
    p = dose_slices_figure(case, dose, tmp_path / "s.png", structures=["PTV70", "SpinalCord"],
                           point_mm=point, dose_range=(5.0, 75.0))
    check_png(p, 300, 900)
    q = dvh_figure({"PTV70": plan["dvhs"]["PTV70"]}, tmp_path / "d.png", title="one <structure>")
    check_png(q, 300, 500)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["d.png", "s.png"]
    with pytest.raises(ReportError, match="NotThere"):
        dose_slices_figure(case, dose, tmp_path / "x.png", structures=["NotThere"])
    with pytest.raises(ReportError, match="no non-empty"):
        dvh_figure({}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
    if "matplotlib.pyplot" in sys.modules:  # no figure left in pyplot's global state
        assert not sys.modules["matplotlib.pyplot"].get_fignums()
    with pytest.raises(ReportError, match="dose_range"):
        dose_slices_figure(case, dose, tmp_path / "x.png", dose_range=(10.0, 5.0))
    assert not (tmp_path / "x.png").exists()


def test_slices_without_prescription_or_dose(tmp_path):
    case = phantoms.lung(side="left", seed=0, spacing_mm=(5.0, 5.0, 5.0))
    case = dataclasses.replace(case, prescriptions=[])
    dose = np.zeros(case.grid.shape, dtype=np.float32)
    p = dose_slices_figure(case, dose, tmp_path / "s.png")
    check_png(p, 300, 900)
    assert default_point_mm(case, dose) == pytest.approx(case.grid.index_to_mm((np.array(case.grid.shape) - 1) / 2))
    assert default_structures(case)[:3] == ["PTV", "CTV", "GTV"]
