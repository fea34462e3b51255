"""Conv2d: forward against a nested-loop reference, backward against finite differences."""
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import nn.conv
from nn import Conv2d
from tests.gradcheck import check_layer_gradients
from tests.strategies import ConvCase, conv_cases, normal_array


def reference_conv(x, weight, bias, padding):
    """y[n, p, q, o] = b[o] + sum_{i, j, c} x[n, p + i - top, q + j - left, c] w[i, j, c, o], zeros outside.

    "same" pads k - 1 in total with the extra row/column at the end for even k (the TensorFlow/PyTorch
    convention), so top = (kh - 1) // 2 and left = (kw - 1) // 2.
    """
    kh, kw, _, c_out = weight.shape
    if padding in ("reflect", "edge"):  # the border filled as numpy fills it, then a "valid" correlation
        top, left = (kh - 1) // 2, (kw - 1) // 2
        x = np.pad(x, ((0, 0), (top, kh - 1 - top), (left, kw - 1 - left), (0, 0)), mode=padding)
        padding = "valid"
    n, h, w, c_in = x.shape
    if padding == "same":
        top, left, out_h, out_w = (kh - 1) // 2, (kw - 1) // 2, h, w
    else:
        top, left, out_h, out_w = 0, 0, h - kh + 1, w - kw + 1
    y = np.zeros((n, out_h, out_w, c_out))
    for b in range(n):
        for p in range(out_h):
            for q in range(out_w):
                for o in range(c_out):
                    total = 0.0 if bias is None else bias[o]
                    for i in range(kh):
                        for j in range(kw):
                            r, s = p + i - top, q + j - left
                            if 0 <= r < h and 0 <= s < w:
                                for c in range(c_in):
                                    total += x[b, r, s, c] * weight[i, j, c, o]
                    y[b, p, q, o] = total
    return y


def make_conv(case, dtype=np.float64):
    """A Conv2d for `case` with a random (non-zero) bias so that the bias term is really tested."""
    layer = Conv2d(case.in_channels, case.out_channels, case.kernel_size, case.padding,
                   bias=case.bias, rng=case.seed).astype(dtype)
    if case.bias:
        layer.params["bias"][...] = normal_array(case.seed + 1, layer.params["bias"].shape)
    return layer


@settings(max_examples=40)
@given(case=conv_cases())
def test_forward_matches_nested_loop_reference(case):
    """Conv2d.forward equals the definition of a cross-correlation, for both paddings, odd/even/non-square kernels."""
    layer = make_conv(case)
    x = normal_array(case.seed + 2, case.input_shape)
    expected = reference_conv(x, layer.params["weight"], layer.params.get("bias"), case.padding)
    y = layer.forward(x)
    assert y.shape == (case.batch, *case.output_hw, case.out_channels)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=40)
@given(case=conv_cases())
@example(case=ConvCase(batch=2, height=3, width=4, in_channels=3, out_channels=1, kernel_size=1, padding="same",
                       bias=True, seed=5))  # the 1x1, one-channel backward's outer product (the attention's last layer)
def test_gradients_match_finite_differences(case):
    """dL/dx, dL/dweight and dL/dbias of Conv2d equal central differences in float64."""
    layer = make_conv(case)
    x = normal_array(case.seed + 2, case.input_shape)
    check_layer_gradients(layer, x, seed=case.seed)


@settings(max_examples=15)
@given(case=conv_cases())
def test_float32_forward_matches_float64_reference(case):
    """The float32 path (used for speed) stays float32 and agrees with the float64 reference."""
    layer = make_conv(case, np.float32)
    x = normal_array(case.seed + 2, case.input_shape, dtype=np.float32)
    y = layer.forward(x)
    assert y.dtype == np.float32
    expected = reference_conv(x.astype(np.float64), layer.params["weight"].astype(np.float64),
                              layer.params.get("bias"), case.padding)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


@settings(max_examples=10)
@given(case=conv_cases())
def test_chunked_batch_gives_the_same_result(case):
    """Splitting the batch into one-image chunks (as for large batches) changes neither output nor gradients."""
    layer = make_conv(case)
    x = normal_array(case.seed + 2, (3, *case.input_shape[1:]))
    grad_out = normal_array(case.seed + 3, (3, *case.output_hw, case.out_channels))
    y_whole, grad_x_whole = layer.forward(x), layer.backward(grad_out)
    grads_whole = {k: v.copy() for k, v in layer.grads.items()}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nn.conv, "_CHUNK_BYTES", 1)  # one image per chunk
        y_chunked, grad_x_chunked = layer.forward(x), layer.backward(grad_out)

    np.testing.assert_allclose(y_chunked, y_whole, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_x_chunked, grad_x_whole, rtol=1e-12, atol=1e-12)
    for key, value in grads_whole.items():
        np.testing.assert_allclose(layer.grads[key], value, rtol=1e-12, atol=1e-12, err_msg=key)


@settings(max_examples=40)
@given(case=conv_cases(), density=st.sampled_from([0.0, 0.2, 0.6]), threshold=st.sampled_from([0.0, 1.0]))
def test_gradients_of_a_sparse_output_gradient(case, density, threshold):
    """A dL/dy that is zero at most positions (as behind a max pool) matches central differences through
    the sparse backward (threshold 1: always taken) and the dense one (threshold 0: taken unless dL/dy is
    all zero), and the path taken is the one the threshold calls for."""
    layer = make_conv(case)
    x = normal_array(case.seed + 2, case.input_shape)
    keep = np.random.default_rng(case.seed + 3).random((case.batch, *case.output_hw, 1)) < density
    calls = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nn.conv, "SPARSE_FRACTION", threshold)
        original = nn.conv.Conv2d._sparse_backward
        patch.setattr(nn.conv.Conv2d, "_sparse_backward",
                      lambda self, *args: calls.append(1) or original(self, *args))
        check_layer_gradients(layer, x, seed=case.seed, keep=keep)
    sparse_possible = keep.sum() <= int(threshold * keep.size)
    assert bool(calls) == sparse_possible


def test_rejects_unknown_padding():
    """A padding other than "same", "valid", "reflect" or "edge" is refused when the layer is built."""
    with pytest.raises(ValueError, match="padding"):
        Conv2d(1, 1, 3, padding="full")


@pytest.mark.parametrize("kernel, padding, shape", [(3, "valid", (1, 2, 5, 1)), (4, "valid", (1, 5, 3, 1)),
                                                    (3, "same", (1, 0, 4, 1))])
def test_an_empty_output_map_is_a_clear_error(kernel, padding, shape):
    layer = Conv2d(1, 2, kernel, padding, rng=0)
    for run in (layer.forward, layer.infer):
        with pytest.raises(ValueError, match="a spatial map needs at least one row and one column"):
            run(np.zeros(shape))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["reflect", "edge"]), st.integers(1, 3), st.integers(2, 9), st.integers(2, 9), st.integers(1, 4),
       st.tuples(*[st.integers(0, 3)] * 4))
def test_pad_map_fills_the_border_as_numpy_pad(mode, n, height, width, channels, pads):
    """pad_map copies the interior once and then the border rows and columns: np.pad's map, corners included."""
    top, bottom, left, right = pads
    x = np.random.default_rng(height * 10 + width).standard_normal((n, height, width, channels))
    expected = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), mode=mode)
    np.testing.assert_array_equal(nn.conv.pad_map(x, pads, mode), expected)
