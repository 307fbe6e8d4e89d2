"""The AIRTP pipeline: one case to a refined plan (paper section 2.2 and Algorithm 1).

helpers (recipe) -> beams (template) -> dose-influence matrix -> initial
objectives -> optimise -> score; then, up to ``iterations`` times: PTV and
ring objectives from the prescriptions, each objective rule on the current
plan's DVHs and scorecard, optimise (warm start) and score. It stops early
when the score has not improved by ``min_gain`` for ``patience`` iterations;
one consolidation iteration then starts from the best plan with the planning
zone round the targets (``consolidate``; the refinement's zone is narrower).
Navigation (``navigate``) then mixes the best plan's fluence with each other
iteration's (:func:`blend_iterations`, the interpolation between plans of
multicriteria-optimisation navigation) and keeps a blend that is the better
plan. Organ sparing (``spare``) then optimises twice more from the best
plan with every organ at risk's mean dose pushed down (once holding the
targets where they are), and keeps the blend with either that lowers the
organs' doses most without losing a scorecard point (:func:`spare_organs`).
It keeps the best plan: the best-scoring among the iterations whose
highest-dose target passes the GDP-HMM quality filter (D5/D95 < 1.07,
Dmax/D95 < 1.12; :mod:`airtp.planning.quality`), the best-scoring overall
when none does.

Deliverable plan (default; ``deliverable=False`` stops at the ideal fluence):
the best iteration's fluences are sequenced for the machine
(:mod:`airtp.sequencing`: step-and-shoot segments for IMRT, control points
for VMAT arcs), the dose of the delivery plan is computed through the dose
engine, renormalised like every plan (its MU scale with it) and scored; that
score is the plan's. The initial plan is delivered as well, so that the
initial and final scores are of plans of the same kind. When sequencing
tips the best iteration over the quality filter or below the initial plan's
deliverable plan, the next refined iterations are delivered too (at most
``delivery_candidates``) and the preferred deliverable plan is kept, the
initial plan's included (:func:`choose_delivery`). Where the best
iteration's ideal fluence passed the filter and its deliverable plan does
not, blends of it with the kept plan are delivered too, most of it first,
and the first one preferred to the kept plan's is kept (stage
``delivery``; :func:`blend_for_delivery`).

Doses are optimised on the dose grid and scored on the case (CT) grid after
trilinear resampling, so every score is of the dose that ``dose.npy`` holds.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np

from airtp import plugins
from airtp.beams.machine import Machine
from airtp.case import Case
from airtp.dose.engine import dose_influence
from airtp.errors import AirtpError, BeamError, SequencingError
from airtp.evaluation.dvh import compute_dvhs
from airtp.evaluation.scorecard import ScoreReport, get_scorecard, score_plan
from airtp.grid import resample
from airtp.objectives import MeanObjective, ObjectiveSet, PointObjective
from airtp.objectives.objectives import voxel_dose_at_volume
from airtp.optimize import OptimizationResult, PlanningProblem, get_optimizer
from airtp.optimize.builtin import normalization_factor
from airtp.planning.initial import initial_objectives
from airtp.planning.intake import prepare_case
from airtp.planning.quality import meets_quality_filter, target_metrics
from airtp.planning.rules import RuleContext, is_target_name, prescription_objectives
from airtp.sequencing import (
    DeliveryPlan, SequencingProblem, arc_sectors, check_limits, default_sequencer, fluence_fidelity, get_sequencer,
    plan_dose, time_plan,
)
from airtp.structures.recipes import RecipeResult, add_helpers

__all__ = ["PlanSettings", "PlanResult", "Delivery", "plan_case", "choose_delivery", "DEFAULT_SCORECARD", "Progress"]

DEFAULT_SCORECARD = {"hn": "hn", "lung": "lung"}


@dataclass
class PlanSettings:
    """How to plan a case.

    Attributes
    ----------
    technique : str
        ``imrt9``, ``imrt15``, ``imrt7`` or ``vmat`` (what the site's template offers).
    iterations : int
        Refinement iterations of Algorithm 1 after the initial plan (0: initial plan only).
    scorecard : str or None
        Scorecard name or path; default: the site's (``hn``, ``lung``).
    objectives : ObjectiveSet or None
        Initial objectives replacing the site's defaults (``--objectives FILE``).
    dose_grid_mm : float or None
        Dose-grid spacing for the optimisation (None: the CT grid).
    optimizer : str
        Optimizer target plugin name; ``optimizer_options`` go to its constructor.
    rules : tuple of str
        Objective-rule plugins applied in each iteration, in order.
    patience, min_gain : int, float
        Stop when the score has not gained ``min_gain`` over the best for
        ``patience`` consecutive iterations.
    transition_mm : float
        Organ and ring objectives leave out voxels closer than this to a
        target: the fall-off zone where pushing organ dose down only costs
        coverage and homogeneity (see :meth:`PlanningProblem.rows`).
    refine_transition_mm : float or None
        The same zone for the refinement iterations only (default 5 mm;
        None: ``transition_mm``; never wider than it). A smaller zone lets
        the rules' organ objectives reach the organ voxels near the targets,
        where the scorecard's organ means and maxima are decided; it can
        also cost target homogeneity, which the quality filter on the kept
        plan guards. Measured with ``benchmarks/bench_pipeline.py`` (seeds
        0-2, 18 cases, deliverable plans): 10 mm, mean gain +3.07, 78 %
        improved; 5 mm with the filter-aware choice, +4.38, 78 % improved,
        the filter held in every case (without the filter-aware choice one
        plan failed it); 3 mm: no head-and-neck iteration passed the filter
        with a better score.
    consolidate : bool
        After the loop, one more iteration from the best plan with the
        planning zone (``transition_mm``) instead of the refinement's
        narrower one; it is kept when it is the better plan. Why: with the
        narrow zone the score peaked at the first refinement and then fell,
        iteration by iteration, as Figure 3 moved each organ objective below
        the organ's current DVH and the elective levels' edges lost coverage
        to the organs round them (synthetic head and neck with two levels,
        seed 0, ideal fluence: 112.48, 115.32, 113.87, 111.79, 110.66,
        108.51 over iterations 0-5; PTVLow V56 Gy 96.7 -> 92.8 %). The
        best plan's lower organ objectives applied away from the fall-off
        leave the gradient round the targets to the target objectives: the
        same case, 119.00 from iteration 1 (PTVLow-PTVHigh V58.8 Gy 61 ->
        32 %). Widening the zone for every iteration after the first lost
        where the narrow zone went on gaining (hn1 seed 0: 116.33 -> 114.47,
        deliverable); raising the lower levels' objective dose, or its
        priority, by their coverage shortfall did not stop the erosion.
    navigate : bool
        After the loop (and the consolidation), blend the best plan's
        fluence with every other iteration's at :data:`BLEND_FRACTIONS`
        (0.1 ... 0.9 of the other), renormalise and score each; the best
        blend is kept when it is the better plan (an iteration of its own,
        ``Iteration.blend`` saying of which). Why: the iterations trade
        scorecard items against each other (coverage of the elective levels
        against the organs round them), and a mixture of two plans' fluences
        is itself a plan whose dose is the same mixture of their doses (dose
        is linear in fluence), so it can take the better part of each; only
        scoring is needed, no optimisation. Measured on the synthetic head
        and neck (ideal fluence, any pair of iterations): best blend minus
        best iteration +1.10 (hn2 seed 0), +0.13, +0.12 (hn1, hn3 seed 0),
        +0.33, +2.48, +2.44 (hn1, hn2, hn3 seed 1), +0.26, 0.00, +0.43
        (seed 2). ``benchmarks/bench_pipeline.py``, seeds 0-4, 30 cases,
        deliverable: mean gain +4.61 -> +5.05, improved 80 -> 93 %, the
        filter held in all (blends are ranked filter first, like
        iterations); it costs the scoring of at most 9 blends per other
        iteration, about a second.
    spare : bool
        After navigation, two organ-sparing optimisations from the best plan
        (:func:`spare_organs`): the best plan's objectives plus, on each of
        the case's own organs at risk, a mean objective at ``spare_fraction``
        of the organ's current mean over the voxels the objective acts on,
        in the refinement's zone (``refine_transition_mm``); the second
        (*held*) also holds the targets' and target rings' maxima and the
        targets' D95 (:func:`hold_objectives`). The best plan is then
        blended with each, and the blend (or sparing plan itself) that
        lowers the organs' summed mean dose most is kept, among those
        that lose no scorecard point and keep the quality filter (with a
        margin for sequencing, :data:`SEQUENCING_MARGIN`) and every
        target's coverage (:func:`spares_at_no_cost`). Why: the
        scorecard scores some organs only by a maximum (brainstem, cord) or
        outside the targets (parotids, mandible), so nothing in the loop
        lowers their mean dose, which a clinical plan keeps as low as
        reasonably achievable. Measured on six OpenKBP patients (pt_1, 2,
        4, 9, 12, 13; ideal fluence; organ mean minus the reference's,
        medians): without sparing brainstem +3.1, cord -2.5, right parotid
        -3.0, left parotid -0.2, oesophagus +3.9, mandible +4.3 Gy; with it
        (fraction 0.3, 5 mm zone) +0.5, -4.8, -7.1, -3.9, -0.5, -1.1, and
        the scorecard median 62.4 -> 63.0. The 10 mm zone: +1.7, -5.7, -5.4,
        -1.1, +2.5, -0.6. The coverage guard changed none of the six; on
        all 40 it costs part of the gain (README). The held plan and the
        margin for sequencing (:data:`SEQUENCING_MARGIN`), all 40
        patients deliverable: brainstem +1.5 -> +1.1, cord -2.2 -> -4.1,
        right parotid -1.4 -> -3.3, left parotid +0.1 -> -1.5, oesophagus
        -3.2 -> -6.0, larynx -10.2 -> -12.4, mandible +1.5 -> -0.6 Gy;
        scorecard median 59.1 -> 59.2. Relative priorities
        (:func:`sparing_objectives`) and blends for delivery, all 40:
        brainstem +1.1 -> +0.15, cord -4.1 -> -4.9, right parotid -3.3
        -> -3.8, left parotid -1.5 -> -2.5, oesophagus -6.0 -> -5.6,
        larynx -12.4 -> -11.9, mandible -0.6 -> -0.3 Gy; scorecard median
        59.2 -> 60.5 (README). On the synthetic phantoms the free
        plan rarely keeps a blend (its 34-organ sparing plans lose 7-20
        points); the held one gained 5 of 20 cases rerun (README).
    spare_fraction : float
        The sparing objectives' dose as a fraction (0-1) of each organ's
        current mean: a push no plan meets, traded by the blend. Measured
        as above (10 mm zone), medians of the six patients' organ means
        fell most at 0.3 (0.7, 0.5, 0.2, 0.1 lowered them less).
    transition_exempt : tuple of str
        Name prefixes of structures whose objectives keep the transition
        zone's voxels (the reproduction's dose bands).
    deliverable : bool
        Sequence the best plan for the machine and score the dose of what it
        delivers (False: stop at the ideal fluence).
    sequencer : str or None
        Sequencer plugin (group ``airtp.sequencers``); None: ``vmat`` for
        VMAT, ``step-and-shoot`` otherwise. ``sequencer_options`` go to its constructor.
    machine : str, path or None
        Machine file (None: the packaged TrueBeam / Millennium 120).
    delivery_candidates : int
        Most refined iterations sequenced in search of a deliverable plan
        that passes the quality filter and beats the initial plan's (the
        best iteration first; see :func:`plan_case`). Sequencing costs
        seconds per iteration, and a plan that loses its gain to sequencing
        often has a neighbour that keeps it. Blends for delivery
        (:func:`blend_for_delivery`, at most four) come on top.
    """

    technique: str = "imrt9"
    iterations: int = 5
    scorecard: str | None = None
    objectives: ObjectiveSet | None = None
    dose_grid_mm: float | None = 4.0
    optimizer: str = "builtin"
    optimizer_options: dict = field(default_factory=lambda: {"max_iterations": 150})
    rules: tuple = ("dose2obj", "scorecard2dose")
    patience: int = 2
    min_gain: float = 0.1
    transition_mm: float = 10.0
    refine_transition_mm: float | None = 5.0
    consolidate: bool = True
    navigate: bool = True
    spare: bool = True
    spare_fraction: float = 0.3
    transition_exempt: tuple = ()
    deliverable: bool = True
    sequencer: str | None = None
    sequencer_options: dict = field(default_factory=dict)
    machine: str | None = None
    delivery_candidates: int = 3


class _RankedPlan:
    """Score, quality filter and ranking of a dose with a score ``report`` and ``targets`` metrics."""

    @property
    def score(self) -> float:
        return self.report.total if self.report is not None else float("nan")

    @property
    def meets_quality_filter(self) -> bool:
        """Whether the highest-dose target passes the GDP-HMM quality filter."""
        return meets_quality_filter(self.targets)

    def preferred_to(self, other) -> bool:
        """Whether this is the better plan: one passing the quality filter first, then the higher score."""
        if self.meets_quality_filter != other.meets_quality_filter:
            return self.meets_quality_filter
        return self.score > other.score


@dataclass
class Iteration(_RankedPlan):
    """One optimisation of the pipeline and its evaluation."""

    objectives: ObjectiveSet
    result: OptimizationResult
    dose: np.ndarray  # Gy on the case grid
    report: ScoreReport | None
    seconds: float
    targets: dict  # airtp.planning.quality.target_metrics of the dose
    transition_mm: float  # mm: the zone round the targets that its organ and ring objectives left out
    blend: dict | None = None  # navigation: {"of": [i, j], "fraction": t}, (1 - t) x i's fluence + t x j's
    stage: str = ""  # initial, refinement, consolidation, navigation, sparing or delivery (blend_for_delivery)


@dataclass
class Delivery(_RankedPlan):
    """The deliverable plan of the best iteration: control points, its dose and score.

    ``dose`` is Gy on the case grid after the plan normalisation (whose
    factor also scaled the plan's MU); ``fidelity`` is
    :func:`airtp.sequencing.fluence_fidelity`; ``arc_dose_angles`` the gantry
    angles at which arc intervals were computed (the sector beams).
    """

    plan: DeliveryPlan
    dose: np.ndarray
    report: ScoreReport | None
    fidelity: dict
    normalization_factor: float
    seconds: float
    arc_dose_angles: dict | None = None
    targets: dict = field(default_factory=dict)  # airtp.planning.quality.target_metrics of the dose


@dataclass
class PlanResult:
    """A planned case: beams, the iterations, the best one, the recipe report, timings and the deliverable plan."""

    case: Case
    settings: PlanSettings
    setup: object  # BeamSetup
    recipe: RecipeResult | None
    iterations: list[Iteration]
    best: int
    timings: dict
    warnings: list[str] = field(default_factory=list)
    delivery: Delivery | None = None
    deliveries: dict = field(default_factory=dict)  # iteration index -> Delivery, every iteration sequenced

    @property
    def initial_delivery(self) -> Delivery | None:
        """The initial plan's deliverable plan (it is `delivery` when best is 0)."""
        return self.deliveries.get(0)

    @property
    def final(self) -> Iteration:
        """The best iteration of the fluence optimisation (its dose is the ideal fluence's)."""
        return self.iterations[self.best]

    @property
    def initial(self) -> Iteration:
        return self.iterations[0]

    @property
    def scored_plan(self) -> Iteration | Delivery:
        """The plan that is scored and saved: the deliverable plan when there is one, else the best iteration."""
        return self.delivery if self.delivery is not None else self.final

    @property
    def scored_initial(self) -> Iteration | Delivery:
        """The initial plan, of the same kind as :attr:`scored_plan` (deliverable or ideal fluence)."""
        return self.initial_delivery if self.initial_delivery is not None else self.initial

    @property
    def plan_dose(self) -> np.ndarray:
        """The plan's dose (Gy, case grid): the deliverable plan's when there is one."""
        return self.scored_plan.dose

    @property
    def plan_report(self) -> ScoreReport | None:
        return self.scored_plan.report

    @property
    def plan_score(self) -> float:
        return self.scored_plan.score

    @property
    def score_trajectory(self) -> list[float]:
        return [it.score for it in self.iterations]


class Progress:
    """Stage lines on stderr (``quiet`` silences them)."""

    def __init__(self, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[airtp {time.perf_counter() - self.t0:6.1f} s] {message}", file=self.stream, flush=True)


def _template(case: Case, technique: str):
    try:
        template = plugins.load("airtp.beam_templates", case.site)
    except plugins.PluginError as exc:
        raise BeamError(f"case '{case.patient_id}': no beam template for site '{case.site}' ({exc})") from None
    return template(case, technique)


def _rules(names) -> list:
    out = []
    for name in names:
        cls = plugins.load("airtp.objective_rules", name)
        out.append(cls())
    return out


def _check_inputs(case: Case, settings: PlanSettings):
    """Everything that can be refused before any computation."""
    case.check_prescriptions()
    if settings.iterations < 0:
        raise AirtpError(f"iterations must be >= 0, got {settings.iterations}")
    if not 0.0 < settings.spare_fraction <= 1.0:  # also refuses NaN
        raise AirtpError(f"case '{case.patient_id}': spare_fraction must be in (0, 1], got {settings.spare_fraction}")
    name = settings.scorecard or DEFAULT_SCORECARD.get(case.site)
    scorecard = get_scorecard(name) if name else None
    setup = _template(case, settings.technique)
    rules = _rules(settings.rules)
    optimizer = get_optimizer(settings.optimizer, **settings.optimizer_options)
    sequencer = machine = None
    if settings.deliverable:
        machine = Machine.load(settings.machine)
        name = settings.sequencer or default_sequencer(settings.technique)
        sequencer = get_sequencer(name, **settings.sequencer_options)
        kind = "vmat" if setup.arcs else "imrt"
        if kind not in sequencer.techniques:
            raise SequencingError(f"sequencer '{name}' cannot sequence {'arcs' if setup.arcs else 'static fields'} "
                                  f"(technique '{settings.technique}'); use "
                                  f"'{default_sequencer(settings.technique)}'")
    return scorecard, setup, rules, optimizer, sequencer, machine


def _normalization(case: Case, dose: np.ndarray, volume_pct: float = 95.0) -> float:
    rx = max(case.prescriptions, key=lambda p: p.dose_gy)
    return normalization_factor(dose, case.structures[rx.structure], case.grid, rx.dose_gy, volume_pct,
                                f"case '{case.patient_id}': target '{rx.structure}'")


def plan_case(case: Case, settings: PlanSettings | None = None, progress: Progress | None = None) -> PlanResult:
    """Plan `case` with `settings` (see the module doc); the case gains its helper structures."""
    settings = settings or PlanSettings()
    progress = progress or Progress(quiet=True)
    timings: dict[str, float] = {}
    warnings: list[str] = []
    t = time.perf_counter()
    scorecard, setup, rules, optimizer, sequencer, machine = _check_inputs(case, settings)
    warnings.extend(prepare_case(case))  # standard names before the recipe and scorecard read them

    recipe = None
    if case.site in ("hn", "lung"):
        recipe = add_helpers(case)
        made = sum(e.status == "made" for e in recipe.report)
        progress(f"helper structures: {made} made, {len(recipe.skipped)} skipped")
    timings["structures_s"] = time.perf_counter() - t

    t = time.perf_counter()
    influence = dose_influence(case, setup.beams, dose_grid_mm=settings.dose_grid_mm)
    exempt = tuple(settings.transition_exempt)
    problem = PlanningProblem(influence, case.prescriptions, case.patient_id, settings.transition_mm, exempt)
    timings["dose_influence_s"] = time.perf_counter() - t
    progress(f"dose influence: {len(setup.beams)} beams, {influence.n_beamlets} beamlets, "
             f"{influence.nnz / 1e6:.1f} M nonzeros ({timings['dose_influence_s']:.1f} s)")

    refine_mm = settings.transition_mm if settings.refine_transition_mm is None else \
        min(settings.refine_transition_mm, settings.transition_mm)
    refine_problem = problem if refine_mm == settings.transition_mm else \
        PlanningProblem(influence, case.prescriptions, case.patient_id, refine_mm, exempt)

    def evaluate(objectives: ObjectiveSet, start=None, on=problem) -> Iteration:
        t0 = time.perf_counter()
        result = optimizer.optimize(on, objectives, start=start)
        return _iteration(case, influence, result, objectives, scorecard, on.transition_mm, t0)

    t = time.perf_counter()
    objectives = settings.objectives or initial_objectives(case, scorecard)
    iterations = [evaluate(objectives)]
    iterations[0].stage = "initial"
    progress(f"initial plan: score {iterations[0].score:.2f} ({iterations[0].seconds:.1f} s)")

    def refine(current: Iteration, n: int, on: PlanningProblem) -> Iteration:
        """Algorithm 1, lines 3-22: the rules' objectives from `current`, optimised on `on`."""
        dvhs = compute_dvhs(current.dose, case.structures, grid=case.grid)
        ctx = RuleContext(case, scorecard, dvhs, current.report, iteration=n)
        buffer = ObjectiveSet(prescription_objectives(case))
        for rule in rules:
            try:
                buffer.objectives.extend(rule.objectives(ctx))
            except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, never fatal
                msg = f"objective rule '{getattr(rule, 'name', type(rule).__name__)}' failed in iteration {n}: " \
                      f"{type(exc).__name__}: {exc}"
                warnings.append(msg)
                progress(msg)
        start = _optimizer_weights(current)
        return evaluate(buffer, start=start if start.size else None, on=on)

    def say(it: Iteration, label: str) -> None:
        progress(f"{label}: score {it.score:.2f} ({it.score - iterations[best].score:+.2f} on the best; "
                 f"{it.seconds:.1f} s)" + ("" if it.meets_quality_filter else "; target outside the quality filter"))

    best, stale = 0, 0
    for n in range(1, settings.iterations + 1):
        if scorecard is None:
            warnings.append("no scorecard for this site: no refinement")
            break
        it = refine(iterations[-1], n, refine_problem)
        it.stage = "refinement"
        iterations.append(it)
        previous = iterations[best]
        gain = it.score - previous.score
        say(it, f"iteration {n}")
        improved = it.preferred_to(previous)
        if improved:
            best = len(iterations) - 1
        stale = 0 if improved and (gain >= settings.min_gain or not previous.meets_quality_filter) else stale + 1
        if stale >= settings.patience:
            progress(f"stopping: no gain of {settings.min_gain} for {settings.patience} iterations")
            break
    if settings.consolidate and best > 0 and refine_problem is not problem:
        it = refine(iterations[best], len(iterations), problem)
        it.stage = "consolidation"
        iterations.append(it)
        say(it, f"consolidation ({settings.transition_mm:g} mm zone, from iteration {best})")
        if it.preferred_to(iterations[best]):
            best = len(iterations) - 1
    if settings.navigate and scorecard is not None and len(iterations) > 1:
        it = navigate(case, influence, iterations, best, scorecard)
        if it is not None:
            it.stage = "navigation"
            iterations.append(it)
            say(it, f"navigation (iteration {best} blended with {it.blend['fraction']:g} of iteration "
                    f"{it.blend['of'][1]})")
            best = len(iterations) - 1
    organs = organs_at_risk(case, recipe)
    if settings.spare and scorecard is not None and settings.iterations > 0 and organs:
        before = organ_mean_total(case, iterations[best].dose, organs)
        plans, kept = spare_organs(case, refine_problem, optimizer, iterations, best, scorecard, organs,
                                   settings.spare_fraction)
        for sparing, what in zip(plans, ("free", "held")):
            iterations.append(sparing)
            say(sparing, f"organ sparing, {what} ({len(organs)} organs at {settings.spare_fraction:g} of their mean)")
        if kept is not None:
            blend = not any(kept is p for p in plans)
            if blend:
                iterations.append(kept)
            best = next(i for i, it in enumerate(iterations) if it is kept)
            i, j = kept.blend["of"] if blend else (best, best)
            what = f"sparing plan {best}" if not blend else \
                f"iteration {i} blended with {kept.blend['fraction']:g} of iteration {j}"
            progress(f"organ sparing kept {what}: score {kept.score:.2f}, summed organ mean "
                     f"{before:.1f} -> {organ_mean_total(case, kept.dose, organs):.1f} Gy")
    timings["optimization_s"] = time.perf_counter() - t
    delivery = None
    delivered: dict[int, Delivery] = {}
    if sequencer is not None:

        def deliver(i: int) -> Delivery:
            if i not in delivered:
                delivered[i] = _deliver(case, setup, problem, iterations[i], sequencer, machine, scorecard, settings)
            return delivered[i]

        kept = choose_delivery(iterations, best, deliver, settings.delivery_candidates)
        tried = sorted(i for i in delivered if i != 0)
        blends: dict[float, tuple[Iteration, Delivery]] = {}  # fraction of the best plan -> blend, its delivery

        def deliver_blend(t: float) -> Delivery:
            it = blend_iterations(case, influence, iterations, kept, best, t, scorecard)
            blends[t] = it, _deliver(case, setup, problem, it, sequencer, machine, scorecard, settings)
            return blends[t][1]

        found = blend_for_delivery(iterations, best, kept, delivered, deliver_blend)
        if kept != best or tried not in ([], [best]):  # sequencing changed the choice, or others were tried
            scores = ", ".join(f"iteration {i}: {delivered[i].score:.2f}"
                               + ("" if delivered[i].meets_quality_filter else " (fails the quality filter)")
                               for i in [0] + tried)
            scores += "".join(f", {t:g} of iteration {best} blended into {kept}: {d.score:.2f}"
                              + ("" if d.meets_quality_filter else " (fails the quality filter)")
                              for t, (_, d) in blends.items())
            warnings.append(f"deliverable plans {scores}; " + (
                f"iteration {kept} kept" + (" (the initial plan)" if kept == 0 else "") if found is None else
                f"the blend of iteration {kept} with {found:g} of iteration {best} kept"))
            progress(warnings[-1])
        timings["sequencing_s"] = sum(d.seconds for d in [*delivered.values(), *(d for _, d in blends.values())])
        if found is not None:
            it, blend_delivery = blends[found]
            it.stage = "delivery"
            iterations.append(it)
            kept = len(iterations) - 1
            delivered[kept] = blend_delivery
        delivery, best = delivered[kept], kept
        d = delivery.plan
        progress(f"deliverable plan ({d.sequencer}, {machine.name}): "
                 f"{sum(b.n_segments for b in d.beams)} {'control points' if setup.arcs else 'segments'}, "
                 f"{d.total_mu:.0f} MU per fraction, fluence fidelity {delivery.fidelity['plan']:.3f}; "
                 f"score {delivery.score:.2f} (ideal fluence {iterations[best].score:.2f}; {delivery.seconds:.1f} s)")
    return PlanResult(case, settings, setup, recipe, iterations, best, timings, warnings, delivery, delivered)


def _optimizer_weights(plan: Iteration) -> np.ndarray:
    """A plan's beamlet weights before its normalisation: the optimiser's frame, and its warm start."""
    return plan.result.weights / max(plan.result.normalization_factor, 1e-12)


def _iteration(case: Case, influence, result: OptimizationResult, objectives: ObjectiveSet, scorecard,
               transition_mm: float, t0: float, blend: dict | None = None) -> Iteration:
    """An optimizer result as an iteration: its dose on the case grid, normalised (weights, fluences and
    factor scaled with it) and scored; `t0` is when its work began (``time.perf_counter``)."""
    dose = resample(result.dose, influence.grid, case.grid)
    # Plan normalisation on the dose that is scored and saved: the highest
    # target's D95 on the case grid equals its prescription.
    f = _normalization(case, dose)
    dose *= np.float32(f)
    result.weights = result.weights * np.float32(f)
    result.normalization_factor *= f
    result.fluences = [m * np.float32(f) for m in result.fluences]
    report = score_plan(case, dose, scorecard) if scorecard is not None else None
    return Iteration(objectives, result, dose, report, time.perf_counter() - t0, target_metrics(case, dose),
                     transition_mm, blend)


#: Priority of the organ-sparing mean objectives (:func:`sparing_objectives`) of an organ at the organs'
#: average mean dose; an organ at mean m gets it x (average / m)^2, at most :data:`SPARING_PRIORITY_MAX` x.
SPARING_PRIORITY = 1.0

#: Largest factor on :data:`SPARING_PRIORITY` (an organ at a tenth of the average mean or less).
SPARING_PRIORITY_MAX = 100.0

#: Priority of :func:`hold_objectives` (against the sparing objectives' 1: a mean objective's excess is
#: tens of Gy over the whole organ, a hot spot's a few Gy in a few voxels).
HOLD_PRIORITY = 1000.0

#: Name prefix of the recipes' rings round the targets (RingPTVHigh, RingPTVMid, RingPTV, ...).
RING_PREFIX = "RingPTV"

#: Fractions of another iteration's fluence that navigation mixes into the best plan's.
BLEND_FRACTIONS = tuple(round(0.1 * k, 1) for k in range(1, 10))


def blend_iterations(case: Case, influence, iterations: list, i: int, j: int, fraction: float,
                     scorecard) -> Iteration:
    """The plan of ``(1 - fraction)`` x iteration i's beamlet weights + ``fraction`` x iteration j's.

    Both are normalised plans; the blend's dose is computed from its weights
    through the dose-influence matrix (the same mixture of their doses, dose
    being linear in the weights), renormalised like every plan and scored.
    It keeps iteration i's objectives and zone.
    """
    t0 = time.perf_counter()
    a, b = iterations[i], iterations[j]
    weights = ((1.0 - fraction) * a.result.weights + fraction * b.result.weights).astype(np.float32)
    fluences = [(1.0 - fraction) * fa + fraction * fb for fa, fb in zip(a.result.fluences, b.result.fluences)]
    result = OptimizationResult(weights, influence.dose(weights), fluences, [], 0, True,
                                f"blend of iterations {i} and {j} ({fraction:g} of {j})", target=a.result.target)
    return _iteration(case, influence, result, a.objectives, scorecard, a.transition_mm, t0,
                      {"of": [i, j], "fraction": fraction})


def navigate(case: Case, influence, iterations: list, best: int, scorecard) -> Iteration | None:
    """The best blend of the best plan with another iteration (``PlanSettings.navigate``), or None.

    Candidates are scored on the mixture of the two normalised doses (exact:
    dose is linear in the weights); the winner is rebuilt from its weights by
    :func:`blend_iterations` and returned only if it is preferred to the best plan.
    """
    t0 = time.perf_counter()
    a = iterations[best]
    chosen, chosen_plan = None, a
    for j, b in enumerate(iterations):
        if j == best:
            continue
        for t in BLEND_FRACTIONS:
            _, candidate = _mixture(case, a, b, t, scorecard)
            if candidate.preferred_to(chosen_plan):
                chosen, chosen_plan = (j, t), candidate
    if chosen is None:
        return None
    it = blend_iterations(case, influence, iterations, best, chosen[0], chosen[1], scorecard)
    it.seconds = time.perf_counter() - t0
    return it if it.preferred_to(a) else None


def organs_at_risk(case: Case, recipe: RecipeResult | None) -> list[str]:
    """The case's own organs at risk: its non-empty structures that are not targets, ``Body`` or recipe helpers."""
    made = {e.name for e in recipe.report if e.status == "made"} if recipe is not None else set()
    body = case.structures.find("Body")
    return [n for n in case.structures
            if n != body and n not in made and not is_target_name(n) and case.structures[n].any()]


def organ_mean_total(case: Case, dose: np.ndarray, organs: list[str]) -> float:
    """Sum of the organs' mean doses (Gy) of a case-grid dose."""
    return float(sum(dose[case.structures[n]].mean(dtype=np.float64) for n in organs))


def sparing_objectives(problem: PlanningProblem, plan: Iteration, organs: list[str], fraction: float,
                       priority: float = SPARING_PRIORITY) -> ObjectiveSet:
    """`plan`'s objectives plus a mean objective on each organ at `fraction` of its current mean.

    The mean is taken over the voxels the objective acts on (the organ
    outside the targets and the transition zone, :meth:`PlanningProblem.rows`)
    and in the optimiser's frame (before the plan normalisation), so that the
    objective pushes where it can act; organs with no such voxels get none.
    Each organ's priority is `priority` x (average of the organs' means /
    its mean)^2 (at most :data:`SPARING_PRIORITY_MAX` x), so that every
    objective starts at the same penalty and asks the same relative cut.
    Why: a mean objective's penalty is its excess squared, so at one
    priority an organ at 2 Gy (a brainstem beyond the fields) was pushed
    about 400 times less than one at 40 Gy (a mandible); on 10 OpenKBP
    patients (ideal fluence) the relative priorities lowered the kept
    plans' brainstem mean by 0.42 Gy on average, cord 0.62, oesophagus
    0.89, parotids 0.48, larynx 0.32, and raised the mandible's 0.19.
    """
    dose = problem.influence.dose_vector(_optimizer_weights(plan))
    means = {}
    for name in organs:
        rows = problem.rows(name)
        if rows is not None and rows.size:
            means[name] = float(dose[rows].mean(dtype=np.float64))
    out = ObjectiveSet(list(plan.objectives.objectives))
    if not means:
        return out
    average = float(np.mean(list(means.values())))
    for name, mean in means.items():
        scale = SPARING_PRIORITY_MAX if mean * mean * SPARING_PRIORITY_MAX <= average * average \
            else (average / mean) ** 2
        out.add(MeanObjective(name, round(fraction * mean, 2), priority * scale))
    return out


def hold_objectives(problem: PlanningProblem, plan: Iteration, priority: float = HOLD_PRIORITY) -> list:
    """Objectives that hold `plan`'s targets where they are: an upper objective at each target's and target
    ring's current maximum dose, and a lower one at each target's current D95 (Gy, optimiser's frame).

    Targets are the prescribed targets and target helpers
    (:meth:`PlanningProblem.is_target`), rings the recipes' ``RingPTV*``
    helpers (:data:`RING_PREFIX`), over the rows `problem` gives them (pass
    a problem that exempts the rings from the transition zone, where their
    hot spots lie). Why: a push on the organs' mean doses moves dose into
    the targets' hot spots and the tissue round them, and a plan normalised
    on D95 then scales those up; the penalties being voxel means, a maximum
    holds only at a high priority.
    """
    dose = problem.influence.dose_vector(_optimizer_weights(plan))
    out = []
    for name in problem.structures:
        target = problem.is_target(name)
        rows = problem.rows(name) if target or name.startswith(RING_PREFIX) else None
        if rows is None or rows.size == 0:
            continue
        d = dose[rows]  # the objectives' own voxel-rank D95, so that each hold starts at its boundary
        out.append(PointObjective(name, "upper", round(float(d.max()), 2), 0.0, priority))
        if target:
            out.append(PointObjective(name, "lower", round(voxel_dose_at_volume(d, 95.0), 2), 95.0, priority))
    return out


def spare_organs(case: Case, problem: PlanningProblem, optimizer, iterations: list, best: int, scorecard,
                 organs: list[str], fraction: float) -> tuple[list[Iteration], Iteration | None]:
    """The organ-sparing plans from iteration `best` and the plan kept from them (``PlanSettings.spare``).

    Two sparing plans are optimised from the best plan's weights: the
    *free* one with :func:`sparing_objectives`, the *held* one with
    :func:`hold_objectives` besides (on `problem` with the target rings
    exempt from its zone). :func:`sparing_blend` chooses how much of each to
    mix into the best plan, and the mixture with the lower summed organ
    mean of the two is kept: the sparing plan itself, or a blend rebuilt by
    :func:`blend_iterations` (``blend.of``: the best plan and that sparing
    plan, which the caller appends to `iterations` in the order returned),
    or None when no mixture lowers the organs' doses at no cost. Why two:
    on 13 OpenKBP patients (ideal fluence) the held plan's blend spared
    more in 8 (pt_13, 24, 28, 54, 59, 61, 65, 68; where the free one kept
    none in 3 of them: its blends broke the quality filter or a hot-spot
    item), the free one's in 3 (pt_1, 41, 71), neither kept one in 2.
    """
    t0 = time.perf_counter()
    a = iterations[best]
    held_problem = PlanningProblem(problem.influence, problem.prescriptions, problem.case_id, problem.transition_mm,
                                   tuple(problem.transition_exempt) + (RING_PREFIX,))
    free = sparing_objectives(problem, a, organs, fraction)
    held = ObjectiveSet(free.objectives + hold_objectives(held_problem, a))
    plans, chosen, lowest = [], None, organ_mean_total(case, a.dose, organs)
    for on, objectives in ((problem, free), (held_problem, held)):
        t1 = time.perf_counter()
        result = optimizer.optimize(on, objectives, start=_optimizer_weights(a))
        sparing = _iteration(case, problem.influence, result, objectives, scorecard, problem.transition_mm, t1)
        sparing.stage = "sparing"
        plans.append(sparing)
        found = sparing_blend(case, a, sparing, scorecard, organs)
        if found is not None and found[1] < lowest:
            chosen, lowest = (len(plans) - 1, found[0]), found[1]
    if chosen is None:
        return plans, None
    k, t = chosen
    if t == 1.0:
        return plans, plans[k]
    j = len(iterations) + k  # where the caller puts that sparing plan
    it = blend_iterations(case, problem.influence, iterations + plans, best, j, t, scorecard)
    it.stage, it.seconds = "sparing", time.perf_counter() - t0
    return plans, (it if spares_at_no_cost(a, it) else None)


#: Gy: how far a target's D95 may fall in organ sparing (DVH interpolation, not a clinical allowance).
COVERAGE_TOL_GY = 0.05


def keeps_coverage(before: dict, after: dict, tol_gy: float = COVERAGE_TOL_GY) -> bool:
    """Whether no target's D95 falls below its prescription, or below its D95 `before` where that was lower.

    `before` and `after` are :func:`airtp.planning.quality.target_metrics`.
    Why: a scorecard item that already scores nothing (a lower level's V Rx
    under 90 %, say) loses no point when its coverage falls further, so the
    score alone does not guard the targets of organ sparing (a coarse plan of
    OpenKBP pt_48 lost PTV56 D95 to 49.1 Gy that way).
    """
    return all(after[name]["D95_gy"] >= min(m["D95_gy"], m["prescription_gy"]) - tol_gy
               for name, m in before.items())


#: (D5/D95, Dmax/D95): how far below the quality filter's limits a sparing blend of a plan that passes the
#: filter must lie as an ideal fluence. Sequencing raised the ratios by up to 0.0026 and 0.007 in OpenKBP
#: plans (pt_4, pt_13), and a spared plan that fails the filter once sequenced is not delivered: a plan from
#: before sparing is, and the sparing is lost (pt_13: 62.9 points delivered, failing; 60.5 kept instead).
#: (Measured before :func:`blend_for_delivery`, which now rescues part of such a plan. Margin 0 since, on five
#: patients only: pt_13 delivered 64.23 points, brainstem 0.19 Gy lower; pt_31, pt_61 gained; pt_5, pt_59 unchanged.)
SEQUENCING_MARGIN = (0.004, 0.01)


def keeps_filter_margin(before: dict, after: dict, margin: tuple = SEQUENCING_MARGIN) -> bool:
    """Whether `after` passes the quality filter `margin` below its limits, or lies no nearer to them than
    `before`; always where `before` fails the filter (nothing to keep). Both are :func:`target_metrics`."""
    if not meets_quality_filter(before) or meets_quality_filter(after, margin):
        return True
    b, a = next(iter(before.values())), next(iter(after.values()))
    return a["d5_over_d95"] <= b["d5_over_d95"] and a["dmax_over_d95"] <= b["dmax_over_d95"]


def spares_at_no_cost(plan, candidate) -> bool:
    """The organ-sparing rule: `candidate` loses no scorecard point and keeps the quality filter against
    `plan` (:meth:`Iteration.preferred_to`), with the sequencing margin (:func:`keeps_filter_margin`), and
    keeps every target's coverage (:func:`keeps_coverage`)."""
    return not plan.preferred_to(candidate) and keeps_filter_margin(plan.targets, candidate.targets) \
        and keeps_coverage(plan.targets, candidate.targets)


def sparing_blend(case: Case, plan: Iteration, sparing: Iteration, scorecard,
                  organs: list[str]) -> tuple[float, float] | None:
    """(t, summed organ mean Gy) of the fraction t of `sparing` mixed into `plan` that lowers the organs'
    summed mean dose most, or None.

    Candidates are t = 0.1 ... 0.9 (:data:`BLEND_FRACTIONS`) and 1 (the
    sparing plan itself), each mixture of the two normalised doses
    renormalised; only those that spare at no cost count
    (:func:`spares_at_no_cost`), and only a summed organ mean below `plan`'s.
    """
    chosen, lowest = None, organ_mean_total(case, plan.dose, organs)
    for t in BLEND_FRACTIONS + (1.0,):
        dose, candidate = _mixture(case, plan, sparing, t, scorecard)
        if not spares_at_no_cost(plan, candidate):
            continue
        total = organ_mean_total(case, dose, organs)
        if total < lowest:
            chosen, lowest = t, total
    return None if chosen is None else (chosen, lowest)


@dataclass
class _Scored(_RankedPlan):
    report: ScoreReport
    targets: dict


def _mixture(case: Case, a, b, t: float, scorecard) -> tuple[np.ndarray, _Scored]:
    """The dose of ``(1 - t)`` x plan a + ``t`` x plan b (both normalised, case grid), renormalised, and its
    ranking; exact for the blend of their weights, dose being linear in them (:func:`blend_iterations`)."""
    dose = (1.0 - t) * a.dose + t * b.dose
    dose *= np.float32(_normalization(case, dose))
    return dose, _Scored(score_plan(case, dose, scorecard), target_metrics(case, dose))


def choose_delivery(iterations: list, best: int, deliver, limit: int) -> int:
    """The index of the iteration whose deliverable plan is kept; ``deliver(i)`` sequences iteration i.

    What is delivered is what counts: the initial plan is delivered too (the
    paper's initial plans were complete plans, so initial and final scores
    compare plans of one kind), and sequencing can tip a plan over the
    quality filter or below the initial plan. The refined iterations that
    beat the initial plan as ideal fluences are delivered in order of
    preference (`best` first) until the preferred deliverable plan so far
    beats the initial plan's and passes the filter, or fails it only as its
    ideal fluence did, at most `limit` of them; the preferred deliverable
    plan of all is kept. (Where every plan fails the filter, as in some real
    patients, delivering more candidates would only choose among them by
    sequencing noise, undoing the choice made on the ideal fluences.)
    """
    delivered = {0: deliver(0)}
    candidates = sorted((i for i in range(1, len(iterations)) if iterations[i].preferred_to(iterations[0])),
                        key=lambda i: (iterations[i].meets_quality_filter, iterations[i].score), reverse=True)
    if best in candidates:  # the refinement loop's choice first
        candidates.remove(best)
        candidates.insert(0, best)
    kept = 0
    for i in candidates[:max(int(limit), 1)]:
        delivered[i] = deliver(i)
        if delivered[i].preferred_to(delivered[kept]):
            kept = i
        if kept != 0 and (delivered[kept].meets_quality_filter or not iterations[kept].meets_quality_filter):
            break
    return kept


#: Fractions of the best plan in its blends with the kept plan that :func:`blend_for_delivery` sequences, in order.
DELIVERY_BLEND_FRACTIONS = (0.8, 0.6, 0.4, 0.2)


def blend_for_delivery(iterations: list, best: int, kept: int, delivered: dict, deliver_blend) -> float | None:
    """The fraction t of the best plan in the blend with the kept one whose deliverable plan is preferred to
    the kept one's, or None; ``deliver_blend(t)`` sequences that blend and returns its deliverable plan.

    Tried only where sequencing tipped the best plan out of the quality filter
    that its ideal fluence met, and :func:`choose_delivery` therefore kept
    another plan whose deliverable passes it (often the initial plan, losing
    all that refinement gained). Blends keep part of the gain: most of the
    best plan first (:data:`DELIVERY_BLEND_FRACTIONS`), the first one
    preferred to the kept plan's deliverable is taken. Why: in OpenKBP
    patients sequencing raised D5/D95 by 0.001-0.002 (pt_5 1.0698 -> 1.0714,
    pt_28 1.0697 -> 1.0708; limit 1.07), so the initial plan was delivered,
    6 points below.
    """
    if kept == best or best not in delivered or not iterations[best].meets_quality_filter \
            or delivered[best].meets_quality_filter or not delivered[kept].meets_quality_filter:
        return None
    for t in DELIVERY_BLEND_FRACTIONS:
        if deliver_blend(t).preferred_to(delivered[kept]):
            return t
    return None


def _deliver(case: Case, setup, problem: PlanningProblem, best: Iteration, sequencer, machine, scorecard,
             settings: PlanSettings) -> Delivery:
    """Sequence the best iteration's fluences, compute, normalise and score the dose of the delivery plan."""
    t0 = time.perf_counter()
    influence = problem.influence
    fractions = max(case.prescriptions, key=lambda p: p.dose_gy).fractions
    seq_problem = SequencingProblem(setup.beams, influence.beamlet_grids, best.result.fluences, machine, fractions,
                                    setup.arcs, influence, problem.target_rows(),
                                    machine.mu_per_weight(influence.model), case.patient_id)
    plan = sequencer.sequence(seq_problem)
    angles = None
    if setup.arcs:  # arc intervals are computed at the sector beams' angles, the optimisation's gantry sampling
        angles = {b.name: [setup.beams[i].gantry_deg for i in idx]
                  for b, idx in zip(plan.beams, arc_sectors(setup.beams, setup.arcs))}
    dose = plan_dose(case, plan, machine, settings.dose_grid_mm, model=influence.model, arc_dose_angles=angles)
    dose = resample(dose, influence.grid, case.grid)
    f = _normalization(case, dose)
    dose *= np.float32(f)
    for beam in plan.beams:  # the normalisation is a change of MU
        for cp in beam.control_points:
            cp.cumulative_mu *= f
    time_plan(plan, machine)
    plan.limits_checked = check_limits(plan, machine)
    fidelity = fluence_fidelity(plan, seq_problem)
    report = score_plan(case, dose, scorecard) if scorecard is not None else None
    return Delivery(plan, dose, report, fidelity, float(f), time.perf_counter() - t0, angles,
                    target_metrics(case, dose))
