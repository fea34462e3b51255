"""The training signals: REINFORCE against the exact gradient of the expected reward, and the entropy term."""
import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import nn
from attention_sampling.objective import (attention_entropy, entropy_gradient, expected_logits,
                                          expected_logits_backward, floored_attention,
                                          floored_attention_backward, look_reinforce_gradient, look_rewards,
                                          patch_rewards, reinforce_gradient, standardised_advantage)
from attention_sampling.sampling import sample_cells
from tests.gradcheck import assert_gradients_close, numerical_gradient

map_shapes = st.tuples(st.integers(1, 3), st.integers(2, 3))


def logits_gradient(logits, grad_log_attention):
    """Push dL/dlog a through the spatial log-softmax: (1, h, w) logits -> (1, h, w) dL/dlogits."""
    layer = nn.SpatialLogSoftmax()
    layer.forward(logits)
    return layer.backward(grad_log_attention)


def exact_reward_gradient(logits, cell_rewards):
    """d/dz sum_k a_k r_k with a = softmax(z): a_k (r_k - sum_j a_j r_j)."""
    attention = nn.softmax(logits, axis=(1, 2))
    return attention * (cell_rewards - np.sum(attention * cell_rewards))


def estimator(logits, cell_rewards, cells, baseline, floor=0.0):
    """The REINFORCE gradient of the surrogate (minimised, hence the minus) for one draw of K cells,
    drawn from the floored a_s when floor > 0 and carried back to the logits through the mixing."""
    rewards = cell_rewards[0][cells[..., 0], cells[..., 1]]
    advantage = rewards - rewards.mean(axis=1, keepdims=True) if baseline else rewards
    grad_log_sampled = reinforce_gradient(advantage, cells, logits.shape[1:])
    log_attention = nn.log_softmax(logits, axis=(1, 2))
    grad_log_attention = floored_attention_backward(grad_log_sampled, log_attention,
                                                    floored_attention(log_attention, floor), floor)
    return -logits_gradient(logits, grad_log_attention)


@settings(max_examples=20)
@given(map_shapes, st.integers(1, 3), st.integers(0, 2**31 - 1), st.booleans())
def test_reinforce_expectation_enumerated_equals_exact_gradient(shape, k, seed, baseline):
    """Summing the estimator over every ordered outcome of K draws, weighted by its probability, gives the
    exact gradient of E[r] (times (K - 1) / K with the mean-of-draws baseline, which includes the draw itself)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    logits = rng.standard_normal((1, h, w))
    cell_rewards = rng.random((1, h, w))
    attention = nn.softmax(logits, axis=(1, 2))[0]
    all_cells = [(r, c) for r in range(h) for c in range(w)]
    expected = np.zeros_like(logits)
    for outcome in itertools.product(all_cells, repeat=k):
        probability = np.prod([attention[cell] for cell in outcome])
        cells = np.array(outcome)[None]
        expected += probability * estimator(logits, cell_rewards, cells, baseline)
    factor = (k - 1) / k if baseline else 1.0
    np.testing.assert_allclose(expected, factor * exact_reward_gradient(logits, cell_rewards), atol=1e-12)


@settings(max_examples=20)
@given(map_shapes, st.integers(1, 3), st.integers(0, 2**31 - 1), st.booleans(), st.sampled_from([0.1, 0.5, 0.9]))
def test_reinforce_with_floor_enumerated_equals_exact_gradient(shape, k, seed, baseline, floor):
    """Cells drawn from a_s = (1 - eps) a + eps / K, scored by log a_s and carried back through the
    mixing: the estimator's expectation is the exact gradient of E_{a_s}[r] = sum_k a_s,k r_k, which is
    (1 - eps) a_k (r_k - sum_j a_j r_j)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    logits = rng.standard_normal((1, h, w)) * 2
    cell_rewards = rng.random((1, h, w))
    sampled = np.exp(floored_attention(nn.log_softmax(logits, axis=(1, 2)), floor))[0]
    all_cells = [(r, c) for r in range(h) for c in range(w)]
    expected = np.zeros_like(logits)
    for outcome in itertools.product(all_cells, repeat=k):
        probability = np.prod([sampled[cell] for cell in outcome])
        expected += probability * estimator(logits, cell_rewards, np.array(outcome)[None], baseline, floor)
    factor = (k - 1) / k if baseline else 1.0
    np.testing.assert_allclose(expected, factor * (1 - floor) * exact_reward_gradient(logits, cell_rewards),
                               atol=1e-12)


