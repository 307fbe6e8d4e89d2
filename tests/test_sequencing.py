"""Deliverable plans: machine file, Engel decomposition, sweeps, limits, sequencers, dose of the delivery plan."""

import json

import numpy as np
import pytest

from airtp import phantoms, plugins
from airtp.beams.beam import Beam, BeamletGrid
from airtp.beams.machine import Machine
from airtp.beams.templates import Arc
from airtp.case import Case
from airtp.dose.engine import dose_influence, dose_of_aperture
from airtp.errors import AirtpError, MachineError, SequencingError
from airtp.grid import Grid
from airtp.sequencing import (
    ControlPoint, DeliveryBeam, DeliveryPlan, SequencingProblem, check_limits, delivered_on_beamlets, fluence_fidelity,
    get_sequencer, plan_dose,
)
from airtp.sequencing.engel import engel_decompose, row_complexity
from airtp.sequencing.fluence import BeamArrays, swept_fraction
from airtp.sequencing.leaves import sweep, total_variation
from airtp.sequencing.limits import gantry_steps, time_beam
from airtp.structures.structure_set import StructureSet

MACHINE = Machine.load()


# ----------------------------------------------------------------------------- machine
def test_machine_is_a_truebeam_with_millennium_120():
    m = MACHINE
    widths = m.leaf_widths_mm
    assert m.n_pairs == 60 and np.sum(widths == 5.0) == 40 and np.sum(widths == 10.0) == 20
    assert np.all(widths[20:40] == 5.0) and m.leaf_boundaries_mm[0] == -200.0 and m.leaf_boundaries_mm[-1] == 200.0
    assert (m.max_leaf_speed_mm_s, m.max_gantry_speed_deg_s, m.max_dose_rate_mu_min) == (25.0, 6.0, 600.0)
    # 1 cGy/MU at the beam model's own reference condition: one MU per unit of beamlet weight
    assert m.mu_per_weight() == pytest.approx(1.0)
    assert Machine.from_dict(m.to_dict()) == m


def _write(tmp_path, data, name="m.json"):
    p = tmp_path / name
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return p


@pytest.mark.parametrize("change, match", [
    (lambda d: d["mlc"].update(max_leaf_speed_mm_per_s=-25.0), "max_leaf_speed"),
    (lambda d: d["mlc"].update(min_leaf_gap_mm=500.0), "minimum leaf gap"),
    (lambda d: d["mlc"].update(position_range_mm=[200.0, -200.0]), "leaf_range"),
    (lambda d: d["mlc"]["leaf_widths_mm"].append({"count": 2, "width_mm": -5.0}), "width_mm > 0"),
    (lambda d: d["gantry"].update(max_speed_deg_per_s=0.0), "max_gantry_speed"),
    (lambda d: d["dose_rate"].update(max_mu_per_min=float("nan")), "max_dose_rate"),
    (lambda d: d["jaws"].update(x_range_mm=[10.0, 10.0]), "jaw_x_range"),
    (lambda d: d.pop("gantry"), "missing or malformed"),
])
def test_machine_file_with_impossible_limits_is_refused(tmp_path, change, match):
    data = MACHINE.to_dict()
    change(data)
    path = _write(tmp_path, data)
    with pytest.raises(MachineError, match=match) as err:
        Machine.load(path)
    assert "m.json" in str(err.value) or "TrueBeam" in str(err.value)


def test_machine_file_errors_name_the_file(tmp_path):
    with pytest.raises(MachineError, match="nowhere.json.*no such file"):
        Machine.load(tmp_path / "nowhere.json")
    with pytest.raises(MachineError, match="bad.json.*not valid JSON"):
        Machine.load(_write(tmp_path, "{", "bad.json"))
    data = MACHINE.to_dict()
    data["calibration"]["ssd_mm"] = 900.0
    with pytest.raises(MachineError, match="calibration ssd_mm"):
        Machine.load(_write(tmp_path, data)).mu_per_weight()


# ----------------------------------------------------------------------------- building blocks
def test_engel_decomposition_is_exact_with_the_least_total_mu():
    rng = np.random.default_rng(7)
    for case in range(120):
        shape = (int(rng.integers(1, 25)), int(rng.integers(1, 25)))
        a = rng.integers(0, 12, size=shape)
        if case % 3 == 1:
            a = a * (rng.random(shape) < 0.5)
        segs = engel_decompose(a)
        rec = np.zeros_like(a)
        for u, l, r in segs:
            assert u > 0 and np.all(l <= r)
            for i in range(a.shape[0]):
                rec[i, l[i]:r[i]] += u
        np.testing.assert_array_equal(rec, a)
        assert sum(u for u, _, _ in segs) == row_complexity(a).max()
    assert engel_decompose(np.zeros((3, 4), int)) == []


