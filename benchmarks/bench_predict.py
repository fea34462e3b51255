"""Scoring an archive: images per second in this process and on local Dask clusters of 1 and 2 workers.

    python -m benchmarks.bench_predict --images FOLDER      # e.g. the 1388 x 1040 TIFFs bench_epoch writes

The real code of `predict.py` (attention_sampling.application.prediction / cluster) on every image of FOLDER
(recursively), beside the time to read and decode the same images alone (the disk-and-decoder limit) and to read
and classify them in turn without reading the next one ahead, with a model of train.py's defaults (S = 50, P = 20, c = 4) for the images' size, saved as a
checkpoint as train.py saves one (its weights do not change the time); one warm-up pass over a few images first (Numba's cache, the workers'
start-up and model loading are reported apart). Memory: peak RSS of this process for the in-process row,
of each worker process for the cluster rows. Nothing is asserted on time.
"""
import argparse
import os
import sys
import time

from benchmarks.common import mb, peak_rss_bytes, print_table, python_environment


def paths_under(folder):
    from attention_sampling.application.data import IMAGE_EXTENSIONS

    return sorted(os.path.join(root, name) for root, _, names in os.walk(folder) for name in names
                  if name.lower().endswith(IMAGE_EXTENSIONS))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="folder of images to score")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="cluster sizes (default 1 2)")
    parser.add_argument("--looks", type=int, default=1)
    args = parser.parse_args(argv)

    import tempfile

    import numpy as np

    import nn
    from attention_sampling.application.checkpoint import save_checkpoint
    from attention_sampling.application.data import read_image
    from attention_sampling.application.memory import keep_freed_memory
    from attention_sampling.application.prediction import model_from_checkpoint, predict_in_process, predict_path, \
        read_for_run
    from attention_sampling.application.settings import TRAINING_DEFAULTS
    from attention_sampling.application.trainer import build_model

    nn.threads.use("numba")  # as predict.py; the Dask workers choose it themselves (cluster.py)
    keep_freed_memory()  # as predict.py (memory.py)
    paths = paths_under(args.images)
    folder = tempfile.mkdtemp(prefix="bench_predict_")
    checkpoint = os.path.join(folder, "best.npz")
    config = dict(TRAINING_DEFAULTS, classes=["a", "b", "c"], image_shape=list(read_image(paths[0]).shape[:2]))
    save_checkpoint(checkpoint, build_model(config), nn.Adam(), np.random.default_rng(0), epoch=1, config=config,
                    history=[])
    print(python_environment())
    print(f"{len(paths)} images in {args.images}; model {checkpoint}; looks {args.looks}")
    rows = []
    list(predict_in_process(checkpoint, paths[:2], looks=args.looks))  # Numba's cache, first-touch pages
    # The limit the disk and the decoder set: every image read and decoded as prediction reads it, nothing else.
    start = time.perf_counter()
    for path in paths:
        read_for_run(path, config)
    decode = time.perf_counter() - start
    rows.append(["decode alone", f"{len(paths) / decode:.2f}", f"{decode:.1f}", "-", "-"])
    # The same images read and then classified in turn, without reading the next one ahead.
    loaded_config, model, _ = model_from_checkpoint(checkpoint)
    start = time.perf_counter()
    for path in paths:
        predict_path(model, loaded_config, path, looks=args.looks)
    serial = time.perf_counter() - start
    rows.append(["in process, no read-ahead", f"{len(paths) / serial:.2f}", f"{serial:.1f}", "-", "-"])
    start = time.perf_counter()
    list(predict_in_process(checkpoint, paths, looks=args.looks))
    seconds = time.perf_counter() - start
    rows.append(["in process", f"{len(paths) / seconds:.2f}", f"{seconds:.1f}", "-", mb(peak_rss_bytes())])
    print(f"in process: {decode / seconds:.0%} of the decode-alone rate; classification alone (no read-ahead minus "
          f"decode): {(serial - decode) / len(paths) * 1000:.1f} ms an image")

    from attention_sampling.application.cluster import connect, predict_on_cluster
    from benchmarks.common import peak_rss_bytes as worker_peak

    for workers in args.workers:
        start = time.perf_counter()
        client = connect(workers=workers)  # the local cluster predict.py --workers starts
        list(predict_on_cluster(client, checkpoint, paths[:2 * workers], looks=args.looks))  # model, caches
        ready = time.perf_counter() - start
        start = time.perf_counter()
        list(predict_on_cluster(client, checkpoint, paths, looks=args.looks))
        seconds = time.perf_counter() - start
        peaks = client.run(worker_peak)
        rows.append([f"{workers} worker(s)", f"{len(paths) / seconds:.2f}", f"{seconds:.1f}", f"{ready:.1f}",
                     "/".join(mb(value) for value in peaks.values())])
        client.close()
        client.cluster.close()
    print()
    print_table(["", "images/s", "seconds", "start-up s", "peak RSS MB (per worker)"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