@settings(max_examples=30)
@given(map_shapes, st.integers(1, 3), st.floats(0.0, 0.99), st.integers(0, 2**31 - 1))
def test_floored_attention_is_the_mixture_and_its_backward_matches_finite_differences(shape, n, floor, seed):
    """log a_s = log((1 - eps) a + eps / K) sums to one; its backward, through the log-softmax, equals
    central differences of sum(G * log a_s(softmax(logits))) in float64, also where a is tiny."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n,) + shape) * 4
    projection = rng.standard_normal((n,) + shape)
    layer = nn.SpatialLogSoftmax()
    log_attention = layer.forward(logits)
    log_sampled = floored_attention(log_attention, floor)
    cells = shape[0] * shape[1]
    np.testing.assert_allclose(np.exp(log_sampled), (1 - floor) * np.exp(log_attention) + floor / cells, rtol=1e-12)
    analytic = layer.backward(floored_attention_backward(projection, log_attention, log_sampled, floor))

    def loss():
        return float(np.sum(projection * floored_attention(nn.log_softmax(logits, axis=(1, 2)), floor)))

    assert_gradients_close(analytic, numerical_gradient(loss, logits), rtol=1e-6, atol=1e-8)


def test_floor_zero_is_the_identity():
    log_attention = nn.log_softmax(np.random.default_rng(0).standard_normal((2, 3, 4)), axis=(1, 2))
    assert floored_attention(log_attention, 0.0) is log_attention
    grad = np.ones_like(log_attention)
    assert floored_attention_backward(grad, log_attention, log_attention, 0.0) is grad


def test_a_floor_too_small_for_eps_over_k_is_the_attention_without_a_warning():
    # eps / K underflows to 0 for a subnormal eps; log eps - log K does not, and log 0 would warn.
    log_attention = nn.log_softmax(np.random.default_rng(1).standard_normal((2, 3, 4)), axis=(1, 2))
    with np.errstate(divide="raise", invalid="raise"):
        np.testing.assert_allclose(floored_attention(log_attention, 5e-324), log_attention, rtol=1e-15)


@settings(max_examples=5)
@given(st.integers(0, 2**31 - 1), st.sampled_from([1, 2]))
def test_reinforce_monte_carlo_mean_within_standard_error(seed, k):
    """Averaged over many draws from the real sampler, the estimator matches the exact gradient of the
    expected reward on a 2x3 map within 4.5 standard errors per entry."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((1, 2, 3))
    cell_rewards = rng.random((1, 2, 3))
    attention = nn.softmax(logits, axis=(1, 2))
    draws = 20000
    cells = sample_cells(np.repeat(attention, draws, axis=0), k, rng)
    rewards = cell_rewards[0][cells[..., 0], cells[..., 1]]
    grad_log_attention = reinforce_gradient(rewards, cells, (2, 3))
    layer = nn.SpatialLogSoftmax()
    layer.forward(np.repeat(logits, draws, axis=0))
    estimates = -layer.backward(grad_log_attention)
    mean = estimates.mean(axis=0)
    standard_error = estimates.std(axis=0) / np.sqrt(draws)
    exact = exact_reward_gradient(logits, cell_rewards)[0]
    assert np.all(np.abs(mean - exact) <= 4.5 * standard_error + 1e-12), (mean, exact, standard_error)


@settings(max_examples=30)
@given(map_shapes, st.integers(1, 3), st.integers(0, 2**31 - 1))
def test_entropy_gradient_matches_finite_differences(shape, n, seed):
    """dH/dlogits, through the log-softmax's backward, equals central differences of H(softmax(logits))."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n,) + shape) * 2
    layer = nn.SpatialLogSoftmax()
    log_attention = layer.forward(logits)
    weights = rng.standard_normal(n)  # a distinct weight per image so images cannot cancel
    analytic = layer.backward(entropy_gradient(log_attention) * weights[:, None, None])

    def loss():
        return float(np.sum(attention_entropy(nn.log_softmax(logits, axis=(1, 2))) * weights))

    assert_gradients_close(analytic, numerical_gradient(loss, logits), rtol=1e-6, atol=1e-8)


def test_entropy_of_uniform_and_peaked_maps():
    """H is log(h w) for a flat map and ~0 for a one-hot one."""
    flat = np.full((1, 4, 5), np.log(1 / 20))
    assert np.isclose(attention_entropy(flat)[0], np.log(20))
    peaked = nn.log_softmax(np.where(np.arange(20).reshape(1, 4, 5) == 7, 50.0, 0.0), axis=(1, 2))
    assert attention_entropy(peaked)[0] < 1e-15


@settings(max_examples=30)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(2, 4), st.integers(0, 2**31 - 1),
       st.sampled_from([1.0, 3.0, 0.5]))
def test_expected_logits_backward_matches_finite_differences(m, p, c, seed, temperature):
    """d(sum(G * T sum_i a_i f_i / sum a))/df equals central differences, the weights held constant."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((m, p, c))
    weights = rng.random((m, p)) + 0.01
    projection = rng.standard_normal((m, c))
    analytic = expected_logits_backward(projection, weights, temperature)
    numeric = numerical_gradient(
        lambda: float(np.sum(expected_logits(features, weights, temperature) * projection)), features)
    assert_gradients_close(analytic, numeric)