def test_swept_fraction_is_exact_for_linear_leaf_motion():
    rng = np.random.default_rng(3)
    t = (np.arange(20000) + 0.5) / 20000
    for _ in range(200):
        a, b = np.sort(rng.uniform(-30, 30, 2)), np.sort(rng.uniform(-30, 30, 2))
        lo = rng.uniform(-35, 30)
        hi = lo + rng.uniform(0.1, 10)
        x1, x2 = a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])
        brute = np.maximum(0, np.minimum(hi, x2) - np.maximum(lo, x1)).mean() / (hi - lo)
        assert swept_fraction(a[0], a[1], b[0], b[1], lo, hi) == pytest.approx(brute, abs=1e-6)
    assert swept_fraction(0.0, 5.0, 0.0, 5.0, 2.0, 2.0) == 0.0  # a strip of no width


def test_sweep_delivers_the_profile_in_either_direction():
    rng = np.random.default_rng(5)
    edges = -40.0 + 5.0 * np.arange(15)
    for trial in range(20):
        f = rng.integers(0, 8, 14).astype(float) * (rng.random(14) < 0.8)
        if not f.any():
            continue
        total = total_variation(f) * (1.0 + rng.random())
        taus = np.linspace(0.0, total, 3001)
        x1, x2 = sweep(f, edges, total, taus, 1 if trial % 2 else -1)
        assert np.all(x1 <= x2 + 1e-9)
        frac = swept_fraction(x1[:-1, None], x2[:-1, None], x1[1:, None], x2[1:, None], edges[None, :-1], edges[None, 1:])
        np.testing.assert_allclose((frac * np.diff(taus)[:, None]).sum(axis=0), f, atol=1e-3)  # sampling only
    with pytest.raises(ValueError, match="total variation"):
        sweep(np.array([1.0, 3.0]), edges[:3], 1.0, [0.0, 1.0])


# ----------------------------------------------------------------------------- random problems
def _random_fluence(rng, shape):
    ny, nx = shape
    kind = rng.integers(0, 4)
    yy, xx = np.mgrid[0:ny, 0:nx]
    if kind == 0:  # smooth bump
        cy, cx = rng.uniform(0, ny), rng.uniform(0, nx)
        f = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(2, 10) ** 2))
    elif kind == 1:  # noise
        f = rng.random(shape)
    elif kind == 2:  # sparse spikes with empty rows
        f = rng.random(shape) * (rng.random(shape) < 0.2)
        f[rng.random(ny) < 0.3] = 0.0
    else:  # two peaks per row
        f = np.abs(np.sin(xx * rng.uniform(0.2, 1.0) + yy * 0.3))
    return f * rng.uniform(0.5, 300.0)


