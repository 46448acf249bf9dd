"""The one-run audit of Steinke, Nasr & Jagielski (NeurIPS 2023): its ε lower bound against exact
binomial computations and against randomized response, whose ε is known; its canaries; and the
audit end to end, from one training run each: at or below the accountant's ε under DP-SGD,
clearly above it without DP."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

import privbench
from privbench.analysis.one_run import (
    audit_canaries,
    epsilon_lower_bound,
    guess_choices,
    p_value,
)
from privbench.engine.audit import plan
from privbench.engine.spec import AuditSpec
from privbench.errors import PrivbenchError
from privbench.plugins import Registry
from privbench.results import leaderboard as board
from privbench.results.db import ResultsDB
from privbench.results.report import render_report
from privbench.results.tables import summary_text
from tests.conftest import run_cli


def randomized_response(m: int, epsilon: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """m canaries in at random, and an ε-DP release of each one's membership (randomized
    response: the truth with probability e^ε / (1 + e^ε)) as its score."""
    rng = np.random.default_rng(seed)
    included = rng.random(m) < 0.5
    truthful = rng.random(m) < 1 / (1 + math.exp(-epsilon))
    return np.where(truthful, included, ~included).astype(float), included


def test_without_delta_the_p_value_is_the_binomial_tail():
    for r, v, eps in [(100, 70, 0.5), (400, 399, 4.0), (10, 0, 1.0)]:
        q = math.exp(eps) / (1 + math.exp(eps))
        assert p_value(1000, r, v, eps, delta=0) == pytest.approx(binom.sf(v - 1, r, q))


def test_delta_adds_twice_m_delta_times_the_largest_mean_of_the_mass_below_v():
    m, r, v, eps, delta = 1000, 200, 150, 1.0, 1e-3
    q = 1 / (1 + math.exp(-eps))
    means = [sum(binom.pmf(v - j, r, q) for j in range(1, i + 1)) / i for i in range(1, v + 1)]
    expected = binom.sf(v - 1, r, q) + 2 * m * delta * max(means)
    assert p_value(m, r, v, eps, delta) == pytest.approx(expected, rel=1e-9)


def test_all_guesses_right_give_the_closed_form_bound():
    # With δ = 0 and v = r the p-value is q^r: the bound is the ε whose q is level^(1/r).
    for r in (10, 100, 1000):
        q = 0.05 ** (1 / r)
        expected = math.log(q / (1 - q))
        bound = epsilon_lower_bound(r, r, r, delta=0, level=0.05, tolerance=1e-7)
        assert bound == pytest.approx(expected, abs=1e-6)
        assert bound <= expected  # rounded down: still a bound


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(1, 300), st.data())
def test_the_bound_is_the_largest_epsilon_rejected(r, data):
    v = data.draw(st.integers(0, r))
    m = data.draw(st.integers(r, 3 * r))
    bound = epsilon_lower_bound(m, r, v)
    assert bound >= 0
    if bound > 0:
        assert p_value(m, r, v, bound) < 0.05
    assert p_value(m, r, v, bound + 2e-4) >= 0.05
    # One more right guess never lowers it.
    if v < r:
        assert epsilon_lower_bound(m, r, v + 1) >= bound


def test_guess_choices_fit_the_canaries_and_are_counted_for_bonferroni():
    choices = guess_choices(60)
    assert (10, 0) in choices and (0, 50) in choices and (20, 20) in choices
    assert (50, 50) not in choices and all(i + o <= 60 for i, o in choices)
    scores, included = randomized_response(60, 1.0, 0)
    assert audit_canaries(scores, included).choices == len(choices)


def test_randomized_response_is_never_overstated_beyond_the_confidence():
    # 40 audits of an ε = 1 mechanism: a 95% bound may exceed 1 in about 5% of them at most.
    bounds = [audit_canaries(*randomized_response(1000, 1.0, seed)).epsilon for seed in range(40)]
    assert sum(b > 1.0 for b in bounds) <= 4
    assert np.median(bounds) > 0.6  # and it is not vacuous


@pytest.mark.parametrize("epsilon", [1.0, 2.0])
def test_with_many_canaries_the_bound_approaches_the_true_epsilon(epsilon):
    bound = audit_canaries(*randomized_response(10_000, epsilon, 1)).epsilon
    assert 0.85 * epsilon < bound <= epsilon + 0.05


def test_scores_that_ignore_membership_prove_nothing():
    rng = np.random.default_rng(0)
    bounds = [
        audit_canaries(rng.normal(size=1000), rng.random(1000) < 0.5).epsilon for _ in range(20)
    ]
    assert sum(b > 0 for b in bounds) <= 1


def test_ties_are_broken_without_looking_at_the_truth():
    # Every score equal: which canaries are guessed "in" must not depend on which were.
    included = np.r_[np.ones(500, bool), np.zeros(500, bool)]
    assert audit_canaries(np.zeros(1000), included).epsilon == 0
    assert audit_canaries(np.zeros(1000), included[::-1]).epsilon == 0


def test_bad_canary_scores_are_refused():
    with pytest.raises(ValueError, match="one score"):
        audit_canaries([1.0, 2.0], [True])
    with pytest.raises(ValueError, match="finite"):
        audit_canaries([1.0, math.nan], [True, False])


# -- the canaries -----------------------------------------------------------------------------


def _pool(registry: Registry, **changes):
    spec = AuditSpec(audit="one-run", shadows=0, population=400, **changes)
    return plan(spec, registry)


def test_canaries_are_coin_flips_and_every_other_sample_is_trained_on(registry):
    pool = _pool(registry, canaries=200)
    assert len(pool) == 1 and pool.canaries is not None
    keep, positions = pool.masks[0], pool.canaries.positions
    assert len(positions) == 200 == len(np.unique(positions))
    others = np.setdiff1d(np.arange(400), positions)
    assert keep[others].all()
    assert np.array_equal(keep[positions], pool.canaries.included)
    assert 70 < pool.canaries.included.sum() < 130  # Binomial(200, 1/2)


def test_mislabelled_canaries_carry_another_class_and_natural_ones_their_own(registry):
    natural = _pool(registry, canaries=100, canary_kind="natural")
    wrong = _pool(registry, canaries=100)
    assert np.array_equal(natural.canaries.positions, wrong.canaries.positions)
    changed = np.flatnonzero((natural.population.y != wrong.population.y).numpy())
    assert np.array_equal(changed, wrong.canaries.positions)
    assert np.array_equal(natural.population.y.numpy(), natural.dataset.train.y[natural.indices])
    # Another seed, other canaries, so other store keys.
    assert not np.array_equal(_pool(registry, canaries=100, seed=1).canaries.positions,
                              wrong.canaries.positions)  # fmt: skip
    assert natural.keys[0] != wrong.keys[0]


def test_default_count_is_the_papers_capped_at_half_the_population(registry):
    assert len(_pool(registry).canaries.positions) == 200
    with pytest.raises(PrivbenchError, match="--canaries 401"):
        _pool(registry, canaries=401)


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--attack", "lira"], "needs 2 shadow models and a one-run audit trains none"),
        (["--shadows", "3"], "leave --shadows 3 out"),
        (["--memorization"], "needs a pool of models"),
        (["--canaries", "1"], "--canaries 1: give 2 or more"),
        (["--canary-kind", "odd"], "--canary-kind odd: use mislabelled or natural"),
        (["--attack", "reconstruction"], "a one-run audit measures membership"),
    ],
)
def test_what_a_one_run_audit_cannot_do_is_one_line(capsys, tmp_path, flags, match):
    code, out, err = run_cli(capsys, "run", "-w", str(tmp_path), "--audit", "one-run", *flags)
    assert code == 2
    assert match in err and "Traceback" not in err + out
    assert not (tmp_path / "models").exists()


def test_an_unknown_game_or_canaries_without_the_game_are_one_line(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "-w", str(tmp_path), "--audit", "two-runs")
    assert code == 2 and "--audit two-runs: use membership or one-run" in err
    code, _, err = run_cli(capsys, "run", "-w", str(tmp_path), "--canaries", "100")
    assert code == 2 and "--canaries and --canary-kind go with --audit one-run" in err


# -- end to end -------------------------------------------------------------------------------


@pytest.mark.slow
def test_one_run_bounds_dp_sgd_by_its_accountant_and_an_open_model_far_above(tmp_path):
    """Each from one training run: no DP, the loss attack proves ε well above 1 from the
    mislabelled canaries; DP-SGD at ε = 1 keeps the bound at or below its accountant's ε."""
    common = {"audit": "one-run", "attacks": ["loss"], "workspace": tmp_path}
    open_model = privbench.audit(epochs=60, **common)
    private = privbench.audit(defense=("dp-sgd", {"epsilon": 1.0}), **common)
    for result in (open_model, private):
        assert result.training.models == 1 and result.training.trained == 1
        assert result.spec.one_run == {"canaries": 628, "canary_kind": "mislabelled"}
    leak = open_model.attack("loss").one_run
    accountant = private.training.target_meta["epsilon"]
    assert accountant <= 1.0 + 0.02
    bound = private.attack("loss").one_run
    assert bound is not None and leak is not None
    assert bound.epsilon <= accountant
    assert leak.epsilon > 3.0 > 3 * accountant
    assert leak.canaries == 628 and leak.correct <= leak.guesses
    # Only the canaries are scored: the others were always in, so they say nothing.
    assert len(open_model.attack("loss").scores.score) == 628
    # Stored and read back whole; the run's summary says it beside the accountant's ε.
    again = privbench.load_run(private.run_id, workspace=tmp_path)
    assert again.attack("loss").one_run == bound
    text = summary_text(private)
    assert "one-run audit (Steinke et al.)" in text and "the accountant's ε: 0.99" in text
    page = render_report(again)
    assert "one-run audit (Steinke et al.)" in page and f"ε ≥ {bound.epsilon:.3f}" in page


def test_a_one_run_leaderboard_ranks_by_the_bound_and_others_do_not_show_it(tmp_path):
    small = {"population": 200, "canaries": 100, "epochs": 15, "workspace": tmp_path}
    one_run = privbench.audit(audit="one-run", attacks=["loss", "gap"], **small)
    privbench.audit(attacks="loss", population=200, shadows=1, epochs=1, workspace=tmp_path)
    with ResultsDB(tmp_path / "privbench.db") as db:
        rows = board.collect(db)
    assert sorted(r["attack"] for r in rows) == ["gap", "loss", "loss"]
    loss = next(r for r in rows if r["attack"] == "loss" and r["epsilon_one_run"] is not None)
    assert loss["epsilon_one_run"] == pytest.approx(one_run.attack("loss").one_run.epsilon)
    assert sum(r["epsilon_one_run"] is None for r in rows) == 1  # the membership game's row
    table = board.render(rows, "md", "epsilon_one_run")
    header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    assert header[header.index("seeds") + 1] == "epsilon_one_run"  # ranked: the first metric
    membership_only = [r for r in rows if r["epsilon_one_run"] is None]
    assert "epsilon_one_run" not in board.render(membership_only, "md", "auc")
