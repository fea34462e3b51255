"""Generated data sets written into the cache by several runs at once: each writes its own temporary folder,
and the one that finishes second keeps the first one's (the same files: the same settings and seed)."""
import os

import numpy as np
import pytest

from attention_sampling.application import embedded, megapixel_mnist
from attention_sampling.application.embedded import ensure_default_dataset, partial_folder, publish

TINY = dict(n_per_class=2, height=32, width=40, spot_size=6, n_spots=1, n_distractors=1)


def listing(folder):
    return sorted(os.path.relpath(os.path.join(top, name), folder)
                  for top, _, names in os.walk(folder) for name in names)


def test_a_data_set_another_run_published_meanwhile_is_kept(tmp_path, monkeypatch):
    """While this process generates, another finishes the same data set: no error, its folder stays, and no
    temporary folder is left behind."""
    root = str(tmp_path)
    other = ensure_default_dataset(str(tmp_path / "other"), **TINY)
    folder = os.path.join(root, os.path.basename(other))
    original = embedded.make_image

    def make_image_while_another_finishes(*args, **kwargs):
        if not os.path.isdir(folder):
            os.rename(other, folder)  # the other run's rename lands first
        return original(*args, **kwargs)

    monkeypatch.setattr(embedded, "make_image", make_image_while_another_finishes)
    assert ensure_default_dataset(root, **TINY) == folder
    assert len(listing(folder)) == 2 * 3
    assert sorted(os.listdir(root)) == sorted(["other", os.path.basename(folder)])


def test_two_processes_write_apart():
    """Each process's temporary folder is its own."""
    assert partial_folder("/cache/spots") == f"/cache/spots.partial-{os.getpid()}"


def test_publish_still_fails_when_nothing_was_published(tmp_path):
    """A rename that fails for another reason (no temporary folder) is not taken for a race."""
    with pytest.raises(OSError):
        publish(str(tmp_path / "missing"), str(tmp_path / "folder"))


def test_megapixel_mnist_is_published_the_same_way(tmp_path, monkeypatch):
    """build writes beside ROOT and publishes: a ROOT that appeared meanwhile is kept."""
    rng = np.random.default_rng(0)
    source = rng.integers(1, 256, (100, 28, 28), dtype=np.uint8), np.repeat(np.arange(10), 10)
    settings = dict(height=120, width=140, n_noise=1, n_per_class=3, test_fraction=0.34, val_fraction=0.34, seed=0)
    first = megapixel_mnist.build(str(tmp_path / "first"), source=source, **settings)
    root = str(tmp_path / "second")
    original = megapixel_mnist.make_canvas

    def make_canvas_while_another_finishes(*args, **kwargs):
        if not os.path.isdir(root):
            os.rename(first, root)
        return original(*args, **kwargs)

    monkeypatch.setattr(megapixel_mnist, "make_canvas", make_canvas_while_another_finishes)
    assert megapixel_mnist.build(root, source=source, **settings) == root
    assert "objects.json" in os.listdir(root) and os.listdir(tmp_path) == ["second"]
