"""2-D convolution, channels-last, stride 1, computed by the direct-convolution kernels of nn/conv_kernels.py."""
import numpy as np

from . import conv_kernels
from .activations import (check_fused_slope, leaky_relu_backward_and_sum, leaky_relu_backward_at,
                          leaky_relu_backward_from_output)
from .init import default_rng, kaiming_normal
from .layer import Layer, check_spatial

# Images per call of the weight-gradient kernel: bounds its zero-padded copy of grad_out (channels
# rounded up to a whole register tile, 8x the size for a 1-channel output) to about 64 MB.
_CHUNK_BYTES = 64 * 2**20

# Below this fraction of nonzero positions in dL/dy, backward loops over those positions only
# (nn/conv_kernels.py, "Sparse gradients"); the crossover: python -m benchmarks.bench_nn --sparse.
SPARSE_FRACTION = 0.2
# The same for a layer without dL/dx (a network's first), whose dense path is the weight gradient alone and
# so much cheaper: the crossover is far lower (python -m benchmarks.bench_nn --sparse; docs/performance.md).
SPARSE_FRACTION_WEIGHTS_ONLY = 0.03


def same_padding(kernel_size):
    """Total padding k - 1, split with the extra row at the end for even k (as TensorFlow/PyTorch do)."""
    before = (kernel_size - 1) // 2
    return before, kernel_size - 1 - before


# Paddings a Conv2d takes: "same" and "valid" as usual (zeros, never materialised); "reflect" and "edge" keep
# the output's size as "same" does, but the border rows and columns are the input mirrored (numpy's
# mode="reflect") or repeated (mode="edge"), so a flat map stays flat up to its edge.
PADDINGS = ("same", "valid", "reflect", "edge")


def pad_indices(length, before, after, mode):
    """Source index along one axis of each of the length + before + after padded positions (numpy's np.pad)."""
    return np.pad(np.arange(length), (before, after), mode=mode)


def pad_map(x, pads, mode):
    """(N, H, W, C) -> (N, H + top + bottom, W + left + right, C), the border filled by `mode` (np.pad)."""
    top, bottom, left, right = pads
    n, height, width, channels = x.shape
    rows = pad_indices(height, top, bottom, mode)
    cols = pad_indices(width, left, right, mode)
    # The interior in one copy, then only the border rows and columns: two fancy-indexed gathers of the whole
    # map took 4 ms of a 40 ms prediction (docs/performance.md, "An archive"). Rows first, then whole columns
    # of the row-padded map, as np.pad fills the corners.
    out = np.empty((n, height + top + bottom, width + left + right, channels), dtype=x.dtype)
    out[:, top:top + height, left:left + width] = x
    for k in (*range(top), *range(top + height, len(rows))):
        out[:, k, left:left + width] = x[:, rows[k]]
    for k in (*range(left), *range(left + width, len(cols))):
        out[:, :, k] = out[:, :, left + cols[k]]
    return out


def fold_padding(grad, shape, pads, mode):
    """The adjoint of pad_map: (N, H + top + bottom, W + left + right, C) dL/d(padded) -> (N, H, W, C) dL/dx,
    each padded position's gradient added to the input position it was copied from."""
    top, bottom, left, right = pads
    _, height, width, _ = shape
    for axis, length, before, after in ((1, height, top, bottom), (2, width, left, right)):
        source = pad_indices(length, before, after, mode)
        inner = [slice(None)] * 4
        inner[axis] = slice(before, before + length)
        folded = grad[tuple(inner)].copy()
        for k in list(range(before)) + list(range(before + length, before + length + after)):
            at, to = [slice(None)] * 4, [slice(None)] * 4
            at[axis], to[axis] = k, source[k]
            folded[tuple(to)] += grad[tuple(at)]
        grad = folded
    return grad


