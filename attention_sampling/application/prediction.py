"""Classifying new images with a trained run, one image at a time (cluster.py runs the same on Dask).

Each image gets its own generator, seeded by the user's seed and the image's path, so its prediction is
the same whatever else is predicted with it, in whichever process.
"""
import hashlib
import os

import numpy as np

from . import compile_ahead
from .errors import AttentionSamplingError
from .settings import Training

CHECKPOINT_FILES = {"best": "best.npz", "last": "checkpoint.npz", "average": "average.npz"}


def checkpoint_path(run_dir, which):
    if not os.path.isdir(run_dir):
        raise AttentionSamplingError(f"{run_dir}: no such run folder")
    path = os.path.join(run_dir, CHECKPOINT_FILES[which])
    if which == "best" and not os.path.isfile(path) and os.path.isfile(os.path.join(run_dir, "checkpoint.npz")):
        raise AttentionSamplingError(f"{path}: no such file (has an epoch finished?); try --checkpoint last")
    if which == "average" and not os.path.isfile(path):
        raise AttentionSamplingError(f"{path}: no such file: the run keeps a weight average only when trained with "
                                     "--average-from E, from the end of epoch E on")
    return path


def model_from_checkpoint(path):
    """-> (config, model, epoch) from a checkpoint file (read without pickle)."""
    from .checkpoint import load_checkpoint
    from .trainer import build_model

    state = load_checkpoint(path)
    try:
        config = state["meta"]["config"]
        model = build_model(config)
        model.load_state_dict(state["model"])
        epoch = int(state["meta"]["epoch"])
    except (KeyError, TypeError, ValueError) as error:
        raise AttentionSamplingError(
            f"{path}: holds no model of this program ({type(error).__name__}: {error})") from None
    return config, model, epoch


def load_run(run_dir, which):
    """-> (config, model, epoch, checkpoint path) of the run's best or last checkpoint."""
    path = checkpoint_path(run_dir, which)
    return (*model_from_checkpoint(path), path)


def image_rng(seed, path):
    """The generator of one image's draws: from the seed and the image's path alone."""
    digest = hashlib.sha256(os.path.abspath(path).encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def read_for_run(path, config):
    """-> (1, H, W, 3) float32 in [0, 1] at the run's image size (resized as training resizes); for a
    whole-slide image a slides.SlideBatch of one at the slide's own size, its view read now (the networks
    are convolutional and the attention a softmax over whatever cells there are: no size is needed)."""
    from .data import DEFAULT_MAX_PIXELS, read_image, resize_bilinear
    from .slides import is_slide, load_slides

    if is_slide(path):
        return load_slides([path], max_pixels=config.get("max_pixels", DEFAULT_MAX_PIXELS), scale=config["scale"])
    image = read_image(path, config.get("max_pixels", DEFAULT_MAX_PIXELS))  # RGB uint8
    height, width = config["image_shape"]
    if image.shape[:2] != (height, width):
        image = resize_bilinear(image.astype(np.float32), height, width)
        return (np.clip(image, 0, 255) * np.float32(1 / 255))[None]
    # uint8 is in [0, 255] already: one pass from the bytes, the same float32 products as converting, clipping
    # and scaling in three (half the decode time of a 1388 x 1040 image, docs/performance.md "An archive").
    return np.multiply(image, np.float32(1 / 255), dtype=np.float32)[None]


def picture_path(directory, path, extension=".png"):
    name = os.path.splitext(os.path.basename(path))[0]
    digest = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:8]
    return os.path.join(directory, f"{name}-{digest}{extension}")  # the digest keeps equal names apart


REPORT_IMAGES = "images"


