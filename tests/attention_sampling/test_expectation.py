"""The expectation estimator (Katharopoulos & Fleuret, 2019), with and without replacement: the estimate of
E_a[f] and its gradient with respect to the attention logits are unbiased."""
import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import nn
from attention_sampling.objective import (estimator_weights, expectation_backward, expectation_baseline,
                                          expectation_logits, floored_attention, floored_attention_backward, scatter_to_cells)
from tests.gradcheck import assert_gradients_close, numerical_gradient
from attention_sampling.sampling import sample_cells

problems = st.tuples(st.integers(1, 3), st.integers(2, 3), st.integers(1, 3), st.integers(0, 2**31 - 1))


def outcomes(attention, p, replace):
    """Every ordered sequence of P cells with its probability, under the sequential definition."""
    cells = [(r, c) for r in range(attention.shape[0]) for c in range(attention.shape[1])]
    for sequence in itertools.product(cells, repeat=p):
        if not replace and len(set(sequence)) < p:
            continue
        probability, removed = 1.0, 0.0
        for cell in sequence:
            probability *= attention[cell] / (1.0 if replace else 1.0 - removed)
            removed += attention[cell]
        yield np.array(sequence), probability


def draw_gradient(logits, cells, features, grad_logits, replace, floor=0.0, baseline=None):
    """One estimate of d(g . E_{a_s}[f])/dlogits for the drawn cells: (1, h, w). The cells come from
    a_s = (1 - eps) a + eps / K (a itself at eps = 0); the weights use a_s, the gradient goes back to the
    logits through the mixing and the log-softmax, as in train_step; `baseline` (C,) is subtracted from
    the features in the attention gradient."""
    layer = nn.SpatialLogSoftmax()
    log_attention = layer.forward(logits)
    log_sampled = floored_attention(log_attention, floor)
    values = np.exp(log_sampled)[0][cells[:, 0], cells[:, 1]][None]
    weights = estimator_weights(values, replace)
    drawn = features[cells[:, 0], cells[:, 1]][None]
    _, per_draw = expectation_backward(grad_logits[None], drawn, weights,
                                       baseline=None if baseline is None else baseline[None])
    grad_log_sampled = scatter_to_cells(per_draw, cells[None], logits.shape[1:])
    return layer.backward(floored_attention_backward(grad_log_sampled, log_attention, log_sampled, floor))


def gradient_problem(problem):
    """(h, w, P, seed) -> P (at most h w), a generator, logits (1, h, w), features (h, w, 3), g (3,)."""
    h, w, p, seed = problem
    rng = np.random.default_rng(seed)
    return min(p, h * w), rng, rng.standard_normal((1, h, w)), rng.standard_normal((h, w, 3)), rng.standard_normal(3)


def exact_gradient(logits, features, grad_logits):
    """d/dz sum_k a_k (g . f_k) = a_k (v_k - sum_j a_j v_j) with v = g . f."""
    attention = nn.softmax(logits, axis=(1, 2))
    values = features @ grad_logits
    return attention * (values - np.sum(attention[0] * values))


@settings(max_examples=25)
@given(problems, st.booleans())
def test_estimate_of_the_expectation_is_unbiased(problem, replace):
    """Summed over every outcome with its probability, sum_m w_m f_{i_m} equals sum_k a_k f_k exactly."""
    h, w, p, seed = problem
    p = min(p, h * w)
    rng = np.random.default_rng(seed)
    attention = nn.softmax(rng.standard_normal((h, w)) * 2, axis=(0, 1))
    features = rng.standard_normal((h, w, 3))
    expected = np.zeros(3)
    for cells, probability in outcomes(attention, p, replace):
        values = attention[cells[:, 0], cells[:, 1]][None]
        expected += probability * expectation_logits(features[cells[:, 0], cells[:, 1]][None],
                                                     estimator_weights(values, replace))[0]
    np.testing.assert_allclose(expected, np.einsum("hw,hwc->c", attention, features), atol=1e-12)


@settings(max_examples=25)
@given(problems, st.booleans())
def test_gradient_estimate_enumerated_equals_exact_gradient(problem, replace):
    """The expected gradient estimate equals the exact gradient of g . E_a[f] wrt the attention logits."""
    p, rng, logits, features, grad_logits = gradient_problem(problem)
    attention = nn.softmax(logits, axis=(1, 2))[0]
    expected = np.zeros_like(logits)
    for cells, probability in outcomes(attention, p, replace):
        expected += probability * draw_gradient(logits, cells, features, grad_logits, replace)
    np.testing.assert_allclose(expected, exact_gradient(logits, features, grad_logits), atol=1e-12)


