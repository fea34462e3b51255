"""Cold start: the first train_step and the first predict in a fresh process whose Numba cache is empty, and
where that time goes (each kernel Numba compiles, from its compile events); then the same with the cache warm.

    python -m benchmarks.bench_cold                 # c = 4, the paper's step (8 images, P = 20, S = 50)
    python -m benchmarks.bench_cold --scales 4 8 --top 25
    python -m benchmarks.bench_cold --alone         # and each call compiling everything in its own process

The first call starts application/compile_ahead.py as train.py and predict.py do: the feature network's
kernels compile in a second process meanwhile; --alone adds rows without it.

Each row is a fresh process (`--child`) with NUMBA_CACHE_DIR a new empty folder (cold), then a second fresh
process on the folder the first filled (warm: the first call loads the cache; "median" is the median of
--repeat further calls, so the warm first call can be compared with it). The kernel table lists top-level
compilations only (a kernel's callees are inside its time). Timings on a shared machine are noisy: compare
within one run. Nothing here asserts on time.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.common import PROJECT_ROOT, print_table, python_environment

# The kernels' build each workload runs in, as train.py and predict.py choose it (nn/threads.py).
DEFAULT_BUILDS = {"step": "pool", "predict": "numba"}


def record_compilations():
    """Listen to Numba's compile events -> the list they fill with (depth, kernel name, seconds)."""
    from numba.core import event

    records = []

    class Listener(event.Listener):
        def __init__(self):
            self.stack = []

        def on_start(self, ev):
            self.stack.append((time.perf_counter(), ev.data))

        def on_end(self, ev):
            start, data = self.stack.pop()
            function = getattr(data.get("dispatcher"), "py_func", None)
            name = function.__qualname__.split("<locals>.")[-1] if function else str(data.get("dispatcher"))
            records.append((len(self.stack), name, time.perf_counter() - start))

    event.register("numba:compile", Listener())
    return records


def run_child(workload, scale, repeat, seed, ahead=True, build=None):
    """One workload in this process: first call (compile events recorded), then `repeat` calls -> dict.
    ahead: the feature network's kernels compiled in a second process meanwhile, as train.py and predict.py do
    (application/compile_ahead.py); otherwise all in this one. build: the kernels' build (nn/threads.py), by
    default the one train.py ("pool") or predict.py ("numba") runs."""
    records = record_compilations()
    from attention_sampling import predict, train_step
    from attention_sampling.application import compile_ahead
    from benchmarks.bench_step import ENTROPY_WEIGHT, REPLICAS, numpy_setup
    from nn import threads

    threads.use(build or DEFAULT_BUILDS[workload])

    if workload == "step":
        model, optimizer, images, labels, rng = numpy_setup(scale, seed)

        def call():
            train_step(model, optimizer, images, labels, rng, replicas=REPLICAS, entropy_weight=ENTROPY_WEIGHT)
    else:
        from attention_sampling.application.pooling import PooledImages

        model, _, images, _, rng = numpy_setup(scale, seed, n=1)

        def call():  # as predict.py's predict_path: the view pooled on the calling thread
            predict(model, PooledImages(images), rng)

    def timed():
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    start = time.perf_counter()
    # As predict.py: on a cache without Numba's builds the first predictions run the pool's (compile_ahead.py).
    # --build fixes one build for the whole run.
    compiling = compile_ahead.start_inference(model, images.shape[1:3]) \
        if ahead and workload == "predict" and build is None else None
    child = None if compiling or not ahead else compile_ahead.start(model, training=workload == "step")
    call()
    first = time.perf_counter() - start
    first_build = threads.current()
    for process in filter(None, (child, compiling)):
        process.wait()
    compile_ahead.switch_when_ready(compiling)
    top = [(name, seconds) for depth, name, seconds in records if depth == 0]
    times = [timed() for _ in range(repeat)]
    return {"first": first, "first_build": first_build, "median": statistics.median(times) if times else None,
            "compile": sum(seconds for _, seconds in top), "kernels": top}


def fresh(workload, scale, repeat, seed, cache, ahead=True, build=None):
    """run_child in a fresh process on Numba cache folder `cache` -> its JSON."""
    arguments = ["--child", workload, "--scales", str(scale), "--repeat", str(repeat), "--seed", str(seed)]
    arguments += ([] if ahead else ["--alone"]) + (["--build", build] if build else [])
    environment = dict(os.environ, NUMBA_CACHE_DIR=cache)
    print(f"  {workload} c={scale} in a fresh process, cache {cache} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    finished = subprocess.run([sys.executable, "-m", "benchmarks.bench_cold", *arguments], env=environment,
                              cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True, check=True)
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    result["process"] = time.perf_counter() - start
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[4])
    parser.add_argument("--repeat", type=int, default=5, help="calls after the first in the warm process (default 5)")
    parser.add_argument("--top", type=int, default=15, help="kernels listed, longest compilation first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alone", action="store_true",
                        help="also each first call compiling everything in its own process (no compile_ahead)")
    parser.add_argument("--build", choices=["numba", "pool"],
                        help="run both workloads' kernels in this build (nn/threads.py; default: train.py's pool for the "
                             "step, predict.py's numba for predict)")
    parser.add_argument("--child", choices=["step", "predict"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args.child, args.scales[0], args.repeat, args.seed, ahead=not args.alone,
                                   build=args.build)))
        return 0

    print(python_environment())
    rows, kernels = [], {}
    for scale in args.scales:
        for workload, ahead in [(w, a) for w in ("step", "predict") for a in ((True, False) if args.alone else (True,))]:
            with tempfile.TemporaryDirectory(prefix="bench_cold_numba_") as cache:
                cold = fresh(workload, scale, 0, args.seed, cache, ahead, args.build)
                warm = fresh(workload, scale, args.repeat, args.seed, cache, ahead, args.build)
            builds = cold["first_build"] if cold["first_build"] == warm["first_build"] else \
                f"cold {cold['first_build']}, warm {warm['first_build']}"
            label = (f"{'train step' if workload == 'step' else 'predict 1 image'}, c = {scale}, "
                     f"{builds}{'' if ahead else ', alone'}")
            rows.append([label, f"{cold['first']:.2f}", f"{cold['compile']:.2f}", len(cold["kernels"]),
                         f"{cold['process']:.1f}", f"{warm['first']:.3f}", f"{warm['median']:.3f}",
                         f"{warm['first'] / warm['median']:.2f}"])
            for name, seconds in cold["kernels"]:
                kernels.setdefault(name, {})[label] = seconds
    print("\nFirst call in a fresh process, seconds: cold = empty Numba cache, warm = the cache the cold one wrote;"
          "\ncompiling = in this process (with compile_ahead the feature network's kernels compile in a second one)")
    print_table(["", "cold first", "compiling", "kernels", "cold process", "warm first", "warm median",
                 "warm first/median"], rows)
    labels = [row[0] for row in rows]
    ordered = sorted(kernels, key=lambda name: -sum(kernels[name].values()))[:args.top]
    print(f"\nKernels compiled on the cold first call, seconds (longest {args.top}; '-': not compiled by that call)")
    print_table(["kernel"] + labels, [[name] + [f"{kernels[name][label]:.2f}" if label in kernels[name] else None
                                                for label in labels] for name in ordered])
    return 0


if __name__ == "__main__":
    sys.exit(main())
