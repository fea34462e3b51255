"""The default data set: generated once, deterministically, into a cache folder as PNG files.

Three classes of mega-pixel images whose label is the period-2 texture of a few small spots, among
flat distractor spots that look the same at low resolution (see synthetic.py). No download needed.
"""
import os
import shutil

import imageio.v3 as iio
import numpy as np

from .synthetic import CLASS_NAMES, make_image

VERSION = "spots-v2"
SETTINGS = dict(n_per_class=60, height=768, width=1024, n_spots=6, spot_size=16, n_distractors=2, seed=2019)
# A harder variant for comparisons: the label lives in one or two small spots of a large image.
FEW_SPOTS = dict(n_per_class=40, height=768, width=1024, n_spots=2, spot_size=12, n_distractors=0, seed=7)


def cache_root():
    """$ATTENTION_SAMPLING_CACHE, else $XDG_CACHE_HOME/attention-sampling-numpy, else ~/.cache/..."""
    if os.environ.get("ATTENTION_SAMPLING_CACHE"):
        return os.environ["ATTENTION_SAMPLING_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "attention-sampling-numpy")


def partial_folder(folder):
    """The folder a generator writes before publish(): beside `folder`, this process's alone (two runs started
    together on an empty cache each write their own)."""
    return f"{folder}.partial-{os.getpid()}"


def publish(temporary, folder):
    """Rename the complete `temporary` to `folder` -> folder. If another process published it first (the same
    settings and seed: the same files), keep that one and drop this one."""
    try:
        os.replace(temporary, folder)
    except OSError:
        if not os.path.isdir(folder):
            raise
        shutil.rmtree(temporary, ignore_errors=True)
    return folder


def ensure_default_dataset(root=None, progress=None, **overrides):
    """Generate the data set under root (default: the cache) unless it is already complete; return its folder.

    Written into a temporary folder and renamed when complete, so an interrupted generation never
    leaves a half data set that later runs would take for whole (partial_folder, publish).
    """
    settings = {**SETTINGS, **overrides}
    # Other settings get their own folder, named by their values, so two variants never share one.
    name = VERSION if not overrides else f"{VERSION}-" + "-".join(f"{k}{v}" for k, v in sorted(overrides.items()))
    folder = os.path.join(root or cache_root(), name)
    if os.path.isdir(folder):
        return folder
    temporary = partial_folder(folder)
    shutil.rmtree(temporary, ignore_errors=True)
    rng = np.random.default_rng(settings["seed"])
    total = settings["n_per_class"] * len(CLASS_NAMES)
    for i in range(total):
        label = i % len(CLASS_NAMES)
        pixels, _ = make_image(label, settings["height"], settings["width"], settings["n_spots"],
                               settings["spot_size"], settings["n_distractors"], rng)
        class_folder = os.path.join(temporary, CLASS_NAMES[label])
        os.makedirs(class_folder, exist_ok=True)
        iio.imwrite(os.path.join(class_folder, f"{i // len(CLASS_NAMES):04d}.png"), pixels)
        if progress is not None:
            progress(i + 1, total)
    return publish(temporary, folder)
