"""The training loop: epochs of train_step over an image folder, evaluation, checkpoints and resume.

Everything random comes from one generator whose state is saved with the model, the epoch's order of
images and the position within it, so a resumed run repeats an uninterrupted one exactly.
"""
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
from .training import train_step

METRIC_COLUMNS = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "entropy",
                  "reward", "seconds")


def build_model(config):
    return AttentionSamplingModel(len(config["classes"]), scale=config["scale"], patch_size=config["size"],
                                  n_patches=config["patches"], seed=config["seed"])


def write_metrics_csv(path, history):
    """Rewrite metrics.csv from the history kept in the checkpoint (atomically, like the checkpoint)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row[k] for k in METRIC_COLUMNS})
    temporary = path + ".tmp"
    with open(temporary, "w") as handle:
        handle.write(text.getvalue())
    os.replace(temporary, path)


def saved_config(run_dir):
    """The config a run folder's checkpoint was made with."""
    return load_checkpoint(os.path.join(run_dir, "checkpoint.npz"))["meta"]["config"]


class Trainer:
    """Owns one run folder: config.json, checkpoint.npz (last), best.npz, metrics.csv."""

    def __init__(self, dataset, run_dir, config, resume=False, log=print, progress=True):
        self.dataset = dataset
        self.run_dir = run_dir
        self.log = log
        self.progress = progress
        self.checkpoint_path = os.path.join(run_dir, "checkpoint.npz")
        self.best_path = os.path.join(run_dir, "best.npz")
        if resume:
            self._resume(config)
        else:
            if os.path.exists(self.checkpoint_path):
                raise AttentionSamplingError(
                    f"--out {run_dir}: already holds a run; continue it with --resume {run_dir} or choose another folder")
            os.makedirs(run_dir, exist_ok=True)
            self.config = config
            self.model = build_model(config)
            self.optimizer = nn.Adam(config["lr"])
            self.rng = np.random.default_rng(config["seed"])
            self.epoch, self.position, self.order, self.partial, self.history = 0, 0, None, None, []
            with open(os.path.join(run_dir, "config.json"), "w") as handle:
                json.dump(config, handle, indent=2)
        self.train_indices, self.test_indices = stratified_split(
            dataset.labels, self.config["test_fraction"], self.config["seed"])
        self.augment = Augmentation() if self.config["augment"] else None
        self.estimator = self.config.get("estimator", "reinforce")
        self.replace = self.config.get("sampling", "with") == "with"

    def _resume(self, config):
        state = load_checkpoint(self.checkpoint_path)
        meta = state["meta"]
        saved = meta["config"]
        for key, value in config.items():
            if key != "epochs" and key in saved and value != saved[key]:
                flag = "--" + key.replace("_", "-") if key not in ("classes", "image_shape") else f"the data's {key}"
                raise AttentionSamplingError(
                    f"--resume {self.run_dir}: the run was made with {key} = {saved[key]}, not {value} "
                    f"({flag}); a resumed run keeps its settings")
        self.config = {**saved, "epochs": config.get("epochs", saved["epochs"])}
        self.model = build_model(self.config)
        self.model.load_state_dict(state["model"])
        self.optimizer = nn.Adam(self.config["lr"])
        self.optimizer.load_state_dict(state["adam"])
        self.rng = restore_rng(meta["rng"])
        self.epoch = meta["epoch"]
        self.history = meta["history"]
        # metrics.csv may lag the checkpoint if a run was killed between the two writes.
        write_metrics_csv(os.path.join(self.run_dir, "metrics.csv"), self.history)
        within = meta.get("within_epoch")
        if within:
            self.position, self.order, self.partial = within["position"], np.array(within["order"]), within["partial"]
        else:
            self.position, self.order, self.partial = 0, None, None
        self.log(f"resuming {self.run_dir} at epoch {self.epoch + 1}"
                 + (f", image {self.position} of {len(self.order)}" if within else ""))

    def save(self, path=None, within_epoch=None):
        """Checkpoint after a completed epoch, or (after Ctrl-C) with the position inside the current one."""
        save_checkpoint(path or self.checkpoint_path, self.model, self.optimizer, self.rng, epoch=self.epoch,
                        config=self.config, history=self.history, within_epoch=within_epoch)

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
            while self.epoch < self.config["epochs"]:
                self._run_epoch()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        return self.history

    def _on_interrupt(self, signum, frame):
        if self.interrupted:  # a second Ctrl-C: the user insists
            raise KeyboardInterrupt
        self.interrupted = True

    def _stop_if_interrupted(self, started):
        if not self.interrupted:
            return
        if self.order is not None:
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
                images = load_batch(self.dataset, batch, shape, self.augment, self.rng)
                metrics = train_step(self.model, self.optimizer, images, self.dataset.labels[batch], self.rng,
                                     replicas=self.config["replicas"], entropy_weight=self.config["entropy"],
                                     estimator=self.estimator, replace=self.replace)
                if not all(math.isfinite(v) for v in metrics.values()):
                    raise AttentionSamplingError(
                        f"training diverged at epoch {self.epoch + 1} (loss {metrics['loss']}); "
                        f"{self.checkpoint_path} keeps the last good state; try a lower --lr")
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
        n = self.partial["images"]
        row = {"epoch": self.epoch + 1, "seconds": round(seconds, 3)}
        for key in ("loss", "accuracy", "entropy", "reward"):
            row[("train_" if key in ("loss", "accuracy") else "") + key] = self.partial[key] / n
        shape = tuple(self.config["image_shape"])
        if len(self.test_indices):
            probabilities = predict_dataset(self.model, self.dataset, self.test_indices, shape,
                                            self.config["batch_size"], seed=self.config["seed"] + self.epoch,
                                            estimator=self.estimator, replace=self.replace)
            labels = self.dataset.labels[self.test_indices]
            row["test_loss"] = cross_entropy(probabilities, labels)
            row["test_accuracy"] = float(np.mean(probabilities.argmax(axis=1) == labels))
        else:
            row["test_loss"] = row["test_accuracy"] = float("nan")
        self.history.append(row)
        self.epoch += 1
        self.order = None
        best = max((r["test_accuracy"] for r in self.history[:-1]), default=-1.0)
        # The checkpoint goes last: a kill before it redoes this epoch, which rewrites the other two.
        if not row["test_accuracy"] <= best:  # strictly better, or the first epoch
            self.save(self.best_path)
        write_metrics_csv(os.path.join(self.run_dir, "metrics.csv"), self.history)
        self.save()
        self.log(f"epoch {row['epoch']:3d}  train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.3f}  "
                 f"test loss {row['test_loss']:.4f} acc {row['test_accuracy']:.3f}  "
                 f"entropy {row['entropy']:.2f}  {row['seconds']:.1f}s")