@settings(max_examples=20)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(0, 2**31 - 1), st.sampled_from([1.0, 3.0]))
def test_cross_entropy_of_tempered_eq1_matches_finite_differences(m, p, seed, temperature):
    """The whole head as train_step runs it, in float64: L = CE(softmax(T eq.1), y); dL/df by
    CrossEntropyLoss.backward then expected_logits_backward equals central differences."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((m, p, 3))
    weights = rng.random((m, p)) + 0.01
    labels = rng.integers(0, 3, m)
    loss_fn = nn.CrossEntropyLoss()
    loss_fn.forward(expected_logits(features, weights, temperature), labels)
    analytic = expected_logits_backward(loss_fn.backward(), weights, temperature)
    numeric = numerical_gradient(
        lambda: float(nn.CrossEntropyLoss().forward(expected_logits(features, weights, temperature), labels)),
        features)
    assert_gradients_close(analytic, numeric)


def test_temperature_lifts_the_ceiling_of_the_top_class_probability():
    """Unit-length f with C = 3: at T = 1 the best f = (2, -1, -1) / sqrt(6) gives p_y ~ 0.63, at T = 3 ~ 0.95."""
    best = np.array([[[2.0, -1.0, -1.0]]]) / np.sqrt(6)
    for temperature, ceiling in ((1.0, 0.6299), (3.0, 0.9517)):
        probability = nn.softmax(expected_logits(best, np.ones((1, 1)), temperature), axis=-1)[0, 0]
        assert abs(probability - ceiling) < 1e-4


def test_expected_logits_is_weighted_mean():
    features = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    weights = np.array([[3.0, 1.0]])
    np.testing.assert_allclose(expected_logits(features, weights), [[0.75, 0.25]])


def test_patch_rewards_are_probability_of_true_class():
    features = np.array([[[0.0, 0.0], [np.log(3.0), 0.0]]])
    np.testing.assert_allclose(patch_rewards(features, np.array([0])), [[0.5, 0.75]])
    # With T = 2 the patch alone is classified as softmax(2 f): 9 / (9 + 1).
    np.testing.assert_allclose(patch_rewards(features, np.array([0]), temperature=2.0), [[0.5, 0.9]])


@given(st.integers(1, 4), st.integers(2, 10), st.integers(0, 2**31 - 1))
def test_standardised_advantage_has_zero_mean_unit_std(n, k, seed):
    rewards = np.random.default_rng(seed).random((n, k))
    advantage = standardised_advantage(rewards, eps=0.0)
    np.testing.assert_allclose(advantage.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(advantage.std(axis=1), 1, rtol=1e-9)


def test_standardised_advantage_is_zero_for_equal_rewards():
    assert np.all(standardised_advantage(np.full((2, 5), 0.3)) == 0)


# ----------------------------------------------------------------------------- a masked map
# Cells a mask leaves out (glass on a slide) get logit -inf: the estimators must stay unbiased for the
# distribution over the other cells, and give those cells neither probability nor gradient.

def masked_problem(shape, seed, floor=0.0):
    """-> logits (1, h, w), mask (1, h, w) with at least one cell allowed and one left out, rewards, a_s."""
    rng = np.random.default_rng(seed)
    h, w = shape
    logits = rng.standard_normal((1, h, w)) * 2
    order = rng.permutation(h * w)
    mask = np.zeros(h * w, dtype=bool)
    mask[order[:int(rng.integers(1, h * w))]] = True
    mask = mask.reshape(1, h, w)
    layer = nn.SpatialLogSoftmax()
    sampled = np.exp(floored_attention(layer.forward(logits, mask=mask), floor))[0]
    return logits, mask, rng.random((1, h, w)), sampled


def masked_estimator(logits, mask, cell_rewards, cells, baseline, floor=0.0, replace=True):
    """estimator() through the masked log-softmax; without replacement the draws are weighted by P times
    the expectation estimator's weights (train_step's reinforce_gradient(..., draw_weights))."""
    from attention_sampling.objective import estimator_weights

    layer = nn.SpatialLogSoftmax()
    log_attention = layer.forward(logits, mask=mask)
    log_sampled = floored_attention(log_attention, floor)
    rewards = cell_rewards[0][cells[..., 0], cells[..., 1]]
    advantage = rewards - rewards.mean(axis=1, keepdims=True) if baseline else rewards
    values = np.exp(log_sampled)[0][cells[..., 0], cells[..., 1]]
    draw_weights = None if replace else cells.shape[1] * estimator_weights(values, replace=False)
    grad_log_sampled = reinforce_gradient(advantage, cells, logits.shape[1:], draw_weights)
    return -layer.backward(floored_attention_backward(grad_log_sampled, log_attention, log_sampled, floor))


def exact_masked_reward_gradient(logits, mask, cell_rewards):
    """d/dz sum_k a_k r_k with a the softmax over the allowed cells: a_k (r_k - sum_j a_j r_j), 0 off the mask."""
    attention = np.exp(nn.log_softmax(np.where(mask, logits, -np.inf), axis=(1, 2)))
    return attention * (cell_rewards - np.sum(attention * cell_rewards))


@settings(max_examples=20)
@given(st.tuples(st.integers(1, 3), st.integers(2, 3)), st.integers(1, 3), st.integers(0, 2**31 - 1),
       st.booleans(), st.sampled_from([0.0, 0.3]))
def test_reinforce_on_a_masked_map_enumerated_equals_exact_gradient(shape, k, seed, baseline, floor):
    """With replacement: every ordered outcome of K draws from the masked a_s (masked cells have probability
    0, so they never appear) averages to the exact gradient of E_{a_s}[r] over the allowed cells, and no
    gradient reaches a masked logit."""
    logits, mask, cell_rewards, sampled = masked_problem(shape, seed, floor)
    assert np.all(sampled[~mask[0]] == 0)
    np.testing.assert_allclose(sampled.sum(), 1.0)
    allowed = [tuple(cell) for cell in np.argwhere(mask[0])]
    expected = np.zeros_like(logits)
    for outcome in itertools.product(allowed, repeat=k):
        probability = np.prod([sampled[cell] for cell in outcome])
        expected += probability * masked_estimator(logits, mask, cell_rewards, np.array(outcome)[None], baseline,
                                                   floor)
    factor = (k - 1) / k if baseline else 1.0
    exact = factor * (1 - floor) * exact_masked_reward_gradient(logits, mask, cell_rewards)
    np.testing.assert_allclose(expected, exact, atol=1e-12)
    assert np.all(expected[~mask] == 0)


@settings(max_examples=20)
@given(st.tuples(st.integers(1, 3), st.integers(2, 3)), st.integers(1, 3), st.integers(0, 2**31 - 1),
       st.sampled_from([0.0, 0.3]))
def test_reinforce_without_replacement_on_a_masked_map_enumerated_equals_exact_gradient(shape, k, seed, floor):
    """Without replacement, P distinct cells drawn in sequence from the masked a_s: the weighted REINFORCE
    estimate averages to the exact gradient of E_{a_s}[r] over the allowed cells."""
    logits, mask, cell_rewards, sampled = masked_problem(shape, seed, floor)
    allowed = [tuple(cell) for cell in np.argwhere(mask[0])]
    k = min(k, len(allowed))
    expected = np.zeros_like(logits)
    for outcome in itertools.permutations(allowed, k):
        probability, removed = 1.0, 0.0
        for cell in outcome:
            probability *= sampled[cell] / (1.0 - removed)
            removed += sampled[cell]
        expected += probability * masked_estimator(logits, mask, cell_rewards, np.array(outcome)[None], False,
                                                   floor, replace=False)
    exact = (1 - floor) * exact_masked_reward_gradient(logits, mask, cell_rewards)
    np.testing.assert_allclose(expected, exact, atol=1e-12)


@settings(max_examples=30)
@given(st.tuples(st.integers(1, 3), st.integers(2, 3)), st.integers(0, 2**31 - 1), st.sampled_from([0.0, 0.4]))
def test_masked_entropy_and_floor_backward_match_finite_differences(shape, seed, floor):
    """H(a) and sum(G * log a_s) over the allowed cells: their gradients through the masked log-softmax
    equal central differences in float64, and are 0 at the masked logits."""
    logits, mask, _, _ = masked_problem(shape, seed)
    rng = np.random.default_rng(seed + 1)
    projection = rng.standard_normal(logits.shape)
    layer = nn.SpatialLogSoftmax()
    log_attention = layer.forward(logits, mask=mask)
    log_sampled = floored_attention(log_attention, floor)
    grad = entropy_gradient(log_attention) + floored_attention_backward(
        np.where(mask, projection, 0), log_attention, log_sampled, floor)
    analytic = layer.backward(grad)

    def loss():
        log_a = nn.SpatialLogSoftmax().forward(logits, mask=mask)
        log_s = floored_attention(log_a, floor)
        return float(attention_entropy(log_a).sum() + np.sum(np.where(mask, projection * log_s, 0)))

    assert np.isfinite(attention_entropy(log_attention)).all()
    assert_gradients_close(analytic, numerical_gradient(loss, logits), rtol=1e-6, atol=1e-8)
    assert np.all(analytic[~mask] == 0)


def look_probability(sampled, outcome, replace):
    """q(look): the probability of drawing the cells of `outcome` in that order from `sampled` (h, w)."""
    probability, removed = 1.0, 0.0
    for cell in outcome:
        probability *= sampled[cell] / (1.0 if replace else 1.0 - removed)
        removed += sampled[cell]
    return probability


def look_outcomes(shape, k, replace):
    cells = [(r, c) for r in range(shape[0]) for c in range(shape[1])]
    return list(itertools.product(cells, repeat=k) if replace else itertools.permutations(cells, k))


@settings(max_examples=25)
@given(map_shapes, st.integers(1, 3), st.integers(0, 2**31 - 1), st.booleans(), st.sampled_from([0.0, 0.3]))
def test_look_reinforce_enumerated_equals_exact_gradient_of_the_expected_look_reward(shape, k, seed, replace, floor):
    """A reward per look (any function of its ordered cells): summing the look estimator over every look of K
    draws from a_s, with or without replacement, weighted by its probability, gives central differences of
    E[r] = sum_look q(look) r(look) in float64, carried back through the floor's mixing to the logits."""
    rng = np.random.default_rng(seed)
    k = min(k, shape[0] * shape[1])
    logits = rng.standard_normal((1,) + shape) * 1.5
    outcomes = look_outcomes(shape, k, replace)
    reward = {outcome: rng.random() for outcome in outcomes}

    def expected_reward():
        sampled = np.exp(floored_attention(nn.log_softmax(logits, axis=(1, 2)), floor))[0]
        return sum(look_probability(sampled, outcome, replace) * reward[outcome] for outcome in outcomes)

    layer = nn.SpatialLogSoftmax()
    log_attention = layer.forward(logits)
    log_sampled = floored_attention(log_attention, floor)
    sampled = np.exp(log_sampled)[0]
    expected = np.zeros_like(logits)
    for outcome in outcomes:
        cells = np.array(outcome)[None]
        values = sampled[cells[..., 0], cells[..., 1]]
        grad = look_reinforce_gradient(np.array([[reward[outcome]]]), cells, values, shape, replace)
        grad = floored_attention_backward(grad, log_attention, log_sampled, floor)
        expected += look_probability(sampled, outcome, replace) * -layer.backward(grad)
    assert_gradients_close(expected, numerical_gradient(expected_reward, logits), rtol=1e-6, atol=1e-9)


