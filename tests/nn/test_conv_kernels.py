"""The Numba kernels of nn/conv_kernels.py against plain NumPy, in float32 and float64.

The references are the textbook sums over a zero-padded copy, evaluated in float64: they share no
code with the kernels (no tiling, no border split, no padded channel lanes), so any shape where a
tile edge, a border column or a padded lane is mishandled shows up as a mismatch.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nn import conv_kernels

from ..strategies import float_dtypes, seeds


@st.composite
def convolutions(draw):
    """(x shape, weight shape, top, left, out_h, out_w) with zero padding of 0..k-1 on each side."""
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    top, bottom = draw(st.integers(0, kh - 1)), draw(st.integers(0, kh - 1))
    left, right = draw(st.integers(0, kw - 1)), draw(st.integers(0, kw - 1))
    # At least one output position: H + top + bottom - kh + 1 >= 1.
    height = draw(st.integers(max(1, kh - top - bottom), 9))
    width = draw(st.integers(max(1, kw - left - right), 13))
    c_in = draw(st.integers(1, 19))  # one to three tiles of the weight gradient, remainders too
    c_out = draw(st.sampled_from([1, 3, 8, 9, 16, 17, 24]))  # one and two tiles, padded lanes or none
    n = draw(st.integers(1, 3))
    out_h, out_w = height + top + bottom - kh + 1, width + left + right - kw + 1
    return (n, height, width, c_in), (kh, kw, c_in, c_out), top, left, out_h, out_w


def padded_windows(x, kh, kw, top, left, out_h, out_w):
    """Yield (i, j, window) with window[n, p, q] = x[n, p + i - top, q + j - left], zero outside."""
    n, height, width, c_in = x.shape
    bottom = out_h + kh - 1 - height - top
    right = out_w + kw - 1 - width - left
    x_padded = np.pad(x.astype(np.float64), ((0, 0), (top, bottom), (left, right), (0, 0)))
    for i in range(kh):
        for j in range(kw):
            yield i, j, x_padded[:, i : i + out_h, j : j + out_w, :]


def reference_correlate(x, weight, bias, top, left, out_h, out_w):
    kh, kw = weight.shape[:2]
    out = np.zeros((x.shape[0], out_h, out_w, weight.shape[3])) + bias.astype(np.float64)
    for i, j, window in padded_windows(x, kh, kw, top, left, out_h, out_w):
        out += window @ weight[i, j].astype(np.float64)
    return out


def reference_weight_gradient(x, grad_out, kh, kw, top, left):
    _, out_h, out_w, c_out = grad_out.shape
    grad_weight = np.zeros((kh, kw, x.shape[3], c_out))
    g = grad_out.astype(np.float64).reshape(-1, c_out)
    for i, j, window in padded_windows(x, kh, kw, top, left, out_h, out_w):
        grad_weight[i, j] = window.reshape(-1, x.shape[3]).T @ g
    return grad_weight


def tolerance(dtype, terms):
    """float64 agrees to rounding; float32 accumulates ~1e-7 relative error per term summed."""
    return 1e-12 * terms if dtype == np.float64 else 1e-6 * terms


@settings(max_examples=60)
@given(convolutions(), seeds, float_dtypes)
def test_correlate_matches_padded_sum(shapes, seed, dtype):
    x_shape, weight_shape, top, left, out_h, out_w = shapes
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal(weight_shape).astype(dtype)
    bias = rng.standard_normal(weight_shape[3]).astype(dtype)
    out = conv_kernels.correlate(x, weight, bias, top, left, out_h, out_w)
    expected = reference_correlate(x, weight, bias, top, left, out_h, out_w)
    assert out.dtype == dtype and out.shape == expected.shape
    terms = weight_shape[0] * weight_shape[1] * weight_shape[2]
    np.testing.assert_allclose(out, expected, rtol=0, atol=tolerance(dtype, terms) * 10)


@settings(max_examples=40)
@given(convolutions(), seeds, float_dtypes, st.sampled_from([None, 0.0, 0.01]), st.booleans())
def test_correlate_max_is_the_global_max_of_correlate(shapes, seed, dtype, slope, tie):
    """correlate_max's maxima are those of correlate's map (leaky ReLU included) and its positions their first
    occurrences in row-major order, as np.argmax finds them. Ties: an image of ones and positive weights give
    the same maximum at every position whose taps all fall inside the image, the first of them past the
    zero padding's rows and columns, not at (0, 0)."""
    x_shape, weight_shape, top, left, out_h, out_w = shapes
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal(weight_shape).astype(dtype)
    bias = rng.standard_normal(weight_shape[3]).astype(dtype)
    if tie:
        x[...] = 1
        weight, bias = np.abs(weight), np.zeros_like(bias)
    # The map of the same (direct) kernel: a Winograd map rounds differently, and maxima must match to the bit.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(conv_kernels, "WINOGRAD", False)
        out = conv_kernels.correlate(x, weight, bias, top, left, out_h, out_w, slope)
    maxima, positions = conv_kernels.correlate_max(x, weight, bias, top, left, out_h, out_w, slope)
    flat = out.reshape(x_shape[0], out_h * out_w, weight_shape[3])
    np.testing.assert_array_equal(maxima, flat.max(axis=1))
    np.testing.assert_array_equal(positions, np.argmax(flat, axis=1))


