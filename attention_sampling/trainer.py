"""The training loop: epochs of train_step over an image folder, evaluation, checkpoints and resume.

Everything random comes from one generator whose state is saved with the model, the epoch's order of
images and the position within it, so a resumed run repeats an uninterrupted one exactly.

What may go wrong on disk never costs more than the epoch in progress: every file is written to a
temporary name and renamed, the checkpoint last; a write that fails (full disk, read-only folder) or a
model that stops being finite ends the run with an AttentionSamplingError before checkpoint.npz is
touched, so it still holds the last good epoch.
"""
import contextlib
import csv
import io
import json
import math
import os
import signal
import threading
import time

import numpy as np
from tqdm import tqdm

import nn
from .checkpoint import load_checkpoint, restore_rng, save_checkpoint
from .data import Augmentation, load_batch, stratified_split
from .errors import AttentionSamplingError
from .evaluation import cross_entropy, predict_dataset
from .models import AttentionSamplingModel
from .runlock import RunLock
from .training import train_step

METRIC_COLUMNS = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "entropy",
                  "reward", "seconds")
# Settings a resumed run may change: they decide how long it runs and which files are data, not the model.
# (Which files are data is checked on its own: config['image_list'] must not change.)
RESUMABLE = ("epochs", "bad_images", "max_pixels")
TEMPORARY_PREFIX = ".tmp-"  # nn.save_arrays's temporary files, and ours


def build_model(config):
    return AttentionSamplingModel(len(config["classes"]), scale=config["scale"], patch_size=config["size"],
                                  n_patches=config["patches"], seed=config["seed"])


def write_text(path, text):
    """Write a small text file atomically: a temporary file in the same folder, renamed over `path`.
    (Created by open(), not mkstemp, so it gets the umask's permissions like any file the user makes.)"""
    temporary = os.path.join(os.path.dirname(path), TEMPORARY_PREFIX + os.path.basename(path))
    try:
        with open(temporary, "w") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def write_metrics_csv(path, history):
    """Rewrite metrics.csv from the history kept in the checkpoint (atomically, like the checkpoint)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row[k] for k in METRIC_COLUMNS})
    write_text(path, text.getvalue())


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


def saved_config(run_dir):
    """The config a run folder's checkpoint was made with; config.json if no epoch has finished yet."""
    checkpoint = os.path.join(run_dir, "checkpoint.npz")
    if not os.path.exists(checkpoint) and os.path.isfile(os.path.join(run_dir, "config.json")):
        return read_config_json(run_dir)
    if not os.path.isdir(run_dir):
        raise AttentionSamplingError(f"--resume {run_dir}: no such run folder")
    return load_checkpoint(checkpoint)["meta"]["config"]


def all_finite(arrays):
    return all(np.isfinite(value).all() for value in arrays.values() if np.issubdtype(value.dtype, np.inexact))


