"""Time the sampler and the patch extractor: Numba kernels against vectorised NumPy and plain Python.

    python benchmarks/bench_sampling.py                  # both workloads, 10 timed runs (5 for the Python sampler)
    python benchmarks/bench_sampling.py --repeat 20 --python-repeat 5 --workloads extractor

Workloads (what one training step of the method does, at the paper's megapixel scale):
  sampler    32 attention maps of 260x347 cells (float32) -> 20 cells each, with replacement
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
times faster a row is than the Python row and the NumPy row. Before timing, every implementation's
output is checked to be identical. The machine may be shared: medians, never means; the script never
asserts on time.
"""
import argparse
import bisect
import itertools
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

# Run from a checkout without installing: the project root holds attention_sampling/.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)                   # common.py
sys.path.insert(1, os.path.dirname(HERE))  # the project root

import numba  # noqa: E402
from common import time_calls  # noqa: E402

from attention_sampling import patches as patches_module  # noqa: E402
from attention_sampling import sampling as sampling_module  # noqa: E402
from attention_sampling.patches import extract_patches, patch_offset  # noqa: E402
from attention_sampling.sampling import sample_cells, sample_cells_numpy  # noqa: E402

N_IMAGES, N_SAMPLES = 32, 20
GRID = (260, 347)
SCALE = 4
PATCH_SIZE = 50
CHANNELS = 3


# ----------------------------------------------------------------------------- the competitors

def sample_cells_python(attention, n_samples, rng):
    """(N, h, w) -> (N, P, 2): the same uniforms and the same float64 cdf as the kernel, searched by bisect."""
    n, h, w = attention.shape
    uniforms = rng.random((n, n_samples))
    cells = []
    for image in range(n):
        cumulative = list(itertools.accumulate(attention[image].ravel().tolist()))
        total = cumulative[-1]
        row = []
        for u in uniforms[image].tolist():
            # bisect_right finds the first cumulative entry > u * total, as the kernel's binary search does.
            index = min(bisect.bisect_right(cumulative, u * total), len(cumulative) - 1)
            row.append(divmod(index, w))
        cells.append(row)
    return np.array(cells, dtype=np.int64).reshape(n, n_samples, 2)


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


def first_call(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def median_time(function, repeat):
    """Median wall time of `repeat` calls after one untimed warm-up call."""
    return statistics.median(time_calls(function, 1, repeat)[1])


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

    cells, first = first_call(run(sample_cells))
    note = how_compiled(sampling_module._sample_with_replacement)
    same_numpy = np.array_equal(run(sample_cells_numpy)(), cells)
    same_python = np.array_equal(run(sample_cells_python)(), cells)
    rows = [
        Row("numba", "sample_cells", median_time(run(sample_cells), args.repeat), args.repeat, first, note),
        Row("numpy", "sample_cells_numpy", median_time(run(sample_cells_numpy), args.repeat), args.repeat),
        Row("python", "loop + bisect", median_time(run(sample_cells_python), args.python_repeat),
            args.python_repeat),
    ]
    description = (f"sampler: {N_IMAGES} maps {GRID[0]}x{GRID[1]} float32 -> {N_SAMPLES} cells each; "
                   f"same cells: numpy {same_numpy}, python {same_python}")
    return description, rows


def bench_extractor(args):
    rng = np.random.default_rng(args.seed)
    height, width = GRID[0] * SCALE, GRID[1] * SCALE
    images = rng.random((N_IMAGES, height, width, CHANNELS), dtype=np.float32)
    cells = sample_cells(attention_maps(rng), N_SAMPLES, rng)
    cells[0, 0], cells[-1, -1] = (0, 0), (GRID[0] - 1, GRID[1] - 1)

    def run(implementation):
        return lambda: implementation(images, cells, PATCH_SIZE, SCALE)

    patches, first = first_call(run(extract_patches))
    note = how_compiled(patches_module._extract)
    same_numpy = np.array_equal(run(extract_patches_numpy)(), patches)
    same_python = np.array_equal(run(extract_patches_python)(), patches)
    padded = pad_images(images, PATCH_SIZE, SCALE)
    before = padding_for(images.shape, PATCH_SIZE, SCALE)[0][0]
    rows = [
        Row("numba", "extract_patches", median_time(run(extract_patches), args.repeat), args.repeat, first, note),
        Row("numpy", "pad + fancy index", median_time(run(extract_patches_numpy), args.repeat), args.repeat),
        Row("", "numpy, pre-padded",
            median_time(lambda: extract_from_padded(padded, cells, PATCH_SIZE, SCALE, before), args.repeat),
            args.repeat),
        # One slice copy per patch is fast enough to share the fast rows' repeat count.
        Row("python", "loop + slice per patch", median_time(run(extract_patches_python), args.repeat),
            args.repeat),
    ]
    description = (f"extractor: {N_IMAGES} images {height}x{width}x{CHANNELS} float32, {N_SAMPLES} cells each "
                   f"-> {N_IMAGES * N_SAMPLES} patches {PATCH_SIZE}x{PATCH_SIZE}x{CHANNELS}; "
                   f"same patches: numpy {same_numpy}, python {same_python}")
    return description, rows


WORKLOADS = {"sampler": bench_sampler, "extractor": bench_extractor}


def environment():
    return (f"python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__} "
            f"({numba.config.NUMBA_NUM_THREADS} threads), cpus {os.cpu_count()}")


def print_table(results):
    header = (f"{'workload':<10} {'impl':<7} {'how':<24} {'first ms':>9} {'median ms':>10} {'runs':>5} "
              f"{'vs python':>10} {'vs numpy':>9}")
    print(header)
    print("-" * len(header))
    for name, (description, rows) in results.items():
        seconds_of = {row.implementation: row.seconds for row in rows if row.implementation}
        for index, row in enumerate(rows):
            first = f"{row.first * 1e3:9.1f}" if row.first is not None else f"{'':>9}"
            versus_python = f"{seconds_of['python'] / row.seconds:9.1f}x"
            versus_numpy = f"{seconds_of['numpy'] / row.seconds:8.1f}x"
            print(f"{name if index == 0 else '':<10} {row.implementation:<7} {row.how:<24} {first} "
                  f"{row.seconds * 1e3:10.2f} {row.runs:>5} {versus_python} {versus_numpy}")
        for row in rows:
            if row.note:
                print(f"{'':<10} first call of {row.how}: {row.note}")
        print(f"{'':<10} {description}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10,
                        help="timed runs of the Numba and NumPy rows (and the Python extractor) (default 10)")
    parser.add_argument("--python-repeat", type=int, default=5,
                        help="timed runs of the pure-Python sampler, ~100x slower than Numba (default 5)")
    parser.add_argument("--workloads", default="sampler,extractor",
                        help=f"comma-separated, from {sorted(WORKLOADS)} (default both)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.python_repeat < 1:
        parser.error("--repeat and --python-repeat must be at least 1")
    names = [name.strip() for name in args.workloads.split(",") if name.strip()]
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown:
        parser.error(f"--workloads: unknown {unknown}, choose from {sorted(WORKLOADS)}")

    print(environment())
    print("median wall time per call in ms after one warm-up; 'first' is the process's first call "
          "(Numba compile or cache load)")
    results = {name: WORKLOADS[name](args) for name in names}
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
