"""Exact margins against a brute-force reference over all pairs of voxel centres."""

import numpy as np
import pytest

from airtp import _core
from airtp.core import backend
from airtp.errors import AirtpError, StructureError
from airtp.structures import asymmetric_margin, margin, ring

TOL = 1e-9  # relative tolerance of "within", as in the core


def centres(shape, spacing):
    idx = np.indices(shape).reshape(3, -1).T
    return idx * np.asarray(spacing, dtype=float)


def brute_expand(mask, spacing, mm):
    """Voxel p is in the result iff some mask centre lies within mm of p."""
    pts = centres(mask.shape, spacing)
    feats = pts[mask.ravel()]
    if len(feats) == 0:
        return np.zeros_like(mask)
    d2 = ((pts[:, None, :] - feats[None, :, :]) ** 2).sum(-1).min(axis=1)
    return (d2 <= mm * mm * (1 + TOL)).reshape(mask.shape)


def brute_contract(mask, spacing, mm):
    """Voxel p stays iff no in-grid background centre lies within mm of p."""
    return mask & ~brute_expand(~mask, spacing, mm)


def brute_asym(mask, spacing, radii):
    """radii x-, x+, y-, y+, z-, z+; octant ellipsoids on d = p - q."""
    pts = centres(mask.shape, spacing)
    feats = pts[mask.ravel()]
    if len(feats) == 0:
        return np.zeros_like(mask)
    d = pts[:, None, :] - feats[None, :, :]  # (z, y, x) order
    cost = np.zeros(d.shape[:2])
    for axis, (rneg, rpos) in zip((2, 1, 0), (radii[0:2], radii[2:4], radii[4:6])):
        da = d[..., axis]
        r = np.where(da > 0, rpos, rneg)
        with np.errstate(divide="ignore", invalid="ignore"):
            c = np.where(da == 0, 0.0, np.where(r > 0, (da / np.where(r > 0, r, 1)) ** 2, np.inf))
        cost += c
    return (cost.min(axis=1) <= 1 + TOL).reshape(mask.shape)


SPACINGS = [(3.0, 1.2, 1.2), (1.2, 1.2, 3.0), (2.0, 2.5, 1.0)]


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("seed", range(4))
def test_margin_matches_brute_force(spacing, seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(5, 13, size=3))
    mask = rng.random(shape) < rng.uniform(0.01, 0.3)
    for mm in (0.5, 1.2, 2.4, 3.0, 3.7, 6.0, 10.0):
        np.testing.assert_array_equal(margin(mask, mm, spacing), brute_expand(mask, spacing, mm), err_msg=f"+{mm}")
        np.testing.assert_array_equal(margin(mask, -mm, spacing), brute_contract(mask, spacing, mm), err_msg=f"-{mm}")


def test_blob_touching_border_and_empty_and_full():
    sp = (3.0, 1.2, 1.2)
    shape = (6, 11, 9)
    empty = np.zeros(shape, bool)
    full = np.ones(shape, bool)
    for mm in (2.0, -2.0):
        assert not margin(empty, mm, sp).any()
        # the grid border is not background: a full mask stays full when contracted
        assert margin(full, mm, sp).all()
    mask = np.zeros(shape, bool)
    mask[0:3, 0:4, 5:9] = True  # touches three faces of the grid
    for mm in (1.0, 2.5, 4.0):
        np.testing.assert_array_equal(margin(mask, mm, sp), brute_expand(mask, sp, mm))
        np.testing.assert_array_equal(margin(mask, -mm, sp), brute_contract(mask, sp, mm))
    np.testing.assert_array_equal(margin(mask, 0.0, sp), mask)


def test_single_voxel_expansion_is_exact_ellipsoid_count():
    # One voxel grown by 3 mm on 1 x 1 x 2 mm voxels: count lattice points by hand.
    sp = (2.0, 1.0, 1.0)
    mask = np.zeros((9, 15, 15), bool)
    mask[4, 7, 7] = True
    count = sum(
        1
        for k in range(-4, 5)
        for j in range(-7, 8)
        for i in range(-7, 8)
        if (2 * k) ** 2 + j * j + i * i <= 9
    )
    assert margin(mask, 3.0, sp).sum() == count


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 1.25, 1.25)])
def test_sphere_expanded_is_the_larger_sphere(spacing):
    r, m = 12.0, 8.0
    shape = tuple(int(np.ceil(2 * (r + m + 6) / s)) for s in spacing)
    pts = centres(shape, spacing)
    c = (np.asarray(shape) - 1) / 2 * np.asarray(spacing) + 0.3  # centre off the lattice
    dist = np.linalg.norm(pts - c, axis=1).reshape(shape)
    grown = margin(dist <= r, m, spacing)
    target = dist <= r + m
    # Triangle inequality: nothing beyond r + m; and every centre deeper than
    # r + m - h is reached, h = farthest a point of the sphere can be from the
    # nearest voxel centre inside it (half the voxel diagonal).
    h = 0.5 * np.linalg.norm(spacing)
    assert not (grown & ~target).any()
    assert grown[dist <= r + m - h].all()
    # Equivalent-sphere radius within half the largest voxel dimension (the
    # anchors' "sphere test error < 1/2 voxel"; TPS margins err by up to 40 %
    # of a 1-2 mm margin). The voxel-centre criterion under-grows slightly:
    # the surface of a set of centres dips between them.
    voxel_cc = np.prod(spacing)
    r_eff = lambda n: (3 * n * voxel_cc / (4 * np.pi)) ** (1 / 3)
    assert abs(r_eff(grown.sum()) - r_eff(target.sum())) < 0.5 * max(spacing)


