"""Helpers the benchmark scripts share: timing (split into pieces or not), medians, memory, tables, environment.

Nothing here imports the project, nor PyTorch unless import_torch is called, so a benchmark can measure one
implementation in a process that has loaded nothing else (its peak memory is then that implementation's alone).
"""
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # where `-m benchmarks.x` resolves


class Laps:
    """Split one run into named pieces: `lap(name)` charges the time since the previous lap to `name`.

        laps = Laps()          # the clock starts here
        forward(); laps.lap("forward")
        backward(); laps.lap("backward")
        laps.times             # {"forward": seconds, "backward": seconds}, in the order of the laps

    A name lapped twice in one run adds up. `total` is the wall time from the start to the last lap.
    """

    def __init__(self):
        self.times = {}
        self.start = self.last = time.perf_counter()

    def lap(self, name):
        now = time.perf_counter()
        self.times[name] = self.times.get(name, 0.0) + now - self.last
        self.last = now

    @property
    def total(self):
        return self.last - self.start


def median_of_runs(runs):
    """A list of {piece: seconds} dicts, one per run -> {piece: median seconds}, pieces in first-seen order."""
    names = list(dict.fromkeys(name for run in runs for name in run))
    return {name: statistics.median(run[name] for run in runs if name in run) for name in names}


def time_calls(function, warmup, repeat, laps=False):
    """Call `function` 1 + max(0, warmup - 1) + repeat times -> (the first call, [each timed call]).

    A call is measured as its wall seconds; with laps=True, `function(laps)` is given a fresh Laps to split
    itself with, and a call is measured as {piece: seconds, ..., "total": seconds} (median_of_runs takes
    the medians). The first call is also the first warm-up call: it pays for compilation, cache loading
    and first-touch page faults, so it is reported on its own and never mixed into the median.
    """
    def call():
        if laps:
            split = Laps()
            function(split)
            return {**split.times, "total": split.total}
        start = time.perf_counter()
        function()
        return time.perf_counter() - start

    first = call()
    for _ in range(max(0, warmup - 1)):
        call()
    return first, [call() for _ in range(repeat)]


def measure(function, warmup, repeat, laps=False):
    """time_calls in this process, with its memory -> {"rss_before", "first", "median", "peak_rss"}.

    Call it once the inputs and model exist: "rss_before" is then their memory, before the first call.
    "median" is seconds, or with laps=True a dict of median seconds per piece (None after no timed call).
    """
    rss_before = current_rss_bytes()
    first, timed = time_calls(function, warmup, repeat, laps)
    median = median_of_runs(timed) if laps else (statistics.median(timed) if timed else None)
    return {"rss_before": rss_before, "first": first, "median": median, "peak_rss": peak_rss_bytes()}


def _proc_status_bytes(field):
    """A memory field of /proc/self/status ('VmRSS', 'VmHWM') in bytes, or None where there is no /proc."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # the kernel reports kB
    except OSError:
        pass
    return None


def current_rss_bytes():
    """Resident memory of this process now (Linux /proc; None elsewhere)."""
    return _proc_status_bytes("VmRSS")


def peak_rss_bytes():
    """The highest resident memory this process has had: /proc VmHWM, else getrusage's ru_maxrss."""
    peak = _proc_status_bytes("VmHWM")
    if peak is None:
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, kB on Linux
    return peak


def format_table(headers, rows, align=None):
    """Rows of cells (anything str() can show; None prints as '-') -> the lines of a plain-text table.

    `align` is a string of 'l'/'r' per column; by default the first column is left-aligned, the rest right.
    """
    align = align or "l" + "r" * (len(headers) - 1)
    cells = [[str(h) for h in headers]] + [["-" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row):
        return "  ".join(cell.ljust(width) if side == "l" else cell.rjust(width)
                         for cell, width, side in zip(row, widths, align)).rstrip()

    rule = "-" * len(line(cells[0]))
    return [line(cells[0]), rule] + [line(row) for row in cells[1:]]


def print_table(headers, rows, align=None):
    print("\n".join(format_table(headers, rows, align)))


def python_environment(torch=None):
    """One line: Python, NumPy, CPU count, Numba's threads if Numba is importable, OPENBLAS_CORETYPE if set,
    and, given the torch module, its version and threads (torch is never imported here)."""
    import numpy as np

    parts = [f"python {platform.python_version()}", f"numpy {np.__version__}", f"cpus {os.cpu_count()}"]
    try:
        import numba
        parts.append(f"numba {numba.__version__} ({numba.config.NUMBA_NUM_THREADS} threads)")
    except ImportError:
        pass
    if torch is not None:
        parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    if os.environ.get("OPENBLAS_CORETYPE"):
        parts.append(f"OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']}")
    return ", ".join(parts)


def import_torch(skip, threads):
    """PyTorch on `threads` threads, or None if `skip` or it is not importable: it is a yardstick, never a
    dependency."""
    if skip:
        return None
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def run_fresh(module, arguments, numba_cache, label):
    """python -m <module> <arguments> in a fresh process (its peak memory is its own) whose Numba cache is
    numba_cache (compiled once by the first process, loaded by the others) -> the JSON of its last line."""
    environment = dict(os.environ, NUMBA_CACHE_DIR=numba_cache)
    print(f"  measuring {label} in a fresh process ...", file=sys.stderr, flush=True)
    finished = subprocess.run([sys.executable, "-m", module, *map(str, arguments)], env=environment,
                              cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(finished.stdout.strip().splitlines()[-1])


def ms(seconds):
    return None if seconds is None else f"{seconds * 1e3:.1f}"


def mb(size):
    return None if size is None else f"{size / 2**20:.0f}"