def predict_path(model, config, path, seed=0, looks=1, pictures=None, tissue=None, geojson=None, report=None,
                 images=None):
    """One image -> its output row: the class, the probabilities, the attention entropy and, over the
    looks, the spread of the chosen class's probability and the share of looks that agree. An image that
    cannot be read (or, with tissue "auto", holds no tissue) gives an error row. With `pictures` a folder, its
    explanation is drawn there; with `geojson` a folder, every look's patches, the attention and the tissue
    outline go there as a GeoJSON file (geojson.py); with `report` a folder, the picture goes to its images/
    and the row gets a "report" entry (picture, patch weights) for report.py, which the caller removes before
    writing the row.
    tissue: "auto" samples on the tissue only and adds the row's on_tissue (the share of its patches there),
    "none" everywhere; None: as the run was trained. images: a Future of read_for_run(path, config) begun
    earlier (predict_in_process reads the next image while this one is classified), or None: read it now."""
    from ..images import is_lazy
    from ..training import on_mask, predict
    from .pooling import PooledImages
    from .tissue import batch_mask

    run = Training.from_dict(config)
    tissue = tissue or run.tissue
    try:
        images = read_for_run(path, config) if images is None else images.result()
        # One pooled view for the tissue mask and the attention network (a slide's batch keeps its own).
        batch = images if is_lazy(images) else PooledImages(images)
        mask = batch_mask(tissue, batch, model, [path])
        # A slide's patches are read during the prediction: a corrupt tile there is this image's error too.
        prediction = predict(model, batch, image_rng(seed, path), looks=looks, mask=mask)
    except AttentionSamplingError as error:
        return {"path": path, "error": str(error)}
    classes = config["classes"]
    probabilities = prediction.probabilities[0]
    chosen = int(np.argmax(probabilities))
    per_look = prediction.look_probabilities[0]
    attention = prediction.attention[0][prediction.attention[0] > 0]
    row = {"path": path, "prediction": classes[chosen],
           "probabilities": {name: round(float(p), 6) for name, p in zip(classes, probabilities)},
           "attention_entropy": round(float(-np.sum(attention * np.log(attention))), 4), "looks": looks,
           "spread": round(float(per_look[:, chosen].std()), 6),
           "agreement": round(float(np.mean(per_look.argmax(axis=1) == chosen)), 4)}
    if mask is not None:
        row["on_tissue"] = round(on_mask(prediction.cells, mask), 4)
    explanation = {name: getattr(prediction, name)[0] for name in
                   ("probabilities", "attention", "cells", "weights", "patches")}
    targets = [picture_path(pictures, path)] if pictures else []
    if report:
        targets.append(picture_path(os.path.join(report, REPORT_IMAGES), path))
        row["report"] = {"picture": os.path.relpath(targets[-1], report),
                         "weights": [round(float(w), 6) for w in explanation["weights"]]}
    if targets:
        from . import figures

        # A slide is drawn from its attention view, stretched over the slide's full-resolution extent.
        picture, shape = (images.view(config["scale"])[0], images.shape[1:3]) if is_lazy(images) else (images[0], None)
        for target in targets:
            figures.plot_explanation(picture, explanation, classes, None, config["scale"], config["size"],
                                     target, title=path, border=run.border, image_shape=shape)
    if geojson:
        from .geojson import prediction_features, write_geojson

        # Every look's patches, each with its own probabilities: the picture shows the first look only.
        every_look = {**explanation, "look_cells": prediction.look_cells[0], "look_weights": prediction.look_weights[0]}
        collection = prediction_features(every_look, classes, config["scale"], config["size"], images.shape[1:3],
                                         run.border, prediction.look_probabilities[0],
                                         tissue=None if mask is None else mask[0])
        write_geojson(picture_path(geojson, path, ".geojson"), collection)
    return row


def predict_in_process(checkpoint, paths, seed=0, looks=1, pictures=None, tissue=None, geojson=None, report=None):
    """Rows for `paths`, in order, one image at a time in this process; the next image is read and decoded on a
    thread while this one is classified (decoders release the GIL: benchmarks.bench_predict)."""
    from concurrent.futures import ThreadPoolExecutor

    config, model, _ = model_from_checkpoint(checkpoint)
    paths = list(paths)
    if not paths:
        return
    # On a cache without Numba's builds: the pool's for the first images, Numba's once a child has compiled them.
    compiling = compile_ahead.start_inference(model, config["image_shape"])
    if compiling is None:
        compile_ahead.start(model, training=False)  # the feature network's kernels, on an empty cache only
    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as reader:
        following = reader.submit(read_for_run, paths[0], config)
        for index, path in enumerate(paths):
            compiling = compile_ahead.switch_when_ready(compiling)
            current = following
            if index + 1 < len(paths):
                following = reader.submit(read_for_run, paths[index + 1], config)
            yield predict_path(model, config, path, seed, looks, pictures, tissue, geojson, report, images=current)
