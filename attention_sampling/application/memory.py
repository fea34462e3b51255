"""How a training or prediction process keeps the memory it frees: in the C heap, for the next step or image."""
import ctypes
import ctypes.util
import sys

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory():
    """Serve every allocation from the C heap and keep what is freed there (glibc: mallopt M_MMAP_MAX = 0, no
    trimming), so that a training step's large arrays reuse the pages of the previous step's.

    Why: a step makes about a gigabyte of short-lived arrays (the feature maps of 640 patches, 102 MB each, and
    their gradients); glibc maps each array above 32 MB fresh from the kernel and unmaps it when freed, so
    every step pays a page fault and a zeroing for every 4 KB page again, which on a virtual machine costs
    more than the arithmetic on them. Measured on the 2-core benchmark machine (python -m
    benchmarks.bench_epoch --data ../shared/lymphoma --no-torch): 113 ms per training image against 134, peak
    RSS 1000 MB against 955 (what is freed stays with the process, so the peak also holds some fragments).
    Predicting one image makes a dozen arrays of 3 MB whose pages the same setting keeps: about 0.8 of the time
    (docs/performance.md, "Inference").

    Process-wide, for the rest of the process: train.py, predict.py, a Dask worker and the experiments'
    training processes call it first; a library caller (a notebook, the tests) keeps glibc's defaults unless it calls it. -> True where applied (Linux with glibc); elsewhere nothing
    changes and it returns False."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # no C library found, or one without mallopt (musl)
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
