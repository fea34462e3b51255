"""sample_cells: the draws follow the attention distribution, equal a plain-Python inverse CDF, never hit a
zero cell; without replacement they are distinct and follow the sequential definition.

Statistical tests are Pearson chi-square goodness-of-fit tests with a fixed sampler seed, so a given
Hypothesis example always draws the same cells. They fail only below P_VALUE_THRESHOLD: a run checks
a few dozen p-values, so a correct sampler fails a local run with probability about 1e-3, while an
off-by-one in the inverse CDF (every draw moved to the neighbouring cell) gives p-values far below 1e-100.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from attention_sampling.sampling import sample_cells
from benchmarks.bench_sampling import sample_cells_numpy
from tests.strategies import seeds

try:
    from scipy.stats import chi2 as scipy_chi2
except ImportError:  # SciPy is not a dependency: the Wilson-Hilferty approximation below stands in.
    scipy_chi2 = None

P_VALUE_THRESHOLD = 1e-5
SAMPLER_SEED = 20190515
MIN_EXPECTED = 5.0  # Pearson's rule of thumb: pool cells expected fewer times than this.
LARGEST_UNIFORM = float(np.nextafter(1.0, 0.0))  # the largest value Generator.random can return
# Temperatures of the logits: 0 is a flat map, 30 is so peaky that float32 softmax underflows to exact zeros.
TEMPERATURES = [0.0, 0.3, 1.0, 3.0, 10.0, 30.0]


# ----------------------------------------------------------------------------- strategies

image_counts = st.integers(1, 3)
map_sides = st.integers(1, 6)
map_shapes = st.tuples(image_counts, map_sides, map_sides)
tiny_map_shapes = st.sampled_from([(1, 2, 2), (1, 2, 3), (1, 3, 2)])


@st.composite
def attention_maps(draw, shapes=map_shapes, with_zeros=None, dtypes=(np.float32, np.float64), min_nonzero=1):
    """(N, h, w) distributions: softmax of normal logits times a temperature, some cells zeroed.

    Each image keeps at least `min_nonzero` cells of positive mass (w is widened if h*w is smaller).
    """
    n, h, w = draw(shapes)
    w = max(w, -(-min_nonzero // h))
    k = h * w
    rng = np.random.default_rng(draw(seeds))
    logits = draw(st.sampled_from(TEMPERATURES)) * rng.standard_normal((n, k))
    attention = np.exp(logits - logits.max(axis=1, keepdims=True))
    if with_zeros is None:
        with_zeros = draw(st.booleans())
    if with_zeros:
        # Hypothesis draws the mask so that it can shrink towards zeros at the first and last cells,
        # the two ends of the binary search.
        zeroed = draw(hnp.arrays(np.bool_, (n, k)))
        for image in range(n):
            missing = min_nonzero - np.count_nonzero(~zeroed[image])
            if missing > 0:
                zeroed[image, rng.choice(np.flatnonzero(zeroed[image]), missing, replace=False)] = False
        attention[zeroed] = 0.0
    attention /= attention.sum(axis=1, keepdims=True)
    attention = attention.astype(draw(st.sampled_from(dtypes))).reshape(n, h, w)
    # Each image's largest cell is >= 1/k, so only other cells can underflow in float32 (to exact zeros,
    # which the tests want); min_nonzero > 1 is asked for in float64 only.
    assert np.all(np.count_nonzero(attention.reshape(n, k), axis=1) >= min_nonzero)
    return attention


def nonzero_cells(attention):
    """The fewest cells of positive mass in any image: how many distinct cells every image can give."""
    return int(np.count_nonzero(attention.reshape(attention.shape[0], -1), axis=1).min())


def uniforms_in_unit_interval(n, p):
    """(n, p) values in [0, 1) with the extremes 0 and LARGEST_UNIFORM always available to Hypothesis."""
    element = st.one_of(st.sampled_from([0.0, LARGEST_UNIFORM]), st.floats(0.0, 1.0, exclude_max=True))
    return hnp.arrays(np.float64, (n, p), elements=element)


class ScriptedGenerator:
    """Stands in for numpy.random.Generator: `random(shape)` returns the uniforms it was given."""

    def __init__(self, uniforms):
        self.uniforms = np.asarray(uniforms, dtype=np.float64)

    def random(self, shape):
        assert tuple(shape) == self.uniforms.shape, f"sampler asked for {shape}, script has {self.uniforms.shape}"
        return self.uniforms.copy()


# ----------------------------------------------------------------------------- references

def reference_sample_cells(attention, uniforms, replace=True):
    """The sampler's definition in plain Python: (N, h, w), (N, P) uniforms -> (N, P, 2) cells.

    Draw u maps to the first cell whose cumulative mass exceeds u * total, found by a linear scan.
    Without replacement the drawn cell's mass is removed before the next draw. The running sum is
    float64 in row-major order, as in the kernel, so the two agree exactly and not just in law (without
    replacement the kernel sums blocks of cells first, which moves only the last bit of a sum: the two
    differ only for a target within rounding of a cell's boundary, which these uniforms do not meet).
    """
    n, h, w = attention.shape
    cells = np.empty((n, uniforms.shape[1], 2), dtype=np.int64)
    for image in range(n):
        mass = [float(value) for value in attention[image].ravel()]
        for draw, u in enumerate(uniforms[image]):
            total, cumulative = 0.0, []
            for value in mass:
                total += value
                cumulative.append(total)
            target = float(u) * total
            cell = next(index for index, value in enumerate(cumulative) if value > target)
            cells[image, draw] = divmod(cell, w)
            if not replace:
                mass[cell] = 0.0
    return cells


def flat_indices(cells, w):
    return cells[..., 0] * w + cells[..., 1]


def chi_square_statistic(observed, expected):
    """Pearson's X^2 and its degrees of freedom for counts against expected counts of the same total.

    Cells expected fewer than MIN_EXPECTED times are pooled into one bin; if that bin is still too
    small it joins the smallest regular bin. A count in a cell of zero expectation makes X^2 infinite.
    """
    observed = np.asarray(observed, dtype=np.float64).ravel()
    expected = np.asarray(expected, dtype=np.float64).ravel()
    if np.any(observed[expected == 0] > 0):
        return math.inf, 1
    small = expected < MIN_EXPECTED
    bins_observed, bins_expected = list(observed[~small]), list(expected[~small])
    pooled_observed, pooled_expected = observed[small].sum(), expected[small].sum()
    if pooled_expected > 0:
        if pooled_expected >= MIN_EXPECTED or not bins_expected:
            bins_observed.append(pooled_observed)
            bins_expected.append(pooled_expected)
        else:
            smallest = int(np.argmin(bins_expected))
            bins_observed[smallest] += pooled_observed
            bins_expected[smallest] += pooled_expected
    bins_observed, bins_expected = np.array(bins_observed), np.array(bins_expected)
    statistic = float(np.sum((bins_observed - bins_expected) ** 2 / bins_expected))
    return statistic, len(bins_expected) - 1


def chi_square_survival(statistic, degrees_of_freedom):
    """P(X^2 >= statistic): SciPy's exact value, else Wilson-Hilferty's cube-root normal approximation.

    Wilson-Hilferty: (X^2 / k)^(1/3) is close to normal with mean 1 - 2/(9k) and variance 2/(9k). In the
    far tail it overestimates the p-value (at k = 1, 2.4e-5 for a true 1e-5): conservative for this test.
    """
    if degrees_of_freedom == 0:
        return 1.0
    if math.isinf(statistic):
        return 0.0
    if scipy_chi2 is not None:
        return float(scipy_chi2.sf(statistic, degrees_of_freedom))
    variance = 2.0 / (9.0 * degrees_of_freedom)
    z = ((statistic / degrees_of_freedom) ** (1.0 / 3.0) - (1.0 - variance)) / math.sqrt(variance)
    return 0.5 * math.erfc(z / math.sqrt(2.0))


# ----------------------------------------------------------------------------- with replacement

@settings(max_examples=40)
@given(attention=attention_maps())
def test_draws_follow_the_attention_distribution(attention):
    """Counts of 2000 draws per image pass a chi-square goodness-of-fit test against P * attention."""
    n, h, w = attention.shape
    draws = 2000
    cells = sample_cells(attention, draws, np.random.default_rng(SAMPLER_SEED))
    statistic, degrees_of_freedom = 0.0, 0
    for image in range(n):
        probabilities = attention[image].ravel().astype(np.float64)
        expected = draws * probabilities / probabilities.sum()
        observed = np.bincount(flat_indices(cells[image], w), minlength=h * w)
        # Images are independent: their statistics and degrees of freedom add.
        image_statistic, image_degrees = chi_square_statistic(observed, expected)
        statistic += image_statistic
        degrees_of_freedom += image_degrees
    p_value = chi_square_survival(statistic, degrees_of_freedom)
    assert p_value > P_VALUE_THRESHOLD, f"X^2 = {statistic:.1f} with {degrees_of_freedom} dof, p = {p_value:.2e}"


@settings(max_examples=40)
@given(attention=attention_maps(), n_samples=st.integers(1, 20), seed=seeds)
def test_sample_cells_equals_plain_python_inverse_cdf(attention, n_samples, seed):
    """Same seed, same uniforms rng.random((N, P)): the kernel's binary search finds the linear scan's cell."""
    uniforms = np.random.default_rng(seed).random((attention.shape[0], n_samples))
    cells = sample_cells(attention, n_samples, np.random.default_rng(seed))
    np.testing.assert_array_equal(cells, reference_sample_cells(attention, uniforms))


@settings(max_examples=40)
@given(data=st.data(), attention=attention_maps(with_zeros=True))
def test_sample_cells_equals_reference_at_extreme_uniforms(data, attention):
    """u = 0 and u = 1 - 2^-53 land where the definition says, even with zero cells at either end."""
    uniforms = data.draw(uniforms_in_unit_interval(attention.shape[0], 4))
    cells = sample_cells(attention, 4, ScriptedGenerator(uniforms))
    np.testing.assert_array_equal(cells, reference_sample_cells(attention, uniforms))


@settings(max_examples=25)
@given(attention=attention_maps(), n_samples=st.integers(0, 12), seed=seeds, replace=st.booleans())
def test_cells_have_shape_dtype_and_bounds(attention, n_samples, seed, replace):
    """(N, h, w) -> (N, P, 2) int64 with 0 <= row < h and 0 <= col < w, with or without replacement."""
    n, h, w = attention.shape
    if not replace:
        n_samples = min(n_samples, nonzero_cells(attention))
    cells = sample_cells(attention, n_samples, np.random.default_rng(seed), replace=replace)
    assert cells.shape == (n, n_samples, 2)
    assert cells.dtype == np.int64
    assert np.all((cells[..., 0] >= 0) & (cells[..., 0] < h))
    assert np.all((cells[..., 1] >= 0) & (cells[..., 1] < w))


@settings(max_examples=20)
@given(attention=attention_maps(), seed=seeds, replace=st.booleans())
def test_same_seed_gives_same_cells(attention, seed, replace):
    """The kernel is a pure function of the uniforms: one seed, one set of cells."""
    n_samples = 15 if replace else min(5, nonzero_cells(attention))
    first = sample_cells(attention, n_samples, np.random.default_rng(seed), replace=replace)
    second = sample_cells(attention, n_samples, np.random.default_rng(seed), replace=replace)
    np.testing.assert_array_equal(first, second)


@settings(max_examples=30)
@given(data=st.data(), attention=attention_maps(with_zeros=True), seed=seeds)
def test_zero_probability_cells_are_never_drawn(data, attention, seed):
    """Many random draws and the extreme uniforms 0 and 1 - 2^-53 all land on cells of positive mass."""
    n, _, _ = attention.shape
    random_cells = sample_cells(attention, 500, np.random.default_rng(seed))
    scripted = data.draw(uniforms_in_unit_interval(n, 4))
    scripted_cells = sample_cells(attention, 4, ScriptedGenerator(scripted))
    for cells in (random_cells, scripted_cells):
        drawn = attention[np.arange(n)[:, None], cells[..., 0], cells[..., 1]]
        assert np.all(drawn > 0), f"zero-mass cells drawn: {cells[drawn == 0].tolist()}"


# ----------------------------------------------------------------------------- the NumPy version

@settings(max_examples=30)
@given(attention=attention_maps(), n_samples=st.integers(1, 20), seed=seeds)
def test_numpy_sampler_equals_numba_sampler(attention, n_samples, seed):
    """sample_cells_numpy, the benchmarks' vectorised twin, draws the same cells for the same seed."""
    np.testing.assert_array_equal(sample_cells_numpy(attention, n_samples, np.random.default_rng(seed)),
                                  sample_cells(attention, n_samples, np.random.default_rng(seed)))


def test_numpy_sampler_never_draws_a_zero_cell_at_the_largest_uniform():
    """Known bug (fails today): u + i rounds up to i + 1 for u = 1 - 2^-53 and image i >= 1.

    sample_cells_numpy offsets image i's normalised cdf and uniforms by i so that one searchsorted
    serves all images. In float64, LARGEST_UNIFORM + 1 == 2.0, so the search runs off the end of image 1
    and the clip to h*w - 1 returns the last cell even though it has zero mass. (With real uniforms it
    needs u > 1 - i 2^-53: about once in 10^15 draws, so it matters for exactness, not for benchmarks.)
    """
    attention = np.array([[[0.5, 0.5, 0.0]], [[0.5, 0.5, 0.0]]])
    uniforms = np.full((2, 1), LARGEST_UNIFORM)
    expected = reference_sample_cells(attention, uniforms)  # cell (0, 1) in both images
    np.testing.assert_array_equal(sample_cells(attention, 1, ScriptedGenerator(uniforms)), expected)
    np.testing.assert_array_equal(sample_cells_numpy(attention, 1, ScriptedGenerator(uniforms)), expected)


# ----------------------------------------------------------------------------- without replacement

@settings(max_examples=30)
@given(data=st.data(), attention=attention_maps(), seed=seeds)
def test_without_replacement_never_repeats_a_cell(data, attention, seed):
    """Up to every cell of positive mass, each drawn at most once per image."""
    n = attention.shape[0]
    n_samples = data.draw(st.integers(1, nonzero_cells(attention)), label="n_samples")
    cells = sample_cells(attention, n_samples, np.random.default_rng(seed), replace=False)
    for image in range(n):
        assert len(set(map(tuple, cells[image].tolist()))) == n_samples
    drawn = attention[np.arange(n)[:, None], cells[..., 0], cells[..., 1]]
    assert np.all(drawn > 0)


@settings(max_examples=30)
@given(data=st.data(), attention=attention_maps(min_nonzero=1), seed=seeds, scripted=st.booleans())
def test_without_replacement_equals_sequential_reference(data, attention, seed, scripted):
    """Draw from the renormalised remaining mass, remove the cell, repeat: the kernel does exactly this."""
    n = attention.shape[0]
    n_samples = data.draw(st.integers(1, nonzero_cells(attention)), label="n_samples")
    if scripted:
        uniforms = data.draw(uniforms_in_unit_interval(n, n_samples), label="uniforms")
        rng = ScriptedGenerator(uniforms)
    else:
        uniforms = np.random.default_rng(seed).random((n, n_samples))
        rng = np.random.default_rng(seed)
    cells = sample_cells(attention, n_samples, rng, replace=False)
    np.testing.assert_array_equal(cells, reference_sample_cells(attention, uniforms, replace=False))


@settings(max_examples=30)
@given(data=st.data(), shape=st.tuples(st.integers(1, 2), st.integers(1, 30), st.integers(1, 30)), seed=seeds,
       peaked=st.booleans())
def test_without_replacement_kernel_equals_sequential_reference_for_any_block_size(data, shape, seed, peaked):
    """Whatever the cells per block, the blocked kernel draws as the one-pass definition, on maps of up to
    900 cells; also where one cell holds all but 1e-35 of the mass (the training's float32 floor under a
    collapsed map): after it, the remaining cells are drawn by their own masses, not by a total's remainder."""
    from attention_sampling.sampling import _sample_without_replacement

    n, h, w = shape
    rng = np.random.default_rng(seed)
    attention = rng.random((n, h, w)) ** 3
    if peaked:
        attention[:] = float(np.finfo(np.float32).tiny) * (1 + attention)
        attention[:, rng.integers(h), rng.integers(w)] = 1.0
    n_samples = data.draw(st.integers(1, min(h * w, 25)), label="n_samples")
    block = data.draw(st.integers(1, h * w), label="block")
    uniforms = rng.random((n, n_samples))
    flat = np.ascontiguousarray(attention.reshape(n, h * w))
    cells = np.stack(np.divmod(_sample_without_replacement(flat, uniforms, block), w), axis=-1)
    np.testing.assert_array_equal(cells, reference_sample_cells(attention, uniforms, replace=False))


@pytest.mark.parametrize("h, w, n_samples", [(1, 1, 2), (2, 3, 7), (3, 3, 100)])
def test_without_replacement_rejects_more_samples_than_cells(h, w, n_samples):
    attention = np.full((2, h, w), 1.0 / (h * w))
    with pytest.raises(ValueError, match="distinct cells"):
        sample_cells(attention, n_samples, np.random.default_rng(0), replace=False)


def test_without_replacement_rejects_more_samples_than_nonzero_cells():
    """Known bug (fails today): P <= h*w but P > the cells of positive mass is not rejected.

    sample_cells' docstring says P must not exceed an image's non-zero cells, but only P > h*w raises.
    Once the positive cells are used up the kernel's total is 0, no cdf entry exceeds the target 0, and
    the binary search returns the last cell, h*w - 1, again and again: duplicates of a zero-mass cell
    (here [[0, 1], [0, 0], [1, 1], [1, 1]]). A float32 spatial softmax underflows to exact zeros, so a
    collapsed attention map meets this with far fewer than h*w samples.
    """
    attention = np.array([[[0.5, 0.5], [0.0, 0.0]]])
    with pytest.raises(ValueError):
        cells = sample_cells(attention, 4, np.random.default_rng(0), replace=False)
        pytest.fail(f"no error; returned {cells.tolist()}")


def ordered_pair_probabilities(probabilities):
    """(K,) -> (K, K): P(first = a, second = b) = p_a p_b / (1 - p_a) for a != b, 0 on the diagonal.

    1 - p_a is summed from the other cells: on a peaky map p_a rounds to 1.0 and 1.0 - p_a would be 0.
    """
    k = probabilities.size
    pairs = np.zeros((k, k))
    for first in range(k):
        remaining = math.fsum(np.delete(probabilities, first))
        for second in range(k):
            if second != first and remaining > 0:
                pairs[first, second] = probabilities[first] * probabilities[second] / remaining
    return pairs


@settings(max_examples=25)
@given(attention=attention_maps(shapes=tiny_map_shapes, min_nonzero=2, dtypes=(np.float64,)))
def test_without_replacement_first_two_draws_follow_the_sequential_definition(attention):
    """4000 ordered pairs from one 2x2 or 2x3 map pass a chi-square test against p_a p_b / (1 - p_a)."""
    _, h, w = attention.shape
    k = h * w
    probabilities = attention.ravel() / attention.sum()
    draws = 4000
    # 4000 copies of the map in one call: each image's first two draws are one independent ordered pair.
    batch = np.broadcast_to(attention, (draws, h, w))
    cells = sample_cells(batch, 2, np.random.default_rng(SAMPLER_SEED), replace=False)
    first, second = flat_indices(cells[:, 0], w), flat_indices(cells[:, 1], w)
    observed = np.bincount(first * k + second, minlength=k * k)
    expected = draws * ordered_pair_probabilities(probabilities).ravel()
    np.testing.assert_allclose(expected.sum(), draws)
    statistic, degrees_of_freedom = chi_square_statistic(observed, expected)
    p_value = chi_square_survival(statistic, degrees_of_freedom)
    assert p_value > P_VALUE_THRESHOLD, f"X^2 = {statistic:.1f} with {degrees_of_freedom} dof, p = {p_value:.2e}"
