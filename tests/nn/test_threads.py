"""nn/threads.py: a serial kernel's tasks split over threads give the serial run's numbers, whatever the split."""
import threading

import numba
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from nn import threads
from nn.conv_kernels import channel_sum, outer


@numba.njit(cache=True, nogil=True)
def _square_each(start, stop, x, out):
    for k in range(start, stop):
        out[k] = x[k] * x[k] + k
    return out


@numba.njit(cache=True, nogil=True)
def _fail_past(start, stop, limit):
    for k in range(start, stop):
        if k >= limit:
            raise ValueError("task past the limit")


@settings(max_examples=60)
@given(tasks=st.integers(1, 500), parts=st.integers(1, 12))
def test_slices_cover_the_tasks_in_order_and_evenly(tasks, parts):
    """Contiguous, non-empty, in order, covering range(tasks) once; sizes differ by at most one."""
    pieces = threads.slices(tasks, parts)
    assert len(pieces) == min(tasks, parts)
    assert pieces[0][0] == 0 and pieces[-1][1] == tasks
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
    sizes = [stop - start for start, stop in pieces]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_run_gives_every_task_once_on_any_number_of_threads(monkeypatch, count):
    monkeypatch.setattr(threads, "count", lambda: count)
    x = np.random.default_rng(count).standard_normal(1001)
    out = np.full_like(x, np.nan)
    threads.run(_square_each, x.size, x, out)
    np.testing.assert_array_equal(out, x * x + np.arange(x.size))


def test_run_uses_other_threads_and_the_callers(monkeypatch):
    """With 3 threads the first slice runs on the calling thread and the others on the pool's workers."""
    monkeypatch.setattr(threads, "count", lambda: 3)
    seen = []

    class Compiled(dict):  # holds every signature: no first slice run alone
        def __contains__(self, key):
            return True

    class Recorder:
        overloads = Compiled(any=None)

        def typeof_pyval(self, value):
            return None

        def __call__(self, start, stop):
            seen.append((start, stop, threading.current_thread().name))

    threads.run(Recorder(), 9)
    assert sorted((start, stop) for start, stop, _ in seen) == [(0, 3), (3, 6), (6, 9)]
    where = {(start, stop): name for start, stop, name in seen}
    assert where[0, 3] == threading.current_thread().name
    assert where[3, 6].startswith("nn-kernel") and where[6, 9].startswith("nn-kernel")


def test_an_error_in_any_slice_reaches_the_caller(monkeypatch):
    monkeypatch.setattr(threads, "count", lambda: 2)
    threads.run(_fail_past, 10, 10)  # compiled, and no task fails
    with pytest.raises(ValueError, match="past the limit"):
        threads.run(_fail_past, 10, 7)  # only the second slice (5..9) fails: it runs on the worker


def test_no_tasks_runs_nothing():
    out = np.zeros(3)
    threads.run(_square_each, 0, np.ones(3), out)
    np.testing.assert_array_equal(out, 0)


def test_count_is_numba_num_threads(monkeypatch):
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 5)
    assert threads.count() == 5


@pytest.mark.parametrize("count", [2, 3])
def test_kernels_give_the_one_thread_numbers_split_over_threads(monkeypatch, count):
    """An element-wise kernel (outer: tasks are rows) is bit for bit the one-thread result on any split; a
    reduction (channel_sum: one part per thread) is too once its parts are fixed, however they are spread."""
    rng = np.random.default_rng(count)
    column, vector = rng.standard_normal(1001).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    monkeypatch.setattr(threads, "count", lambda: 1)
    alone = outer(column, vector)
    monkeypatch.setattr(threads, "count", lambda: count)
    np.testing.assert_array_equal(outer(column, vector), alone)
    np.testing.assert_array_equal(alone, column[:, None] * vector)
    # channel_sum with `count` parts, computed on `count` threads and on one thread running every part.
    grad = rng.standard_normal((4, 6, 6, 16)).astype(np.float32)
    spread = channel_sum(grad)
    monkeypatch.setattr(threads, "slices", lambda tasks, parts: [(0, tasks)])
    np.testing.assert_array_equal(channel_sum(grad), spread)


@numba.njit(cache=True, nogil=True)
def _square_each_prange(start, stop, x, out):
    for k in numba.prange(start, stop):
        out[k] = x[k] * x[k] + k
    return out


_both = threads.two_builds(cache=True, nogil=True)(_square_each_prange.py_func)


def test_use_switches_the_build_and_refuses_others():
    previous = threads.use("numba")
    try:
        assert threads.current() == "numba" and _both.build() is _both.numba
        assert threads.use("pool") == "numba" and _both.build() is _both.pool
        with pytest.raises(ValueError, match="build must be one of"):
            threads.use("openmp")
        assert threads.current() == "pool"
    finally:
        threads.use(previous)