@pytest.mark.parametrize("seed", range(3))
def test_asymmetric_matches_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    sp = (3.0, 1.2, 1.5)
    shape = tuple(rng.integers(6, 12, size=3))
    mask = rng.random(shape) < 0.05
    radii = rng.choice([0.0, 1.0, 2.5, 4.0, 6.5], size=6)
    got = asymmetric_margin(mask, sp, *radii)
    np.testing.assert_array_equal(got, brute_asym(mask, sp, radii))
    shrunk = asymmetric_margin(~mask, sp, *(-radii))
    mirrored = radii[[1, 0, 3, 2, 5, 4]]
    np.testing.assert_array_equal(shrunk, ~mask & ~brute_asym(mask, sp, mirrored))


def test_asymmetric_equal_radii_is_margin_and_sides_are_right():
    sp = (2.0, 1.0, 1.0)
    mask = np.zeros((12, 20, 20), bool)
    mask[5:7, 8:12, 8:12] = True
    np.testing.assert_array_equal(asymmetric_margin(mask, sp, *[4.0] * 6), margin(mask, 4.0, sp))
    grown = asymmetric_margin(mask, sp, x_plus=5.0)
    xs = np.nonzero(grown.any(axis=(0, 1)))[0]
    assert xs.min() == 8 and xs.max() == 11 + 5  # grows only towards +x (patient left)
    shrunk = asymmetric_margin(mask, sp, y_minus=-1.0)
    ys = np.nonzero(shrunk.any(axis=(0, 2)))[0]
    assert ys.min() == 9 and ys.max() == 11  # only the -y (anterior) face moved
    with pytest.raises(AirtpError, match="all expand"):
        asymmetric_margin(mask, sp, x_plus=2.0, y_minus=-1.0)


def test_ring_is_difference_of_margins():
    sp = (3.0, 2.5, 2.5)
    mask = np.zeros((15, 30, 30), bool)
    mask[6:9, 12:18, 11:19] = True
    r = ring(mask, 2.0, 30.0, sp)
    np.testing.assert_array_equal(r, margin(mask, 30.0, sp) & ~margin(mask, 2.0, sp))
    assert not (r & mask).any()
    rind = ring(mask, -2.5, 0.0, sp)
    np.testing.assert_array_equal(rind, mask & ~margin(mask, -2.5, sp))
    with pytest.raises(AirtpError, match="inner margin"):
        ring(mask, 5.0, 5.0, sp)


def test_bad_input_is_named():
    with pytest.raises(StructureError, match="boolean"):
        margin(np.zeros((3, 3, 3), np.uint8), 2.0, (1, 1, 1))
    with pytest.raises(AirtpError, match="spacing"):
        margin(np.zeros((3, 3, 3), bool), 2.0, (1, 0, 1))
    with pytest.raises(StructureError, match="3D"):
        margin(np.zeros((3, 3), bool), 2.0, (1, 1, 1))
    with pytest.raises(AirtpError, match="finite"):
        margin(np.zeros((3, 3, 3), bool), np.nan, (1, 1, 1))


def test_edt_sq_matches_brute_force():
    rng = np.random.default_rng(7)
    sp = (2.5, 1.1, 0.9)
    mask = rng.random((7, 9, 8)) < 0.04
    mask[0, 0, 0] = True
    pts = centres(mask.shape, sp)
    ref = ((pts[:, None] - pts[mask.ravel()][None]) ** 2).sum(-1).min(1).reshape(mask.shape)
    np.testing.assert_allclose(_core.edt_sq(mask.view(np.uint8), sp), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(backend() != "cuda", reason="needs a CUDA GPU")
def test_cuda_margin_equals_cpu():
    rng = np.random.default_rng(3)
    sp = (2.5, 1.0, 1.0)
    mask = rng.random((40, 90, 110)) < 0.002
    mask = margin(mask, 4.0, sp)
    u8 = mask.view(np.uint8)
    for mm in (3.0, 10.0, -2.0):
        np.testing.assert_array_equal(_core.margin(u8, sp, mm, True), _core.margin(u8, sp, mm, False))
    np.testing.assert_array_equal(_core.edt_sq(u8, sp, True), _core.edt_sq(u8, sp, False))
