"""Photon dose engine: Siddon, pencil-beam matrix vs a Python reference, water data, bad input."""

import json

import numpy as np
import pytest

from airtp import _core, core
from airtp.beams import Beam, BeamletGrid, equispaced_beams
from airtp.case import Case, Prescription
from airtp.dose import BeamModel, HuDensityTable, dose_influence, dose_of_aperture, dose_of_fluence
from airtp.dose.commission import commission, water_phantom
from airtp.errors import AirtpError, BeamError, DoseError
from airtp.grid import Grid
from airtp.structures import StructureSet

MODEL = BeamModel.load()


# --------------------------------------------------------------------------- slow readable references
def siddon_reference(density, grid: Grid, a, b):
    """Radiological path a -> b: all plane crossings (Siddon 1985), sorted, midpoints looked up."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = b - a
    lo = np.asarray(grid.origin_mm) - 0.5 * np.asarray(grid.spacing_mm)
    alphas = [0.0, 1.0]
    for k in range(3):
        if d[k] != 0:
            planes = lo[k] + np.arange(grid.shape[k] + 1) * grid.spacing_mm[k]
            al = (planes - a[k]) / d[k]
            alphas.extend(al[(al > 0) & (al < 1)])
    alphas = np.unique(alphas)
    total = 0.0
    for a0, a1 in zip(alphas[:-1], alphas[1:]):
        mid = a + 0.5 * (a0 + a1) * d
        idx = np.floor((mid - lo) / np.asarray(grid.spacing_mm)).astype(int)
        if np.all(idx >= 0) and np.all(idx < np.asarray(grid.shape)):
            total += (a1 - a0) * density[tuple(idx)]
    return total * np.linalg.norm(d)


def reference_matrix(case, D, cutoff_mm, model=MODEL):
    """Dense matrix computed voxel by voxel, beamlet by beamlet, with the exact model (no tables)."""
    density = HuDensityTable.load()(case.ct_hu)
    pts = D.grid.index_to_mm(np.column_stack(np.unravel_index(D.voxels, D.grid.shape)))
    out = np.zeros(D.matrix.shape)
    for bi, beam in enumerate(D.beams):
        cols = np.flatnonzero(D.beamlets["beam"] == bi)
        src = beam.source_mm()
        bx, by, z = beam.project(pts)
        depth = np.array([siddon_reference(density, case.grid, src, p) for p in pts])
        g = D.beamlet_grids[bi]
        for c in cols:
            out[:, c] = model.beamlet_dose(bx - D.beamlets["x_mm"][c], by - D.beamlets["y_mm"][c], depth, z, g.size_mm, cutoff_mm)
    return out


def small_case():
    """A 60 x 64 x 56 mm phantom (4 mm voxels): water body with lung and bone blocks, a small target."""
    grid = Grid((14, 16, 15), (4.0, 4.0, 4.0), (-26.0, -30.0, -28.0))
    hu = np.full(grid.shape, -1000, np.int16)
    hu[1:-1, 2:-2, 1:-1] = 0
    hu[3:7, 4:8, 3:12] = -740  # lung-like
    hu[8:11, 9:12, 5:9] = 900  # bone-like
    body = hu > -900
    body[3:7, 4:8, 3:12] = True
    ptv = np.zeros(grid.shape, bool)
    ptv[6:9, 7:10, 6:9] = True
    return Case(hu, StructureSet(grid, {"Body": body, "PTV": ptv}), [Prescription("PTV", 60, 30)], patient_id="small")


# --------------------------------------------------------------------------- geometry
def test_iec_beam_geometry():
    b0 = Beam(0, (0, 0, 0))
    assert np.allclose(b0.source_mm(), [0, -1000, 0])  # anterior (LPS y < 0)
    assert np.allclose(Beam(90, (0, 0, 0)).source_mm(), [0, 0, 1000])  # patient left
    assert np.allclose(Beam(270, (0, 0, 0)).source_mm(), [0, 0, -1000])
    assert np.allclose(Beam(90, (0, 0, 0), couch_deg=90).source_mm(), [-1000, 0, 0])
    u, v, w = Beam(30, (5, 6, 7), collimator_deg=20, couch_deg=10).axes()
    assert np.allclose(np.cross(u, v), -w) or np.allclose(np.cross(u, v), w)
    assert np.allclose([u @ v, u @ w, v @ w], 0) and np.allclose([u @ u, v @ v, w @ w], 1)
    # collimator 90 turns BEV x onto the old BEV y; couch rotation leaves a vertical beam's axis alone
    u0, v0, w0 = Beam(0, (0, 0, 0)).axes()
    u90, v90, w90 = Beam(0, (0, 0, 0), collimator_deg=90).axes()
    assert np.allclose(u90, v0) and np.allclose(v90, -u0) and np.allclose(w90, w0)
    assert np.allclose(Beam(0, (0, 0, 0), couch_deg=37).axes()[2], w0)
    bx, by, z = b0.project([[0, 0, 10.0], [20.0, 0, 0]])
    assert np.allclose(bx, [10, 0]) and np.allclose(by, [0, 20]) and np.allclose(z, 1000)


def test_equispaced_beams():
    beams = equispaced_beams((1.0, 2.0, 3.0), 9)
    assert [b.gantry_deg for b in beams] == [0, 40, 80, 120, 160, 200, 240, 280, 320]
    assert all(b.isocenter_mm == (1.0, 2.0, 3.0) for b in beams) and beams[2].name == "G80"
    with pytest.raises(BeamError):
        equispaced_beams((0, 0, 0), 0)
    with pytest.raises(BeamError, match="isocentre"):
        Beam(0, (0, float("nan"), 0))


def test_siddon_matches_reference():
    rng = np.random.default_rng(1)
    grid = Grid((7, 9, 8), (3.0, 2.0, 2.5), (-9.0, -8.0, -9.0))
    rho = rng.uniform(0, 2, grid.shape).astype(np.float32)
    pts = rng.uniform(-12, 12, (40, 3))  # some beyond the grid: the ray leaves it before the point
    pts[:5] = grid.index_to_mm([[0, 0, 0], [6, 8, 7], [3, 4, 4], [6, 0, 7], [0, 8, 0]])
    # sources on every side, so that rays step both ways along each axis and leave through each face
    for src in ([40.0, -300.0, 25.0], [-35.0, 280.0, -20.0], [300.0, 10.0, -30.0], [-20.0, 30.0, 310.0]):
        got = _core.radiological_path(rho, grid.origin_mm, grid.spacing_mm, np.array(src), pts)
        want = [siddon_reference(rho, grid, np.array(src), p) for p in pts]
        assert np.allclose(got, want, rtol=1e-9, atol=1e-9), src
    # axis-parallel ray through water: path length equals the distance inside the grid
    water = np.ones(grid.shape, np.float32)
    y_in = grid.origin_mm[1] - 1.0
    got = _core.radiological_path(water, grid.origin_mm, grid.spacing_mm, [0.0, -100.0, 0.0], np.array([[0.0, 0.0, 0.0]]))
    assert got[0] == pytest.approx(0.0 - y_in, abs=1e-9)


# --------------------------------------------------------------------------- matrix
@pytest.fixture(scope="module")
def small():
    case = small_case()
    beams = [Beam(30, (2, 1, 0), collimator_deg=15, couch_deg=20, name="oblique"), Beam(270, (2, 1, 0), name="lateral")]
    D = dose_influence(case, beams, beamlet_mm=5.0, margin_mm=5.0, cutoff_mm=30.0, backend="cpu")
    return case, beams, D


def test_matrix_matches_python_reference(small):
    case, beams, D = small
    m = D.matrix
    assert m.dtype == np.float32 and m.format == "csc" and m.has_sorted_indices
    assert m.shape == (int(case.structures["Body"].sum()), len(D.beamlets))
    ref = reference_matrix(case, D, 30.0)
    dense = m.toarray()
    scale = ref.max()
    assert np.allclose(dense, ref, rtol=2e-3, atol=1e-4 * scale)
    # the same pairs are stored (within the cut-off), apart from exact ties
    assert abs(int(m.nnz) - int(np.count_nonzero(ref))) <= 0.001 * m.nnz


def test_matrix_rows_are_body_voxels_and_columns_cover_target(small):
    case, beams, D = small
    body = case.structures["Body"]
    assert np.array_equal(D.voxels, np.flatnonzero(body))
    for bi, beam in enumerate(beams):
        g = D.beamlet_grids[bi]
        bx, by, _ = beam.project(case.grid.index_to_mm(np.argwhere(case.structures["PTV"])))
        cx, cy = g.centres()
        for x, y in zip(bx, by):  # every target point lies in an active beamlet
            assert np.any((np.abs(cx - x) <= g.size_mm[0] / 2 + 1e-9) & (np.abs(cy - y) <= g.size_mm[1] / 2 + 1e-9))
        # margin 5 mm: no active beamlet is farther than size/2 + margin from every target point
        far = [np.min(np.maximum(np.abs(bx - x), np.abs(by - y))) for x, y in zip(cx, cy)]
        assert max(far) <= 2.5 + 5.0 + 1e-9


def test_products_and_fluence_dose_agree(small):
    case, beams, D = small
    rng = np.random.default_rng(0)
    w = rng.uniform(0, 2, D.n_beamlets).astype(np.float32)
    dv = D.dose_vector(w)
    assert np.allclose(dv, D.matrix @ w, rtol=1e-5, atol=1e-7)
    g = rng.uniform(-1, 1, D.matrix.shape[0]).astype(np.float32)
    assert np.allclose(D.gradient(g), D.matrix.T @ g, rtol=1e-4, atol=1e-6)
    # the same dose without storing the matrix
    fl = []
    for bi, grid in enumerate(D.beamlet_grids):
        wm = np.zeros(grid.active.shape, np.float32)
        wm[grid.active] = w[D.beam_columns(bi)]
        fl.append(BeamletGrid(grid.x0_mm, grid.y0_mm, grid.size_mm, grid.active, wm))
    direct = dose_of_fluence(case, beams, fl, cutoff_mm=30.0, backend="cpu")
    assert np.allclose(direct, D.dose(w), rtol=1e-5, atol=1e-6 * direct.max())


def test_depths_are_siddon_paths_where_reached(small):
    import airtp.dose.engine as E

    case, beams, D = small
    s = E._setup(case, None, None, None, 30.0, structures=False)
    problem, _ = E._problem(s, beams, D.beamlet_grids)
    depth = _core.pencil_depths(problem)
    pts = D.grid.index_to_mm(np.column_stack(np.unravel_index(D.voxels, D.grid.shape)))
    for b, beam in enumerate(beams):
        reached = ~np.isnan(depth[b])
        counts = np.diff(D.matrix[:, D.beam_columns(b)].tocsr().indptr)
        assert np.array_equal(reached, counts > 0)
        want = _core.radiological_path(s.density, case.grid.origin_mm, case.grid.spacing_mm, beam.source_mm(), pts[reached])
        assert np.allclose(depth[b][reached], want, rtol=1e-6)


def test_coarse_dose_grid_resamples_structures():
    case = small_case()
    D = dose_influence(case, [Beam(0, (0, 0, 0))], dose_grid_mm=6.0, cutoff_mm=30.0)
    assert D.grid.spacing_mm == (6.0, 6.0, 6.0)
    assert D.structures["PTV"].shape == D.grid.shape and D.structures["PTV"].any()
    assert np.array_equal(D.voxels, np.flatnonzero(D.structures["Body"]))
    assert D.matrix.shape[0] == D.voxels.size


@pytest.mark.skipif(core.backend() != "cuda", reason="no CUDA device: the CUDA kernels are compiled but unverified here")
def test_cuda_equals_cpu(small):
    from airtp.dose.engine import CPU_GPU_ATOL_OF_MAX, CPU_GPU_RTOL

    case, beams, D = small
    G = dose_influence(case, beams, cutoff_mm=30.0, backend="cuda")
    assert G.backend == "cuda" and G.matrix.has_sorted_indices
    # the same pairs, apart from ties at the cut-off (fused multiply-adds on the GPU)
    assert abs(G.nnz - D.nnz) <= 1e-4 * D.nnz
    assert np.allclose(G.matrix.toarray(), D.matrix.toarray(), rtol=CPU_GPU_RTOL, atol=CPU_GPU_ATOL_OF_MAX * D.matrix.data.max())
    w = np.linspace(0, 1, D.n_beamlets, dtype=np.float32)
    assert np.allclose(D.dose_vector(w, backend="cuda"), D.dose_vector(w), rtol=1e-5, atol=1e-7)
    g = np.linspace(-1, 1, D.matrix.shape[0], dtype=np.float32)
    assert np.allclose(D.gradient(g, backend="cuda"), D.gradient(g), rtol=1e-5, atol=1e-7)
    fl = [BeamletGrid(gr.x0_mm, gr.y0_mm, gr.size_mm, gr.active, gr.active.astype(np.float32)) for gr in D.beamlet_grids]
    gpu = dose_of_fluence(case, beams, fl, cutoff_mm=30.0, backend="cuda")
    cpu = dose_of_fluence(case, beams, fl, cutoff_mm=30.0, backend="cpu")
    assert np.allclose(gpu, cpu, rtol=CPU_GPU_RTOL, atol=CPU_GPU_ATOL_OF_MAX * cpu.max())


# --------------------------------------------------------------------------- water data
@pytest.fixture(scope="module")
def water():
    return commission(fields_cm=(5, 10))


def test_water_pdd_dmax(water):
    assert 12.0 <= water["dmax_mm"] <= 18.0
    pdd = water["pdd_10x10_percent"]
    for depth, published in (("50", 86.0), ("100", 66.5), ("200", 38.5)):
        assert abs(pdd[depth] - published) <= 2.0, (depth, pdd[depth])
    assert water["dose_at_dmax_gy_per_unit"] == pytest.approx(0.01, rel=0.01)


def test_water_penumbra_and_output(water):
    assert 3.0 <= water["penumbra_80_20_mm_at_100mm"]["mean"] <= 8.0
    assert 0.87 <= water["output_factors_at_100mm_rel_10x10"]["5x5"] <= 0.95


def test_inverse_square_in_air():
    grid = Grid((3, 81, 3), (2.0, 5.0, 2.0), (-2.0, -200.0, -2.0))
    hu = np.full(grid.shape, -1024, np.int16)  # density 0: radiological depth 0 everywhere
    case = Case(hu, StructureSet(grid, {"Body": np.ones(grid.shape, bool)}))
    beam = Beam(0, (0.0, 0.0, 0.0))
    dose = dose_of_fluence(case, [beam], [BeamletGrid.field(-50, 50, -50, 50)])[1, :, 1]
    z = 1000.0 + grid.axes_mm()[1]
    ratio = dose * z**2
    assert np.allclose(ratio, ratio[40], rtol=2e-3)


def test_lung_slab_raises_dose_behind_it():
    hom = water_phantom(depth_mm=200.0, half_width_mm=20.0, dy=2.0, dx=2.0)
    het = water_phantom(depth_mm=200.0, half_width_mm=20.0, dy=2.0, dx=2.0)
    depth = het.grid.axes_mm()[1]
    slab = (depth > 30.0) & (depth < 80.0)
    het.ct_hu[:, slab, :] = -740  # relative electron density 0.25
    assert np.allclose(HuDensityTable.load()(np.int16(-740)), 0.25)
    f = BeamletGrid.field(-50, 50, -50, 50)
    b = Beam(0, (0.0, 0.0, 0.0))
    d_hom = dose_of_fluence(hom, [b], [f])[1, :, hom.grid.shape[2] // 2]
    d_het = dose_of_fluence(het, [b], [f])[1, :, het.grid.shape[2] // 2]
    k = int(np.argmin(np.abs(depth - 150.0)))
    assert d_het[k] > 1.1 * d_hom[k]
    # as the smaller radiological depth predicts: the water dose at depth - 0.75 * 50 mm, same distance from the source
    d_rad = depth[k] - 0.75 * 50.0
    xs = (np.arange(20) - 9.5) * 5.0
    X, Y = np.meshgrid(xs, xs)
    expected = MODEL.beamlet_dose(-X.ravel(), -Y.ravel(), d_rad, 1000.0 + depth[k]).sum()
    assert d_het[k] == pytest.approx(expected, rel=5e-3)


def test_aperture_equals_open_field():
    case = water_phantom(depth_mm=120.0, half_width_mm=70.0, dy=2.0, dx=2.0)
    b = Beam(0, (0.0, 0.0, 0.0))
    field = dose_of_fluence(case, [b], [BeamletGrid.field(-50, 50, -50, 50)])
    leaves = np.tile([-50.0, 50.0], (20, 1))
    ap = dose_of_aperture(case, b, leaves, leaf_width_mm=5.0)
    assert np.allclose(ap, field, rtol=1e-3, atol=1e-3 * field.max())
    half = dose_of_aperture(case, b, np.tile([-50.0, 0.0], (20, 1)))
    x = case.grid.axes_mm()[2]
    assert half[1, 50, x > 30].max() < 0.05 * field.max() and half[1, 50, x < -10].min() > 0.8 * field[1, 50, 70]


# --------------------------------------------------------------------------- bad input
def test_isocentre_outside_ct_names_the_beam():
    case = small_case()
    with pytest.raises(BeamError, match="beam 'far'.*outside the CT"):
        dose_influence(case, [Beam(0, (0, 0, 0)), Beam(90, (500.0, 0, 0), name="far")])


def test_beam_missing_the_body():
    case = small_case()
    body = np.zeros(case.grid.shape, bool)
    body[:, :, :4] = True  # body only at low x; target far from it
    case.structures.add("Body", body, replace=True)
    case.structures.add("PTV2", np.zeros(case.grid.shape, bool))
    m = np.zeros(case.grid.shape, bool)
    m[10:12, 10:12, 12:14] = True
    case.structures.add("PTV3", m)
    with pytest.raises(BeamError, match="beam 'G0' misses the body"):
        dose_influence(case, [Beam(0, (0, 0, 20.0))], targets="PTV3", cutoff_mm=10.0, margin_mm=0.0)


def test_empty_target_and_unknown_files():
    case = small_case()
    case.structures.add("Empty", np.zeros(case.grid.shape, bool))
    with pytest.raises(DoseError, match="target 'Empty' is empty"):
        dose_influence(case, [Beam(0, (0, 0, 0))], targets=["Empty"])
    with pytest.raises(DoseError, match="no_such_beam.json"):
        dose_influence(case, [Beam(0, (0, 0, 0))], model="no_such_beam.json")
    with pytest.raises(DoseError, match="no_such_beam.json"):
        BeamModel.load("no_such_beam.json")
    assert issubclass(BeamError, AirtpError) and issubclass(DoseError, AirtpError)


def test_beam_data_file_round_trip(tmp_path):
    p = tmp_path / "mine.json"
    data = MODEL.to_dict()
    p.write_text(json.dumps(data))
    m = BeamModel.load(p)
    assert m.components == MODEL.components and m.normalisation == MODEL.normalisation
    assert "targets" in MODEL.provenance and "fitted_figures" in MODEL.provenance
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"components": [{"name": "x"}]}))
    with pytest.raises(DoseError, match="bad.json"):
        BeamModel.load(bad)


def test_commission_command_json(capsys):
    from airtp.cli import main

    assert main(["commission", "--json", "--fields", "5,10"]) == 0
    fig = json.loads(capsys.readouterr().out)
    assert set(fig["pdd_10x10_percent"]) >= {"50", "100", "200"}
    assert "5x5" in fig["output_factors_at_100mm_rel_10x10"]
    assert main(["commission", "--beam-data", "missing_beam.json"]) == 2
    assert "missing_beam.json" in capsys.readouterr().err
