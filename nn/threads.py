"""The cores' share of a kernel's work: a serial Numba kernel run over slices of its tasks on a pool of threads.

The kernels only a training step runs (dL/dw, the bias sums, the sparse backward, batch norm, the leaky
ReLU's backward, the augmented patches) are written `kernel(start, stop, ...)`, a plain loop over tasks
start..stop-1 compiled without Numba's parallel=True, and called through `run`, which gives each thread one
contiguous slice (the first on the calling thread) and returns when all are done. Why: parallel=True
compiles a kernel's loop body a second time as a gufunc, twice the compilation a first run waits for, and
the same loops split by hand run as fast (nogil kernels). The kernels inference shares with training (the
correlation, the average pool, patch extraction) are built both ways from one source (`two_builds`): a
training process runs the pool's build, as fast there; predict.py runs Numba's, whose workers stay awake
between millisecond kernels where the pool's hand-over (a few tenths of a millisecond) shows
(docs/performance.md, "Cold start"; python -m benchmarks.bench_cold).

A kernel's result never depends on how its tasks are split: each task writes its own outputs, and a kernel
that reduces does so per part, with as many parts as `count()` (not as slices), the same sums either way.
"""
import threading
import types
from concurrent.futures import ThreadPoolExecutor

import numba

from .kernel_tools import compiled_for, vectorised_call

# Which build runs a kernel made by `two_builds` (the ones inference shares with training): "pool", its serial
# build split over this module's threads, or "numba", its parallel=True build (set by `use`). "pool" by default:
# it compiles in half the time and trains as fast; a process that predicts image by image (predict.py, a Dask
# worker) takes "numba", faster on millisecond calls (docs/performance.md, "Cold start").
BUILDS = ("pool", "numba")
_build = "pool"

_pool = None
_pool_workers = 0
_pool_lock = threading.Lock()


def count():
    """Threads a kernel's work is split over: NUMBA_NUM_THREADS (all cores unless the environment says
    otherwise; a Dask worker sets 1, application/cluster.py)."""
    return max(1, int(numba.config.NUMBA_NUM_THREADS))


def parts(items):
    """How many parts a reducing kernel splits `items` into: one per thread, at most one per item."""
    return max(1, min(count(), items))


def slices(tasks, parts):
    """range(tasks) in `parts` contiguous slices as even as possible -> [(start, stop), ...], none empty."""
    parts = max(1, min(parts, tasks))
    return [(part * tasks // parts, (part + 1) * tasks // parts) for part in range(parts)]


def _workers():
    global _pool, _pool_workers
    with _pool_lock:
        if _pool is None or _pool_workers != count() - 1:
            _pool_workers = count() - 1
            _pool = ThreadPoolExecutor(max_workers=_pool_workers, thread_name_prefix="nn-kernel")
        return _pool


def run(kernel, tasks, *args, vectorise=False):
    """kernel(start, stop, *args) for slices covering range(tasks), one per thread -> None.

    vectorise: compile it with the SLP vectoriser on (kernel_tools.vectorised_call). A kernel not yet
    compiled for these argument types runs its first slice alone, so that one thread compiles it once."""
    if tasks <= 0:
        return
    parts = slices(tasks, count())
    call = (lambda start, stop: vectorised_call(kernel, start, stop, *args)) if vectorise else \
        (lambda start, stop: kernel(start, stop, *args))
    if len(parts) == 1:
        call(*parts[0])
        return
    if not compiled_for(kernel, (0, 0, *args)):
        call(*parts[0])
        parts = parts[1:]
        if len(parts) == 1:
            call(*parts[0])
            return
    pool = _workers()
    futures = [pool.submit(call, start, stop) for start, stop in parts[1:]]
    try:
        call(*parts[0])
    finally:
        for future in futures:
            future.result()


def use(build):
    """Run every `two_builds` kernel from now on in `build` ("numba" or "pool"), process-wide -> the previous one.

    "pool" compiles each kernel once where parallel=True compiles its loop twice (a first training step waits
    for fewer seconds); "numba" keeps Numba's workers awake between back-to-back millisecond kernels, which is
    faster for one image at a time (docs/performance.md, "Cold start"). Mixing the two in one process costs
    both: Numba's idle workers spin on the cores the pool wants."""
    global _build
    if build not in BUILDS:
        raise ValueError(f"build must be one of {BUILDS}, got {build!r}")
    previous, _build = _build, build
    return previous


def current():
    """The build `two_builds` kernels run in now: "numba" or "pool"."""
    return _build


def _renamed(function, suffix):
    """A copy of `function` under a name of its own, so that each build has its own on-disk cache entry."""
    copy = types.FunctionType(function.__code__, function.__globals__, f"{function.__name__}__{suffix}",
                              function.__defaults__, function.__closure__)
    copy.__qualname__ = f"{function.__qualname__}__{suffix}"
    copy.__module__ = function.__module__
    copy.__doc__ = function.__doc__
    return copy


class TwoBuilds:
    """A kernel(start, stop, ...) whose loop is `for task in prange(start, stop)`, compiled twice from that one
    source: with parallel=True (prange splits the tasks over Numba's threads) and without (prange is a plain
    range; `run` splits them over the pool). Call it as kernel(tasks, *args, vectorise=...)."""

    def __init__(self, function, options):
        self.numba = numba.njit(parallel=True, **options)(_renamed(function, "parallel"))
        # Numba's gufuncs are compiled with NumPy's error model (no ZeroDivisionError checks in the loops, which
        # keep LLVM from vectorising them); the serial build takes it too, or it runs 1.2 to 1.5x slower.
        self.pool = numba.njit(error_model="numpy", **options)(_renamed(function, "serial"))

    def build(self, build=None):
        """The dispatcher of `build` (default: the one in use)."""
        return self.numba if (build or _build) == "numba" else self.pool

    def here(self, tasks, *args, vectorise=False):
        """All the tasks on the calling thread, by the serial build: for a thread that runs beside a step's
        kernels (the data loader), where neither the pool nor Numba's workers should be asked for a core."""
        if tasks > 0:
            (vectorised_call if vectorise else lambda kernel, *a: kernel(*a))(self.pool, 0, tasks, *args)

    def __call__(self, tasks, *args, vectorise=False, build=None):
        if (build or _build) == "pool":
            run(self.pool, tasks, *args, vectorise=vectorise)
        elif tasks > 0:
            (vectorised_call if vectorise else lambda kernel, *a: kernel(*a))(self.numba, 0, tasks, *args)


def two_builds(**options):
    """Decorator: the kernel as a TwoBuilds, both builds with these njit options (cache, fastmath, nogil...)."""
    return lambda function: TwoBuilds(function, options)
