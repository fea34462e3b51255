"""Time the sampler and the patch extractor: Numba kernels against vectorised NumPy and plain Python.

    python -m benchmarks.bench_sampling                  # every workload, 10 timed runs (5 for the Python sampler)
    python -m benchmarks.bench_sampling --repeat 20 --python-repeat 5 --workloads extractor

Workloads (what one training step of the method does, at the paper's megapixel scale):
  sampler    32 attention maps of 260x347 cells (float32) -> 20 cells each, with replacement
  without    the same maps -> 20 distinct cells each (sampling without replacement), beside the kernel
             with the whole map as one block (a pass over every cell per draw)
  extractor  32 images 1040x1388x3 float32 (scale 4, so the same 260x347 grid), 20 cells each
             -> 640 patches 50x50x3; two cells per batch are the grid's corners, so padding is exercised

Implementations:
  numba   sample_cells / extract_patches, the project's kernels (the extractor runs in parallel threads)
  numpy   sample_cells_numpy: one searchsorted over all maps' offset cdfs;
          extractor: pad the batch once, then one fancy index with broadcast (N, P, S, S) index arrays.
          "numpy, pre-padded" times the fancy index alone, to show how much of it is the padding copy.
  python  sampler: a Python loop per draw, bisect over a cumulative list built with itertools.accumulate;
          extractor: Python loops over images and patches, one NumPy slice copy per patch.

Each row is the median wall time over its runs (column "runs": --repeat, or --python-repeat for the
slow pure-Python sampler) after one untimed warm-up. "first" is the very first call in this process:
for the Numba kernels that is compilation, or loading the on-disk cache (the note under the table says
which); the first workload's also pays Numba's one-off start-up, the extractor's starting its thread
pool. Run with NUMBA_CACHE_DIR=<an empty directory> to see compile times. The "vs" columns say how many
times faster a row is than the Python row and the NumPy row. After timing, every implementation's
output is checked to be identical to the kernel's. The machine may be shared: medians, never means; the
script never asserts on time.
"""
import argparse
import bisect
import itertools
import statistics
import sys
from dataclasses import dataclass

import numpy as np

from attention_sampling import patches as patches_module
from attention_sampling import sampling as sampling_module
from attention_sampling.patches import extract_patches, patch_offset
from attention_sampling.sampling import sample_cells
from benchmarks.common import print_table, python_environment, time_calls

N_IMAGES, N_SAMPLES = 32, 20
GRID = (260, 347)
SCALE = 4
PATCH_SIZE = 50
CHANNELS = 3


# ----------------------------------------------------------------------------- the competitors

def sample_cells_numpy(attention, n_samples, rng):
    """The NumPy equivalent of sample_cells (for benchmarks): cumsum and searchsorted, vectorised per image.

    Each image searches its own cdf: shifting all cdfs into one sorted array would round u + i up to
    i + 1 for u within 2^-53 of 1 and land in the next image.
    """
    n, h, w = attention.shape
    uniforms = rng.random((n, n_samples))
    cdf = np.cumsum(attention.reshape(n, h * w), axis=1, dtype=np.float64)
    indices = np.empty((n, n_samples), dtype=np.int64)
    for row in range(n):
        indices[row] = np.searchsorted(cdf[row], uniforms[row] * cdf[row, -1], side="right")
    return np.stack(np.divmod(indices, w), axis=-1)


def sample_cells_python(attention, n_samples, rng, replace=True):
    """(N, h, w) -> (N, P, 2): the same uniforms and the same float64 cdf as the kernel, searched by bisect;
    without replacement the drawn cell's mass is removed and the cdf built again for the next draw."""
    n, h, w = attention.shape
    uniforms = rng.random((n, n_samples))
    cells = []
    for image in range(n):
        mass = attention[image].ravel().astype(np.float64).tolist()
        cumulative = list(itertools.accumulate(mass))
        for draw, u in enumerate(uniforms[image].tolist()):
            if not replace and draw:
                cumulative = list(itertools.accumulate(mass))
            # bisect_right finds the first cumulative entry > u * total, as the kernel's binary search does.
            index = min(bisect.bisect_right(cumulative, u * cumulative[-1]), len(cumulative) - 1)
            if not replace:
                mass[index] = 0.0
            cells.append(divmod(index, w))
    return np.array(cells, dtype=np.int64).reshape(n, n_samples, 2)


