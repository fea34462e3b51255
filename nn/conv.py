"""2-D convolution, channels-last, stride 1, as im2col + one matrix product per chunk."""
import numpy as np

from .init import default_rng, kaiming_normal
from .layer import Layer

# Rows of the im2col matrix built at once: bounds the temporary to about 64 MB
# whatever the batch, because a (640, 50, 50, 144) float32 im2col would be 0.9 GB.
_CHUNK_BYTES = 64 * 2**20


def same_padding(kernel_size):
    """Total padding k - 1, split with the extra row at the end for even k (as TensorFlow/PyTorch do)."""
    before = (kernel_size - 1) // 2
    return before, kernel_size - 1 - before


def im2col(x_padded, kh, kw, out_h, out_w):
    """(N, Hp, Wp, C) -> (N * out_h * out_w, kh * kw * C), columns ordered (i, j, c) like the weight."""
    n, _, _, c = x_padded.shape
    cols = np.empty((n, out_h, out_w, kh, kw, c), dtype=x_padded.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j, :] = x_padded[:, i : i + out_h, j : j + out_w, :]
    return cols.reshape(n * out_h * out_w, kh * kw * c)


def correlate(x, weight, pads):
    """(N, H, W, C_in) * (kh, kw, C_in, C_out) -> (N, H', W', C_out): y[p, q] = sum x_pad[p + i, q + j] w[i, j].

    `pads` = (top, bottom, left, right) zero padding.
    """
    kh, kw, c_in, c_out = weight.shape
    top, bottom, left, right = pads
    x_padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0))) if any(pads) else x
    n, hp, wp, _ = x_padded.shape
    out_h, out_w = hp - kh + 1, wp - kw + 1
    w_matrix = weight.reshape(kh * kw * c_in, c_out)
    out = np.empty((n, out_h, out_w, c_out), dtype=np.result_type(x.dtype, weight.dtype))
    for start, stop in _chunks(n, out_h * out_w * kh * kw * c_in * x.dtype.itemsize):
        cols = im2col(x_padded[start:stop], kh, kw, out_h, out_w)
        np.matmul(cols, w_matrix, out=out[start:stop].reshape(-1, c_out))
    return out


def _chunks(n, bytes_per_item):
    step = max(1, _CHUNK_BYTES // max(1, bytes_per_item))
    for start in range(0, n, step):
        yield start, min(n, start + step)


class Conv2d(Layer):
    """(N, H, W, C_in) -> (N, H', W', C_out); stride 1; padding "same" (H' = H) or "valid" (H' = H - k + 1).

    Weight (kh, kw, C_in, C_out), bias (C_out,).  Backward, with y = x_pad (*) w:
      dL/dw[i, j] = sum over positions of x_pad[p + i, q + j]^T g[p, q]   (im2col^T @ g)
      dL/dx       = g padded by k - 1 - pad, correlated with w flipped in space and C_in <-> C_out
    so the input gradient reuses the forward correlation.
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, padding="same", bias=True,
                 rng=None, negative_slope=0.0, dtype=np.float32):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if np.isscalar(kernel_size) else tuple(kernel_size)
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        self.kernel_size = (kh, kw)
        self.padding = padding
        if padding == "same":
            self.pads = same_padding(kh) + same_padding(kw)
        else:
            self.pads = (0, 0, 0, 0)
        rng = default_rng(rng)
        fan_in = kh * kw * in_channels
        self.params["weight"] = kaiming_normal(rng, (kh, kw, in_channels, out_channels), fan_in,
                                               negative_slope, dtype)
        if bias:
            self.params["bias"] = np.zeros(out_channels, dtype=dtype)
        self.zero_grads()

    def forward(self, x, training=True):
        self.input = x
        y = correlate(x, self.params["weight"], self.pads)
        if "bias" in self.params:
            y += self.params["bias"]
        return y

    def backward(self, grad_out):
        x = self.input
        weight = self.params["weight"]
        kh, kw, c_in, c_out = weight.shape
        top, bottom, left, right = self.pads
        n, out_h, out_w, _ = grad_out.shape

        x_padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0))) if any(self.pads) else x
        grad_weight = np.zeros((kh * kw * c_in, c_out), dtype=grad_out.dtype)
        for start, stop in _chunks(n, out_h * out_w * kh * kw * c_in * x.dtype.itemsize):
            cols = im2col(x_padded[start:stop], kh, kw, out_h, out_w)
            grad_weight += cols.T @ grad_out[start:stop].reshape(-1, c_out)
        self.grads["weight"] = grad_weight.reshape(weight.shape)
        if "bias" in self.params:
            self.grads["bias"] = grad_out.sum(axis=(0, 1, 2))

        flipped = np.ascontiguousarray(weight[::-1, ::-1].transpose(0, 1, 3, 2))
        return correlate(grad_out, flipped, (kh - 1 - top, kh - 1 - bottom, kw - 1 - left, kw - 1 - right))

    def __repr__(self):
        kh, kw, c_in, c_out = self.params["weight"].shape
        return f"Conv2d({c_in}, {c_out}, kernel_size=({kh}, {kw}), padding={self.padding!r})"