class Trainer:
    """Owns one run folder: config.json, checkpoint.npz (last), best.npz, metrics.csv, and its .lock
    from construction until fit() ends (or close()), so that no second process trains in it meanwhile."""

    def __init__(self, dataset, run_dir, config, resume=False, log=print, progress=True):
        self.dataset = dataset
        self.run_dir = run_dir
        self.log = log
        self.progress = progress
        self.checkpoint_path = os.path.join(run_dir, "checkpoint.npz")
        self.best_path = os.path.join(run_dir, "best.npz")
        self.lock = RunLock(run_dir)
        try:
            if os.path.isdir(run_dir):
                self._lock()  # before anything in the folder is read or written
            if resume and not os.path.exists(self.checkpoint_path) and os.path.isfile(
                    os.path.join(run_dir, "config.json")):
                # Stopped (killed) before its first epoch ended: nothing to resume but the settings.
                self.config = self._resumed_config(config, read_config_json(run_dir))
                self.log(f"resuming {run_dir}: no epoch had finished, starting from the first")
                self._start()
            elif resume:
                self._resume(config)
            else:
                if os.path.exists(self.checkpoint_path):
                    raise AttentionSamplingError(
                        f"--out {run_dir}: already holds a run; continue it with --resume {run_dir} or choose another folder")
                with self._writing(run_dir):
                    os.makedirs(run_dir, exist_ok=True)
                self._lock()
                self.config = config
                self._start()
            self._remove_temporaries()
            self.train_indices, self.test_indices = stratified_split(
                dataset.labels, self.config["test_fraction"], self.config["seed"])
            self.augment = Augmentation() if self.config["augment"] else None
            self.estimator = self.config.get("estimator", "reinforce")
            self.replace = self.config.get("sampling", "with") == "with"
        except BaseException:
            self.close()  # a run that could not start leaves the folder free
            raise

    def _lock(self):
        """Hold the run folder's lock (attention_sampling/runlock.py) until fit() ends."""
        self.lock.acquire()

    def close(self):
        """Let another process use the run folder (fit() does this when it ends)."""
        self.lock.release()

    def _start(self):
        """A fresh model, optimiser and generator from the config; config.json written."""
        self.model = build_model(self.config)
        self.optimizer = nn.Adam(self.config["lr"])
        self.rng = np.random.default_rng(self.config["seed"])
        self.epoch, self.position, self.order, self.partial, self.history = 0, 0, None, None, []
        self.saved_epoch = None
        path = os.path.join(self.run_dir, "config.json")
        with self._writing(path):
            write_text(path, json.dumps(self.config, indent=2))

    def _remove_temporaries(self):
        """Temporary files of a process killed while writing: never complete, never read."""
        with contextlib.suppress(OSError):
            for name in os.listdir(self.run_dir):
                if name.startswith(TEMPORARY_PREFIX) or name == "metrics.csv.tmp":
                    os.unlink(os.path.join(self.run_dir, name))

    def _resumed_config(self, config, saved):
        """The saved config, after checking that nothing typed now contradicts it."""
        for key, value in config.items():
            if key in RESUMABLE or key not in saved or value == saved[key]:
                continue
            if key == "image_list":
                raise AttentionSamplingError(
                    f"--resume {self.run_dir}: the data folder holds other images than when the run started "
                    f"({saved[key].get('count')} then, {value.get('count')} now); a resumed run needs the same "
                    "images: put them back, or start a new run with --out")
            flag = "--" + key.replace("_", "-") if key not in ("classes", "image_shape") else f"the data's {key}"
            raise AttentionSamplingError(
                f"--resume {self.run_dir}: the run was made with {key} = {saved[key]}, not {value} "
                f"({flag}); a resumed run keeps its settings")
        return {**saved, **{key: config[key] for key in RESUMABLE if key in config}}

    def _resume(self, config):
        state = load_checkpoint(self.checkpoint_path)
        meta = state["meta"]
        self.config = self._resumed_config(config, meta["config"])
        try:
            self.model = build_model(self.config)
            self.model.load_state_dict(state["model"])
            self.optimizer = nn.Adam(self.config["lr"])
            self._load_optimizer(state["adam"])
        except (KeyError, TypeError, ValueError) as error:
            raise AttentionSamplingError(
                f"--resume {self.run_dir}: {self.checkpoint_path} holds a model of another architecture than "
                f"this program builds from its settings ({type(error).__name__}: {error}); start a new run with --out"
            ) from None
        self.rng = restore_rng(meta["rng"], self.checkpoint_path)
        self.epoch = self.saved_epoch = meta["epoch"]
        self.history = meta["history"]
        # metrics.csv may lag the checkpoint if a run was killed between the two writes.
        path = os.path.join(self.run_dir, "metrics.csv")
        with self._writing(path):
            write_metrics_csv(path, self.history)
        within = meta.get("within_epoch")
        if within:
            self.position, self.order, self.partial = within["position"], np.array(within["order"]), within["partial"]
        else:
            self.position, self.order, self.partial = 0, None, None
        self.log(f"resuming {self.run_dir} at epoch {self.epoch + 1}"
                 + (f", image {self.position} of {len(self.order)}" if within else ""))

    def _load_optimizer(self, state):
        """Adam's state, checked against the model: a moment of the wrong shape would fail mid-epoch."""
        self.optimizer.load_state_dict(state)
        params = self.model.params
        for moments in (self.optimizer.m, self.optimizer.v):
            for key, value in moments.items():
                if key not in params or value.shape != params[key].shape:
                    raise ValueError(f"Adam state {key!r} does not fit the model")

    def _kept(self):
        """What is on disk to come back to, for the end of an error message."""
        if os.path.exists(self.checkpoint_path):
            return (f"{self.checkpoint_path} is intact (epoch {self.saved_epoch}); "
                    f"continue with: python train.py --resume {self.run_dir}")
        return "no epoch had finished, nothing was saved"

    @contextlib.contextmanager
    def _writing(self, path):
        """OSError (full disk, read-only folder, quota) -> AttentionSamplingError naming the file."""
        try:
            yield
        except OSError as error:
            # `path`, not error.filename: that may be the temporary file the target was to be renamed from.
            reason = error.strerror or type(error).__name__
            raise AttentionSamplingError(f"cannot write {path}: {reason}; {self._kept()}") from None

    def _check_finite(self):
        """Refuse to save a model or optimiser holding NaN or infinity: it could never train again."""
        if not (all_finite(self.model.state_dict()) and all_finite(self.optimizer.state_dict())):
            raise AttentionSamplingError(
                f"training diverged in epoch {self.epoch + 1}: the model holds NaN or infinite numbers; "
                f"{self._kept()}; try a lower --lr")

    def save(self, path=None, within_epoch=None):
        """Checkpoint after a completed epoch, or (after Ctrl-C) with the position inside the current one."""
        path = path or self.checkpoint_path
        with self._writing(path):
            save_checkpoint(path, self.model, self.optimizer, self.rng, epoch=self.epoch,
                            config=self.config, history=self.history, within_epoch=within_epoch)
        if path == self.checkpoint_path:
            self.saved_epoch = self.epoch

    def fit(self):
        """Train until config['epochs']; returns the history (a dict per epoch).

        Ctrl-C (SIGINT) only raises a flag, looked at between batches: the state saved then is that of
        whole batches, so the resumed run repeats the uninterrupted one exactly. KeyboardInterrupt is
        raised after the save.
        """
        self.interrupted = False
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, self._on_interrupt)
        try:
            self._lock()  # again, for a fit() after close()
            while self.epoch < self.config["epochs"]:
                self._run_epoch()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            self.close()
        return self.history

    def _on_interrupt(self, signum, frame):
        if self.interrupted:  # a second Ctrl-C: the user insists
            raise KeyboardInterrupt
        self.interrupted = True

    def _stop_if_interrupted(self, started):
        if not self.interrupted:
            return
        if self.order is not None:
            self._check_finite()
            self.partial["seconds"] += time.perf_counter() - started
            self.save(within_epoch={"position": int(self.position), "order": self.order.tolist(),
                                    "partial": self.partial})
        raise KeyboardInterrupt

    def _run_epoch(self):
        shape = tuple(self.config["image_shape"])
        batch_size = self.config["batch_size"]
        started = time.perf_counter()
        if self.order is None:
            self.order = self.rng.permutation(self.train_indices)
            self.position = 0
            self.partial = {"loss": 0.0, "accuracy": 0.0, "entropy": 0.0, "reward": 0.0, "images": 0,
                            "seconds": 0.0}
        bar = tqdm(total=len(self.order), initial=self.position, unit="img", leave=False,
                   desc=f"epoch {self.epoch + 1}/{self.config['epochs']}", disable=not self.progress)
        try:
            while self.position < len(self.order):
                self._stop_if_interrupted(started)
                batch = self.order[self.position:self.position + batch_size]
                try:
                    images = load_batch(self.dataset, batch, shape, self.augment, self.rng)
                except AttentionSamplingError as error:  # a file that went bad since it was checked
                    raise AttentionSamplingError(f"{error}; {self._kept()}") from None
                # Overflow on the way to NaN is no news: the check below ends the run with one message.
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    metrics = train_step(self.model, self.optimizer, images, self.dataset.labels[batch], self.rng,
                                         replicas=self.config["replicas"], entropy_weight=self.config["entropy"],
                                         estimator=self.estimator, replace=self.replace)
                if not all(math.isfinite(v) for v in metrics.values()):
                    raise AttentionSamplingError(
                        f"training diverged in epoch {self.epoch + 1} (loss {metrics['loss']}); "
                        f"{self._kept()}; try a lower --lr")
                for key in ("loss", "accuracy", "entropy", "reward"):
                    self.partial[key] += metrics[key] * len(batch)
                self.partial["images"] += len(batch)
                self.position += len(batch)
                bar.update(len(batch))
                n = self.partial["images"]
                bar.set_postfix(loss=f"{self.partial['loss'] / n:.3f}", acc=f"{self.partial['accuracy'] / n:.2f}")
            self._stop_if_interrupted(started)
        finally:
            bar.close()
        self._end_epoch(time.perf_counter() - started + self.partial["seconds"])
        self._stop_if_interrupted(started)

    def _end_epoch(self, seconds):
        # A last step can leave NaN in the weights with finite metrics: caught before anything is written.
        self._check_finite()
        n = self.partial["images"]
        row = {"epoch": self.epoch + 1, "seconds": round(seconds, 3)}
        for key in ("loss", "accuracy", "entropy", "reward"):
            row[("train_" if key in ("loss", "accuracy") else "") + key] = self.partial[key] / n
        shape = tuple(self.config["image_shape"])
        if len(self.test_indices):
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                probabilities = predict_dataset(self.model, self.dataset, self.test_indices, shape,
                                                self.config["batch_size"], seed=self.config["seed"] + self.epoch,
                                                estimator=self.estimator, replace=self.replace)
            labels = self.dataset.labels[self.test_indices]
            row["test_loss"] = cross_entropy(probabilities, labels)
            row["test_accuracy"] = float(np.mean(probabilities.argmax(axis=1) == labels))
            if not math.isfinite(row["test_loss"]):
                raise AttentionSamplingError(f"training diverged in epoch {self.epoch + 1} (test loss "
                                             f"{row['test_loss']}); {self._kept()}; try a lower --lr")
        else:
            row["test_loss"] = row["test_accuracy"] = float("nan")
        self.history.append(row)
        self.epoch += 1
        self.order = None
        best = max((r["test_accuracy"] for r in self.history[:-1]), default=-1.0)
        # The checkpoint goes last: a kill before it redoes this epoch, which rewrites the other two.
        if not row["test_accuracy"] <= best:  # strictly better, or the first epoch
            self.save(self.best_path)
        path = os.path.join(self.run_dir, "metrics.csv")
        with self._writing(path):
            write_metrics_csv(path, self.history)
        self.save()
        self.log(f"epoch {row['epoch']:3d}  train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.3f}  "
                 f"test loss {row['test_loss']:.4f} acc {row['test_accuracy']:.3f}  "
                 f"entropy {row['entropy']:.2f}  {row['seconds']:.1f}s")
