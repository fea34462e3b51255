"""Draw cells from an attention distribution (Numba): attention (N, h, w) -> cells (N, P, 2).

Inverse-CDF sampling: each draw is a uniform u in [0, 1) mapped to the first cell whose cumulative
probability exceeds u * total. The uniforms come from a numpy.random.Generator outside the kernel, so a
run is reproducible from its seed and the kernel is a pure function that a plain loop can be checked against.
"""
import numpy as np
from numba import njit


@njit(cache=True)
def _sample_with_replacement(probabilities, uniforms):
    """(N, K) float, (N, P) uniforms in [0, 1) -> (N, P) int64 flat cell indices, independent draws."""
    n, k = probabilities.shape
    p = uniforms.shape[1]
    indices = np.empty((n, p), dtype=np.int64)
    cdf = np.empty(k, dtype=np.float64)
    for row in range(n):
        # The running sum in float64: with 10^5 cells a float32 sum would lose the smallest probabilities.
        total = 0.0
        for cell in range(k):
            total += probabilities[row, cell]
            cdf[cell] = total
        for draw in range(p):
            target = uniforms[row, draw] * total
            # Binary search for the first cdf[cell] > target; cells of zero mass are never chosen
            # because their cdf equals the one before them.
            low, high = 0, k - 1
            while low < high:
                middle = (low + high) // 2
                if cdf[middle] > target:
                    high = middle
                else:
                    low = middle + 1
            indices[row, draw] = low
    return indices


@njit(cache=True)
def _sample_without_replacement(probabilities, uniforms):
    """(N, K) float, (N, P) uniforms -> (N, P) int64 distinct cells, drawn one after the other.

    The sequential definition: draw a cell from the renormalised remaining mass, remove it, repeat.
    Removing a cell subtracts its mass from every later cdf entry, done here by zeroing it and recomputing.
    """
    n, k = probabilities.shape
    p = uniforms.shape[1]
    indices = np.empty((n, p), dtype=np.int64)
    mass = np.empty(k, dtype=np.float64)
    cdf = np.empty(k, dtype=np.float64)
    for row in range(n):
        for cell in range(k):
            mass[cell] = probabilities[row, cell]
        for draw in range(p):
            total = 0.0
            for cell in range(k):
                total += mass[cell]
                cdf[cell] = total
            target = uniforms[row, draw] * total
            low, high = 0, k - 1
            while low < high:
                middle = (low + high) // 2
                if cdf[middle] > target:
                    high = middle
                else:
                    low = middle + 1
            indices[row, draw] = low
            mass[low] = 0.0
    return indices


def sample_cells(attention, n_samples, rng, replace=True):
    """(N, h, w) probabilities -> (N, P, 2) int64 (row, col) cells, drawn in proportion to `attention`.

    With replace=False the P cells of an image are distinct (P must not exceed its non-zero cells).
    """
    n, h, w = attention.shape
    uniforms = rng.random((n, n_samples))
    flat = np.ascontiguousarray(attention.reshape(n, h * w))
    if replace:
        indices = _sample_with_replacement(flat, uniforms)
    else:
        if n_samples > h * w:
            raise ValueError(f"cannot draw {n_samples} distinct cells from a {h}x{w} attention map")
        indices = _sample_without_replacement(flat, uniforms)
    return np.stack(np.divmod(indices, w), axis=-1)


def sample_cells_numpy(attention, n_samples, rng):
    """The vectorised NumPy equivalent of sample_cells (for benchmarks): one searchsorted over all rows.

    Offsetting row i's cdf by i makes the concatenated cdfs one sorted array.
    """
    n, h, w = attention.shape
    uniforms = rng.random((n, n_samples))
    cdf = np.cumsum(attention.reshape(n, h * w), axis=1, dtype=np.float64)
    cdf /= cdf[:, -1:]
    offsets = np.arange(n)[:, None]
    flat = np.searchsorted((cdf + offsets).ravel(), (uniforms + offsets).ravel(), side="right")
    indices = np.minimum(flat.reshape(n, n_samples) - offsets * h * w, h * w - 1)
    return np.stack(np.divmod(indices, w), axis=-1)
