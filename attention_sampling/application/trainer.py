"""The training loop: epochs of train_step over an image folder, evaluation, checkpoints and resume.

Everything random comes from one generator whose state is saved with the model, the epoch's order of
images and the position within it, so a resumed run repeats an uninterrupted one exactly. The files
(atomic writes, the lock, what survives a failure) are the run folder's business: runfolder.py.
"""
import copy
import math
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

import nn
from ..models import AttentionSamplingModel
from ..training import train_step
from . import compile_ahead
from .checkpoint import restore_rng
from .data import Augmentation, load_batch, lower_thread_priority, run_split
from .errors import AttentionSamplingError
from .evaluation import cross_entropy, predict_dataset
from .objects import OBJECT_COLUMNS, ObjectTally, read_objects
from .runfolder import RunFolder, read_config_json
from .settings import Training, learning_rate, resumed, scoring_seed
from .tissue import dataset_mask

METRIC_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy",
                  "entropy", "distinct_cells", "outside", "reward", "seconds", "waiting")
# With --tissue auto: the share of the training draws on tissue (1 by construction, a check that it holds).
TISSUE_COLUMNS = ("on_tissue",)


def build_model(config):
    """The model a run's config describes (a run made before a setting existed is rebuilt as it was trained,
    settings.LEGACY)."""
    run = Training.from_dict(config)
    return AttentionSamplingModel(len(config["classes"]), scale=run.scale, patch_size=run.size, n_patches=run.patches,
                                  seed=run.seed, temperature=run.temperature, border=run.border, floor=run.floor,
                                  attention_init=run.attention_init, aggregate=run.aggregate,
                                  attention_padding=run.attention_padding, estimator=run.estimator,
                                  sampling=run.sampling, feature_width=run.feature_width,
                                  attention_symmetry=run.attention_symmetry)


def augmentation(config):
    """The run's Augmentation, or None (--no-augment); a run made before --contrast and --zoom existed used the
    paper's strengths (settings.LEGACY)."""
    if not config["augment"]:
        return None
    run = Training.from_dict(config)
    return Augmentation(contrast=run.contrast, zoom=run.zoom)


def saved_config(run_dir):
    """The config a run folder's checkpoint was made with; config.json if no epoch has finished yet."""
    folder = RunFolder(run_dir)
    if folder.started_without_epoch():
        return read_config_json(run_dir)
    if not folder.exists():
        raise AttentionSamplingError(f"--resume {run_dir}: no such run folder")
    return folder.load()["meta"]["config"]


def best_epoch(history):
    """The epoch best.npz keeps: the highest validation accuracy, ties to the lower validation loss, then to
    the earlier epoch. Never the test split: it is only reported. A run without validation images (or one
    made before they existed) has nothing to choose on: its last epoch is its best."""
    if not history or "val_accuracy" not in history[-1] or math.isnan(history[-1]["val_accuracy"]):
        return history[-1]["epoch"] if history else None
    return min(history, key=lambda row: (-row["val_accuracy"], row["val_loss"], row["epoch"]))["epoch"]


def all_finite(arrays):
    return all(np.isfinite(value).all() for value in arrays.values() if np.issubdtype(value.dtype, np.inexact))


@dataclass
class EpochTotals:
    """Running sums over the images trained so far in this epoch (saved with a checkpoint taken mid-epoch)."""

    loss: float = 0.0
    accuracy: float = 0.0
    entropy: float = 0.0
    reward: float = 0.0
    distinct_cells: float = 0.0
    outside: float = 0.0
    on_tissue: float = 0.0  # only with --tissue auto (train_step's on_mask)
    images: int = 0
    seconds: float = 0.0
    waiting: float = 0.0  # seconds the steps waited for their batch to be decoded and augmented

    def add(self, metrics, n_images):
        """train_step's per-image means over a batch of n_images."""
        self.loss += metrics["loss"] * n_images
        self.accuracy += metrics["accuracy"] * n_images
        self.entropy += metrics["entropy"] * n_images
        self.reward += metrics["reward"] * n_images
        self.distinct_cells += metrics["distinct_cells"] * n_images
        self.outside += metrics["outside"] * n_images
        self.on_tissue += metrics.get("on_mask", 1.0) * n_images
        self.images += n_images

    def mean(self, name):
        return getattr(self, name) / self.images


