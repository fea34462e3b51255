"""A run folder on disk: config.json, checkpoint.npz (last epoch), best.npz, average.npz (if the run averages its
weights), metrics.csv and .lock.

What may go wrong on disk never costs more than the epoch in progress: every file is written to a
temporary name and renamed, the checkpoint last; a write that fails (full disk, read-only folder) raises
an AttentionSamplingError naming the file and saying what is still intact, before checkpoint.npz is
touched, so it still holds the last good epoch.
"""
import contextlib
import csv
import io
import json
import os

from .checkpoint import load_checkpoint, save_checkpoint
from .errors import AttentionSamplingError
from .runlock import RunLock

TEMPORARY_PREFIX = ".tmp-"  # nn.save_arrays's temporary files, and ours


def write_text(path, text):
    """Write a small text file atomically: a temporary file in the same folder, renamed over `path`.
    (Created by open(), not mkstemp, so it gets the umask's permissions like any file the user makes.)"""
    temporary = os.path.join(os.path.dirname(path), TEMPORARY_PREFIX + os.path.basename(path))
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def read_config_json(run_dir):
    path = os.path.join(run_dir, "config.json")
    try:
        with open(path) as handle:
            config = json.load(handle)
    except (OSError, ValueError) as error:
        raise AttentionSamplingError(f"{path}: unreadable ({type(error).__name__}: {error})") from None
    if not isinstance(config, dict):
        raise AttentionSamplingError(f"{path}: not the config of a run of this program")
    return config


class RunFolder:
    """The files of one run and the lock that keeps a second training process out of them."""

    def __init__(self, path):
        self.path = path
        self.config = os.path.join(path, "config.json")
        self.checkpoint = os.path.join(path, "checkpoint.npz")
        self.best = os.path.join(path, "best.npz")
        self.average = os.path.join(path, "average.npz")  # the weight average (--average-from), if kept
        self.metrics = os.path.join(path, "metrics.csv")
        self.lock = RunLock(path)
        self.saved_epoch = None  # the epoch checkpoint.npz holds, for error messages

    # -- the lock -------------------------------------------------------------------------------------
    def acquire(self):
        """Hold the folder's lock (runlock.py): from before anything in it is read until release()."""
        self.lock.acquire()

    def release(self):
        self.lock.release()

    # -- state ----------------------------------------------------------------------------------------
    def exists(self):
        return os.path.isdir(self.path)

    def has_checkpoint(self):
        return os.path.exists(self.checkpoint)

    def started_without_epoch(self):
        """Killed before its first epoch ended: a config.json, no checkpoint."""
        return not self.has_checkpoint() and os.path.isfile(self.config)

    def kept(self):
        """What is on disk to come back to, for the end of an error message."""
        if self.has_checkpoint():
            return (f"{self.checkpoint} is intact (epoch {self.saved_epoch}); "
                    f"continue with: python train.py --resume {self.path}")
        return "no epoch had finished, nothing was saved"

    # -- writing --------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self, path):
        """OSError (full disk, read-only folder, quota) -> AttentionSamplingError naming the file."""
        try:
            yield
        except OSError as error:
            # `path`, not error.filename: that may be the temporary file the target was to be renamed from.
            reason = error.strerror or type(error).__name__
            raise AttentionSamplingError(f"cannot write {path}: {reason}; {self.kept()}") from None

    def create(self):
        with self.writing(self.path):
            os.makedirs(self.path, exist_ok=True)

    def remove_temporaries(self):
        """Temporary files of a process killed while writing: never complete, never read."""
        with contextlib.suppress(OSError):
            for name in os.listdir(self.path):
                if name.startswith(TEMPORARY_PREFIX) or name == "metrics.csv.tmp":
                    os.unlink(os.path.join(self.path, name))

    def write_config(self, config):
        with self.writing(self.config):
            write_text(self.config, json.dumps(config, indent=2))

    def write_metrics(self, history, columns):
        """Rewrite metrics.csv from the history kept in the checkpoint (atomically, like the checkpoint)."""
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({key: row.get(key, "") for key in columns})
        with self.writing(self.metrics):
            write_text(self.metrics, text.getvalue())

    def save(self, path, model, optimizer, rng, average=None, **meta):
        """checkpoint.npz, best.npz or average.npz: the model, Adam, the generator, the weight average and
        `meta` (epoch, config, history...)."""
        with self.writing(path):
            save_checkpoint(path, model, optimizer, rng, average, **meta)
        if path == self.checkpoint:
            self.saved_epoch = meta["epoch"]

    def load(self):
        state = load_checkpoint(self.checkpoint)
        self.saved_epoch = state["meta"]["epoch"]
        return state