@settings(max_examples=60)
@given(convolutions(), seeds, float_dtypes)
def test_weight_gradient_matches_padded_sum(shapes, seed, dtype):
    x_shape, weight_shape, top, left, out_h, out_w = shapes
    kh, kw, _, c_out = weight_shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    grad_out = rng.standard_normal((x_shape[0], out_h, out_w, c_out)).astype(dtype)
    grad_weight = conv_kernels.weight_gradient(x, grad_out, kh, kw, top, left)
    expected = reference_weight_gradient(x, grad_out, kh, kw, top, left)
    assert grad_weight.dtype == dtype and grad_weight.shape == weight_shape
    np.testing.assert_allclose(grad_weight, expected, rtol=0, atol=tolerance(dtype, grad_out[..., 0].size) * 10)


@settings(max_examples=30)
@given(st.integers(0, 4), st.integers(1, 7), st.integers(1, 20), seeds, float_dtypes)
def test_channel_sum_matches_numpy(n, side, channels, seed, dtype):
    grad_out = np.random.default_rng(seed).standard_normal((n, side, side + 1, channels)).astype(dtype)
    total = conv_kernels.channel_sum(grad_out)
    assert total.dtype == dtype and total.shape == (channels,)
    expected = grad_out.astype(np.float64).sum(axis=(0, 1, 2))
    np.testing.assert_allclose(total, expected, rtol=0, atol=tolerance(dtype, max(1, grad_out[..., 0].size)) * 10)


def test_float32_inputs_with_float64_weight_compute_in_float64():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 5, 2)).astype(np.float32)
    weight = rng.standard_normal((3, 3, 2, 3))
    bias = np.zeros(3)
    out = conv_kernels.correlate(x, weight, bias, 1, 1, 4, 5)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, reference_correlate(x, weight, bias, 1, 1, 4, 5), rtol=0, atol=1e-12)


def reference_input_gradient(grad_out, weight, x_shape, top, left):
    """The adjoint of reference_correlate: dL/dx[p + i - top, q + j - left] += g[p, q] @ w[i, j]^T."""
    n, out_h, out_w, _ = grad_out.shape
    kh, kw = weight.shape[:2]
    height, width = x_shape[1:3]
    bottom, right = out_h + kh - 1 - height - top, out_w + kw - 1 - width - left
    padded = np.zeros((n, height + top + bottom, width + left + right, x_shape[3]))
    for i in range(kh):
        for j in range(kw):
            padded[:, i : i + out_h, j : j + out_w] += grad_out.astype(np.float64) @ weight[i, j].T.astype(np.float64)
    return padded[:, top : top + height, left : left + width]


@st.composite
def sparse_gradients(draw, shapes):
    """A grad_out for `shapes` that is zero at a random fraction of positions (all channels at once)."""
    x_shape, weight_shape, top, left, out_h, out_w = shapes
    seed = draw(seeds)
    rng = np.random.default_rng(seed)
    keep = rng.random((x_shape[0], out_h, out_w, 1)) < draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    return rng.standard_normal((x_shape[0], out_h, out_w, weight_shape[3])) * keep