def sample_without_numpy(attention, n_samples, rng):
    """sample_cells(..., replace=False) in NumPy: per draw, the cdf of the remaining mass and one searchsorted."""
    n, h, w = attention.shape
    uniforms = rng.random((n, n_samples))
    indices = np.empty((n, n_samples), dtype=np.int64)
    for row in range(n):
        mass = attention[row].ravel().astype(np.float64)
        for draw in range(n_samples):
            cdf = np.cumsum(mass)
            indices[row, draw] = min(np.searchsorted(cdf, uniforms[row, draw] * cdf[-1], side="right"), h * w - 1)
            mass[indices[row, draw]] = 0.0
    return np.stack(np.divmod(indices, w), axis=-1)


def padding_for(images_shape, patch_size, scale):
    """((before, after) rows, (before, after) columns): the least zero border every cell's patch fits in."""
    _, height, width, _ = images_shape
    offset = patch_offset(patch_size, scale)
    before = max(0, -offset)
    # The last cell of the pooled grid starts at (h - 1) c + offset and spans patch_size pixels.
    rows_after = max(0, (height // scale - 1) * scale + offset + patch_size - height)
    columns_after = max(0, (width // scale - 1) * scale + offset + patch_size - width)
    return (before, rows_after), (before, columns_after)


def pad_images(images, patch_size, scale):
    rows, columns = padding_for(images.shape, patch_size, scale)
    return np.pad(images, ((0, 0), rows, columns, (0, 0)))


def extract_from_padded(padded, cells, patch_size, scale, before):
    """One fancy index: (N, 1, 1, 1), (N, P, S, 1), (N, P, 1, S) index arrays broadcast to (N, P, S, S, C)."""
    n = padded.shape[0]
    steps = np.arange(patch_size)
    tops = cells[..., 0] * scale + patch_offset(patch_size, scale) + before
    lefts = cells[..., 1] * scale + patch_offset(patch_size, scale) + before
    rows = tops[:, :, None, None] + steps[:, None]
    columns = lefts[:, :, None, None] + steps[None, :]
    return padded[np.arange(n)[:, None, None, None], rows, columns]


def extract_patches_numpy(images, cells, patch_size, scale):
    """Pad once so that no patch leaves the array, then index every patch pixel at once."""
    padded = pad_images(images, patch_size, scale)
    before = padding_for(images.shape, patch_size, scale)[0][0]
    return extract_from_padded(padded, cells, patch_size, scale, before)


def extract_patches_python(images, cells, patch_size, scale):
    """Loops over images and patches; each patch is one slice copy of its in-image part into zeros."""
    n, height, width, channels = images.shape
    p = cells.shape[1]
    offset = patch_offset(patch_size, scale)
    patches = np.zeros((n, p, patch_size, patch_size, channels), dtype=images.dtype)
    for image in range(n):
        for draw in range(p):
            top = int(cells[image, draw, 0]) * scale + offset
            left = int(cells[image, draw, 1]) * scale + offset
            row0, row1 = max(top, 0), min(top + patch_size, height)
            col0, col1 = max(left, 0), min(left + patch_size, width)
            if row0 < row1 and col0 < col1:
                patches[image, draw, row0 - top:row1 - top, col0 - left:col1 - left] = \
                    images[image, row0:row1, col0:col1]
    return patches


# ----------------------------------------------------------------------------- timing

@dataclass
class Row:
    """One line of the table."""

    implementation: str  # "numba", "numpy", "python"; "" for a variant of the row above
    how: str
    seconds: float       # median
    runs: int
    first: float = None  # seconds of the process's first call, for the Numba kernels
    note: str = ""       # how that first call got its machine code


def timed_row(implementation, how, function, repeat, kernel=None):
    """A Row of `function`'s median over `repeat` calls after one untimed warm-up (the first call).

    Given the Numba `kernel` that `function` runs, the row also keeps that first call and how it got its
    machine code (for the other rows the first call says nothing).
    """
    first, timed = time_calls(function, 1, repeat)
    row = Row(implementation, how, statistics.median(timed), repeat)
    if kernel is not None:
        row.first, row.note = first, how_compiled(kernel)
    return row


def how_compiled(kernel):
    """'cache load' if the kernel's first call read Numba's on-disk cache, else 'compiled'."""
    return "cache load" if sum(kernel.stats.cache_hits.values()) else "compiled"


def attention_maps(rng):
    """(32, 260, 347) float32 spatial softmax of normal logits: a few cells dominate, none is zero."""
    logits = 2.0 * rng.standard_normal((N_IMAGES, GRID[0] * GRID[1]))
    attention = np.exp(logits - logits.max(axis=1, keepdims=True))
    attention /= attention.sum(axis=1, keepdims=True)
    return attention.astype(np.float32).reshape(N_IMAGES, *GRID)


def bench_sampler(args):
    attention = attention_maps(np.random.default_rng(args.seed))

    def run(implementation):
        return lambda: implementation(attention, N_SAMPLES, np.random.default_rng(args.seed))

    rows = [timed_row("numba", "sample_cells", run(sample_cells), args.repeat,
                      kernel=sampling_module._sample_with_replacement),
            timed_row("numpy", "sample_cells_numpy", run(sample_cells_numpy), args.repeat),
            timed_row("python", "loop + bisect", run(sample_cells_python), args.python_repeat)]
    cells = run(sample_cells)()
    same_numpy = np.array_equal(run(sample_cells_numpy)(), cells)
    same_python = np.array_equal(run(sample_cells_python)(), cells)
    description = (f"sampler: {N_IMAGES} maps {GRID[0]}x{GRID[1]} float32 -> {N_SAMPLES} cells each; "
                   f"same cells: numpy {same_numpy}, python {same_python}")
    return description, rows


def bench_without(args):
    attention = attention_maps(np.random.default_rng(args.seed))
    cells_per_map = GRID[0] * GRID[1]

    def run(implementation):
        return lambda: implementation(attention, N_SAMPLES, np.random.default_rng(args.seed))

    def one_block(attention, n_samples, rng):  # the whole map one block: a pass over every cell per draw
        flat = np.ascontiguousarray(attention.reshape(len(attention), -1))
        indices = sampling_module._sample_without_replacement(flat, rng.random((len(attention), n_samples)),
                                                              cells_per_map)
        return np.stack(np.divmod(indices, GRID[1]), axis=-1)

    sample = lambda attention, n_samples, rng: sample_cells(attention, n_samples, rng, replace=False)
    sample_python_without = lambda attention, n_samples, rng: sample_cells_python(attention, n_samples, rng, False)
    rows = [timed_row("numba", f"sample_cells, blocks of {sampling_module.block_size(cells_per_map)}", run(sample),
                      args.repeat, kernel=sampling_module._sample_without_replacement),
            timed_row("", "one block of all cells", run(one_block), args.repeat),
            timed_row("numpy", "cumsum + searchsorted per draw", run(sample_without_numpy), args.repeat),
            timed_row("python", "accumulate + bisect per draw", run(sample_python_without), args.python_repeat)]
    cells = run(sample)()
    same = {name: np.array_equal(run(f)(), cells) for name, f in
            (("one block", one_block), ("numpy", sample_without_numpy), ("python", sample_python_without))}
    description = (f"without: {N_IMAGES} maps {GRID[0]}x{GRID[1]} float32 -> {N_SAMPLES} distinct cells each; "
                   f"same cells: " + ", ".join(f"{name} {value}" for name, value in same.items()))
    return description, rows


def bench_extractor(args):
    rng = np.random.default_rng(args.seed)
    height, width = GRID[0] * SCALE, GRID[1] * SCALE
    images = rng.random((N_IMAGES, height, width, CHANNELS), dtype=np.float32)
    cells = sample_cells(attention_maps(rng), N_SAMPLES, rng)
    cells[0, 0], cells[-1, -1] = (0, 0), (GRID[0] - 1, GRID[1] - 1)

    def run(implementation):
        return lambda: implementation(images, cells, PATCH_SIZE, SCALE)

    padded = pad_images(images, PATCH_SIZE, SCALE)
    before = padding_for(images.shape, PATCH_SIZE, SCALE)[0][0]
    rows = [timed_row("numba", "extract_patches", run(extract_patches), args.repeat, kernel=patches_module._extract.build()),
            timed_row("numpy", "pad + fancy index", run(extract_patches_numpy), args.repeat),
            timed_row("", "numpy, pre-padded",
                      lambda: extract_from_padded(padded, cells, PATCH_SIZE, SCALE, before), args.repeat),
            # One slice copy per patch is fast enough to share the fast rows' repeat count.
            timed_row("python", "loop + slice per patch", run(extract_patches_python), args.repeat)]
    patches = run(extract_patches)()
    same_numpy = np.array_equal(run(extract_patches_numpy)(), patches)
    same_python = np.array_equal(run(extract_patches_python)(), patches)
    description = (f"extractor: {N_IMAGES} images {height}x{width}x{CHANNELS} float32, {N_SAMPLES} cells each "
                   f"-> {N_IMAGES * N_SAMPLES} patches {PATCH_SIZE}x{PATCH_SIZE}x{CHANNELS}; "
                   f"same patches: numpy {same_numpy}, python {same_python}")
    return description, rows


WORKLOADS = {"sampler": bench_sampler, "without": bench_without, "extractor": bench_extractor}


def print_results(results):
    """{workload: (description, rows)} -> one table, then each workload's first-call notes and description."""
    table = []
    for name, (_, rows) in results.items():
        seconds_of = {row.implementation: row.seconds for row in rows if row.implementation}
        for index, row in enumerate(rows):
            table.append([name if index == 0 else "", row.implementation, row.how,
                          None if row.first is None else f"{row.first * 1e3:.1f}", f"{row.seconds * 1e3:.2f}",
                          row.runs, f"{seconds_of['python'] / row.seconds:.1f}x",
                          f"{seconds_of['numpy'] / row.seconds:.1f}x"])
    print_table(["workload", "impl", "how", "first ms", "median ms", "runs", "vs python", "vs numpy"], table,
                align="lllrrrrr")
    for name, (description, rows) in results.items():
        for row in rows:
            if row.note:
                print(f"{name}: first call of {row.how}: {row.note}")
        print(description)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10,
                        help="timed runs of the Numba and NumPy rows (and the Python extractor) (default 10)")
    parser.add_argument("--python-repeat", type=int, default=5,
                        help="timed runs of the pure-Python sampler, ~100x slower than Numba (default 5)")
    parser.add_argument("--workloads", default="sampler,without,extractor",
                        help=f"comma-separated, from {sorted(WORKLOADS)} (default all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.python_repeat < 1:
        parser.error("--repeat and --python-repeat must be at least 1")
    names = [name.strip() for name in args.workloads.split(",") if name.strip()]
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown:
        parser.error(f"--workloads: unknown {unknown}, choose from {sorted(WORKLOADS)}")

    print(python_environment())
    print("median wall time per call in ms after one warm-up; 'first' is the process's first call "
          "(Numba compile or cache load)")
    print_results({name: WORKLOADS[name](args) for name in names})
    return 0


if __name__ == "__main__":
    sys.exit(main())
