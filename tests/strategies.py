"""Hypothesis strategies shared by every test: shapes, seeds, and arrays built from a seed.

Values for gradient checks come from a seeded numpy Generator rather than from
hypothesis.extra.numpy: the arrays Hypothesis shrinks towards (all zeros, repeated entries) sit
exactly on the kinks and ties where a derivative does not exist (LeakyReLU at 0, a max-pool tie,
batch norm of a constant channel), so a finite difference there proves nothing. Hypothesis still
draws and shrinks the seed, the shape and the scale. Where degenerate values are the point
(extreme logits, x = 0), tests use `extreme_logits` or build the array themselves.

Shapes are small on purpose: every gradient check perturbs each input and parameter element twice.
"""
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

seeds = st.integers(min_value=0, max_value=2**32 - 1)
batch_sizes = st.integers(min_value=1, max_value=3)
spatial_sizes = st.integers(min_value=1, max_value=6)
channel_counts = st.integers(min_value=1, max_value=3)
feature_counts = st.integers(min_value=1, max_value=5)
paddings = st.sampled_from(["same", "valid", "reflect", "edge"])
scales = st.sampled_from([0.1, 1.0, 4.0])
negative_slopes = st.sampled_from([0.0, 0.01, 0.2, 0.5])
float_dtypes = st.sampled_from([np.float32, np.float64])


# ----------------------------------------------------------------------------- arrays from a seed

def normal_array(seed, shape, scale=1.0, dtype=np.float64):
    """Standard normal entries times `scale`: generic values, no ties, almost surely no zeros."""
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def away_from_zero(seed, shape, margin=0.05, dtype=np.float64):
    """Entries with |x| >= margin: a finite-difference step of 1e-6 never crosses a kink at 0."""
    values = np.random.default_rng(seed).standard_normal(shape)
    return (np.sign(values) * (margin + np.abs(values))).astype(dtype)


def distinct_values(seed, shape, spacing=0.1, dtype=np.float64):
    """A shuffled arithmetic progression: every pair differs by >= spacing, so a max has no tie to break."""
    size = int(np.prod(shape))
    rng = np.random.default_rng(seed)
    values = (rng.permutation(size) - size / 2) * spacing + rng.uniform(0, spacing / 2)
    return values.reshape(shape).astype(dtype)


# ----------------------------------------------------------------------------- shapes

@st.composite
def image_shapes(draw, min_side=1, max_side=6, min_positions=1):
    """(N, H, W, C); W is widened if needed so that each channel has >= `min_positions` values over (N, H, W)."""
    shape = (draw(batch_sizes), draw(st.integers(min_side, max_side)),
             draw(st.integers(min_side, max_side)), draw(channel_counts))
    if shape[0] * shape[1] * shape[2] < min_positions:
        shape = (shape[0], shape[1], max(shape[2], min_positions), shape[3])
    return shape


@st.composite
def leading_shapes(draw, max_dims=2):
    """The leading axes (...) in front of a feature axis: (N,), (N, P), ... up to `max_dims` axes."""
    return tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=max_dims)))


@st.composite
def kernel_sizes(draw, max_size=4):
    """An int (square kernel) or an (kh, kw) pair: odd, even and non-square kernels all appear."""
    if draw(st.booleans()):
        return draw(st.integers(1, max_size))
    return (draw(st.integers(1, max_size)), draw(st.integers(1, max_size)))


@dataclass(frozen=True)
class ConvCase:
    """Everything needed to build a Conv2d and an input it accepts."""

    batch: int
    height: int
    width: int
    in_channels: int
    out_channels: int
    kernel_size: object  # int or (kh, kw), passed to Conv2d as given
    padding: str
    bias: bool
    seed: int

    @property
    def kernel_hw(self):
        k = self.kernel_size
        return (k, k) if isinstance(k, int) else tuple(k)

    @property
    def input_shape(self):
        return (self.batch, self.height, self.width, self.in_channels)

    @property
    def output_hw(self):
        if self.padding != "valid":
            return self.height, self.width
        kh, kw = self.kernel_hw
        return self.height - kh + 1, self.width - kw + 1


@st.composite
def conv_cases(draw, max_kernel=4, max_extra=3):
    """A Conv2d configuration and input size; "valid" inputs are at least as large as the kernel."""
    kernel_size = draw(kernel_sizes(max_kernel))
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    padding = draw(paddings)
    min_h, min_w = (kh, kw) if padding == "valid" else (1, 1)
    return ConvCase(
        batch=draw(st.integers(1, 2)),
        height=draw(st.integers(min_h, min_h + max_extra)),
        width=draw(st.integers(min_w, min_w + max_extra)),
        in_channels=draw(channel_counts),
        out_channels=draw(channel_counts),
        kernel_size=kernel_size,
        padding=padding,
        bias=draw(st.booleans()),
        seed=draw(seeds),
    )


# ----------------------------------------------------------------------------- labels and logits

@st.composite
def logits_and_labels(draw, scale_strategy=scales):
    """(N, K) float64 logits from a seed and (N,) integer labels in [0, K)."""
    n, k = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    logits = normal_array(draw(seeds), (n, k), draw(scale_strategy))
    labels = np.asarray(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)), dtype=np.int64)
    return logits, labels


def extreme_logits(shapes, dtype=np.float64):
    """Arrays mixing +-1e4 with ordinary values: any naive exp() of these overflows or underflows to 0."""
    elements = st.one_of(st.sampled_from([-1e4, 1e4]), st.floats(-1e4, 1e4, width=32))
    return shapes.flatmap(lambda shape: hnp.arrays(dtype, shape, elements=elements))