@settings(max_examples=40)
@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 9), st.floats(0, 1), seeds, st.floats(0, 1))
def test_active_rows_lists_the_nonzero_positions_or_gives_up(n, height, channels, density, seed, fraction):
    rng = np.random.default_rng(seed)
    grad_out = rng.standard_normal((n, height, 7, channels)) * (rng.random((n, height, 7, channels)) < density)
    expected = np.flatnonzero(np.any(grad_out != 0, axis=-1))
    active = conv_kernels.active_rows(grad_out, fraction)
    if expected.size <= int(fraction * grad_out[..., 0].size):
        np.testing.assert_array_equal(active, expected)
    else:
        assert active is None


@settings(max_examples=60)
@given(st.data(), convolutions(), float_dtypes)
def test_sparse_kernels_match_padded_sums(data, shapes, dtype):
    """The sparse backward's weight and input gradients, over the nonzero positions only, equal the full sums."""
    x_shape, weight_shape, top, left, out_h, out_w = shapes
    kh, kw = weight_shape[:2]
    grad_out = data.draw(sparse_gradients(shapes)).astype(dtype)
    out_hw = grad_out.shape[1:3]
    rng = np.random.default_rng(data.draw(seeds))
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal(weight_shape).astype(dtype)
    active = conv_kernels.active_rows(grad_out, 1.0)
    terms = grad_out[..., 0].size

    rows = grad_out.reshape(-1, weight_shape[3])
    grad_weight, grad_in = conv_kernels.sparse_backward(x, rows, active, active, out_hw, weight, top, left)
    assert grad_weight.dtype == dtype and grad_weight.shape == weight_shape
    np.testing.assert_allclose(grad_weight, reference_weight_gradient(x, grad_out, kh, kw, top, left),
                               rtol=0, atol=tolerance(dtype, terms) * 10)
    only_weight, none = conv_kernels.sparse_backward(x, rows, active, active, out_hw, weight, top, left,
                                                     input_gradient=False)
    assert none is None
    np.testing.assert_array_equal(only_weight, grad_weight)
    # The same gradient as compact rows, one per active position, gives the same results.
    compact_weight, compact_in = conv_kernels.sparse_backward(x, rows[active], np.arange(active.size), active,
                                                              out_hw, weight, top, left)
    np.testing.assert_array_equal(compact_weight, grad_weight)
    np.testing.assert_array_equal(compact_in, grad_in)
    # compact=True: dL/dx as rows at the input positions the active outputs reach, and nowhere else.
    _, (positions, in_rows) = conv_kernels.sparse_backward(x, rows, active, active, out_hw, weight, top, left,
                                                           compact=True)
    reached = set()
    n_images, height, width = x_shape[:3]
    for flat in active:
        image, p, q = flat // (out_hw[0] * out_hw[1]), flat // out_hw[1] % out_hw[0], flat % out_hw[1]
        reached.update((image * height + p + i - top) * width + q + j - left
                       for i in range(kh) for j in range(kw)
                       if 0 <= p + i - top < height and 0 <= q + j - left < width)
    np.testing.assert_array_equal(positions, sorted(reached))
    spread = np.zeros_like(grad_in)
    spread.reshape(-1, x_shape[3])[positions] = in_rows
    np.testing.assert_array_equal(spread, grad_in)

    assert grad_in.dtype == dtype and grad_in.shape == x_shape
    np.testing.assert_allclose(grad_in, reference_input_gradient(grad_out, weight, x_shape, top, left),
                               rtol=0, atol=tolerance(dtype, kh * kw * weight_shape[3]) * 10)


@settings(max_examples=20)
@given(st.integers(0, 50), st.integers(1, 17), seeds, float_dtypes)
def test_outer_is_numpys_outer_product(rows, channels, seed, dtype):
    rng = np.random.default_rng(seed)
    column, vector = rng.standard_normal(rows).astype(dtype), rng.standard_normal(channels).astype(dtype)
    out = conv_kernels.outer(column, vector)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, np.outer(column, vector))  # one rounding per product, as NumPy's