def _chunks(n, bytes_per_item):
    step = max(1, _CHUNK_BYTES // max(1, bytes_per_item))
    for start in range(0, n, step):
        yield start, min(n, start + step)


class SparseGradient:
    """A gradient of an (N, H, W, C) map that is zero except at some positions: rows (K, C) at the sorted flat
    positions (K,) of its N·H·W. What a Conv2d's backward hands the Conv2d below it in nn.Sequential where the
    map would be mostly zeros (a global max pool's gradient, widened by a kernel or two): a map-sized array,
    written and scanned, costs more there than the arithmetic."""

    def __init__(self, rows, positions, shape):
        self.rows, self.positions, self.shape = rows, positions, tuple(shape)

    def dense(self):
        """-> the (N, H, W, C) array."""
        return conv_kernels.spread_rows(self.rows, self.positions, self.shape)


class Conv2d(Layer):
    """(N, H, W, C_in) -> (N, H', W', C_out); stride 1; padding "same" (H' = H) or "valid" (H' = H - k + 1), or
    "reflect" / "edge": H' = H as "same", the border mirrored or repeated instead of zeros (pad_map).

    Weight (kh, kw, C_in, C_out), bias (C_out,).  Backward, with y = x_pad (*) w:
      dL/dw[i, j] = sum over positions of x_pad[p + i, q + j]^T g[p, q]
      dL/db       = sum over positions of g[p, q]
      dL/dx       = g padded by k - 1 - pad, correlated with w flipped in space and C_in <-> C_out
    so the input gradient reuses the forward correlation kernel. Zero padding is never materialised:
    the kernels clip the taps at the borders (nn/conv_kernels.py). A dL/dy that is zero at all but a few
    positions (behind a global max pool) takes the sparse path, which sums over those positions only.

    backward releases the cached input (one backward per forward), so a network's activations are freed
    layer by layer as its backward pass goes down instead of living until the next forward.
    input_gradient=False: backward fills the parameter gradients and returns None. For a network's first
    layer, whose input is data: dL/dx would cost as much as the forward pass and nothing would read it.
    (negative_slope only scales the Kaiming initialisation for a following leaky ReLU.)

    "reflect" and "edge" materialise the padded input (pad_map) and run the "valid" kernels on it, except where
    nn/winograd.py computes the layer (3x3, C_in = C_out in 8, 16 or 32), whose tiles read the border themselves;
    backward folds the padded input's gradient back onto the input (fold_padding). Why they exist: zero padding makes
    border cells differ from the rest of a flat map, which the attention network turns into a border bias
    (docs/results/border/).
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, padding="same", bias=True,
                 rng=None, negative_slope=0.0, dtype=np.float32, input_gradient=True):
        super().__init__()
        self.input_gradient = input_gradient
        kh, kw = (kernel_size, kernel_size) if np.isscalar(kernel_size) else tuple(kernel_size)
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        self.kernel_size = (kh, kw)
        self.padding = padding
        # The kernels' implicit zero padding; an explicit one (reflect, edge) is made by pad_map instead.
        self.pads = same_padding(kh) + same_padding(kw) if padding == "same" else (0, 0, 0, 0)
        self.explicit_pads = same_padding(kh) + same_padding(kw) if padding in ("reflect", "edge") else None
        self.input_shape = None
        rng = default_rng(rng)
        fan_in = kh * kw * in_channels
        self.params["weight"] = kaiming_normal(rng, (kh, kw, in_channels, out_channels), fan_in,
                                               negative_slope, dtype)
        if bias:
            self.params["bias"] = np.zeros(out_channels, dtype=dtype)
        # From forward to backward: (slope, output) of a fused leaky ReLU, or (slope, maxima) with
        # global_argmax set when a global max pool is fused too.
        self.activation = None
        self.global_argmax = None
        self.zero_grads()

    def forward(self, x, training=True, negative_slope=None, global_max=False):
        """negative_slope (>= 0): a leaky ReLU of that slope applied as each output is stored, its derivative
        applied by backward, which then takes dL/d(activation). nn.Sequential fuses a Conv2d with the in-place
        LeakyReLU after it so: neither the forward nor (where dL/dy is sparse) the backward makes a pass of
        its own over the activations.

        global_max: return the (N, C_out) global max pool of that output instead of the map (nn.Sequential fuses
        Conv2d -> LeakyReLU -> GlobalMaxPool2d so, the feature network's end). The map is never written: each
        output row keeps its running maxima, and backward, given dL/d(maxima), starts from their positions."""
        check_fused_slope(negative_slope)
        self.input_shape = x.shape
        padded = self._padded(x)
        self.input = padded  # dL/dw correlates the padded input with dL/dy
        if global_max:
            maxima, self.global_argmax = self._correlate(padded, self.params["weight"], self.params.get("bias"),
                                                         negative_slope, global_max=True, training=training)
            self.activation = (1.0 if negative_slope is None else negative_slope, maxima)
            return maxima.copy()  # the caller's to keep or change: backward reads its own
        out = self._output_map(x, padded, self.params["weight"], self.params.get("bias"), negative_slope)
        # With slope >= 0 the output is > 0 exactly where the convolution was: it alone tells backward the slope.
        self.activation = None if negative_slope is None else (negative_slope, out)
        self.global_argmax = None
        return out

    def infer(self, x, scale=None, shift=None, negative_slope=None, global_max=False):
        """Inference only (nothing cached): the convolution, then optionally a per-channel y * scale + shift
        (an evaluation-mode batch norm, folded into the weights: w * scale, b * scale + shift) and a leaky
        ReLU (applied as each output is stored), in one pass over the output; global_max: the (N, C_out)
        global max pool of that output instead, the map never written."""
        weight, bias = self.params["weight"], self.params.get("bias")
        if scale is not None:
            bias = shift if bias is None else bias * scale + shift
            weight = weight * scale
        if global_max:
            return self._correlate(self._padded(x), weight, bias, negative_slope, global_max)[0]
        return self._output_map(x, None, weight, bias, negative_slope)

    def _output_map(self, x, padded, weight, bias, negative_slope):
        """The output map from the input x, or from `padded` (x with its border materialised, or None: made
        here when needed). A 3x3 "reflect" or "edge" layer that nn/winograd.py computes reads the border from x
        itself (conv_kernels.border_applies): no padded copy for inference, and Winograd's products."""
        if self.explicit_pads is not None and conv_kernels.border_applies(x.shape, weight.shape):
            if bias is None:
                bias = np.zeros(weight.shape[-1], dtype=weight.dtype)
            return conv_kernels.correlate(x, weight, bias, 1, 1, x.shape[1], x.shape[2], negative_slope,
                                          border=self.padding)
        return self._correlate(self._padded(x) if padded is None else padded, weight, bias, negative_slope)

    def _padded(self, x):
        """x, or for "reflect" / "edge" padding x with its border materialised (pad_map)."""
        if self.explicit_pads is None:
            return x
        check_spatial(self, x.shape, x.shape[1:3])
        return pad_map(x, self.explicit_pads, self.padding)

    def _output_hw(self, input_shape):
        """(N, H, W, C_in) -> (out_h, out_w), checked non-empty."""
        kh, kw = self.kernel_size
        top, bottom, left, right = self.pads
        out_h = input_shape[1] + top + bottom - kh + 1
        out_w = input_shape[2] + left + right - kw + 1
        check_spatial(self, input_shape, (out_h, out_w))
        return out_h, out_w

    def _correlate(self, x, weight, bias, negative_slope=None, global_max=False, training=False):
        """The output map, or with global_max its (maxima, positions) (conv_kernels.correlate_max, told whether
        this is a training pass: conv_kernels.correlate_build)."""
        top, _, left, _ = self.pads
        if bias is None:
            bias = np.zeros(weight.shape[-1], dtype=weight.dtype)
        out_h, out_w = self._output_hw(x.shape)
        if global_max:
            return conv_kernels.correlate_max(x, weight, bias, top, left, out_h, out_w, negative_slope, training)
        return conv_kernels.correlate(x, weight, bias, top, left, out_h, out_w, negative_slope)

    def backward(self, grad_out, keep_sparse=False):
        """dL/dy -> dL/dx (None without input_gradient), the parameters' gradients into self.grads. dL/dy is
        an array or a SparseGradient. Where dL/dy is sparse, dL/dx is computed on the positions it reaches only;
        keep_sparse=True returns it as a SparseGradient then (nn.Sequential, for the Conv2d below), else dense."""
        if self.explicit_pads is None:
            return self._backward(grad_out, keep_sparse)
        grad_in = self._backward(grad_out, keep_sparse=False)
        if grad_in is None:
            return None
        return fold_padding(grad_in, self.input_shape, self.explicit_pads, self.padding)

    def _backward(self, grad_out, keep_sparse=False):
        """backward with respect to the (padded) input the kernels saw."""
        if self.global_argmax is not None:
            return self._global_max_backward(grad_out, keep_sparse)
        if isinstance(grad_out, SparseGradient):
            return self._backward_from_rows(grad_out, keep_sparse)
        x = self.input
        weight = self.params["weight"]
        kh, kw, c_in, _ = weight.shape
        top, _, left, _ = self.pads
        n, out_h, out_w, c_out = grad_out.shape
        dtype = np.result_type(x.dtype, grad_out.dtype)
        active = conv_kernels.active_rows(grad_out, SPARSE_FRACTION if self.input_gradient else
                                          SPARSE_FRACTION_WEIGHTS_ONLY)
        grad_bias = None
        if self.activation is not None and active is None and "bias" in self.params:
            # Dense: the derivative and the bias gradient's sum in one pass over the map (2.6x faster than two).
            (slope, output), self.activation = self.activation, None
            grad_out, grad_bias = leaky_relu_backward_and_sum(grad_out, slope, output)
        elif self.activation is not None:
            grad_out = self._activation_backward(grad_out, active)
        if active is not None:
            return self._sparse_backward(grad_out.reshape(-1, c_out), active, active, (out_h, out_w), keep_sparse)
        if kh == kw == 1:
            # A 1x1 kernel: dL/dw = X^T G over all positions, one BLAS product (the tiled kernel would pad
            # a 1-channel G to a whole register tile of zeros).
            rows = np.ascontiguousarray(x, dtype=dtype).reshape(-1, c_in)
            grad_weight = (rows.T @ np.ascontiguousarray(grad_out, dtype=dtype).reshape(-1, c_out))[None, None]
        else:
            grad_weight = np.zeros(weight.shape, dtype=dtype)
            for start, stop in _chunks(n, out_h * out_w * conv_kernels.padded_channels(c_out) * grad_out.itemsize):
                grad_weight += conv_kernels.weight_gradient(x[start:stop], grad_out[start:stop], kh, kw, top, left)
        self.grads["weight"] = grad_weight
        if "bias" in self.params:
            self.grads["bias"] = conv_kernels.channel_sum(grad_out) if grad_bias is None else grad_bias
        self.input = None  # the cache is spent: drop it now, not at the next forward
        if not self.input_gradient:
            return None
        if kh == kw == 1:  # dL/dx = G W^T at every position: one BLAS product, no padded register tile
            rows = np.ascontiguousarray(grad_out).reshape(-1, c_out)
            # From one output channel it is an outer product (the attention's last layer: 722k x 8 values), with
            # the same single products as BLAS's and in a fraction of its time.
            grad_in = conv_kernels.outer(rows[:, 0], weight[0, 0, :, 0]) if c_out == 1 else rows @ weight[0, 0].T
            return grad_in.reshape(x.shape[:3] + (c_in,))
        # dL/dx[a, b] = sum over i, j of g[a - i + top, b - j + left] @ w[i, j]^T: a correlation of g
        # with the kernel flipped in space and transposed, its padding mirrored to kh - 1 - top.
        flipped = np.ascontiguousarray(weight[::-1, ::-1].transpose(0, 1, 3, 2))
        return conv_kernels.correlate(grad_out, flipped, np.zeros(c_in, dtype=weight.dtype),
                                      kh - 1 - top, kw - 1 - left, x.shape[1], x.shape[2])

    def _activation_backward(self, grad_out, active):
        """dL/d(activation) -> dL/dy of the fused leaky ReLU, overwriting grad_out as the in-place LeakyReLU
        does (a fresh array from the layer above). Multiplying by 1 or the slope > 0 keeps the zeros where
        they are, so `active` still holds; only its rows need the derivative."""
        slope, output = self.activation
        self.activation = None
        return leaky_relu_backward_from_output(grad_out, slope, output, active)

    def _backward_from_rows(self, grad_out, keep_sparse):
        """backward for a SparseGradient dL/d(activation): the fused leaky ReLU's derivative on its rows, then the
        sparse kernels, no map-sized array on the way."""
        # Past SPARSE_FRACTION the dense kernels are faster, even counting the map the gradient must be spread
        # into. Not so for the weights alone (a network's first layer): spreading compact rows into a map costs
        # more than the sparse kernel saves there, so SPARSE_FRACTION_WEIGHTS_ONLY is for a dense dL/dy only
        # (python -m benchmarks.bench_step; docs/performance.md).
        if self.input_gradient and len(grad_out.positions) > SPARSE_FRACTION * np.prod(grad_out.shape[:3]):
            # Conv2d.backward, not self.backward: a benchmark's per-layer clock wraps the latter (counted once).
            return Conv2d._backward(self, grad_out.dense(), keep_sparse)
        rows = grad_out.rows  # the layer above's fresh array: overwritten, as a dense dL/dy is
        if self.activation is not None:
            (slope, output), self.activation = self.activation, None
            leaky_relu_backward_at(rows, slope, output, grad_out.positions)
        return self._sparse_backward(rows, np.arange(len(rows)), grad_out.positions, grad_out.shape[1:3], keep_sparse)

    def _global_max_backward(self, grad_maxima, keep_sparse=False):
        """backward of the fused global max pool: (N, C_out) dL/d(maxima) -> dL/dx. The gradient of the map is
        dL/d(maxima) at each maximum's position, through the leaky ReLU's derivative there (1 above zero,
        else the slope): at most C_out positions per image, handed to the sparse backward as compact rows."""
        (slope, maxima), argmax = self.activation, self.global_argmax
        self.activation = self.global_argmax = None
        n, c_out = grad_maxima.shape
        out_hw = self._output_hw(self.input.shape)
        grad = np.where(maxima > 0, grad_maxima, grad_maxima * grad_maxima.dtype.type(slope))
        flat = argmax + np.arange(n)[:, None] * (out_hw[0] * out_hw[1])
        active, inverse = np.unique(flat, return_inverse=True)
        rows = np.zeros((active.size, c_out), dtype=grad.dtype)
        # One (position, channel) pair per (image, channel): no two entries land on the same value.
        rows[inverse.reshape(n, c_out), np.arange(c_out)] = grad
        return self._sparse_backward(rows, np.arange(active.size), active, out_hw, keep_sparse)

    def _sparse_backward(self, grad_rows, row_of, active, out_hw, keep_sparse=False):
        """backward for a dL/dy that is zero outside the `active` flat positions (e.g. behind a max pool),
        grad_rows[row_of[t]] its row at active[t] (conv_kernels.sparse_backward)."""
        weight = self.params["weight"]
        top, _, left, _ = self.pads
        input_shape = self.input.shape
        self.grads["weight"], grad_in = conv_kernels.sparse_backward(self.input, grad_rows, row_of, active, out_hw,
                                                                     weight, top, left, self.input_gradient,
                                                                     compact=keep_sparse)
        if "bias" in self.params:
            self.grads["bias"] = grad_rows[row_of].sum(axis=0)
        self.input = None
        if keep_sparse and grad_in is not None:
            positions, rows = grad_in
            return SparseGradient(rows, positions, input_shape)
        return grad_in

    def __repr__(self):
        kh, kw, c_in, c_out = self.params["weight"].shape
        extra = "" if self.input_gradient else ", input_gradient=False"
        return f"Conv2d({c_in}, {c_out}, kernel_size=({kh}, {kw}), padding={self.padding!r}{extra})"