@settings(max_examples=25)
@given(problems, st.booleans())
def test_gradient_with_any_fixed_baseline_enumerated_equals_exact_gradient(problem, replace):
    """A baseline b that does not depend on the look's draws leaves the expected gradient exact."""
    p, rng, logits, features, grad_logits = gradient_problem(problem)
    baseline = rng.standard_normal(3) * 3
    attention = nn.softmax(logits, axis=(1, 2))[0]
    expected = np.zeros_like(logits)
    for cells, probability in outcomes(attention, p, replace):
        expected += probability * draw_gradient(logits, cells, features, grad_logits, replace, baseline=baseline)
    np.testing.assert_allclose(expected, exact_gradient(logits, features, grad_logits), atol=1e-12)


@settings(max_examples=25)
@given(problems, st.booleans(), st.sampled_from([0.1, 0.5]))
def test_with_floor_estimate_and_gradient_enumerated_are_exact(problem, replace, floor):
    """Drawing from a_s = (1 - eps) a + eps / K with a_s's weights estimates E_{a_s}[f] without bias, and
    the gradient estimate, carried through the mixing, averages to d(g . E_{a_s}[f])/dz, which is
    (1 - eps) times the unfloored exact gradient (a_s,k - a_k is eps (1/K - a_k))."""
    p, rng, logits, features, grad_logits = gradient_problem(problem)
    sampled = np.exp(floored_attention(nn.log_softmax(logits, axis=(1, 2)), floor))[0]
    expected_gradient = np.zeros_like(logits)
    expected_estimate = np.zeros(3)
    for cells, probability in outcomes(sampled, p, replace):
        weights = estimator_weights(sampled[cells[:, 0], cells[:, 1]][None], replace)
        expected_estimate += probability * expectation_logits(features[cells[:, 0], cells[:, 1]][None], weights)[0]
        expected_gradient += probability * draw_gradient(logits, cells, features, grad_logits, replace, floor)
    np.testing.assert_allclose(expected_estimate, np.einsum("hw,hwc->c", sampled, features), atol=1e-12)
    np.testing.assert_allclose(expected_gradient, (1 - floor) * exact_gradient(logits, features, grad_logits),
                               atol=1e-12)


