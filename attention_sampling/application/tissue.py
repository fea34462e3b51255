"""Where the tissue is: a mask of the attention cells that hold tissue, not glass (--tissue auto).

A whole-slide image is mostly glass: bright and colourless. As the usual pipelines do (CLAM, TIAToolbox), the
tissue is found on a low-resolution image, here the attention view itself (one value per cell, already read):
Otsu's threshold on the saturation, then specks removed and small holes filled (scikit-image). The mask goes
to the core (training.look), whose softmax then gives the other cells probability zero.
"""
import numpy as np

from .errors import AttentionSamplingError
from .settings import TISSUE_MODES
# Otsu always splits, even a view of glass alone or of tissue alone: its threshold is kept between the
# saturation of clean glass (below 0.05) and that of faint eosin (above 0.2), so neither is cut in two.
SATURATION_RANGE = (0.05, 0.2)
# Specks and holes up to this share of the view's cells are noise (dust, a bubble, a tear in the tissue).
SPECK_SHARE = 1e-3


def saturation(view):
    """(h, w, 3) float in [0, 1] -> (h, w) float64 HSV saturation (max - min) / max, 0 on black."""
    view = np.asarray(view, dtype=np.float64)
    top, bottom = view.max(axis=-1), view.min(axis=-1)
    return np.divide(top - bottom, top, out=np.zeros_like(top), where=top > 0)


def _without_small_components(mask, max_cells):
    """(h, w) bool -> (h, w) bool without its 8-connected components of at most max_cells cells."""
    from skimage.measure import label

    labels = label(mask, connectivity=2)
    sizes = np.bincount(labels.ravel())
    keep = sizes > max_cells
    keep[0] = False  # label 0 is the background
    return keep[labels]


def tissue_cells(view, speck_share=SPECK_SHARE):
    """(h, w, 3) attention view in [0, 1] -> (h, w) bool, True on the cells that hold tissue.

    Otsu's threshold on the saturation (clipped to SATURATION_RANGE), then the components of tissue and of
    glass of at most speck_share of the cells (and at least one cell) removed: specks dropped, holes filled."""
    values = saturation(view)
    from skimage.filters import threshold_otsu

    # A view of one saturation has no threshold to find: the range's middle decides.
    threshold = threshold_otsu(values) if np.ptp(values) > 0 else np.mean(SATURATION_RANGE)
    mask = values > np.clip(threshold, *SATURATION_RANGE)
    small = max(1, int(speck_share * mask.size))
    mask = _without_small_components(mask, small)
    return ~_without_small_components(~mask, small)


def batch_views(images, scale):
    """A batch (an (N, H, W, 3) array in [0, 1], or LazyImages) -> (N, H // c, W // c, 3) attention views:
    the batch's own view, or the array average-pooled by c as the attention network pools it."""
    from ..images import is_lazy
    from .pooling import average_pool

    if is_lazy(images):
        return images.view(scale)
    return np.stack([average_pool(np.asarray(image, dtype=np.float32), scale) for image in images])


def tissue_mask(images, scale, paths, minimum=1):
    """A batch of N images, its N file paths -> (N, h, w) bool mask of tissue cells, for look(mask=...).

    AttentionSamplingError naming the file if an image has fewer than `minimum` cells of tissue (none found;
    or fewer than the P patches drawn without replacement)."""
    mask = np.stack([tissue_cells(view) for view in batch_views(images, scale)])
    for path, cells in zip(paths, mask):
        check_tissue(path, cells, scale, minimum)
    return mask


def check_tissue(path, mask, scale, minimum=1):
    """(h, w) bool tissue mask of the image at `path` -> AttentionSamplingError naming it if it holds fewer
    than `minimum` cells of tissue."""
    cells = int(np.count_nonzero(mask))
    if cells == 0:
        raise AttentionSamplingError(f"{path}: no tissue found in its attention view (--tissue auto); "
                                     "--tissue none samples it everywhere")
    if cells < minimum:
        raise AttentionSamplingError(f"{path}: {cells} cells of tissue at --scale {scale}, fewer than the "
                                     f"{minimum} patches drawn without replacement (--tissue none samples "
                                     "everywhere)")



def batch_mask(tissue, images, model, paths):
    """--tissue mode, a batch of N images, the model, their N paths -> (N, h, w) bool mask, or None for "none".

    Sampling without replacement needs P tissue cells in every image (tissue_mask's `minimum`)."""
    if tissue not in TISSUE_MODES:
        raise AttentionSamplingError(f"--tissue must be one of {', '.join(TISSUE_MODES)}, got {tissue!r}")
    if tissue == "none":
        return None
    return tissue_mask(images, model.scale, paths, 1 if model.replace else model.n_patches)


def dataset_mask(tissue, images, model, dataset, batch):
    """batch_mask for the images at positions `batch` of `dataset`, whose paths (named in its errors) are read
    only when there is a mask to find: a data set of arrays has none."""
    return None if tissue == "none" else batch_mask(tissue, images, model, [dataset.paths[i] for i in batch])
