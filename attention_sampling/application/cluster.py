"""Scoring an archive on a Dask cluster (dask.distributed): the same rows as prediction.predict_in_process.

The checkpoint's bytes go once to each worker: a worker plugin builds the model there (with the project's
own .npz reader, no pickle), also on a worker that joins or restarts later. Only paths cross the network;
the workers read the images. Rows come back in the order of the input, a bounded number of images in
flight. A task whose worker dies is run again elsewhere by the scheduler, so every input gives one row.
"""
import collections
import hashlib
import os

from distributed import Client, LocalCluster, get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from .errors import AttentionSamplingError
from .prediction import model_from_checkpoint, predict_path

PLUGIN_NAME = "attention-sampling-model"
# Local workers share this machine's cores: one thread each for Numba and BLAS, so that N workers use N cores
# instead of each starting a thread per core.
ONE_THREAD = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


class ModelPlugin(WorkerPlugin):
    """A worker plugin: the checkpoint's bytes travel once to each worker, which builds the model from them
    (without pickle: the project's own .npz reader) when it starts, or joins later."""

    name = PLUGIN_NAME

    def __init__(self, checkpoint_bytes):
        self.checkpoint_bytes = checkpoint_bytes

    def setup(self, worker):
        import tempfile

        from nn import threads

        from .memory import keep_freed_memory

        threads.use("numba")  # a worker predicts image by image, as predict.py (nn/threads.py)
        keep_freed_memory()  # and reuses each image's pages for the next, as predict.py (memory.py)
        with tempfile.TemporaryDirectory(prefix="attention-sampling-model-") as folder:
            path = os.path.join(folder, "model.npz")
            with open(path, "wb") as handle:
                handle.write(self.checkpoint_bytes)
            self.config, self.model, _ = model_from_checkpoint(path)

    def teardown(self, worker):
        self.model = None


def _predict_on_worker(path, seed, looks, pictures, tissue=None, geojson=None, report=None):
    plugin = get_worker().plugins[PLUGIN_NAME]
    return predict_path(plugin.model, plugin.config, path, seed, looks, pictures, tissue, geojson, report)


def predict_on_cluster(client, checkpoint, paths, seed=0, looks=1, pictures=None, in_flight=None, tissue=None,
                       geojson=None, report=None):
    """Rows for `paths`, in input order, computed by the cluster's workers; at most `in_flight` images
    (default: 4 per worker thread) are submitted ahead of the one being written."""
    with open(checkpoint, "rb") as handle:
        client.register_plugin(ModelPlugin(handle.read()), name=PLUGIN_NAME)
    if in_flight is None:
        in_flight = 4 * max(1, sum(client.nthreads().values()))
    pending = collections.deque()
    remaining = iter(enumerate(paths))

    def submit_next():
        for index, path in remaining:
            # pure=False: two calls with the same path are two tasks; the key names the image's place.
            key = f"predict-{index}-{hashlib.sha256(path.encode()).hexdigest()[:12]}"
            pending.append((path, client.submit(_predict_on_worker, path, seed, looks, pictures, tissue, geojson,
                                                report, key=key, pure=False, retries=2)))
            return

    for _ in range(in_flight):
        submit_next()
    while pending:
        path, future = pending.popleft()
        try:
            row = future.result()
        except Exception as error:  # the task failed on every try (its workers died, say): a row, not a crash
            row = {"path": path, "error": f"{path}: failed on the cluster ({type(error).__name__}: {error})"}
        future.release()
        submit_next()
        yield row


def connect(scheduler=None, workers=1):
    """-> a dask.distributed Client: to the scheduler at `scheduler`, or to a new local cluster of `workers`
    processes (one thread each). AttentionSamplingError if the scheduler does not answer."""
    if scheduler:
        try:
            return Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as error:
            raise AttentionSamplingError(f"--scheduler {scheduler}: no Dask scheduler answers there ({error})") from None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=40, env=ONE_THREAD)
    return Client(cluster)