def _random_grid(rng, y_range=(-190.0, 190.0)):
    nx, ny = int(rng.integers(1, 30)), int(rng.integers(1, 40))
    ix0 = int(rng.integers(-20, 20 - nx + 1)) if nx < 40 else -20
    y_lo = int(np.ceil(y_range[0] / 5)) + int(rng.integers(0, max(1, (y_range[1] - y_range[0]) // 5 - ny)))
    active = rng.random((ny, nx)) < 0.9
    return BeamletGrid((ix0 + 0.5) * 5.0, (y_lo + 0.5) * 5.0, (5.0, 5.0), active)


def _check_invariants(plan, machine=MACHINE):
    """The limits, recomputed here from the arrays rather than trusted to check_limits."""
    assert plan.deliverable and check_limits(plan, machine) == plan.limits_checked
    for beam in plan.beams:
        a = BeamArrays(beam)
        assert a.mu[0] == 0.0 and np.all(a.dmu >= 0)
        assert np.all(a.x2 - a.x1 >= machine.min_leaf_gap_mm - 1e-6)
        assert np.all(a.x1 >= machine.leaf_range_mm[0] - 1e-6) and np.all(a.x2 <= machine.leaf_range_mm[1] + 1e-6)
        travel = np.maximum(np.abs(np.diff(a.x1, axis=0)), np.abs(np.diff(a.x2, axis=0))).max(axis=1)
        on = a.dmu > 0
        t = a.dmu[on] / (a.dose_rate[:-1][on] / 60.0)
        assert np.all(a.dose_rate[:-1][on] <= machine.max_dose_rate_mu_min * (1 + 1e-9))
        assert np.all(travel[on] <= machine.max_leaf_speed_mm_s * t * (1 + 1e-6) + 1e-6)
        steps = gantry_steps(a.gantry, beam.gantry_direction)
        assert np.all(steps[on] <= machine.max_gantry_speed_deg_s * t * (1 + 1e-6))
        if beam.kind == "step_and_shoot":
            assert np.all(travel[on] == 0.0)
        assert beam.delivery_time_s >= a.mu[-1] / machine.max_dose_rate_mu_s - 1e-9


@pytest.mark.parametrize("name", ["step-and-shoot", "sliding-window"])
def test_imrt_sequencers_respect_limits_on_random_fluences(name):
    rng = np.random.default_rng(11 if name == "step-and-shoot" else 12)
    seq = get_sequencer(name)
    for _ in range(25):
        n = int(rng.integers(1, 4))
        grids = [_random_grid(rng) for _ in range(n)]
        beams = [Beam(float(rng.uniform(0, 360)), (0.0, 0.0, 0.0), float(rng.choice([0.0, 30.0])), name=f"B{i}")
                 for i in range(n)]
        fluences = [_random_fluence(rng, g.shape) for g in grids]
        problem = SequencingProblem(beams, grids, fluences, MACHINE, fractions=int(rng.integers(1, 36)))
        plan = seq.sequence(problem)
        assert [b.name for b in plan.beams] == [b.name for b in beams]
        assert all(b.kind == name.replace("-", "_") for b in plan.beams)
        _check_invariants(plan)


def test_vmat_respects_limits_on_random_arcs_and_fluences():
    rng = np.random.default_rng(21)
    for case in range(12):
        arcs, beams, grids = [], [], []
        for k in range(int(rng.integers(1, 3))):
            start = float(rng.uniform(0, 360))
            span = float(rng.choice([40.0, 120.0, 180.0, 358.0]))
            direction = "cw" if rng.random() < 0.5 else "ccw"
            stop = (start + span) % 360 if direction == "cw" else (start - span) % 360
            arc = Arc(start, stop, direction, float(rng.choice([30.0, 330.0])))
            arcs.append(arc)
            n = int(rng.integers(1, max(2, int(arc.span_deg // 20))))
            for g in arc.angles(arc.span_deg / n):
                beams.append(Beam(g, (0.0, 0.0, 0.0), arc.collimator_deg, name=f"A{k}G{g:.0f}"))
                grids.append(_random_grid(rng, (-100.0, 100.0)))
        fluences = [_random_fluence(rng, g.shape) for g in grids]
        problem = SequencingProblem(beams, grids, fluences, MACHINE, fractions=30, arcs=arcs)
        step = float(rng.choice([2.0, 3.0, 4.0]))
        plan = get_sequencer("vmat", cp_step_deg=step, sampling=["fit", "point"][case % 2]).sequence(problem)
        assert len(plan.beams) == len(arcs)
        for beam, arc in zip(plan.beams, arcs):
            a = BeamArrays(beam)
            steps = gantry_steps(a.gantry, beam.gantry_direction)
            assert beam.gantry_direction == ("CW" if arc.direction == "cw" else "CC")
            assert np.all(steps <= step + 1e-9) and np.sum(steps) == pytest.approx(arc.span_deg)
            assert a.gantry[0] == pytest.approx(arc.start_deg % 360)
        _check_invariants(plan)


def _delivered_fidelity(name, fluence, **options):
    grid = BeamletGrid(-47.5, -27.5, (5.0, 5.0), np.ones(fluence.shape, bool))
    problem = SequencingProblem([Beam(0.0, (0.0, 0.0, 0.0), name="F")], [grid], [fluence], MACHINE, fractions=1)
    plan = get_sequencer(name, **options).sequence(problem)
    return plan, fluence_fidelity(plan, problem)["plan"], delivered_on_beamlets(plan, problem)[0]


def test_step_and_shoot_delivers_quantised_fluence_exactly():
    rng = np.random.default_rng(2)
    levels = rng.integers(0, 6, size=(12, 20)).astype(float)
    levels[0, 0] = 5.0  # the maximum: a level step of exactly 1 MU
    plan, fidelity, got = _delivered_fidelity("step-and-shoot", levels, levels=5, refine="none", min_segment_mu=0)
    np.testing.assert_allclose(got, levels, atol=1e-9)
    assert fidelity == pytest.approx(1.0)
    assert plan.total_mu == pytest.approx(row_complexity(levels.astype(int)).max())  # Engel's least MU
    # a smooth fluence loses little to 20 levels; the sliding window little to its sampling
    yy, xx = np.mgrid[0:12, 0:20]
    smooth = 50.0 * np.exp(-((yy - 6) ** 2 + (xx - 9) ** 2) / 30.0)
    assert _delivered_fidelity("step-and-shoot", smooth)[1] > 0.95
    assert _delivered_fidelity("sliding-window", smooth)[1] > 0.97


# ----------------------------------------------------------------------------- limits
def _simple_vmat_plan():
    arc = Arc(180.0, 260.0, "cw", 0.0)
    beams = [Beam(g, (0.0, 0.0, 0.0), name=f"S{i}") for i, g in enumerate(arc.angles(40.0))]
    grids = [BeamletGrid(-22.5, -12.5, (5.0, 5.0), np.ones((6, 10), bool)) for _ in beams]
    fluences = [np.outer(np.hanning(6), np.hanning(10)) * 40 + 1.0 for _ in beams]
    problem = SequencingProblem(beams, grids, fluences, MACHINE, fractions=1, arcs=[arc])
    return get_sequencer("vmat").sequence(problem)


def test_check_limits_names_beam_and_control_point():
    plan = _simple_vmat_plan()
    done = check_limits(plan, MACHINE)
    assert any("leaf speed <= 25" in c for c in done) and any("MU >= 0" in c for c in done)

    def broken(edit):
        p = DeliveryPlan.from_dict(plan.to_dict())
        edit(p.beams[0].control_points)
        return p

    def cross(cps):
        cps[3].mlc_x1_mm[30] = cps[3].mlc_x2_mm[30] + 1.0

    with pytest.raises(SequencingError, match=r"beam 'Arc1', control point 3: leaf pair 31 crosses"):
        check_limits(broken(cross), MACHINE)

    def negative(cps):
        cps[5].cumulative_mu = cps[4].cumulative_mu - 1.0

    with pytest.raises(SequencingError, match=r"control point 5: cumulative MU decreases"):
        check_limits(broken(negative), MACHINE)

    def jump(cps):  # a 60 mm leap in one 2-degree interval at the recorded dose rate
        cps[7].mlc_x1_mm[30] -= 60.0
        cps[7].mlc_x2_mm[30] -= 60.0

    with pytest.raises(SequencingError, match=r"control point [67]: leaf speed"):
        check_limits(broken(jump), MACHINE)

    def gap(cps):
        cps[2].mlc_x1_mm[10] = cps[2].mlc_x2_mm[10] - 0.1

    with pytest.raises(SequencingError, match=r"control point 2: leaf pair 11 gap 0.100 mm is below"):
        check_limits(broken(gap), MACHINE)

    def rate(cps):
        cps[1].dose_rate_mu_min = 2000.0

    with pytest.raises(SequencingError, match=r"control point 1: dose rate 2000"):
        check_limits(broken(rate), MACHINE)

    def gantry(cps):
        cps[4].dose_rate_mu_min = 600.0
        cps[4].cumulative_mu = cps[4].cumulative_mu  # unchanged MU, now delivered in a blink
        cps[5].cumulative_mu = cps[4].cumulative_mu + 0.01
        for cp in cps[6:]:
            cp.cumulative_mu = max(cp.cumulative_mu, cps[5].cumulative_mu)

    with pytest.raises(SequencingError, match=r"control point 4: (gantry|leaf) speed"):
        check_limits(broken(gantry), MACHINE)


def test_retiming_keeps_limits_after_mu_scaling():
    plan = _simple_vmat_plan()
    for cp in plan.beams[0].control_points:
        cp.cumulative_mu *= 0.25  # fewer MU: the gantry is the limit, then the leaves
    with pytest.raises(SequencingError):
        check_limits(plan, MACHINE)
    time_beam(plan.beams[0], MACHINE)
    assert check_limits(plan, MACHINE)


# ----------------------------------------------------------------------------- bad input
def test_bad_fluence_and_arcs_are_refused():
    grid = BeamletGrid(-2.5, -2.5, (5.0, 5.0), np.ones((2, 2), bool))
    beam = Beam(0.0, (0.0, 0.0, 0.0), name="Left")
    with pytest.raises(SequencingError, match="beam 'Left': fluence has 1 NaN"):
        SequencingProblem([beam], [grid], [np.array([[1.0, np.nan], [1.0, 1.0]])], MACHINE)
    with pytest.raises(SequencingError, match="beam 'Left': fluence has negative values"):
        SequencingProblem([beam], [grid], [np.array([[1.0, -2.0], [1.0, 1.0]])], MACHINE)
    with pytest.raises(SequencingError, match="beam 'Left': fluence shape"):
        SequencingProblem([beam], [grid], [np.ones((3, 2))], MACHINE)
    far = BeamletGrid(-2.5, 297.5, (5.0, 5.0), np.ones((2, 2), bool))
    with pytest.raises(SequencingError, match="beam 'Left': the fluence spans BEV y.*beyond the MLC"):
        get_sequencer("step-and-shoot").sequence(SequencingProblem([beam], [far], [np.ones((2, 2))], MACHINE))
    arc = Arc(10.0, 12.0, "cw", 0.0)  # a 2-degree arc
    short = SequencingProblem([Beam(11.0, (0.0, 0.0, 0.0), name="A1G11")], [grid], [np.ones((2, 2))], MACHINE,
                              arcs=[arc])
    with pytest.raises(SequencingError, match=r"arc 1 .*2 deg span is shorter than one control-point step \(4 deg\)"):
        get_sequencer("vmat", cp_step_deg=4.0).sequence(short)
    with pytest.raises(SequencingError, match="sequences arcs"):
        get_sequencer("vmat").sequence(SequencingProblem([beam], [grid], [np.ones((2, 2))], MACHINE))
    with pytest.raises(SequencingError, match="not arcs"):
        get_sequencer("step-and-shoot").sequence(short)
    with pytest.raises(SequencingError, match="cp_step_deg"):
        get_sequencer("vmat", cp_step_deg=0.0)
    with pytest.raises(SequencingError, match="sampling"):
        get_sequencer("vmat", sampling="random")
    with pytest.raises(SequencingError, match="levels"):
        get_sequencer("step-and-shoot", levels=1)
    with pytest.raises(SequencingError, match="bad options"):
        get_sequencer("step-and-shoot", colour="red")
    with pytest.raises(AirtpError, match="no plugin 'nope'"):
        get_sequencer("nope")


def test_sequencers_are_plugins():
    assert {"step-and-shoot", "sliding-window", "vmat"} <= set(plugins.available("airtp.sequencers"))


def test_delivery_plan_round_trip_and_older_files(tmp_path):
    plan = _simple_vmat_plan()
    plan.save(tmp_path / "delivery.json")
    back = DeliveryPlan.load(tmp_path / "delivery.json")
    assert back.to_dict() == plan.to_dict() and back.deliverable
    d = plan.to_dict()
    for b in d["beams"]:
        for cp in b["control_points"]:
            del cp["dose_rate_mu_min"]  # written before dose rates were recorded
    old = DeliveryPlan.from_dict(d)
    assert old.beams[0].control_points[0].dose_rate_mu_min is None


# ----------------------------------------------------------------------------- dose
def _box_case():
    """Water box 120 x 100 x 120 mm at 5 mm, one row of air on top."""
    grid = Grid((24, 20, 24), (5.0, 5.0, 5.0), (-57.5, -47.5, -57.5))
    ct = np.zeros(grid.shape, np.int16)
    ct[:, 0, :] = -1000
    return Case(ct, StructureSet(grid, {"Body": ct > -500}), patient_id="box")


def test_plan_dose_equals_the_engine_aperture_dose_of_its_segments():
    case = _box_case()
    beams = [Beam(0.0, (0.0, 0.0, 0.0), name="G0"), Beam(90.0, (0.0, 0.0, 0.0), 30.0, name="G90")]
    # rows over both 5 mm and 10 mm leaves, leaf tips off the 1 mm lattice
    grids = [BeamletGrid(-17.5, -102.5, (5.0, 5.0), np.ones((8, 8), bool)) for _ in beams]
    rng = np.random.default_rng(0)
    fluences = [rng.random((8, 8)) * 30 for _ in beams]
    problem = SequencingProblem(beams, grids, fluences, MACHINE, fractions=2, mu_per_weight=MACHINE.mu_per_weight())
    plan = get_sequencer("step-and-shoot", levels=4).sequence(problem)
    cp = plan.beams[0].control_points[0]
    cp.mlc_x1_mm[9] += 1.3  # partial coverage of a beamlet by a leaf edge (both control points of segment 0)
    plan.beams[0].control_points[1].mlc_x1_mm[9] += 1.3
    got = plan_dose(case, plan, MACHINE, dose_grid_mm=5.0)
    want = np.zeros_like(got)
    b = np.asarray(MACHINE.leaf_boundaries_mm)
    widths = np.diff(b)
    for beam, dbeam in zip(beams, plan.beams):
        cps = dbeam.control_points
        jx, jy = cps[0].jaw_x_mm, cps[0].jaw_y_mm
        for start, end in zip(cps[0::2], cps[1::2]):
            mu = end.cumulative_mu - start.cumulative_mu
            lp = np.column_stack([np.maximum(start.mlc_x1_mm, jx[0]), np.minimum(start.mlc_x2_mm, jx[1])])
            inside = (b[:-1] >= jy[0] - 1e-9) & (b[1:] <= jy[1] + 1e-9)
            lp[~inside | (lp[:, 1] < lp[:, 0])] = 0.0
            for width in (5.0, 10.0):  # dose_of_aperture stacks leaves of one width
                sel = np.flatnonzero(widths == width)
                for run in np.split(sel, np.flatnonzero(np.diff(sel) > 1) + 1):
                    want += dose_of_aperture(case, beam, lp[run], leaf_width_mm=width, y_start_mm=b[run[0]],
                                             weight=mu * plan.fractions, dose_grid_mm=5.0)
    assert got.max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * want.max())


def test_moving_leaves_dose_is_the_mean_of_their_apertures():
    case = _box_case()
    beam = Beam(0.0, (0.0, 0.0, 0.0), name="G0")
    n = MACHINE.n_pairs
    x1a, x2a = np.full(n, -30.0), np.full(n, -10.0)
    x1b, x2b = np.full(n, 5.0), np.full(n, 30.0)
    cps = [ControlPoint(0.0, 0.0, (-40.0, 40.0), (-20.0, 20.0), list(x1a), list(x2a)),
           ControlPoint(0.0, 50.0, (-40.0, 40.0), (-20.0, 20.0), list(x1b), list(x2b))]
    plan = DeliveryPlan(MACHINE.name, "test", [DeliveryBeam("G0", "sliding_window", 0.0, 0.0, (0.0, 0.0, 0.0),
                                                            list(MACHINE.leaf_boundaries_mm), cps)])
    got = plan_dose(case, plan, MACHINE, dose_grid_mm=5.0)
    inside = slice(26, 34)  # the 5 mm pairs between the Y jaws at -20 and 20 mm
    steps = 40
    want = np.zeros_like(got)
    for t in (np.arange(steps) + 0.5) / steps:
        lp = np.column_stack([x1a + t * (x1b - x1a), x2a + t * (x2b - x2a)])[inside]
        want += dose_of_aperture(case, beam, np.clip(lp, -40.0, 40.0), leaf_width_mm=5.0, y_start_mm=-20.0,
                                 weight=50.0 / steps, dose_grid_mm=5.0)
    np.testing.assert_allclose(got, want, atol=0.01 * want.max())


def test_beamlet_coverage_dose_agrees_with_the_fine_dose():
    """The MU refinement works on the beamlet matrix: for beamlet-aligned segments it is the fine dose."""
    case = phantoms.head_neck(n_ptv=1, seed=0, spacing_mm=(6.0, 5.0, 5.0))
    from airtp.beams.templates import head_neck

    beams = head_neck(case, "imrt9").beams[:2]
    inf = dose_influence(case, beams, dose_grid_mm=8.0)
    rng = np.random.default_rng(1)
    fluences = [rng.random(g.shape) * 20 * g.active for g in inf.beamlet_grids]
    problem = SequencingProblem(beams, inf.beamlet_grids, fluences, MACHINE, fractions=35, influence=inf)
    plan = get_sequencer("step-and-shoot").sequence(problem)
    fine = plan_dose(case, plan, MACHINE, dose_grid_mm=8.0)
    got = delivered_on_beamlets(plan, problem)
    w = np.concatenate([f[g.active] for f, g in zip(got, inf.beamlet_grids)]) * problem.weight_per_mu
    coarse = inf.dose(w.astype(np.float32))
    np.testing.assert_allclose(coarse, fine, atol=2e-3 * fine.max())