class Trainer:
    """Trains one run: builds or resumes the model, then `fit()` runs the epochs.

    The run folder (runfolder.RunFolder) is locked from construction until fit() ends (or close()), so that
    no second process trains in it meanwhile.
    """

    def __init__(self, dataset, run_dir, config, resume=False, log=print, progress=True):
        self.dataset = dataset
        self.run_dir = run_dir
        self.log = log
        self.progress = progress
        self._loader = None  # fit()'s loader thread
        self._prefetched = None  # (epoch, batch, future) of the next epoch's first batch, read during evaluation
        self.folder = RunFolder(run_dir)
        self.checkpoint_path = self.folder.checkpoint
        try:
            # Where the data set knows its evidence (objects.json), metrics.csv tells how much attention finds it.
            self.objects = read_objects(dataset.root, dataset.paths)
            self.columns = METRIC_COLUMNS + (OBJECT_COLUMNS if self.objects is not None else ())
            if self.folder.exists():
                self.folder.acquire()  # before anything in the folder is read or written
            if resume and self.folder.started_without_epoch():
                # Stopped (killed) before its first epoch ended: nothing to resume but the settings.
                self.config = self._resumed_config(config, read_config_json(run_dir), started=0)
                self.log(f"resuming {run_dir}: no epoch had finished, starting from the first")
                self._start()
            elif resume:
                self._resume(config)
            else:
                if self.folder.has_checkpoint():
                    raise AttentionSamplingError(
                        f"--out {run_dir}: already holds a run; continue it with --resume {run_dir} or choose another folder")
                self.folder.create()
                self.folder.acquire()
                self.config = config
                self._start()
            self.folder.remove_temporaries()
            self.settings = Training.from_dict(self.config, source=self.folder.config)  # read once, typed
            self.train_indices, self.val_indices, self.test_indices = run_split(dataset.labels, self.config)
            self.augment = augmentation(self.config)
            self.tissue = self.settings.tissue
            if self.tissue == "auto":
                self.columns = self.columns + TISSUE_COLUMNS
        except BaseException:
            self.close()  # a run that could not start leaves the folder free
            raise

    def close(self):
        """Let another process use the run folder (fit() does this when it ends)."""
        self.folder.release()

    # -- starting and resuming ------------------------------------------------------------------------
    def _start(self):
        """A fresh model, optimiser and generator from the config; config.json written."""
        self.model = build_model(self.config)
        self.optimizer = nn.Adam(self.config["lr"])
        self.rng = np.random.default_rng(self.config["seed"])
        self.epoch, self.position, self.order, self.totals, self.history = 0, 0, None, None, []
        self.average, self.averaged = None, 0  # the averaged model (--average-from) and the epochs in it
        self.folder.write_config(self.config)

    def _resumed_config(self, config, saved, started):
        """The saved config, after checking that nothing typed now contradicts it (settings.resumed); `started`:
        the epochs trained so far, whole or in part."""
        try:
            return resumed(saved, config, started)
        except AttentionSamplingError as error:
            raise AttentionSamplingError(f"--resume {self.run_dir}: {error}") from None

    def _resume(self, config):
        state = self.folder.load()
        meta = state["meta"]
        self.config = self._resumed_config(config, meta["config"], meta["epoch"] + bool(meta.get("within_epoch")))
        if self.config != meta["config"]:  # more epochs or new learning-rate drops: config.json says so
            self.folder.write_config(self.config)
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
        self.averaged = int(meta.get("averaged", 0))
        self.average = None
        if self.averaged:
            try:
                self.average = build_model(self.config)
                self.average.load_state_dict(state["average"])  # checked now, not at the next epoch's end
            except (KeyError, TypeError, ValueError) as error:
                raise AttentionSamplingError(f"--resume {self.run_dir}: {self.checkpoint_path} holds a weight "
                                             f"average that does not fit the model ({error})") from None
        self.epoch = meta["epoch"]
        self.history = meta["history"]
        # metrics.csv may lag the checkpoint if a run was killed between the two writes.
        self.folder.write_metrics(self.history, self.columns)
        within = meta.get("within_epoch")
        if within:
            self.position, self.order = within["position"], np.array(within["order"])
            # A checkpoint from before distinct_cells and outside were logged: they start at 0 for its epoch.
            self.totals = EpochTotals(**within["partial"])
        else:
            self.position, self.order, self.totals = 0, None, None
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

    # -- saving ---------------------------------------------------------------------------------------
    def _diverged(self, what=""):
        """The one message for a run whose numbers stopped being finite."""
        detail = f" ({what})" if what else ": the model holds NaN or infinite numbers"
        return AttentionSamplingError(f"training diverged in epoch {self.epoch + 1}{detail}; "
                                      f"{self.folder.kept()}; try a lower --lr")

    def _check_finite(self):
        """Refuse to save a model or optimiser holding NaN or infinity: it could never train again."""
        if not (all_finite(self.model.state_dict()) and all_finite(self.optimizer.state_dict())):
            raise self._diverged()

    def save(self, path=None, within_epoch=None):
        """Checkpoint after a completed epoch, or (after Ctrl-C) with the position inside the current one."""
        self.folder.save(path or self.checkpoint_path, self.model, self.optimizer, self.rng,
                         self.average.state_dict() if self.average is not None else None,
                         epoch=self.epoch, config=self.config, history=self.history, within_epoch=within_epoch,
                         averaged=self.averaged)

    def _update_average(self):
        """Stochastic weight averaging: the running mean of the model's state after each epoch from
        average_from on, written to average.npz as a model of its own. The batch-norm statistics are averaged
        with the weights rather than measured again for the averaged weights: the average is taken at a low,
        late learning rate, where each epoch moves the weights little."""
        state = self.model.state_dict()
        self.averaged += 1
        if self.average is None:
            self.average = build_model(self.config)
            self.average.load_state_dict(state)
        else:
            # In place: state_dict() hands out the averaged model's own arrays.
            for key, mean in self.average.state_dict().items():
                mean += (state[key] - mean) / mean.dtype.type(self.averaged)
        self.folder.save(self.folder.average, self.average, self.optimizer, self.rng, epoch=self.epoch,
                         config=self.config, history=self.history, averaged=self.averaged)

    # -- the loop -------------------------------------------------------------------------------------
    def fit(self):
        """Train until config['epochs']; returns the history (a dict per epoch).

        Ctrl-C (SIGINT) only raises a flag, looked at between batches: the state saved then is that of
        whole batches, so the resumed run repeats the uninterrupted one exactly. KeyboardInterrupt is
        raised after the save.

        A training process (train.py, the experiments' runs) calls memory.keep_freed_memory() first: its
        steps then reuse each other's pages. Not done here: it is for the whole process, and for its rest.
        """
        self.interrupted = False
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, self._on_interrupt)
        try:
            self.folder.acquire()  # again, for a fit() after close()
            if self.epoch < self.config["epochs"]:
                compile_ahead.start(self.model, training=True)  # on an empty kernel cache only
            # One loader thread for the whole fit: it reads the next batch while a step runs, and the next
            # epoch's first batch while this epoch is evaluated.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="load-batch",
                                    initializer=lower_thread_priority) as self._loader:
                try:
                    while self.epoch < self.config["epochs"]:
                        self._run_epoch()
                finally:
                    self._cancel_prefetch()
        finally:
            self._loader = None
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
            self.totals.seconds += time.perf_counter() - started
            self.save(within_epoch={"position": int(self.position), "order": self.order.tolist(),
                                    "partial": asdict(self.totals)})
        raise KeyboardInterrupt

    def _augmentation_rng(self, position, epoch=None):
        """The generator of one batch's augmentations: drawn from the seed, the epoch (index from 0; default
        the current one) and the batch's place in it, not from the training generator, so that the next
        batch can be prepared while this one trains, and a resumed or repeated run augments every batch
        exactly as before."""
        return np.random.default_rng([self.config["seed"], self.epoch if epoch is None else epoch, int(position), 1])

    def _load(self, batch, position, epoch=None):
        """-> (the batch, its tissue mask or None). A slide's view is read here too, in the loader's thread, and
        the tissue found on it: only its patches wait for the step."""
        images = load_batch(self.dataset, batch, tuple(self.config["image_shape"]), self.augment,
                            self._augmentation_rng(position, epoch), scale=self.config["scale"])
        return images, dataset_mask(self.tissue, images, self.model, self.dataset, batch)

    def _prefetch_next_epoch(self):
        """Start reading the next epoch's first batch (while this epoch is evaluated). Its order is the
        permutation the next epoch will draw from the training generator, computed here on a copy of it, so
        the generator itself, and every number after, is as without the prefetch."""
        if self.epoch + 1 >= self.config["epochs"]:
            return
        order = copy.deepcopy(self.rng).permutation(self.train_indices)
        batch = order[:self.config["batch_size"]]
        self._prefetched = (self.epoch + 1, batch, self._loader.submit(self._load, batch, 0, self.epoch + 1))

    def _take_prefetched(self, batch):
        """The future of the batch _prefetch_next_epoch started, if it is this epoch's first `batch`, else None."""
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is None:
            return None
        epoch, prefetched_batch, future = prefetched
        if epoch == self.epoch and self.position == 0 and np.array_equal(prefetched_batch, batch):
            return future
        future.cancel()
        return None

    def _cancel_prefetch(self):
        if self._prefetched is not None:
            self._prefetched[2].cancel()
            self._prefetched = None

    def _run_epoch(self):
        """Train on every training image once (in a fresh random order), then evaluate and save.

        The next batch is decoded and augmented in a background thread while the current one trains
        (decoding and NumPy's array operations release the GIL), so the steps rarely wait for data.
        """
        batch_size = self.config["batch_size"]
        started = time.perf_counter()
        lr = learning_rate(self.config["lr"], self.settings.lr_drops, self.epoch + 1)
        if lr != self.optimizer.lr:
            self.log(f"epoch {self.epoch + 1}: learning rate {lr:g}")
        self.optimizer.lr = lr
        if self.order is None:
            self.order, self.position, self.totals = self.rng.permutation(self.train_indices), 0, EpochTotals()
        bar = tqdm(total=len(self.order), initial=self.position, unit="img", leave=False,
                   desc=f"epoch {self.epoch + 1}/{self.config['epochs']}", disable=not self.progress)

        def submit(position):
            batch = self.order[position:position + batch_size]
            # The epoch passed now, not read by the loader thread when it runs.
            return self._loader.submit(self._load, batch, position, self.epoch) if len(batch) else None

        pending = None
        try:
            pending = self._take_prefetched(self.order[self.position:self.position + batch_size]) or \
                submit(self.position)
            while self.position < len(self.order):
                self._stop_if_interrupted(started)
                batch = self.order[self.position:self.position + batch_size]
                waiting = time.perf_counter()
                try:
                    images, mask = pending.result()
                except AttentionSamplingError as error:  # a file that went bad since it was checked
                    raise AttentionSamplingError(f"{error}; {self.folder.kept()}") from None
                self.totals.waiting += time.perf_counter() - waiting
                pending = submit(self.position + len(batch))
                # Overflow on the way to NaN is no news: the check below ends the run with one message.
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    metrics = train_step(self.model, self.optimizer, images, self.dataset.labels[batch],
                                         self.rng, replicas=self.config["replicas"],
                                         entropy_weight=self.config["entropy"], mask=mask,
                                         reward=self.settings.reward)
                if not all(math.isfinite(v) for v in metrics.values()):
                    raise self._diverged(f"loss {metrics['loss']}")
                self.totals.add(metrics, len(batch))
                self.position += len(batch)
                bar.update(len(batch))
                bar.set_postfix(loss=f"{self.totals.mean('loss'):.3f}", acc=f"{self.totals.mean('accuracy'):.2f}")
            self._stop_if_interrupted(started)
        finally:
            if pending is not None:  # nobody will take it (the epoch ended, or an error or Ctrl-C stops the run)
                pending.cancel()
            bar.close()
        seconds = time.perf_counter() - started + self.totals.seconds
        self._prefetch_next_epoch()
        self._end_epoch(seconds)
        self._stop_if_interrupted(started)

    def _evaluate(self, indices, repeats=1, tally=None):
        """-> (loss, accuracy) of the model on these images, with generators seeded per epoch: the means over
        `repeats` scorings, each image classified from one look of P patches every time. `tally` (an
        ObjectTally) sees the first scoring's attention and looks."""
        if not len(indices):
            return float("nan"), float("nan")
        labels = self.dataset.labels[indices]
        losses, accuracies = [], []
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for repeat in range(repeats):
                probabilities = predict_dataset(self.model, self.dataset, indices, tuple(self.config["image_shape"]),
                                                self.config["batch_size"],
                                                seed=scoring_seed(self.config["seed"], self.epoch + 1, repeat),
                                                tissue=self.tissue,
                                                on_batch=None if tally is None or repeat else
                                                lambda start, p: tally.add(indices[start:start + len(p.cells)],
                                                                           p.attention, p.cells))
                losses.append(cross_entropy(probabilities, labels))
                accuracies.append(float(np.mean(probabilities.argmax(axis=1) == labels)))
        return float(np.mean(losses)), float(np.mean(accuracies))

    def _end_epoch(self, seconds):
        # A last step can leave NaN in the weights with finite metrics: caught before anything is written.
        self._check_finite()
        totals = self.totals
        row = {"epoch": self.epoch + 1, "train_loss": totals.mean("loss"), "train_accuracy": totals.mean("accuracy"),
               "entropy": totals.mean("entropy"), "distinct_cells": totals.mean("distinct_cells"),
               "outside": totals.mean("outside"), "reward": totals.mean("reward"), "seconds": round(seconds, 3),
               "waiting": round(totals.waiting, 3)}
        if self.tissue == "auto":
            row["on_tissue"] = totals.mean("on_tissue")
        tally = None if self.objects is None else ObjectTally(self.objects, self.model.scale, self.model.patch_size)
        row["val_loss"], row["val_accuracy"] = self._evaluate(self.val_indices, self.settings.val_repeats,
                                                              tally)
        if tally is not None:
            row.update(tally.row())
        row["test_loss"], row["test_accuracy"] = self._evaluate(self.test_indices)
        for split in ("val", "test"):
            if not math.isnan(row[f"{split}_accuracy"]) and not math.isfinite(row[f"{split}_loss"]):
                raise self._diverged(f"{split} loss {row[f'{split}_loss']}")
        self.history.append(row)
        self.epoch += 1
        self.order = None
        # The checkpoint goes last: a kill before it redoes this epoch, which rewrites the others.
        start = self.settings.average_from
        if start and self.epoch >= start:
            self._update_average()
        if best_epoch(self.history) == row["epoch"]:
            self.save(self.folder.best)
        self.folder.write_metrics(self.history, self.columns)
        self.save()
        self.log(f"epoch {row['epoch']:3d}  train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.3f}  "
                 + (f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.3f}  " if len(self.val_indices) else "")
                 + f"test loss {row['test_loss']:.4f} acc {row['test_accuracy']:.3f}  "
                 f"entropy {row['entropy']:.2f}  cells/look {row['distinct_cells']:.1f}  "
                 f"outside {row['outside']:.2f}  "
                 + (f"on tissue {row['on_tissue']:.2f}  " if "on_tissue" in row else "")
                 + (f"on objects: attention {row['object_attention']:.2f} looks {row['object_looks']:.2f}  "
                    if "object_attention" in row else "")
                 + f"{row['seconds']:.1f}s ({row['waiting']:.1f}s waiting for data)")