def test_the_two_builds_have_names_and_cache_entries_of_their_own():
    """Numba names a cache entry after the function's qualified name: one each, so neither loads the other."""
    names = {_both.numba.py_func.__qualname__, _both.pool.py_func.__qualname__}
    assert names == {"_square_each_prange__parallel", "_square_each_prange__serial"}
    assert _both.numba.targetoptions.get("parallel") and not _both.pool.targetoptions.get("parallel")


@pytest.mark.parametrize("build", threads.BUILDS)
@pytest.mark.parametrize("tasks", [0, 1, 5, 1000])
def test_two_builds_run_every_task_once_in_either_build(build, tasks):
    x = np.random.default_rng(tasks).standard_normal(tasks)
    out = np.full_like(x, np.nan)
    _both(tasks, x, out, build=build)
    np.testing.assert_array_equal(out, x * x + np.arange(tasks))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_shared_kernels_give_the_same_numbers_in_both_builds(dtype):
    """The kernels inference shares with training (the correlation, direct, Winograd and with the max pool
    fused; the average pool; patch extraction) are one source compiled twice: bit for bit the same results."""
    from attention_sampling.patches import extract_patches
    from nn.conv_kernels import correlate, correlate_max
    from nn.pooling import AvgPool2d

    rng = np.random.default_rng(1)
    image = rng.random((2, 37, 29, 3)).astype(dtype)
    maps = rng.standard_normal((3, 11, 13, 8)).astype(dtype)
    cells = rng.integers(-2, 10, (2, 5, 2))
    calls = {
        "direct": lambda: correlate(image, rng_weight(3, 8, dtype), np.ones(8, dtype), 1, 1, 37, 29, 0.01),
        "winograd": lambda: correlate(maps, rng_weight(8, 8, dtype), np.zeros(8, dtype), 1, 1, 11, 13, 0.01),
        "max": lambda: correlate_max(maps, rng_weight(8, 16, dtype), np.zeros(16, dtype), 1, 1, 11, 13, 0.01),
        "pool": lambda: AvgPool2d(4).forward(image, False),
        "extract": lambda: extract_patches(image, cells, 7, 4, "reflect"),
    }
    previous = threads.current()
    try:
        results = {}
        for build in threads.BUILDS:
            threads.use(build)
            results[build] = {name: call() for name, call in calls.items()}
    finally:
        threads.use(previous)
    for name in calls:
        pool, parallel = (r if isinstance(r, tuple) else (r,) for r in (results["pool"][name], results["numba"][name]))
        for a, b in zip(pool, parallel, strict=True):  # correlate_max: the maxima and their positions
            np.testing.assert_array_equal(a, b, err_msg=name)


def rng_weight(c_in, c_out, dtype):
    """A fixed 3x3 weight (the same in every call, so the two builds see the same arguments)."""
    return np.random.default_rng(c_in * 100 + c_out).standard_normal((3, 3, c_in, c_out)).astype(dtype)


def test_a_training_pass_runs_the_fused_max_pool_in_numbas_build_with_the_same_numbers(monkeypatch):
    """conv_kernels.correlate_build: in the pool's process a training forward's 16-channel direct correlation
    with the global max pool fused in runs Numba's parallel build; inference, the plain map and 8-channel tiles
    the process's. Both builds are one source: the training pass's numbers are the inference's, bit for bit."""
    import nn
    from nn import conv_kernels

    assert conv_kernels.correlate_build(16, maxima=True, training=True) == "numba"
    assert conv_kernels.correlate_build(16, maxima=True, training=False) is None
    assert conv_kernels.correlate_build(16, maxima=False, training=True) is None
    assert conv_kernels.correlate_build(8, maxima=True, training=True) is None
    on_the_pool = []
    run = threads.run
    monkeypatch.setattr(threads, "run", lambda kernel, *args, **kw: (on_the_pool.append(kernel), run(kernel, *args, **kw)))
    previous = threads.use("pool")
    try:
        x = np.random.default_rng(2).random((3, 12, 10, 3)).astype(np.float32)
        layer = nn.Conv2d(3, 16, 3, rng=0)
        serial_max = conv_kernels._correlate_kernel(16, conv_kernels.TILE_PIXELS[16], True).pool
        trained = layer.forward(x, training=True, global_max=True, negative_slope=0.01)
        assert serial_max not in on_the_pool
        inferred = layer.infer(x, negative_slope=0.01, global_max=True)
        assert serial_max in on_the_pool
    finally:
        threads.use(previous)
    np.testing.assert_array_equal(trained, inferred)