@settings(max_examples=20)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(0, 2**31 - 1), st.sampled_from([1.0, 3.0]))
def test_tempered_expectation_backward_matches_finite_differences(m, p, seed, temperature):
    """d(sum(G * T sum_m w_m f_m))/df, the weights held constant, equals central differences; the
    attention gradient is T w_m (G . f_m)."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((m, p, 3))
    weights = rng.random((m, p))
    projection = rng.standard_normal((m, 3))
    grad_features, grad_per_draw = expectation_backward(projection, features, weights, temperature)
    numeric = numerical_gradient(
        lambda: float(np.sum(projection * expectation_logits(features, weights, temperature))), features)
    assert_gradients_close(grad_features, numeric)
    np.testing.assert_allclose(grad_per_draw, temperature * weights * np.einsum("mc,mpc->mp", projection, features))


@settings(max_examples=6)
@given(problems, st.booleans())
def test_gradient_monte_carlo_mean_within_standard_error(problem, replace):
    """Averaged over draws of the real sampler, the gradient estimate lands within 4.5 standard errors."""
    p, rng, logits, features, grad_logits = gradient_problem(problem)
    draws = 8000
    attention = nn.softmax(logits, axis=(1, 2))
    cells = sample_cells(np.repeat(attention, draws, axis=0), p, rng, replace=replace)
    values = attention[0][cells[..., 0], cells[..., 1]]
    weights = estimator_weights(values, replace)
    _, per_draw = expectation_backward(np.tile(grad_logits, (draws, 1)), features[cells[..., 0], cells[..., 1]],
                                       weights)
    layer = nn.SpatialLogSoftmax()
    layer.forward(np.repeat(logits, draws, axis=0))
    estimates = layer.backward(scatter_to_cells(per_draw, cells, logits.shape[1:]))
    mean = estimates.mean(axis=0)
    standard_error = estimates.std(axis=0) / np.sqrt(draws)
    exact = exact_gradient(logits, features, grad_logits)[0]
    assert np.all(np.abs(mean - exact) <= 4.5 * standard_error + 1e-12), (mean, exact, standard_error)


@settings(max_examples=6)
@given(problems, st.booleans(), st.sampled_from([2, 4]))
def test_gradient_with_the_other_looks_baseline_monte_carlo_mean_within_standard_error(problem, replace, replicas):
    """As train_step does it: R looks of one image, each look's baseline the other looks' estimate of
    E_a[f] (so it depends on the other looks' draws, never on its own), the R gradients averaged. Over many
    draws of the real sampler the mean lands within 4.5 standard errors of the exact gradient."""
    p, rng, logits, features, grad_logits = gradient_problem(problem)
    trials = 4000
    attention = nn.softmax(logits, axis=(1, 2))
    cells = sample_cells(np.repeat(attention, trials * replicas, axis=0), p, rng, replace=replace)
    weights = estimator_weights(attention[0][cells[..., 0], cells[..., 1]], replace)
    drawn = features[cells[..., 0], cells[..., 1]]
    baseline = expectation_baseline(drawn, weights, replicas)
    _, per_draw = expectation_backward(np.tile(grad_logits, (trials * replicas, 1)) / replicas, drawn, weights,
                                       baseline=baseline)
    layer = nn.SpatialLogSoftmax()
    layer.forward(np.repeat(logits, trials, axis=0))
    estimates = layer.backward(scatter_to_cells(per_draw.reshape(trials, -1), cells.reshape(trials, -1, 2),
                                                logits.shape[1:]))
    mean = estimates.mean(axis=0)
    standard_error = estimates.std(axis=0) / np.sqrt(trials)
    exact = exact_gradient(logits, features, grad_logits)[0]
    assert np.all(np.abs(mean - exact) <= 4.5 * standard_error + 1e-12), (mean, exact, standard_error)


@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_baseline_is_the_mean_of_the_other_looks_estimates(n, replicas, p, seed):
    """Look r of image i gets mean_{s != r} sum_m w_m f_m over the image's other looks; 0 with one look."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n * replicas, p, 3))
    weights = rng.random((n * replicas, p))
    baseline = expectation_baseline(features, weights, replicas)
    for look in range(n * replicas):
        image = look // replicas
        others = [s for s in range(image * replicas, (image + 1) * replicas) if s != look]
        expected = np.mean([weights[s] @ features[s] for s in others], axis=0) if others else np.zeros(3)
        np.testing.assert_allclose(baseline[look], expected, atol=1e-12)


def test_baseline_silences_the_part_all_patches_share():
    """Identical patches everywhere: nothing tells cells apart, so the attention gradient is 0 with the
    baseline. Without it every drawn cell is pushed the same way (the collapse's random walk)."""
    features = np.tile(np.array([0.6, -0.8, 0.0]), (4, 5, 1))
    weights = np.full((4, 5), 0.2)
    grad_logits = np.array([[0.3, -0.5, 0.2]] * 4)
    _, with_baseline = expectation_backward(grad_logits, features, weights, 3.0,
                                            expectation_baseline(features, weights, 2))
    _, without = expectation_backward(grad_logits, features, weights, 3.0)
    np.testing.assert_allclose(with_baseline, 0, atol=1e-15)
    assert np.all(np.abs(without) > 0.1)


def test_with_replacement_weights_are_uniform():
    np.testing.assert_array_equal(estimator_weights(np.array([[0.2, 0.5, 0.2]])), [[1 / 3] * 3])


def test_without_replacement_weights_worked_example():
    """a = (0.5, 0.3) drawn in that order, P = 2: w_0 = (1 + 0.5) / 2, w_1 = (1 - 0.5) / 2."""
    np.testing.assert_allclose(estimator_weights(np.array([[0.5, 0.3]]), replace=False), [[0.75, 0.25]])


@settings(max_examples=25)
@given(problems, st.booleans(), st.sampled_from([0.0, 0.3]))
def test_on_a_masked_map_estimate_and_gradient_enumerated_are_exact(problem, replace, floor):
    """Cells a mask leaves out get probability 0 (log a = -inf): drawing from the masked a_s, the estimate of
    E_{a_s}[f] and its gradient, through the masked log-softmax, are exact over the allowed cells, and no
    gradient reaches a masked logit."""
    p, rng, logits, features, grad_logits = gradient_problem(problem)
    h, w = logits.shape[1:]
    if h * w < 2:
        return
    mask = np.zeros(h * w, dtype=bool)
    mask[rng.permutation(h * w)[:int(rng.integers(1, h * w))]] = True
    mask = mask.reshape(1, h, w)
    p = min(p, int(mask.sum()))
    layer = nn.SpatialLogSoftmax()
    log_attention = layer.forward(logits, mask=mask)
    log_sampled = floored_attention(log_attention, floor)
    sampled = np.exp(log_sampled)[0]
    assert np.all(sampled[~mask[0]] == 0)
    expected_gradient = np.zeros_like(logits)
    expected_estimate = np.zeros(3)
    for cells, probability in outcomes(sampled, p, replace):
        if probability == 0:
            continue
        weights = estimator_weights(sampled[cells[:, 0], cells[:, 1]][None], replace)
        expected_estimate += probability * expectation_logits(features[cells[:, 0], cells[:, 1]][None], weights)[0]
        _, per_draw = expectation_backward(grad_logits[None], features[cells[:, 0], cells[:, 1]][None], weights)
        grad_log_sampled = scatter_to_cells(per_draw, cells[None], (h, w))
        layer.forward(logits, mask=mask)
        expected_gradient += probability * layer.backward(
            floored_attention_backward(grad_log_sampled, log_attention, log_sampled, floor))
    np.testing.assert_allclose(expected_estimate, np.einsum("hw,hwc->c", sampled, features), atol=1e-12)
    attention = np.exp(log_attention)
    values = features @ grad_logits
    exact = (1 - floor) * attention * (values - np.sum(attention[0] * values))
    np.testing.assert_allclose(expected_gradient, exact, atol=1e-12)
    assert np.all(expected_gradient[~mask] == 0)
