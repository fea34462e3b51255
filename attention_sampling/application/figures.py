"""Pictures of a run: learning curves (the paper's Fig. 5-6) and where the model looked (Fig. 7-8).

Drawn with matplotlib's object interface on its Agg canvas (Figure.savefig): no pyplot, no window, no
global backend switch, so importing this module changes nothing for the rest of the program.
"""
import math

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from ..patches import patch_boxes

ATTENTION_COLORMAP = "inferno"
BOX_COLORMAP = "cool"
PATCHES_PER_ROW = 10
MIN_COLUMNS = 6


def plot_curves(history_rows, path):
    """Loss and accuracy per epoch (train, validation, test), and what the attention did -> PNG at `path`.

    `history_rows` are metrics.csv rows (dicts; values may be the CSV's strings). The third panel shows the
    attention's health: its entropy, the distinct cells among the P of a look, and the share of sampled
    patches that reach outside the image; a collapse onto one cell or a border shows there first. Where the
    data set knows its objects, the attention mass on them and the share of looks that hold one.
    Columns a run does not have (runs made before they existed) are left out.
    """
    def column(key):
        return np.array([float(row[key]) if row.get(key) not in (None, "") else np.nan for row in history_rows])

    def has(key):
        return key in history_rows[0] and np.isfinite(column(key)).any()

    epochs = column("epoch")
    figure = Figure(figsize=(15, 4), layout="constrained")
    loss_axes, accuracy_axes, attention_axes = figure.subplots(1, 3)
    marker = "o" if len(epochs) <= 30 else None
    for axes, metric in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        for split, name in (("train", "train"), ("val", "validation"), ("test", "test")):
            if has(f"{split}_{metric}"):
                axes.plot(epochs, column(f"{split}_{metric}"), marker=marker, markersize=4, label=name)
        axes.set_xlabel("epoch")
        axes.set_ylabel(metric)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend()
    loss_axes.set_title("cross-entropy loss")
    accuracy_axes.set_title("accuracy")
    accuracy_axes.set_ylim(-0.02, 1.02)
    if has("val_accuracy"):
        # The epoch best.npz holds (trainer.best_epoch): chosen on validation; its test accuracy is reported.
        from .trainer import best_epoch
        best = int(best_epoch([{"epoch": int(float(row["epoch"])), "val_accuracy": float(row["val_accuracy"]),
                                "val_loss": float(row["val_loss"])} for row in history_rows])) - 1
        accuracy_axes.axvline(epochs[best], color="grey", linestyle=":", linewidth=1)
        # Written in the panel's bottom left, where no curve runs (accuracies start at chance, not 0).
        accuracy_axes.text(0.02, 0.02, f"dotted: best on validation (epoch {int(epochs[best])}), "
                           f"test {column('test_accuracy')[best]:.3f}", transform=accuracy_axes.transAxes,
                           fontsize=8, color="grey")
    attention_axes.set_title("attention")
    attention_axes.set_xlabel("epoch")
    attention_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    attention_axes.grid(alpha=0.3)
    if has("entropy"):
        attention_axes.plot(epochs, column("entropy"), marker=marker, markersize=4, color="C3", label="entropy (nats)")
    if has("distinct_cells"):
        attention_axes.plot(epochs, column("distinct_cells"), marker=marker, markersize=4, color="C4",
                            label="distinct cells per look")
    attention_axes.set_ylim(bottom=0)
    if has("outside"):
        share_axes = attention_axes.twinx()
        share_axes.plot(epochs, column("outside"), marker=marker, markersize=4, color="C5", linestyle="--",
                        label="patches reaching outside (share)")
        # Where the data set knows its evidence (objects.json): how much of the attention, and of the looks, find it.
        for key, label, style in (("object_attention", "attention mass on the objects", "-."),
                                  ("object_looks", "looks holding an object (share)", ":")):
            if has(key):
                share_axes.plot(epochs, column(key), marker=marker, markersize=4, linestyle=style, label=label)
        share_axes.set_ylim(-0.02, 1.02)
        share_axes.set_ylabel("share")
        lines = attention_axes.get_lines() + share_axes.get_lines()
        attention_axes.legend(lines, [line.get_label() for line in lines], fontsize=8)
    else:
        attention_axes.legend(fontsize=8)
    figure.savefig(path, dpi=100)


