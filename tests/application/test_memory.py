"""keep_freed_memory: where glibc is the C library, large arrays come from a heap that keeps what is freed.
Run in a child process: the setting is for the whole process, and the test process keeps glibc's defaults."""
import platform
import subprocess
import sys

CHILD = """
import numpy as np
from attention_sampling.application.memory import keep_freed_memory
applied = keep_freed_memory()
assert keep_freed_memory() is applied  # again: the same settings, no error
dirty = np.full(2**24, 7.0)  # 128 MB, above glibc's largest mmap threshold
del dirty
clean = np.zeros(2**24)  # from the reused heap now: calloc must clear it itself
assert not clean.any()
print(applied)
"""


def test_applies_on_glibc_says_so_elsewhere_and_large_arrays_still_come_zeroed():
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(glibc)
