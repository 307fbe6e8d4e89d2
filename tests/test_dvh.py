"""DVH engine and metrics: NumPy reference, analytic cases, bad input.

Tolerances: histograms and voxel counts are exact against NumPy with the same
edges; exact statistics (min, max, mean) to 1e-9 relative; doses read from the
interpolated curve within one bin width (0.01 Gy) where the answer is exact
on the voxels; the voxelised sphere within 2 % of its volume.
"""

import numpy as np
import pytest

from airtp import _core, core
from airtp.evaluation import metrics as M
from airtp.evaluation.dvh import DoseError, PreparedStructures, check_dose, compute_dvhs

W = 0.01


def numpy_dvh(dose, mask, n_bins, weights=None):
    sel = mask if weights is None else weights > 0
    w = None if weights is None else weights[sel].astype(np.float64)
    h, _ = np.histogram(dose[sel].astype(np.float64), bins=np.arange(n_bins + 1) * W, weights=w)
    return h


@pytest.fixture(scope="module")
def random_case():
    rng = np.random.default_rng(1)
    dose = (rng.gamma(4.0, 8.0, size=(23, 37, 41))).astype(np.float32)
    masks = {f"s{i}": rng.random(dose.shape) < p for i, p in enumerate([0.01, 0.2, 0.5, 0.9])}
    masks["empty"] = np.zeros(dose.shape, bool)
    masks["one"] = np.zeros(dose.shape, bool)
    masks["one"][3, 4, 5] = True
    return dose, masks