def plot_explanation(image, prediction, class_names, label, scale, patch_size, path, title=None, border="zero",
                     image_shape=None):
    """One image's explanation -> PNG at `path`: what an expert checks (the paper's Fig. 7-8).

    Top: the (H, W, 3) image, the attention map over it (each cell drawn over its c x c pixels, more
    opaque where the attention is higher) and a box around every sampled patch, wider and pinker the
    larger its attention weight; the number on a box is its place in the strip. Below: the sampled
    S x S patches at full resolution, titled with their weight a_i.
    `prediction` holds one image's probabilities (C,), attention (h, w), cells (P, 2), weights (P,)
    and patches (P, S, S, 3), as evaluation.predict_dataset(..., keep=...) returns it.
    With image_shape = (H, W), `image` is a smaller picture of it (a slide's attention view), drawn over
    the full-resolution extent so that cells and patch boxes land where they are in the slide.
    """
    image = np.asarray(image)
    height, width = image_shape if image_shape is not None else image.shape[:2]
    attention = np.asarray(prediction["attention"], dtype=np.float64)
    cells, weights, patches = prediction["cells"], np.asarray(prediction["weights"]), prediction["patches"]
    probabilities = np.asarray(prediction["probabilities"])
    predicted = int(probabilities.argmax())

    n_patches = len(cells)
    # At least MIN_COLUMNS slots, so a few patches are not blown up to the figure's width.
    columns = min(max(n_patches, MIN_COLUMNS), PATCHES_PER_ROW)
    strip_rows = math.ceil(n_patches / columns)
    figure_width = 10.0
    # The colour bar takes about 1.3 in of the width; the image keeps its aspect in the rest.
    main_height = min((figure_width - 1.3) * height / width, 12.0)
    patch_height = figure_width / columns * 1.2  # room for the title above each patch
    figure = Figure(figsize=(figure_width, main_height + 0.6 + strip_rows * patch_height), layout="constrained")
    grid = figure.add_gridspec(1 + strip_rows, columns, height_ratios=[main_height] + [patch_height] * strip_rows)

    main = figure.add_subplot(grid[0, :])
    # Pixel (i, j) covers [j, j + 1) x [i, i + 1), so cells and patch boxes land on exact pixel edges.
    main.imshow(image, extent=(0, width, height, 0), interpolation="nearest")
    # Each cell drawn over the c x c pixels it summarises (an extent, not an upsampled copy: a slide's
    # cells cover billions of pixels).
    norm = Normalize(vmin=0, vmax=attention.max())
    overlay = colormaps[ATTENTION_COLORMAP](norm(attention))
    # Opacity grows with attention, so the image stays visible where the model does not look.
    overlay[..., 3] = 0.75 * attention / attention.max()
    main.imshow(overlay, extent=(0, attention.shape[1] * scale, attention.shape[0] * scale, 0),
                interpolation="nearest")
    figure.colorbar(ScalarMappable(norm, ATTENTION_COLORMAP), ax=main, shrink=0.8, label="attention per cell")

    boxes = patch_boxes(np.asarray(cells), patch_size, scale, (height, width), border)
    relative = weights / weights.max()
    box_colors = colormaps[BOX_COLORMAP](0.2 + 0.8 * relative)
    # Sampling is with replacement: a cell drawn twice gets one box listing both draws.
    draws = {}
    for k, cell in enumerate(map(tuple, np.asarray(cells))):
        draws.setdefault(cell, []).append(k)
    for ks in draws.values():
        k = ks[0]
        top, left, bottom, right = boxes[k]
        main.add_patch(Rectangle((left, top), right - left, bottom - top, fill=False,
                                 edgecolor=box_colors[k], linewidth=1 + 2.5 * relative[k]))
        main.text(max(left, 0), max(top, 0), ",".join(str(j + 1) for j in ks), color="white", fontsize=7,
                  va="top", ha="left", clip_on=True,
                  bbox=dict(boxstyle="square,pad=0.1", facecolor=box_colors[k], edgecolor="none", alpha=0.8))
    main.set_xlim(0, width)
    main.set_ylim(height, 0)
    main.set_xticks([])
    main.set_yticks([])
    if label is None:  # a new image: no truth to compare with
        heading = f"predicted: {class_names[predicted]} (p = {probabilities[predicted]:.2f})"
    else:
        verdict = "right" if predicted == label else "WRONG"
        heading = (f"true: {class_names[label]}   predicted: {class_names[predicted]} "
                   f"(p = {probabilities[predicted]:.2f}, {verdict})")
    main.set_title(heading if title is None else f"{title}\n{heading}", fontsize=10)

    for k in range(n_patches):
        axes = figure.add_subplot(grid[1 + k // columns, k % columns])
        axes.imshow(patches[k], interpolation="nearest", vmin=0, vmax=1 if patches[k].dtype.kind == "f" else 255)
        axes.set_title(f"{k + 1}: a={weights[k]:.3g}", fontsize=7)
        for spine in axes.spines.values():
            spine.set_edgecolor(box_colors[k])
            spine.set_linewidth(1 + 2.5 * relative[k])
        axes.set_xticks([])
        axes.set_yticks([])
    figure.savefig(path, dpi=110)
