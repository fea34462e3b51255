"""The gradient-statistics experiment: its exact gradients are exact, and its statistics measure what they say."""
import numpy as np
import pytest

from experiments.gradients import (ESTIMATORS, attention_of, estimates, exact_gradient,
                                                      gradient_table, make_problem, statistics)
from attention_sampling.objective import patch_rewards


def objective(problem, estimator, logits):
    a = attention_of(logits)
    f, y, t = problem["features"], problem["label"], problem["temperature"]
    if estimator == "reinforce":
        r = patch_rewards(f.reshape(1, -1, f.shape[-1]), np.array([y]), t).reshape(a.shape)
        return -np.sum(a * r)
    z = t * np.einsum("hw,hwc->c", a, f)
    return float(np.log(np.sum(np.exp(z - z.max()))) + z.max() - z[y])


@pytest.mark.parametrize("estimator", ["reinforce", "expectation"])
def test_exact_gradients_match_finite_differences(estimator):
    problem = make_problem(seed=3, side=4)
    analytic = exact_gradient(problem, estimator)
    numeric = np.zeros_like(analytic)
    for index in np.ndindex(analytic.shape):
        step = np.zeros_like(analytic)
        step[index] = 1e-6
        numeric[index] = (objective(problem, estimator, problem["logits"] + step)
                          - objective(problem, estimator, problem["logits"] - step)) / 2e-6
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-9)


def test_statistics_of_known_samples():
    exact = np.array([[1.0, 0.0]])
    samples = np.array([[[2.0, 1.0]], [[2.0, -1.0]]])  # mean (2, 0): the exact direction, twice as long
    result = statistics(samples, exact)
    assert result["cosine_of_mean"] == pytest.approx(1.0)
    assert result["relative_norm_of_mean"] == pytest.approx(2.0)
    assert result["mean_cosine"] == pytest.approx(2 / np.sqrt(5))
    assert result["snr"] == pytest.approx(2.0)


def test_the_estimators_point_where_the_exact_gradients_do_and_more_patches_cut_the_noise():
    """Seeded draws: at P = 20 both estimators' mean lies along the exact gradient; the signal-to-noise
    grows with P. (REINFORCE's standardised advantage rescales it: only its direction is compared.)"""
    rows = gradient_table(make_problem(seed=0), patch_counts=(1, 20), trials=3000, seed=0)
    for estimator in ESTIMATORS:
        for sampling in ("with", "without"):
            chosen = {r["patches"]: r for r in rows if r["estimator"] == estimator and r["sampling"] == sampling}
            assert chosen[20]["cosine_of_mean"] > 0.99
            assert chosen[20]["snr"] > 2 * chosen[1]["snr"]
    expectation = [r for r in rows if r["estimator"].startswith("expectation") and r["patches"] == 20]
    assert all(abs(r["relative_norm_of_mean"] - 1) < 0.05 for r in expectation)


def test_estimates_are_gradients_of_the_logits():
    """dL/dz through a softmax sums to zero over the cells, for every single estimate."""
    problem = make_problem(seed=1)
    for estimator in ESTIMATORS:
        samples = estimates(problem, estimator, False, 5, 4, 50, np.random.default_rng(0))
        np.testing.assert_allclose(samples.sum(axis=(1, 2)), 0, atol=1e-9)


def test_when_patches_look_alike_the_baseline_restores_the_expectation_signal():
    """Feature vectors sharing one direction (an untrained feature network): without a baseline the part
    they share drowns the expectation estimator's signal; the other looks' baseline removes it."""
    rows = gradient_table(make_problem(seed=0, alike=3.0), patch_counts=(20,), trials=3000, seed=0)
    snr = {(r["estimator"], r["sampling"]): r["snr"] for r in rows}
    for sampling in ("with", "without"):
        assert snr[("expectation", sampling)] > 3 * snr[("expectation, no baseline", sampling)]


def test_alike_features_share_a_direction_and_stay_unit_length():
    features = make_problem(seed=2, alike=3.0)["features"].reshape(-1, 3)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1)
    spread = make_problem(seed=2)["features"].reshape(-1, 3)
    assert np.linalg.norm(features.mean(axis=0)) > np.linalg.norm(spread.mean(axis=0)) + 0.3
