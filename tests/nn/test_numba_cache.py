"""nn/numba_cache.py: Numba's kernel cache stays right when two processes save at once or one is killed.

The races are replayed in one process with two IndexDataCacheFile objects on one folder, which is what
two processes are: each reads the index, then writes. Numba's original save fails the first test (both
signatures get data file 1, so one signature loads the other's code).
"""
import os

import numpy as np
import pytest
from numba import njit
from numba.core.caching import IndexDataCacheFile

from nn import numba_cache


def cache_file(folder):
    return IndexDataCacheFile(str(folder), "kernel-1.py311", source_stamp=("stamp", 1))


def test_installed_on_import():
    assert numba_cache.installed and IndexDataCacheFile.save is numba_cache.save


def test_two_processes_saving_different_signatures_never_swap_their_code(tmp_path, monkeypatch):
    """The first process is about to write its data file when the second, which read the index before
    the first wrote it, saves another signature. With Numba's own save both take file 1, the second's
    index wins and the first's data lands last: the float64 entry names float32 code."""
    first, second = cache_file(tmp_path), cache_file(tmp_path)
    stale = second._load_index()  # read before the first process wrote anything
    write_data = first._save_data

    def interleaved(name, data):
        with monkeypatch.context() as patch:
            patch.setattr(second, "_load_index", lambda: dict(stale))
            second.save("float64 key", b"float64 code")
        write_data(name, data)

    monkeypatch.setattr(first, "_save_data", interleaved)
    first.save("float32 key", b"float32 code")
    monkeypatch.undo()
    reader = cache_file(tmp_path)
    # An entry may be lost to the race (then it is compiled again), but none names the other's code.
    assert reader.load("float64 key") in (None, b"float64 code")
    assert reader.load("float32 key") in (None, b"float32 code")
    assert {reader.load("float64 key"), reader.load("float32 key")} != {None}


def test_a_process_killed_between_its_two_writes_leaves_no_wrong_entry(tmp_path, monkeypatch):
    """A save writes a data file and the index; the process dies after the first of the two. With Numba's
    own save (index first) the index then names file 2, which still holds an edited kernel's old code."""
    first = cache_file(tmp_path)
    # Data files of an older version of the source stay behind, numbered 1, 2, ... (Numba reuses them).
    first._save_data(first._data_name(2), b"stale code of an edited kernel")
    first.save("float32 key", b"float32 code")
    writes = []

    def dies_on_the_second_write(write):
        def wrapped(*args):
            writes.append(write.__name__)
            if len(writes) == 2:
                raise KeyboardInterrupt  # stands for kill -9
            return write(*args)
        return wrapped

    monkeypatch.setattr(first, "_save_data", dies_on_the_second_write(first._save_data))
    monkeypatch.setattr(first, "_save_index", dies_on_the_second_write(first._save_index))
    with pytest.raises(KeyboardInterrupt):
        first.save("float64 key", b"float64 code")
    monkeypatch.undo()
    reader = cache_file(tmp_path)
    assert reader.load("float32 key") == b"float32 code"
    assert reader.load("float64 key") in (None, b"float64 code")  # compiled again, or right; never stale


def test_data_numbers_are_stable_and_distinct(tmp_path):
    a, b = cache_file(tmp_path), cache_file(tmp_path / "elsewhere")
    assert numba_cache.data_number(a, ("sig", 1)) == numba_cache.data_number(b, ("sig", 1))
    assert numba_cache.data_number(a, ("sig", 1)) != numba_cache.data_number(a, ("sig", 2))


def test_a_real_kernel_round_trips_through_the_cache(tmp_path, monkeypatch):
    """A jitted function saved by the replacement is loaded back by a fresh dispatcher and gives its result."""
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    import numba.core.config
    monkeypatch.setattr(numba.core.config, "CACHE_DIR", str(tmp_path))
    source = "def twice(x):\n    return x * 2\n"
    module = tmp_path / "cached_kernel.py"
    module.write_text(source)
    namespace = {"__file__": str(module), "__name__": "cached_kernel"}
    exec(compile(source, str(module), "exec"), namespace)
    first = njit(cache=True)(namespace["twice"])
    assert first(np.float32(2.0)) == 4.0 and first(3.0) == 6.0
    assert any(name.endswith(".nbi") for _, _, files in os.walk(tmp_path) for name in files)
    second = njit(cache=True)(namespace["twice"])
    assert second(np.float32(2.0)) == 4.0 and second(3.0) == 6.0
    assert len(second.stats.cache_hits) == 2 and not second.stats.cache_misses


VARIANT_SCRIPT = """
import sys
import numpy as np
from nn.batchnorm import channel_moments
from nn.conv_kernels import correlate
rows = np.random.default_rng(0).random((64, 16))
channels = [int(c) for c in sys.argv[1:]]
for c in channels:  # one batch-norm kernel per channel count, one correlation kernel per output tile
    mean, var = channel_moments(rows[:, :c])
    assert np.allclose(mean, rows[:, :c].mean(axis=0)) and np.allclose(var, rows[:, :c].var(axis=0)), c
    x = rows[:, :c].reshape(1, 8, 8, c).astype(np.float32)
    w = np.ones((1, 1, c, c), np.float32)
    y = correlate(x, w, np.zeros(c, np.float32), 0, 0, 8, 8)
    assert np.allclose(y, x.sum(axis=-1, keepdims=True).repeat(c, axis=-1), rtol=1e-5), c
# Every variant's linkage names (code and environment) are its own, whichever process compiled it.
from nn.batchnorm import _kernels
from nn.conv_kernels import _correlate_kernel
kernels = [kernel for c in channels for kernel in _kernels(c)] + [_correlate_kernel(b, p, False).build() for b, p in
                                                                  {(8, 8), (16, 4)}]
names = [name for kernel in kernels for result in kernel.overloads.values()
         for name in (result.fndesc.mangled_name, result.fndesc.env_name)]
assert len(names) == len(set(names)), names
print("ok")
"""


def test_kernel_variants_compiled_by_different_processes_load_together(tmp_path):
    """The kernels a factory makes per constant (batch norm per channel count, the correlation per register
    tile) are compiled by whichever process needs each first. Numba tells closures of one function apart
    by a per-process counter in their linkage names, so two variants compiled in two processes can carry
    the same name, and a third process loading both from the cache would link one to the other's code
    (the "'descr' is NULL" crash, or wrong numbers). Each variant gets a name of its own."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "PYTHONPATH": root}

    def run(*channels):
        result = subprocess.run([sys.executable, "-c", VARIANT_SCRIPT, *map(str, channels)], env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]

    run(3)      # compiles the 3-channel variants into the empty cache
    run(16)     # another process: the 16-channel ones
    run(3, 16)  # loads both from the cache, in one process
    run(16, 3)
