"""Objectives: analytic gradients against finite differences, zero when met, JSON."""

import numpy as np
import pytest

from airtp.objectives import (
    GEUDObjective,
    MeanObjective,
    NormalTissueObjective,
    ObjectiveError,
    ObjectiveSet,
    PointObjective,
)

RNG = np.random.default_rng(11)


def fd_gradient(f, x, eps=1e-4):
    g = np.empty_like(x)
    for i in range(x.size):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        g[i] = (f(xp) - f(xm)) / (2 * eps)
    return g


CASES = [
    PointObjective("PTV", "upper", 62.0, 5.0, 200),
    PointObjective("PTV", "upper", 62.0, 0.0, 200),
    PointObjective("PTV", "lower", 58.0, 95.0, 300),
    PointObjective("PTV", "lower", 58.0, 100.0, 300),
    PointObjective("Cord", "upper", 40.0, 30.0, 80),
    MeanObjective("Parotid", 20.0, 60),
    GEUDObjective("Cord", "upper", 45.0, 12.0, 80),
    GEUDObjective("PTV", "lower", 62.0, -10.0, 100),
]


@pytest.mark.parametrize("obj", CASES, ids=lambda o: f"{o.kind}-{o.operator}-{getattr(o, 'volume_pct', '')}")
def test_gradient_matches_finite_differences(obj):
    dose = RNG.uniform(30.0, 70.0, size=60)
    value, grad = obj.penalty(dose)
    assert value > 0  # these doses violate every objective above
    fd = fd_gradient(lambda x: obj.penalty(x)[0], dose)
    np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-6)


def test_nto_gradient_and_limit():
    nto = NormalTissueObjective(priority=100, distance_from_target_mm=5, start_dose_pct=100, end_dose_pct=50,
                                fall_off_per_mm=0.1)
    dist = np.linspace(0, 60, 50)
    lim = nto.limit_gy(dist, 60.0)
    assert lim[0] == pytest.approx(60.0) and lim[-1] == pytest.approx(30 + 30 * np.exp(-5.5), rel=1e-9)
    dose = RNG.uniform(20, 65, size=50)
    value, grad = nto.penalty(dose, dist, 60.0)
    assert value > 0
    np.testing.assert_allclose(grad, fd_gradient(lambda x: nto.penalty(x, dist, 60.0)[0], dose), rtol=1e-4, atol=1e-6)
    assert nto.penalty(lim - 0.01, dist, 60.0)[0] == 0.0


def test_objectives_are_zero_when_met():
    dose = np.linspace(59.0, 61.0, 101)  # a homogeneous target
    assert PointObjective("PTV", "upper", 62.0, 0.0, 100).penalty(dose)[0] == 0
    assert PointObjective("PTV", "lower", 58.5, 100.0, 100).penalty(dose)[0] == 0
    assert PointObjective("PTV", "upper", 60.5, 30.0, 100).penalty(dose)[0] == 0  # 25 % above 60.5
    assert PointObjective("PTV", "upper", 60.5, 20.0, 100).penalty(dose)[0] > 0
    assert MeanObjective("PTV", 60.01, 10).penalty(dose)[0] == 0
    assert GEUDObjective("PTV", "upper", 61.0, 10.0, 10).penalty(dose)[0] == 0
    for obj in CASES:
        met = obj.dose_gy - 0.5 if obj.operator == "upper" else obj.dose_gy + 0.5
        v, g = obj.penalty(np.full(40, met))
        assert v == 0 and not g.any()


def test_upper_point_penalises_only_between_d_and_dose_at_v():
    # 10 voxels; upper (50 Gy, 20 %): the two hottest may exceed 50, the rest are pushed down.
    dose = np.array([70, 65, 60, 55, 52, 45, 40, 30, 20, 10], float)
    v, g = PointObjective("OAR", "upper", 50.0, 20.0, 1.0).penalty(dose)
    # dose at 20 % = 65 (2nd hottest): voxels in (50, 65] penalised
    assert v == pytest.approx((15**2 + 10**2 + 5**2 + 2**2) / 10)
    assert g[0] == 0 and g[1] > 0 and g[5] == 0


def test_bad_objectives_are_refused():
    with pytest.raises(ObjectiveError, match="volume"):
        PointObjective("PTV", "upper", 60, 120, 1)
    with pytest.raises(ObjectiveError, match="dose"):
        PointObjective("PTV", "upper", -1, 10, 1)
    with pytest.raises(ObjectiveError, match="priority"):
        MeanObjective("Cord", 10, -5)
    with pytest.raises(ObjectiveError, match="operator"):
        GEUDObjective("Cord", "max", 10, 5, 1)


def test_objective_set_json_round_trip_and_table(tmp_path):
    objs = ObjectiveSet(CASES + [NormalTissueObjective(priority=80)])
    path = objs.save(tmp_path / "obj.json")
    back = ObjectiveSet.load(path)
    assert back.objectives == objs.objectives
    table = back.format()
    assert table.splitlines()[0].split()[:3] == ["Structure", "Type", "Operator"]
    assert "Point  Upper     62.00" in table and "gEUD" in table and "NTO" in table
    assert back.structures() == ["PTV", "Cord", "Parotid", "Body"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"objectives": [{"type": "point", "structure": "PTV", "operator": "upper", "dose_gy": 60, "volume_pct": 150, "priority": 1}]}')
    with pytest.raises(ObjectiveError, match="bad.json.*volume"):
        ObjectiveSet.load(bad)
    bad.write_text('{"objectives": [{"type": "dvh", "structure": "PTV"}]}')
    with pytest.raises(ObjectiveError, match="unknown type 'dvh'"):
        ObjectiveSet.load(bad)
