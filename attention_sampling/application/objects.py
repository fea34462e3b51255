"""Where the evidence is, when a data set knows it: ROOT/objects.json, and how much of the attention finds it.

A generator that places the objects carrying the label (megapixel_mnist.py) writes ROOT/objects.json:
{"columns": [...], "objects": {relative image path: [[top, left, height, width, ..., counts], ...]}} in
full-resolution pixels, `counts` 1 for an object that carries the label. Training then logs, per epoch on the
validation images, the share of the attention on cells that overlap such an object and the share of patches
whose centre region holds one's centre: whether the attention finds the evidence, apart from whether the
classifier reads it.
"""
import json
import os

import numpy as np

from ..patches import patch_offset

OBJECT_COLUMNS = ("object_attention", "object_patches", "object_looks")


def read_objects(root, paths):
    """The label-carrying boxes (K, 4) int64 (top, left, height, width) of each image in `paths`, or None when
    ROOT has no objects.json (an image it does not list has no boxes)."""
    path = os.path.join(root, "objects.json")
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        table = json.load(handle)
    columns = table["columns"]
    fields = [columns.index(name) for name in ("top", "left", "height", "width")]
    counts = columns.index("counts") if "counts" in columns else None
    boxes = []
    for image in paths:
        rows = table["objects"].get(os.path.relpath(image, root).replace(os.sep, "/"), [])
        kept = [[row[f] for f in fields] for row in rows if counts is None or row[counts]]
        boxes.append(np.array(kept, dtype=np.int64).reshape(-1, 4))
    return boxes


def object_cells(boxes, scale, shape):
    """(K, 4) boxes -> (h, w) bool: the attention cells (scale x scale pixels each) that overlap a box."""
    mask = np.zeros(shape, dtype=bool)
    for top, left, height, width in boxes:
        mask[top // scale:(top + height - 1) // scale + 1, left // scale:(left + width - 1) // scale + 1] = True
    return mask


def patches_on_objects(cells, boxes, scale, patch_size):
    """(P, 2) sampled cells, (K, 4) boxes -> (P,) bool: the patch cut at the cell holds a box's centre."""
    if not len(boxes):
        return np.zeros(len(cells), dtype=bool)
    top = cells[:, 0:1] * scale + patch_offset(patch_size, scale)
    left = cells[:, 1:2] * scale + patch_offset(patch_size, scale)
    centre_row = boxes[:, 0] + boxes[:, 2] / 2
    centre_col = boxes[:, 1] + boxes[:, 3] / 2
    inside = (top <= centre_row) & (centre_row < top + patch_size) & (left <= centre_col) & (centre_col < left + patch_size)
    return inside.any(axis=1)


class ObjectTally:
    """Sums over scored images: attention mass on the objects' cells, patches and looks that hold an object."""

    def __init__(self, boxes, scale, patch_size):
        self.boxes, self.scale, self.patch_size = boxes, scale, patch_size
        self.mass = self.patches = self.looks = 0.0
        self.images = 0

    def add(self, positions, attention, cells):
        """positions (N,) into `boxes`; attention (N, h, w) summing to 1; cells (N, P, 2) of one look each."""
        for position, a, look in zip(positions, attention, cells):
            boxes = self.boxes[position]
            self.mass += float(a[object_cells(boxes, self.scale, a.shape)].sum())
            hits = patches_on_objects(look, boxes, self.scale, self.patch_size)
            self.patches += float(hits.mean())
            self.looks += float(hits.any())
            self.images += 1

    def row(self):
        """-> {object_attention, object_patches, object_looks}: means per image (NaN with no image)."""
        n = self.images or float("nan")
        return {"object_attention": self.mass / n, "object_patches": self.patches / n, "object_looks": self.looks / n}
