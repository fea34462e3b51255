"""One training epoch in PyTorch: the yardstick bench_epoch.py times the Trainer's epoch against.

The same epoch as attention_sampling/application/trainer.py's, written the way a PyTorch user would:

  data           a Dataset reading the TIFF files with tifffile, augmenting them with torch ops, in a
                 DataLoader(batch_size=8, shuffle=True, num_workers=2, persistent_workers=True) (batch size
                 and workers as bench_epoch.py passes them), the last batch kept short (drop_last=False) as
                 the Trainer keeps it
  augmentation   Augmentation's: flips of rows and of columns (each with probability 1/2), contrast factor in
                 [0.7, 1.3] about the flipped image's channel means, zoom (a crop of 1/z of each side, z in
                 [1, 1.2], at a random position, resized back with F.interpolate bilinear,
                 align_corners=False), clipped to [0, 255], scaled to [0, 1]; drawn from a torch.Generator
                 per worker, seeded from the worker's torch.initial_seed()
  steps          torch_model.train_step per batch (P = 20, S = 50, 4 replicas, c; Adam's learning rate and
                 the entropy weight as bench_epoch.py passes them: the Trainer's defaults)
  evaluation     torch_model.predict (no grad, batch-norm running statistics) over the validation images,
                 then the test images, in batches of 8 within each split, read without augmentation by a
                 second DataLoader with 2 persistent workers; then the model and optimiser are saved
  split          the Trainer's: stratified_split of the same labels with its seed and 70 / 15 / 15 fractions

Where it differs from the Trainer's epoch: torch_model has no temperature and pads patches with zeros, so
the classifier is softmax(eq. 1) (T = 1 and the attention weights a_i, not the Trainer's T = 3 and the
features' mean) and patches past the border see zeros (the Trainer reflects); none of this changes what a
step computes in size. The Trainer reads its held-out
images in its main thread, one batch after the other; here two workers read them ahead of the model.
The Trainer's loader is one thread beside the steps, sharing their process; here the loader is two
worker processes, each with its own memory.
"""
import multiprocessing
import os
import tempfile
import time

import numpy as np
import tifffile
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from attention_sampling.application.settings import TRAINING_DEFAULTS
from benchmarks import torch_model

def augment(image, generator, contrast=0.3, zoom=0.2):
    """(H, W, 3) float32 in [0, 255] -> (H, W, 3) float32 in [0, 1]: flips, contrast, zoom, clip, scale."""
    height, width = image.shape[:2]
    draws = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
    flips = [dim for dim, draw in zip((0, 1), draws[:2]) if draw < 0.5]
    if flips:
        image = image.flip(flips)
    factor = 1 - contrast + 2 * contrast * draws[2]
    mean = image.mean(dim=(0, 1))
    image = (image - mean) * factor + mean
    z = 1 + zoom * draws[3]
    crop_height, crop_width = max(1, round(height / z)), max(1, round(width / z))
    top = int(torch.randint(0, height - crop_height + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - crop_width + 1, (1,), generator=generator))
    crop = image[top:top + crop_height, left:left + crop_width].permute(2, 0, 1)[None]  # (1, 3, h, w) view
    image = F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
    return image.clamp(0, 255) / 255


class TiffImages(Dataset):
    """The images at `paths` with their labels: (H, W, 3) float32 in [0, 1], augmented if asked, and the label."""

    def __init__(self, paths, labels, augmented):
        self.paths, self.labels, self.augmented = paths, labels, augmented
        self.generator = None  # made in the worker that first needs it, so that each worker draws its own

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        image = torch.from_numpy(tifffile.imread(self.paths[index])).float()
        if not self.augmented:
            return image.clamp(0, 255) / 255, int(self.labels[index])
        if self.generator is None:
            # In a worker, torch.initial_seed() is the loader's base seed plus the worker's id.
            self.generator = torch.Generator().manual_seed(torch.initial_seed())
        return augment(image, self.generator), int(self.labels[index])


def split_batches(batch_size, *splits):
    """Index arrays -> batches of batch_size positions in their concatenation, none crossing two splits."""
    batches, start = [], 0
    for split in splits:
        batches += [list(range(start + i, start + min(i + batch_size, len(split))))
                    for i in range(0, len(split), batch_size)]
        start += len(split)
    return batches


def _proc_peak_bytes(pid):
    """VmHWM of another process (Linux /proc), or None."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run_epochs(paths, labels, n_classes, split, scale, seed, lr, entropy_weight, batch_size=8, workers=2, epochs=2):
    """`epochs` epochs -> (per-epoch dicts of wall, training and waiting seconds, the loader workers' peak RSS).

    paths (N,), labels (N,), split: the Trainer's Split of them.
    """
    torch.manual_seed(seed)
    # The attention padded as the Trainer's default model pads it (application/settings.py).
    model = torch_model.AttentionSampling(n_classes, scale=scale, patch_size=50, n_patches=20,
                                          attention_padding=TRAINING_DEFAULTS["attention_padding"])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    sampler_generator = torch.Generator().manual_seed(seed)  # draws the patches in train_step and predict
    train = TiffImages([paths[i] for i in split.train], labels[split.train], augmented=True)
    held_out = np.concatenate([split.val, split.test])
    evaluate = TiffImages([paths[i] for i in held_out], labels[held_out], augmented=False)
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=workers,
                              persistent_workers=True, drop_last=False,
                              generator=torch.Generator().manual_seed(seed))
    eval_loader = DataLoader(evaluate, batch_sampler=split_batches(batch_size, split.val, split.test),
                             num_workers=workers, persistent_workers=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="torch_epoch_") as run_dir:
        for _ in range(epochs):
            started = time.perf_counter()
            waiting = 0.0
            model.train()
            batches = iter(train_loader)
            while True:
                asked = time.perf_counter()
                try:
                    images, batch_labels = next(batches)
                except StopIteration:
                    break
                waiting += time.perf_counter() - asked
                torch_model.train_step(model, optimizer, images, batch_labels, sampler_generator, replicas=4,
                                       entropy_weight=entropy_weight)
            trained = time.perf_counter()
            probabilities = torch.cat([torch_model.predict(model, images, sampler_generator)
                                       for images, _ in eval_loader])
            picked = probabilities[torch.arange(len(held_out)), torch.from_numpy(labels[held_out])]
            loss = float(-picked.clamp_min(1e-12).log().mean())  # what the Trainer logs, so it is computed too
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "loss": loss},
                       os.path.join(run_dir, "checkpoint.pt"))
            rows.append({"wall": time.perf_counter() - started, "train": trained - started, "waiting": waiting})
        # The workers are alive until the loaders are collected (persistent): their peaks can be read now.
        peaks = [_proc_peak_bytes(child.pid) for child in multiprocessing.active_children()]
    return rows, [peak for peak in peaks if peak is not None]