def test_look_reinforce_averages_its_looks_and_stays_finite_on_a_peaked_float32_attention():
    """R looks of one image: the mean of their single-look gradients. An attention whose top cell float32 rounds
    to 1 (1 - S = 0 after it) still gives finite gradients."""
    rng = np.random.default_rng(3)
    values = rng.random((2, 3)) / 3
    cells = np.array([[[0, 0], [0, 1], [1, 1], [0, 1], [1, 0], [0, 0]]])
    advantage = np.array([[0.7, -1.2]])
    both = look_reinforce_gradient(advantage, cells, values, (2, 2), replace=False)
    alone = [look_reinforce_gradient(advantage[:, [r]], cells[:, 3 * r:3 * r + 3], values[[r]], (2, 2), replace=False)
             for r in range(2)]
    np.testing.assert_allclose(both, (alone[0] + alone[1]) / 2, rtol=1e-12)
    peaked = np.array([[1.0, 1.2e-38, 1.2e-38]], dtype=np.float32)
    grad = look_reinforce_gradient(np.array([[1.0]], dtype=np.float32), cells[:, :3], peaked, (2, 2), replace=False)
    assert np.all(np.isfinite(grad))


def test_look_rewards_are_each_looks_probability_of_its_label():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(look_rewards(logits, np.array([0, 2])), [np.e ** 2 / (np.e ** 2 + 2), 1 / 3])
