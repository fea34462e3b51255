"""The cores' share of a kernel's work: a serial Numba kernel run over slices of its tasks on a pool of threads.

The kernels only a training step runs (dL/dw, the bias sums, the sparse backward, batch norm, the leaky
ReLU's backward, the augmented patches) are written `kernel(start, stop, ...)`, a plain loop over tasks
start..stop-1 compiled without Numba's parallel=True, and called through `run`, which gives each thread one
contiguous slice (the first on the calling thread) and returns when all are done. Why: parallel=True
compiles a kernel's loop body a second time as a gufunc, twice the compilation a first run waits for, and
the same loops split by hand run as fast (nogil kernels). The kernels inference runs stay Numba-parallel:
there a call is a millisecond, the pool's hand-over (about 0.1 ms) shows, and the direct convolution's serial
build is slower (docs/performance.md, "Cold start"; python -m benchmarks.bench_cold).

A kernel's result never depends on how its tasks are split: each task writes its own outputs, and a kernel
that reduces does so per part, with as many parts as `count()` (not as slices), the same sums either way.
"""
import threading
from concurrent.futures import ThreadPoolExecutor

import numba

from .kernel_tools import vectorised_call

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
    if not kernel.overloads or tuple(kernel.typeof_pyval(a) for a in (0, 0, *args)) not in kernel.overloads:
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
