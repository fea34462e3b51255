"""keep_freed_memory: where glibc is the C library, large arrays come from a heap that keeps what is freed."""
import platform
import sys

import numpy as np

from attention_sampling.application.memory import keep_freed_memory


def test_applies_on_glibc_and_says_so_elsewhere():
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is glibc
    assert keep_freed_memory() is glibc  # again: the same settings, no error


def test_large_arrays_still_work_and_are_zeroed_after_reuse():
    """With mmap off, a large np.zeros comes from reused heap memory, which calloc must clear itself."""
    keep_freed_memory()
    dirty = np.full(2**24, 7.0)  # 128 MB, above glibc's largest mmap threshold
    del dirty
    clean = np.zeros(2**24)
    assert not clean.any()