def test_matches_numpy_on_random_data(random_case):
    dose, masks = random_case
    dvhs = compute_dvhs(dose, masks, voxel_volume_cc=1.0)
    n_bins = dvhs["s0"].differential_cc.size
    assert n_bins * W > dose.max()
    for name, m in masks.items():
        d = dvhs[name]
        np.testing.assert_array_equal(d.differential_cc, numpy_dvh(dose, m, n_bins))
        assert d.voxels == m.sum() and d.volume_cc == m.sum()
        if m.any():
            x = dose[m].astype(np.float64)
            assert d.min_gy == x.min() and d.max_gy == x.max()
            assert d.mean_gy == pytest.approx(x.mean(), rel=1e-9)
            # cumulative at the bin edges is exact
            k = np.array([0, 100, 2000, 4000])
            np.testing.assert_array_equal(d.cumulative_cc()[k], [(x >= kk * W).sum() for kk in k])
            # doses read from the curve are within a bin of the voxel order statistics
            xs = np.sort(x)[::-1]
            for n in (1, max(1, len(xs) // 2), len(xs)):
                assert abs(d.dose_at(n) - xs[n - 1]) <= W + 1e-9
        else:
            assert d.empty and np.isnan(d.mean_gy)


def test_weights_partial_volumes(random_case):
    dose, masks = random_case
    rng = np.random.default_rng(2)
    w = np.where(masks["s2"], rng.random(dose.shape), 0).astype(np.float32)
    d = compute_dvhs(dose, {"w": w, "half": masks["s2"] * np.float32(0.5), "full": masks["s2"]})
    n_bins = d["w"].differential_cc.size
    np.testing.assert_allclose(d["w"].differential_cc, numpy_dvh(dose, None, n_bins, weights=w), rtol=1e-9, atol=1e-9)
    assert d["w"].mean_gy == pytest.approx(np.average(dose[w > 0], weights=w[w > 0]), rel=1e-9)
    np.testing.assert_allclose(d["half"].differential_cc, 0.5 * d["full"].differential_cc)
    assert d["half"].dose_at_percent(50) == pytest.approx(d["full"].dose_at_percent(50))


def numpy_runs(mask):
    """(flat start, length) of the runs of voxels along x, in flat order."""
    m = np.asarray(mask).reshape(-1, mask.shape[-1]).astype(np.int8)
    pad = np.zeros((m.shape[0], m.shape[1] + 2), np.int8)
    pad[:, 1:-1] = m
    d = np.diff(pad, axis=1)
    rows_s, xs = np.nonzero(d == 1)
    rows_e, xe = np.nonzero(d == -1)
    return rows_s * mask.shape[-1] + xs, xe - xs


def border_masks(shape, rng):
    """Structures that touch the grid border (first/last voxel, full rows, full grid)."""
    m = {}
    m["full"] = np.ones(shape, bool)
    m["first_voxel"] = np.zeros(shape, bool)
    m["first_voxel"][0, 0, 0] = True
    m["last_voxel"] = np.zeros(shape, bool)
    m["last_voxel"][-1, -1, -1] = True
    m["last_rows"] = np.zeros(shape, bool)
    m["last_rows"][-1, -3:, :] = True  # ends at the last voxel of the array
    m["x_edges"] = np.zeros(shape, bool)
    m["x_edges"][:, :, 0] = m["x_edges"][:, :, -1] = True
    m["z0_plane"] = np.zeros(shape, bool)
    m["z0_plane"][0] = True
    m["tail"] = np.zeros(shape, bool)
    m["tail"][-1, -1, -5:] = True  # a run shorter than a copy block at the end of the dose
    m["random"] = rng.random(shape) < 0.3
    return m


@pytest.fixture(scope="module")
def prepared_case():
    """An odd-sized grid, big enough that large structures are split into several work items."""
    rng = np.random.default_rng(7)
    shape = (29, 53, 67)  # 103k voxels; nx not a multiple of 8
    dose = rng.gamma(3.0, 9.0, size=shape).astype(np.float32)
    dose[0, 0, :3] = 0.0
    masks = border_masks(shape, rng)
    masks["empty"] = np.zeros(shape, bool)
    masks["u8"] = (rng.random(shape) < 0.6).astype(np.uint8)
    w = np.where(rng.random(shape) < 0.5, rng.random(shape), 0).astype(np.float32)
    w[-1, -1, -1] = 0.25  # weighted run at the end of the array
    masks["weights"] = w
    masks["weights_edge"] = np.where(masks["x_edges"], np.float32(0.5), np.float32(0))
    masks["weights_empty"] = np.zeros(shape, np.float32)
    masks["weights_full"] = np.full(shape, 0.125, np.float32)
    return dose, masks


def check_against_numpy(dvhs, dose, masks, vv=1.0):
    n_bins = next(iter(dvhs.values())).differential_cc.size
    assert n_bins * W > dose.max()
    for name, m in masks.items():
        d = dvhs[name]
        weighted = m.dtype.kind == "f"
        sel = (m > 0) if weighted else m.astype(bool)
        x = dose[sel].astype(np.float64)
        w = m[sel].astype(np.float64) if weighted else np.ones_like(x)
        h = np.histogram(x, bins=np.arange(n_bins + 1) * W, weights=w)[0]
        ref = h * vv
        cum_ref = np.append(np.cumsum(h[::-1])[::-1], 0.0) * vv  # counts: exact
        k = np.array([0, 1, n_bins // 3, n_bins // 2, n_bins - 1, n_bins])
        np.testing.assert_allclose(cum_ref[k], [w[x >= kk * W].sum() * vv for kk in k], rtol=1e-12, atol=1e-9)
        assert d.voxels == sel.sum()
        if weighted:
            np.testing.assert_allclose(d.differential_cc, ref, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(d.cumulative_cc(), cum_ref, rtol=1e-12, atol=1e-9)
            assert d.volume_cc == pytest.approx(w.sum() * vv, rel=1e-12)
        else:
            np.testing.assert_array_equal(d.differential_cc, ref)
            np.testing.assert_array_equal(d.cumulative_cc(), cum_ref)
            assert d.volume_cc == sel.sum() * vv
        if sel.any():
            assert d.min_gy == x.min() and d.max_gy == x.max()
            assert d.mean_gy == pytest.approx(np.average(x, weights=w), rel=1e-9)
        else:
            assert d.empty and np.isnan(d.mean_gy) and d.volume_cc == 0
            assert not d.differential_cc.any() and not d.cumulative_cc().any()


def test_prepared_equals_masks_and_numpy(prepared_case):
    dose, masks = prepared_case
    prep = PreparedStructures(masks)
    assert prep.names == tuple(masks) and prep.shape == dose.shape and len(prep) == len(masks)
    assert prep.voxels == {n: int((m > 0).sum()) for n, m in masks.items()}
    a = compute_dvhs(dose, prep)
    b = compute_dvhs(dose, masks)
    check_against_numpy(a, dose, masks)
    # small work items: large structures split into many items, merged
    members = [np.ascontiguousarray(m) for m in masks.values()]
    prep._index = _core.DvhIndex(members, dose.shape, item_voxels=997)
    assert prep._index.n_items > 5 * len(masks)
    c = compute_dvhs(dose, prep)
    check_against_numpy(c, dose, masks)
    for name in masks:
        np.testing.assert_array_equal(a[name].differential_cc, b[name].differential_cc)
        np.testing.assert_array_equal(a[name].cumulative_cc(), b[name].cumulative_cc())
        if masks[name].dtype != np.float32:
            np.testing.assert_array_equal(a[name].differential_cc, c[name].differential_cc)
            np.testing.assert_array_equal(a[name].cumulative_cc(), c[name].cumulative_cc())
        assert (a[name].voxels, a[name].volume_cc) == (b[name].voxels, b[name].volume_cc)
        if not a[name].empty:
            assert (a[name].min_gy, a[name].max_gy) == (b[name].min_gy, b[name].max_gy)
            assert a[name].mean_gy == pytest.approx(b[name].mean_gy, rel=1e-12)


def test_prepared_reused_for_many_doses(prepared_case):
    dose, masks = prepared_case
    prep = PreparedStructures(masks)
    rng = np.random.default_rng(11)
    for scale, vv in ((1.0, 1.0), (0.05, 0.008), (3.0, 0.027)):
        d = (dose * np.float32(scale) + rng.random(dose.shape, np.float32)).astype(np.float32)
        check_against_numpy(compute_dvhs(d, prep, voxel_volume_cc=vv), d, masks, vv=vv)


def test_prepared_runs(prepared_case):
    dose, masks = prepared_case
    prep = PreparedStructures(masks)
    for i, (name, m) in enumerate(masks.items()):
        starts, lengths = prep._index.runs(i)
        s_ref, l_ref = numpy_runs(m > 0)
        np.testing.assert_array_equal(starts, s_ref)
        np.testing.assert_array_equal(lengths, l_ref)
    assert prep.n_runs == sum(len(numpy_runs(m > 0)[0]) for m in masks.values())


def test_prepared_names_and_errors(prepared_case):
    dose, masks = prepared_case
    prep = PreparedStructures(masks)
    sub = compute_dvhs(dose, prep, names=["weights", "random"])
    assert list(sub) == ["weights", "random"]
    np.testing.assert_array_equal(sub["random"].differential_cc, compute_dvhs(dose, masks)["random"].differential_cc)
    from airtp.errors import StructureError

    with pytest.raises(StructureError, match="'nope'"):
        compute_dvhs(dose, prep, names=["nope"])
    with pytest.raises(StructureError, match="shape"):
        compute_dvhs(dose[:, :, :-1], prep)
    with pytest.raises(StructureError, match="'b'"):
        PreparedStructures({"a": np.ones((2, 3, 4), bool), "b": np.ones((2, 3, 5), bool)})
    with pytest.raises(StructureError, match="weights"):
        PreparedStructures({"a": np.full((2, 3, 4), 1.5, np.float32)})
    with pytest.raises(StructureError, match="grid shape"):
        PreparedStructures({})
    assert len(PreparedStructures({}, shape=(2, 3, 4))) == 0
    # the dose checks of check_dose, from the prepared path
    bad = dose.copy()
    bad[3, 4, 5] = np.nan
    bad[-1, -1, -1] = np.inf
    with pytest.raises(DoseError, match="dose has 2 NaN or infinite value"):
        compute_dvhs(bad, prep)
    bad = dose.copy()
    bad[-1, -1, -1] = -0.5
    with pytest.raises(DoseError, match=r"negative values \(minimum -0.5 Gy\)"):
        compute_dvhs(bad, prep)
    with pytest.raises(DoseError, match="is the dose in Gy"):
        compute_dvhs(dose * np.float32(1e5), prep)
    with pytest.raises(DoseError, match="3D"):
        compute_dvhs(dose[0], prep)


def test_prepared_many_bins():
    # more than 2^20 bins: the one-counter histogram path
    rng = np.random.default_rng(9)
    dose = (rng.random((4, 5, 11)) * 50).astype(np.float32)
    masks = {"a": rng.random(dose.shape) < 0.5, "w": rng.random(dose.shape).astype(np.float32)}
    w = 4e-5
    d = compute_dvhs(dose, PreparedStructures(masks), bin_width_gy=w)
    n_bins = d["a"].differential_cc.size
    assert n_bins > 2**20
    for name, m in masks.items():
        sel = m > 0
        wt = m[sel].astype(np.float64) if m.dtype.kind == "f" else None
        ref = np.histogram(dose[sel].astype(np.float64), bins=np.arange(n_bins + 1) * w, weights=wt)[0]
        np.testing.assert_allclose(d[name].differential_cc, ref, rtol=1e-12, atol=1e-12)
        assert d[name].max_gy == dose[sel].max()


def test_negative_zero_and_zero_dose():
    dose = np.zeros((3, 4, 9), np.float32)
    dose[0, 0, :4] = -0.0
    m = {"a": np.ones(dose.shape, bool), "b": np.zeros(dose.shape, bool)}
    m["b"][0, 0, :2] = True
    d = compute_dvhs(dose, PreparedStructures(m))
    assert d["a"].min_gy == 0.0 and d["a"].max_gy == 0.0 and d["a"].mean_gy == 0.0
    assert d["a"].differential_cc.size == 2 and d["a"].differential_cc[0] == dose.size
    assert d["b"].voxels == 2 and d["b"].dose_at(1.0) == 0.0


def test_dose_scan():
    rng = np.random.default_rng(5)
    x = rng.random((7, 9, 11)).astype(np.float32) * 50
    assert _core.dose_scan(x) == (0, float(x.min()), float(x.max()))
    x[1, 2, 3] = -2.5
    assert _core.dose_scan(x)[1] == -2.5
    x[2, 2, 2] = np.nan
    x[3, 3, 3] = -np.inf
    assert _core.dose_scan(x)[0] == 2
    assert _core.dose_scan(np.zeros((0, 3, 4), np.float32)) == (0, 0.0, 0.0)


def test_uniform_dose():
    dose = np.full((6, 7, 8), 42.0, np.float32)
    m = np.ones(dose.shape, bool)
    d = compute_dvhs(dose, {"a": m}, voxel_volume_cc=0.008)["a"]
    assert d.volume_cc == pytest.approx(6 * 7 * 8 * 0.008)
    for v in (0.0, 0.03, 1.0, d.volume_cc, 100.0):
        assert d.dose_at(v) == pytest.approx(42.0)
    assert M.volume_at_dose(d, 42.0, "%") == pytest.approx(100.0)
    assert M.volume_at_dose(d, 41.99, "%") == pytest.approx(100.0)
    assert M.volume_at_dose(d, 42.01, "%") == 0.0
    assert M.dose_at_volume(d, 99.5, "%") == pytest.approx(42.0)
    assert M.mean_dose(d) == M.min_dose(d) == M.max_dose(d) == pytest.approx(42.0)
    assert M.inhomogeneity_index(d) == 0.0


def test_two_level_dose():
    dose = np.full((10, 10, 10), 10.0, np.float32)
    dose[5:] = 20.0
    d = compute_dvhs(dose, {"a": np.ones(dose.shape, bool)})["a"]
    assert M.mean_dose(d) == pytest.approx(15.0)
    for level in (10.5, 15.0, 19.99, 20.0):
        assert M.volume_at_dose(d, level, "%") == pytest.approx(50.0)
    assert M.volume_at_dose(d, 10.0, "%") == pytest.approx(100.0)
    assert M.volume_at_dose(d, 20.001, "%") == 0.0
    assert M.dose_at_volume(d, 50.0, "%") == pytest.approx(20.0)  # min dose of the hottest half
    assert M.dose_at_volume(d, 30.0, "%") == pytest.approx(20.0)
    assert 10.0 <= M.dose_at_volume(d, 60.0, "%") <= 10.0 + W
    assert M.dose_at_volume(d, 0.03, "cc") == pytest.approx(20.0)
    # HI (D2 - D98) / 20 ; D98 is within a bin of 10
    assert M.homogeneity_index(d, 2, 98, 20.0) == pytest.approx(0.5, abs=W / 20)


def test_sphere_in_linear_gradient():
    # 1 mm voxels, sphere radius 15 mm; dose = 1 Gy/mm * (x - x0) + 40
    n, r = 41, 15.0
    z, y, x = np.mgrid[:n, :n, :n].astype(np.float64) - n // 2
    sphere = x**2 + y**2 + z**2 <= r * r
    dose = (40.0 + x).astype(np.float32)
    d = compute_dvhs(dose, {"s": sphere}, voxel_volume_cc=0.001)["s"]
    total = 4 / 3 * np.pi * r**3 / 1000
    assert d.volume_cc == pytest.approx(total, rel=0.01)
    assert M.mean_dose(d) == pytest.approx(40.0, abs=1e-6)  # symmetric
    assert M.min_dose(d) == 25.0 and M.max_dose(d) == 55.0
    for t in (-10.5, -5.5, -0.5, 4.5, 9.5):
        # dose 40 + t falls between two voxel planes (x = t -+ 0.5): the voxels above
        # it stand for the continuous cap x >= t, within the 2 % discretisation error
        h = r - t
        frac = np.pi * h * h * (3 * r - h) / 3 / (4 / 3 * np.pi * r**3)
        assert M.volume_at_dose(d, 40.0 + t, "%") / 100 == pytest.approx(frac, abs=0.02)
    assert M.dose_at_volume(d, 50.0, "%") == pytest.approx(40.0, abs=0.6)
    # D(V - v) equals D at (V - v) directly
    assert M.dose_at_subvolume(d, 1.0) == pytest.approx(d.dose_at(d.volume_cc - 1.0))


def test_conformity_metrics():
    dose = np.zeros((20, 20, 20), np.float32)
    target = np.zeros(dose.shape, bool)
    target[5:15, 5:15, 5:15] = True  # 1000 voxels
    dose[target] = 60.0
    dose[4:16, 4:16, 4:16][~target[4:16, 4:16, 4:16]] = 58.0  # shell below 60: 728 voxels
    body = np.ones(dose.shape, bool)
    dv = compute_dvhs(dose, {"t": target, "b": body}, voxel_volume_cc=1.0)
    t, b = dv["t"], dv["b"]
    assert M.conformity_index(t, b, 60.0) == pytest.approx(1.0)
    assert M.conformity_index(t, b, 57.0) == pytest.approx(1728 / 1000)
    assert M.conformation_number(t, b, 60.0) == pytest.approx(1.0)
    assert M.conformation_number(t, b, 57.0) == pytest.approx(1000 * 1000 / (1000 * 1728))
    assert M.modified_gradient_index(b, 29.0, 59.0) == pytest.approx(1728 / 1000)
    assert M.volume_of_regret(t, b, 57.0) == pytest.approx(728)
    assert M.volume_at_dose(b, 57.0, "cc") == pytest.approx(1728)
    with pytest.raises(M.MetricError):
        M.modified_gradient_index(b, 10.0, 70.0)


def test_bad_dose():
    m = {"a": np.ones((2, 3, 4), bool)}
    with pytest.raises(DoseError, match="NaN"):
        compute_dvhs(np.full((2, 3, 4), np.nan, np.float32), m)
    with pytest.raises(DoseError, match="negative"):
        compute_dvhs(np.full((2, 3, 4), -1.0, np.float32), m)
    with pytest.raises(DoseError, match="shape"):
        check_dose(np.zeros((2, 3, 5)), (2, 3, 4))
    with pytest.raises(DoseError, match="3D"):
        check_dose(np.zeros((2, 3)))
    from airtp.errors import StructureError

    with pytest.raises(StructureError, match="'a'"):
        compute_dvhs(np.zeros((2, 3, 5), np.float32), m)
    with pytest.raises(StructureError, match="int64"):
        compute_dvhs(np.zeros((2, 3, 4), np.float32), {"a": np.ones((2, 3, 4), np.int64)})


@pytest.mark.skipif(core.backend() != "cuda", reason="needs a CUDA GPU")
def test_gpu_equals_cpu(random_case):
    dose, masks = random_case
    rng = np.random.default_rng(3)
    masks = dict(masks, w=np.where(masks["s1"], rng.random(dose.shape), 0).astype(np.float32))
    cpu = compute_dvhs(dose, masks, use_gpu=False)
    gpu = compute_dvhs(dose, masks, use_gpu=True)
    for n in masks:
        if masks[n].dtype == np.bool_:
            np.testing.assert_array_equal(gpu[n].differential_cc, cpu[n].differential_cc)
        else:
            np.testing.assert_allclose(gpu[n].differential_cc, cpu[n].differential_cc, rtol=1e-6, atol=1e-9)
        assert gpu[n].voxels == cpu[n].voxels
        if not cpu[n].empty:
            assert gpu[n].min_gy == cpu[n].min_gy and gpu[n].max_gy == cpu[n].max_gy
            assert gpu[n].mean_gy == pytest.approx(cpu[n].mean_gy, rel=1e-9)
