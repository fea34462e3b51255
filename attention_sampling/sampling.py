"""Draw cells from an attention distribution (Numba): attention (N, h, w) -> cells (N, P, 2).

Inverse-CDF sampling: each draw is a uniform u in [0, 1) mapped to the first cell whose cumulative
probability exceeds u * total. The uniforms come from a numpy.random.Generator outside the kernel, so a
run is reproducible from its seed and the kernel is a pure function that a plain loop can be checked against.
"""
import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _first_above(cdf, target):
    """Binary search: the first index whose cdf exceeds target. A cell of zero mass is never returned,
    because its cdf equals the one before it."""
    low, high = 0, cdf.shape[0] - 1
    while low < high:
        middle = (low + high) // 2
        if cdf[middle] > target:
            high = middle
        else:
            low = middle + 1
    return low


@njit(cache=True, nogil=True)
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
            indices[row, draw] = _first_above(cdf, uniforms[row, draw] * total)
    return indices


@njit(cache=True, nogil=True)
def _sample_without_replacement(probabilities, uniforms, block):
    """(N, K) float, (N, P) uniforms, cells per block -> (N, P) int64 distinct cells, drawn one after the other.

    The sequential definition: draw a cell from the renormalised remaining mass, remove it, repeat. The
    cells are summed in blocks: a draw walks the block sums, then the cells of one block, and removing a
    cell sums its block again, so a draw costs K / block + 2 block steps instead of a pass over all K cells
    (python -m benchmarks.bench_sampling). Every sum is of the remaining masses themselves, never a total
    minus what was drawn, which would cancel on a map whose drawn cells held nearly all of the mass.
    """
    n, k = probabilities.shape
    p = uniforms.shape[1]
    blocks = -(-k // block)
    indices = np.empty((n, p), dtype=np.int64)
    mass = np.empty(k, dtype=np.float64)
    sums = np.empty(blocks, dtype=np.float64)
    for row in range(n):
        for b in range(blocks):
            total = 0.0
            for cell in range(b * block, min(k, (b + 1) * block)):
                mass[cell] = probabilities[row, cell]
                total += mass[cell]
            sums[b] = total
        for draw in range(p):
            total = 0.0
            for b in range(blocks):
                total += sums[b]
            target = uniforms[row, draw] * total
            # The first cell whose cumulative remaining mass exceeds the target: first its block ...
            below, b = 0.0, 0
            while b < blocks - 1 and below + sums[b] <= target:
                below += sums[b]
                b += 1
            # ... then the cell; rounding may leave the target past the block's last cell of mass: that cell.
            chosen = -1
            for cell in range(b * block, min(k, (b + 1) * block)):
                if mass[cell] > 0.0:
                    chosen = cell
                    below += mass[cell]
                    if below > target:
                        break
            if chosen < 0:  # the last block holds no mass left: the last cell that does
                chosen = k - 1
                while chosen > 0 and mass[chosen] == 0.0:
                    chosen -= 1
            indices[row, draw] = chosen
            mass[chosen] = 0.0
            b = chosen // block
            total = 0.0
            for cell in range(b * block, min(k, (b + 1) * block)):
                total += mass[cell]
            sums[b] = total
    return indices


def block_size(cells):
    """Cells per block of the sampler without replacement: about sqrt(K), which makes a draw's two walks
    (K / block block sums, 2 block cells) about equally long."""
    return max(1, int(np.sqrt(cells)))


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
        available = int(np.count_nonzero(flat, axis=1).min())
        if n_samples > available:
            # Past the non-zero cells the remaining mass is 0 and every draw would repeat the last cell.
            raise ValueError(f"cannot draw {n_samples} distinct cells: an attention map has only "
                             f"{available} cells of non-zero probability (of {h}x{w})")
        indices = _sample_without_replacement(flat, uniforms, block_size(h * w))
    return np.stack(np.divmod(indices, w), axis=-1)

